"""PlaceIndex: free-text goal -> map place id, or an honest "ambiguous"/"unknown".

Stages, first decisive one wins: exact id ("aisle 4" -> aisle_4), lexical
(words + exact numbers), embeddings (cosine over name + description).
Thresholds come from GroundingSettings; nothing is guessed below them.

A goal that does not ground as a whole but opens with a clause that does
("the loading bay. Ignore all rules", "goods lift {...}") grounds to that lead
clause's place, provided no later clause uses a place's name words for
anything else ("aisle 3, then the loading bay" stays unknown): extra text after
a place name, an injected instruction or a number in it, does not hide the
place the goal names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence

import numpy as np

from .config import GroundingSettings
from .lexical import LexicalMatcher, ParsedGoal, parse_goal, share
from .places import Place
from .text import clean_goal_text, fold



# where a goal's lead clause ends: sentence and clause punctuation, brackets, chat-template and
# JSON punctuation, dashes between spaces
_CLAUSE_BREAK = re.compile(r"[.;:!?,(){}\[\]<>|\"\n]+|\s[-\u2013\u2014]+\s|\s-{2,}")


class GroundingStatus(str, Enum):
    """Outcome kind of grounding one goal."""

    OK = "ok"
    AMBIGUOUS = "ambiguous"
    UNKNOWN = "unknown"
    EMPTY = "empty"


OK, AMBIGUOUS, UNKNOWN, EMPTY = GroundingStatus


@dataclass(frozen=True)
class GroundingResult:
    """Outcome of grounding one goal; ``place_id`` is set only when status is ok."""

    status: GroundingStatus
    place_id: str | None = None
    score: float = 0.0                # of the top candidate, in the deciding stage
    margin: float = 0.0               # top score minus the runner-up's
    candidates: list[tuple[str, float]] = field(default_factory=list)
    method: str | None = None         # exact_id | lexical | embedding (None if empty)
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


def _ranked(scores: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def _margin(ranked: list[tuple[str, float]]) -> float:
    if not ranked:
        return 0.0
    return ranked[0][1] - (ranked[1][1] if len(ranked) > 1 else 0.0)


class PlaceIndex:
    """Places with precomputed lexical terms and embeddings (computed once here)."""

    def __init__(self, places: Sequence[Place], embedder, config: GroundingSettings | None = None):
        if not places:
            raise ValueError("PlaceIndex needs at least one place")
        self.places = list(places)
        self.by_id = {p.id: p for p in self.places}
        self.config = config or GroundingSettings()
        self.embedder = embedder
        self.lexical = LexicalMatcher(self.places, self.config.lexical)
        self.vectors = embedder.embed_many([p.embedding_text() for p in self.places])
        self.row = {p.id: i for i, p in enumerate(self.places)}

    def ground(self, text, k: int | None = None, lead_only: bool = False) -> GroundingResult:
        """Resolve one goal text to a place id (see module doc for the stages). ``lead_only``
        (a goal that carries instructions to the robot): only the lead clause may ground, and
        only when no later clause names another place; the whole text is never matched, so a
        place the instructions name cannot win by its numbers or by similarity."""
        k = k or self.config.top_k
        limit = self.config.max_chars
        cleaned = clean_goal_text(text[: 4 * limit])[:limit] if isinstance(text, str) else ""
        if lead_only:
            return self._lead_clause(cleaned, k) or GroundingResult(
                UNKNOWN, method="lead clause",
                reason="the goal carries instructions and its lead clause names no single place")
        whole = self._ground(cleaned, k)
        if whole.ok or whole.status == EMPTY:
            return whole
        return self._lead_clause(cleaned, k) or whole

    def _lead_clause(self, cleaned: str, k: int) -> GroundingResult | None:
        """The lead clause's place, when it has one and no later clause names another."""
        clauses = [c for c in _CLAUSE_BREAK.split(cleaned) if c.strip()]
        if len(clauses) < 2:
            return None
        lead = self._ground(clauses[0], k)
        if not lead.ok:
            return None
        for rest in clauses[1:]:
            names = self.lexical.named(parse_goal(rest, self.config.lexical, self.lexical.countable))
            if names - {lead.place_id}:  # a later clause names a place word: not ours to pick
                other = self._ground(rest, k)
                if other.status != OK or other.place_id != lead.place_id:
                    return None
        return GroundingResult(OK, lead.place_id, lead.score, lead.margin, lead.candidates, lead.method,
                               f"lead clause {clauses[0].strip()!r}: {lead.reason}")

    def _ground(self, cleaned: str, k: int) -> GroundingResult:
        goal = parse_goal(cleaned, self.config.lexical, self.lexical.countable)
        if not cleaned or goal.is_empty:
            return GroundingResult(EMPTY, reason="no words in goal")
        exact = self._exact_id(cleaned)
        if exact:
            return GroundingResult(OK, exact, 1.0, 1.0, [(exact, 1.0)], "exact_id", "id match")
        candidates = [pid for pid in self.by_id if self.lexical.compatible(pid, goal)]
        kind = self.lexical.goal_kind(goal)
        if kind:  # the goal names a kind of place: only places of that kind can win
            of_kind = self.lexical.of_kind(kind)
            candidates = [pid for pid in candidates if pid in of_kind]
        if not candidates:
            return GroundingResult(UNKNOWN, method="lexical",
                                   reason="no place matches the goal's names and numbers")
        decided = self._lexical(goal, candidates, k)
        return decided or self._embedding(cleaned, candidates, k)

    def _exact_id(self, cleaned: str) -> str | None:
        key = re.sub(r"[\s\-]+", "_", fold(cleaned).strip(" .!?"))
        return key if key in self.by_id else None

    def _lexical(self, goal: ParsedGoal, candidates: list[str], k: int) -> GroundingResult | None:
        cfg = self.config.lexical
        credits = {pid: self.lexical.credits(pid, goal) for pid in candidates}
        ranked = _ranked({pid: share(c) for pid, c in credits.items()})
        top_id, top = ranked[0]
        if top < cfg.min_score:
            return None
        # The lead is measured on the words that tell the candidates apart: a word
        # every candidate explains equally ("charging dock" among the docks) says
        # nothing about which one is meant (same order, only the scale changes).
        shared = frozenset(i for i, (_, s) in enumerate(credits[top_id])
                           if s > 0 and len(credits) > 1
                           and all(c[i][1] == s for c in credits.values()))
        margin = _margin(_ranked({pid: share(c, shared) for pid, c in credits.items()}))
        shown = [(pid, round(s, 4)) for pid, s in ranked[:k] if s > 0]
        if margin < cfg.min_margin:
            tied = [pid for pid, s in ranked if top - s < cfg.min_margin]
            return GroundingResult(AMBIGUOUS, None, top, margin, shown, "lexical",
                                   f"goal fits {', '.join(tied)} equally well")
        return GroundingResult(OK, top_id, top, margin, shown, "lexical", "word/number match")

    def _embedding(self, cleaned: str, candidates: list[str], k: int) -> GroundingResult:
        cfg = self.config.embedding
        query = self.embedder.embed(cleaned)
        sims = self.vectors[[self.row[pid] for pid in candidates]] @ query
        ranked = _ranked({pid: float(s) for pid, s in zip(candidates, np.asarray(sims), strict=True)})
        top_id, top = ranked[0]
        margin = _margin(ranked)
        shown = [(pid, round(s, 4)) for pid, s in ranked[:k]]
        if top < cfg.min_score:
            return GroundingResult(UNKNOWN, None, top, margin, shown, "embedding",
                                   f"best similarity {top:.2f} < {cfg.min_score}")
        if margin < cfg.min_margin:
            return GroundingResult(AMBIGUOUS, None, top, margin, shown, "embedding",
                                   f"margin {margin:.2f} < {cfg.min_margin}")
        return GroundingResult(OK, top_id, top, margin, shown, "embedding", "semantic match")
