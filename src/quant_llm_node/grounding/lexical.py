"""Lexical stage: word and number matching of a goal against place names.

A goal is split at the first relation word ("dock | by the loading bay"):
the head names the target and is matched against place names (and, weaker,
descriptions); the modifier locates it and is matched against descriptions.
Numbers are exact constraints, never similarities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from .config import LexicalConfig
from .places import Place
from .text import stem, words


@dataclass(frozen=True)
class ParsedGoal:
    """Content words of a goal, split into head and modifier, with numbers."""

    head: tuple[str, ...]
    modifier: tuple[str, ...]
    head_numbers: frozenset[str]
    modifier_numbers: frozenset[str]
    pairs: frozenset[tuple[str, str]]  # (word, number) as in "aisle 4"

    @property
    def headless(self) -> bool:
        """Only a landmark ("near aisle 4"): the landmark or a place by it."""
        return not self.head and bool(self.modifier)

    @property
    def is_empty(self) -> bool:
        return not self.head and not self.modifier


def _pairs(tokens: Sequence[str]) -> set[tuple[str, str]]:
    """(word, number) pairs: each number with the nearest content word before it."""
    found = set()
    for i, tok in enumerate(tokens):
        if not tok.isdigit():
            continue
        for prev in reversed(tokens[:i]):
            if prev.isdigit():
                break
            if not prev.startswith("~"):
                found.add((prev, tok))
                break
    return found


def _content(tokens: Iterable[str]) -> tuple[str, ...]:
    return tuple(t for t in tokens if not t.startswith("~"))


def parse_goal(text: str, cfg: LexicalConfig) -> ParsedGoal:
    """Tokenize, mark stop words, split at the first relation word."""
    stop = frozenset(stem(w) for w in cfg.stopwords)
    relations = frozenset(stem(w) for w in cfg.relation_words)
    tokens = words(text, stop)
    cut = next((i for i, t in enumerate(tokens) if t in relations), len(tokens))
    head, modifier = _content(tokens[:cut]), _content(tokens[cut + 1:])
    return ParsedGoal(
        head=head, modifier=modifier,
        head_numbers=frozenset(t for t in head if t.isdigit()),
        modifier_numbers=frozenset(t for t in modifier if t.isdigit()),
        pairs=frozenset(_pairs(tokens[:cut]) | _pairs(tokens[cut + 1:])),
    )


@dataclass(frozen=True)
class _Terms:
    name: frozenset[str]          # id, name and aliases
    description: frozenset[str]
    pairs: dict                   # word -> numbers it carries in this place


def _terms(place: Place) -> _Terms:
    name_tokens = [words(place.id.replace("_", " ")), words(place.name)]
    name_tokens += [words(a) for a in place.aliases]
    desc_tokens = words(place.description)
    pairs: dict[str, set[str]] = {}
    for tokens in name_tokens + [desc_tokens]:
        for word, number in _pairs(tokens):
            pairs.setdefault(word, set()).add(number)
    name = frozenset(t for tokens in name_tokens for t in tokens)
    return _Terms(name, frozenset(desc_tokens), {k: frozenset(v) for k, v in pairs.items()})


class LexicalMatcher:
    """Precomputed place terms and word weights (IDF over places)."""

    def __init__(self, places: Sequence[Place], cfg: LexicalConfig):
        self.cfg = cfg
        self.terms = {p.id: _terms(p) for p in places}
        df: dict[str, int] = {}
        for t in self.terms.values():
            for tok in t.name | t.description:
                df[tok] = df.get(tok, 0) + 1
        n = max(len(places), 1)
        self.idf = {tok: 1.0 + math.log(n / count) for tok, count in df.items()}

    def weight(self, token: str) -> float:
        base = self.idf.get(token, self.cfg.unknown_word_weight)
        return base * self.cfg.number_weight if token.isdigit() else base

    def compatible(self, place_id: str, goal: ParsedGoal) -> bool:
        """Number discipline: every goal number appears in the place (head numbers
        in its name, modifier numbers in name or description), and no "word N"
        of the goal contradicts a "word M" of the place."""
        t = self.terms[place_id]
        if not goal.head_numbers <= t.name:
            return False
        if not goal.modifier_numbers <= (t.name | t.description):
            return False
        for word, number in goal.pairs:
            carried = t.pairs.get(word)
            if carried and number not in carried:
                return False
        return True

    def named(self, goal: ParsedGoal) -> set[str]:
        """Places whose name/aliases contain a head word ("dock" -> the docks)."""
        head = {t for t in goal.head if not t.isdigit()}
        return {pid for pid, t in self.terms.items() if head & t.name}

    def score(self, place_id: str, goal: ParsedGoal) -> float:
        """Weighted share of the goal's words this place explains, in [0, 1]."""
        t, cfg = self.terms[place_id], self.cfg
        total = got = 0.0
        for tok in goal.head:
            w = self.weight(tok)
            total += w
            if tok in t.name:
                got += w
            elif tok in t.description:
                got += w * cfg.description_weight
        where = (t.name | t.description) if goal.headless else t.description
        for tok in goal.modifier:
            w = self.weight(tok) * cfg.modifier_weight
            total += w
            if tok in where:
                got += w
        return got / total if total > 0 else 0.0
