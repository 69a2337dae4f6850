"""Pure-Python BERT WordPiece tokenizer (uncased), reading a vocab.txt.

Basic step: drop control characters, space out CJK ideographs, lower-case,
strip accents, split on whitespace and punctuation. WordPiece step: greedy
longest match with the ``##`` continuation prefix; a word that cannot be
covered becomes ``[UNK]``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONTINUATION = "##"
MAX_CHARS_PER_WORD = 100


def load_vocab(path: str | Path) -> dict[str, int]:
    """Read a vocab.txt (one token per line, id = line number)."""
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        for idx, line in enumerate(fh):
            token = line.rstrip("\n")
            if token and token not in vocab:
                vocab[token] = idx
    return vocab


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # All non-alphanumeric printable ASCII counts as punctuation for BERT.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def basic_tokenize(text: str) -> list[str]:
    """Clean, lower-case, strip accents and split on whitespace/punctuation."""
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            chars.append(" ")
        elif _is_cjk(cp):
            chars.append(f" {ch} ")
        else:
            chars.append(ch)
    words = []
    for word in "".join(chars).split():
        word = unicodedata.normalize("NFD", word.lower())
        word = "".join(c for c in word if unicodedata.category(c) != "Mn")
        current = ""
        for ch in word:
            if _is_punctuation(ch):
                if current:
                    words.append(current)
                    current = ""
                words.append(ch)
            else:
                current += ch
        if current:
            words.append(current)
    return words


@dataclass
class Encoding:
    """Token ids and attention mask of one text, shape (1, n)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    tokens: list[str]


class WordPieceTokenizer:
    """BERT uncased WordPiece tokenizer over a loaded vocabulary."""

    def __init__(self, vocab: dict[str, int], max_length: int = 128):
        for special in ("[CLS]", "[SEP]", "[UNK]"):
            if special not in vocab:
                raise ValueError(f"vocabulary lacks {special}")
        if max_length < 3:
            raise ValueError("max_length must be at least 3")
        self.vocab = vocab
        self.max_length = max_length

    @classmethod
    def from_file(cls, path: str | Path, max_length: int = 128) -> "WordPieceTokenizer":
        return cls(load_vocab(path), max_length=max_length)

    def wordpiece(self, word: str) -> list[str]:
        """Split one basic token into WordPiece tokens (greedy longest match)."""
        if len(word) > MAX_CHARS_PER_WORD:
            return ["[UNK]"]
        pieces = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end]
                if start > 0:
                    piece = CONTINUATION + piece
                if piece in self.vocab:
                    found = piece
                    break
                end -= 1
            if found is None:
                return ["[UNK]"]
            pieces.append(found)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Text -> WordPiece tokens, without special tokens."""
        out = []
        for word in basic_tokenize(text):
            out.extend(self.wordpiece(word))
        return out

    def encode(self, text: str) -> Encoding:
        """[CLS] tokens [SEP], truncated to max_length, no padding."""
        tokens = ["[CLS]"] + self.tokenize(text)[: self.max_length - 2] + ["[SEP]"]
        ids = np.array([[self.vocab[t] for t in tokens]], dtype=np.int64)
        return Encoding(input_ids=ids, attention_mask=np.ones_like(ids), tokens=tokens)
