"""Lexical stage: word and number matching of a goal against place names.

A goal is split at the first relation word ("dock | by the loading bay"):
the head names the target and is matched against place names (and, weaker,
descriptions); the modifier locates it and is matched against descriptions.
Numbers are exact constraints, never similarities.

Place kinds: each place has kinds, its ``kind`` field and the head noun (last
word) of its name and aliases ("charging dock 1" -> dock, "goods lift" ->
elevator after synonyms), generic nouns such as "area" excepted. When the
goal's head names a kind ("the charger by the trucks": dock), only places of
that kind are candidates: a place of another kind cannot win on modifier words
alone. A place's ``near`` zones lend their name words, numbers included, to its
modifier matching only ("by the trucks" and "by aisle 3" fit the dock near the
truck bay and aisle 3); a head number must be the place's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from .config import LexicalConfig
from .places import Place
from .text import stem, words
from .vocab import GENERIC_PLACE_WORDS


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


def parse_goal(text: str, cfg: LexicalConfig, countable: frozenset[str] | None = None) -> ParsedGoal:
    """Tokenize, mark stop words, split at the first relation word (``countable``:
    see ``text.words``)."""
    stop = frozenset(stem(w) for w in (*cfg.stopwords, *GENERIC_PLACE_WORDS))
    relations = frozenset(stem(w) for w in cfg.relation_words)
    tokens = words(text, stop, countable)
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
    kinds: frozenset[str] = frozenset()   # head nouns of name/aliases, and ``kind``
    near: frozenset[str] = frozenset()    # name words of its ``near`` zones
    near_pairs: dict | None = None        # word -> numbers its ``near`` zones carry


_GENERIC = frozenset(stem(w) for w in GENERIC_PLACE_WORDS)


def _head_noun(tokens: Sequence[str]) -> str | None:
    """Last word of a name, if it is a noun that says what kind of place this is."""
    content = [t for t in tokens if not t.isdigit()]
    return content[-1] if content and content[-1] not in _GENERIC else None


def _name_tokens(place: Place) -> list[list[str]]:
    return [words(place.id.replace("_", " ")), words(place.name)] + [words(a) for a in place.aliases]


def _terms(place: Place, by_id: dict | None = None) -> _Terms:
    name_tokens = _name_tokens(place)
    desc_tokens = words(place.description)
    pairs: dict[str, set[str]] = {}
    for tokens in name_tokens + [desc_tokens]:
        for word, number in _pairs(tokens):
            pairs.setdefault(word, set()).add(number)
    name = frozenset(t for tokens in name_tokens for t in tokens)
    kinds = {_head_noun(tokens) for tokens in name_tokens[1:]} - {None}
    kinds |= set(words(place.kind)) if place.kind else set()
    zones = [by_id[z] for z in place.near if z in (by_id or {})]
    near = {t for zone in zones for tokens in _name_tokens(zone) for t in tokens}
    near_pairs: dict[str, set[str]] = {}
    for zone in zones:
        for tokens in _name_tokens(zone):
            for word, number in _pairs(tokens):
                near_pairs.setdefault(word, set()).add(number)
    return _Terms(name, frozenset(desc_tokens), {k: frozenset(v) for k, v in pairs.items()},
                  frozenset(kinds), frozenset(near), {k: frozenset(v) for k, v in near_pairs.items()})


class LexicalMatcher:
    """Precomputed place terms and word weights (IDF over places)."""

    def __init__(self, places: Sequence[Place], cfg: LexicalConfig):
        self.cfg = cfg
        by_id = {p.id: p for p in places}
        self.terms = {p.id: _terms(p, by_id) for p in places}
        self.kind_words = frozenset(k for t in self.terms.values() for k in t.kinds)
        self.countable = frozenset(w for t in self.terms.values() for w in t.pairs)
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
        in its name, modifier numbers in its name, description or ``near`` zones),
        and no "word N" of the goal contradicts a "word M" of the place (a modifier's
        "aisle 3" agrees with a ``near`` zone aisle 3)."""
        t = self.terms[place_id]
        if not goal.head_numbers <= t.name:
            return False
        if not goal.modifier_numbers <= (t.name | t.description | t.near):
            return False
        near_pairs = t.near_pairs or {}
        for word, number in goal.pairs:
            carried = t.pairs.get(word)
            if carried and number not in carried and number not in near_pairs.get(word, ()):
                return False
        return True

    def goal_kind(self, goal: ParsedGoal) -> str | None:
        """The kind of place the goal's head names: its last head word that is a
        place kind ("the north wall charger" -> dock), else None."""
        return next((t for t in reversed(goal.head) if t in self.kind_words), None)

    def of_kind(self, kind: str) -> set[str]:
        """Places of one kind ("dock" -> the docks)."""
        return {pid for pid, t in self.terms.items() if kind in t.kinds}

    def named(self, goal: ParsedGoal) -> set[str]:
        """Places whose name/aliases contain a head word ("dock" -> the docks)."""
        head = {t for t in goal.head if not t.isdigit()}
        return {pid for pid, t in self.terms.items() if head & t.name}

    def credits(self, place_id: str, goal: ParsedGoal) -> list[tuple[float, float]]:
        """(weight, share explained) of each goal word, head words first."""
        t, cfg = self.terms[place_id], self.cfg
        out = []
        for tok in goal.head:
            share = 1.0 if tok in t.name else cfg.description_weight if tok in t.description else 0.0
            out.append((self.weight(tok), share))
        where = (t.name | t.description) if goal.headless else (t.description | t.near)
        for tok in goal.modifier:
            out.append((self.weight(tok) * cfg.modifier_weight, 1.0 if tok in where else 0.0))
        return out

    def score(self, place_id: str, goal: ParsedGoal) -> float:
        """Weighted share of the goal's words this place explains, in [0, 1]."""
        return share(self.credits(place_id, goal))


def share(credits: Sequence[tuple[float, float]], skip: frozenset[int] = frozenset()) -> float:
    """Weighted share explained, leaving out the word positions in ``skip``."""
    total = sum(w for i, (w, _) in enumerate(credits) if i not in skip)
    got = sum(w * s for i, (w, s) in enumerate(credits) if i not in skip)
    return got / total if total > 0 else 0.0
