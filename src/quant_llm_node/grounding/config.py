"""Typed grounding settings, loaded from the ``grounding:`` key of a YAML file."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml


@dataclass(frozen=True)
class LexicalConfig:
    """Word/number matching: weights and the decision thresholds."""

    min_score: float = 0.6
    min_margin: float = 0.2
    description_weight: float = 0.5
    modifier_weight: float = 0.5
    number_weight: float = 1.5
    unknown_word_weight: float = 1.0
    relation_words: tuple[str, ...] = ("near", "by", "beside", "next", "close",
                                       "behind", "opposite", "across", "past", "with",
                                       "nearest", "closest", "nearby", "alongside", "facing")
    stopwords: tuple[str, ...] = (
        "the", "a", "an", "to", "at", "of", "me", "my", "i", "we", "us", "please", "go", "take",
        "get", "drive", "head", "move", "navigate", "bring", "then", "and", "one", "that", "this",
        "is", "are", "be", "in", "on", "where", "there", "which", "place", "spot", "location",
        "want", "need", "you", "could", "now")


@dataclass(frozen=True)
class EmbeddingConfig:
    """Cosine thresholds of the embedding stage."""

    min_score: float = 0.55
    min_margin: float = 0.05


@dataclass(frozen=True)
class EmbedderSettings:
    """Which model file and providers to run (path None: the recipe's cache)."""

    path: str | None = None
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 1


@dataclass(frozen=True)
class GroundingSettings:
    """All grounding settings."""

    top_k: int = 3
    max_chars: int = 512
    lexical: LexicalConfig = field(default_factory=LexicalConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    model: EmbedderSettings = field(default_factory=EmbedderSettings)

    @classmethod
    def from_dict(cls, data: dict | None) -> "GroundingSettings":
        data = dict(data or {})
        sub = {"lexical": LexicalConfig, "embedding": EmbeddingConfig, "model": EmbedderSettings}
        kwargs = {}
        for key, value in data.items():
            if key in sub:
                kwargs[key] = _build(sub[key], value, key)
            elif key in ("top_k", "max_chars"):
                kwargs[key] = int(value)
            else:
                raise ValueError(f"grounding: unknown key {key!r}")
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "GroundingSettings":
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        return cls.from_dict(data.get("grounding", data))

    def validate(self) -> None:
        if self.top_k < 1 or self.max_chars < 1:
            raise ValueError("grounding.top_k and grounding.max_chars must be >= 1")
        for name in ("min_score", "min_margin", "description_weight", "modifier_weight"):
            if not 0.0 <= getattr(self.lexical, name) <= 1.0:
                raise ValueError(f"grounding.lexical.{name} must be in [0, 1]")
        if self.lexical.number_weight <= 0 or self.lexical.unknown_word_weight <= 0:
            raise ValueError("grounding.lexical weights must be > 0")
        if not -1.0 <= self.embedding.min_score <= 1.0 or not 0.0 <= self.embedding.min_margin <= 2.0:
            raise ValueError("grounding.embedding thresholds out of range")
        if self.model.intra_op_threads < 1 or not self.model.providers:
            raise ValueError("grounding.model: need >= 1 thread and >= 1 provider")


def _build(kind, value, where: str):
    value = dict(value or {})
    names = {f.name for f in fields(kind)}
    unknown = set(value) - names
    if unknown:
        raise ValueError(f"grounding.{where}: unknown keys {sorted(unknown)}")
    for key, item in value.items():
        if isinstance(item, list):
            if not all(isinstance(x, str) for x in item):
                raise ValueError(f"grounding.{where}.{key}: list items must be strings "
                                 "(quote YAML words such as 'on'/'no')")
            value[key] = tuple(item)
        elif key != "path" and isinstance(item, (int, float)) and not isinstance(item, bool):
            value[key] = type(getattr(kind(), key))(item)
    return kind(**value)
