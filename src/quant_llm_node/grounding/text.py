"""Text clean-up and word normalization shared by the grounding stages."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from .vocab import NUMBER_MARKERS, ORDINALS, SYNONYMS

_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")
_WORD = re.compile(r"[0-9]+(?:st|nd|rd|th)\b|[a-z]+|[0-9]+")
_ORDINAL_DIGITS = re.compile(r"^([0-9]+)(?:st|nd|rd|th)$")
NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19, "twenty": 20,
}


def clean_goal_text(text: str) -> str:
    """Drop ANSI escapes and control/format characters, NFKC, collapse whitespace."""
    text = unicodedata.normalize("NFKC", _ANSI.sub(" ", str(text)))
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch.isspace() or cat in ("Zl", "Zp"):
            kept.append(" ")
        elif not cat.startswith("C"):
            kept.append(ch)
    return " ".join("".join(kept).split())


def fold(text: str) -> str:
    """Lower-case and strip accents."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def stem(word: str) -> str:
    """Tiny suffix stripper so charging/charge and doors/door meet."""
    if word.isdigit() or len(word) <= 3:
        return word
    for suffix in ("ing", "ed", "es", "s", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


@lru_cache(maxsize=1)
def _synonym_table() -> tuple[dict[tuple[str, ...], tuple[str, ...]], int]:
    """SYNONYMS keyed by the stems of the phrase; values are raw replacement words."""
    table = {tuple(stem(w) for w in key.split()): tuple(value.split())
             for key, value in SYNONYMS.items()}
    return table, max(len(k) for k in table)


def canonical(raw: list[str]) -> list[str]:
    """Replace synonym phrases (longest first, see vocab.SYNONYMS) by map words."""
    table, longest = _synonym_table()
    out: list[str] = []
    i = 0
    while i < len(raw):
        for n in range(min(longest, len(raw) - i), 0, -1):
            key = tuple(stem(w) for w in raw[i:i + n])
            if key in table:
                out.extend(table[key])
                i += n
                break
        else:
            out.append(raw[i])
            i += 1
    return out


def words(text: str, stopwords: frozenset[str] = frozenset(),
          countable: frozenset[str] | None = None) -> list[str]:
    """Normalized words: warehouse synonyms mapped to map words (vocab.SYNONYMS),
    digits split from letters ("aisle4" -> aisle, 4), ordinals ("second", "2nd")
    become digits, number words after a content word become digits ("aisle
    four" -> aisle, 4), "number"/"no" right before a number is dropped, the
    rest are stemmed. With ``countable`` (words that carry numbers on the map,
    e.g. aisle, dock), "one" is a number only after one of them: "dock one" is
    dock 1 but "the narrow one" is a pronoun. Stop words (given stemmed) stay in the list marked by a
    leading '~' so callers can keep positions but skip them."""
    raw_words = []
    for raw in _WORD.findall(fold(clean_goal_text(text))):
        m = _ORDINAL_DIGITS.match(raw)
        raw_words.append(m.group(1) if m else raw)
    raw_words = canonical(raw_words)
    out: list[str] = []
    for i, raw in enumerate(raw_words):
        if raw.isdigit():
            out.append(str(int(raw)))
            continue
        if raw in ORDINALS:
            out.append(str(ORDINALS[raw]))
            continue
        nxt = raw_words[i + 1] if i + 1 < len(raw_words) else ""
        if raw in NUMBER_MARKERS and (nxt.isdigit() or nxt in NUMBER_WORDS) and out:
            continue
        prev = out[-1] if out else ""
        if (raw in NUMBER_WORDS and prev and not prev.startswith("~") and not prev.isdigit()
                and (raw != "one" or countable is None or prev in countable)):
            out.append(str(NUMBER_WORDS[raw]))
            continue
        token = stem(raw)
        out.append("~" + token if token in stopwords else token)
    return out
