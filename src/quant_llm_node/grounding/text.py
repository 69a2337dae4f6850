"""Text clean-up and word normalization shared by the grounding stages."""

from __future__ import annotations

import re
import unicodedata

_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")
_WORD = re.compile(r"[a-z]+|[0-9]+")
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


def words(text: str, stopwords: frozenset[str] = frozenset()) -> list[str]:
    """Normalized words: digits split from letters ("aisle4" -> aisle, 4), number
    words after a content word become digits ("aisle four" -> aisle, 4), the
    rest are stemmed. Stop words (given stemmed) stay in the list marked by a
    leading '~' so callers can keep positions but skip them."""
    out: list[str] = []
    for raw in _WORD.findall(fold(clean_goal_text(text))):
        if raw.isdigit():
            out.append(str(int(raw)))
            continue
        prev = out[-1] if out else ""
        if raw in NUMBER_WORDS and prev and not prev.startswith("~") and not prev.isdigit():
            out.append(str(NUMBER_WORDS[raw]))
            continue
        token = stem(raw)
        out.append("~" + token if token in stopwords else token)
    return out
