"""Map places: the targets goals are grounded to, loaded from YAML."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml

_ID = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Place:
    """One map place: stable id, human name, description, optional aliases; ``kind`` (e.g.
    ``dock``) and ``near`` (zone ids it is next to) let the safety layer pick a dock."""

    id: str
    name: str
    description: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)
    kind: str = ""
    near: tuple[str, ...] = field(default_factory=tuple)

    def embedding_text(self) -> str:
        """Text embedded for this place: name and description."""
        return f"{self.name}: {self.description}" if self.description else self.name


def parse_places(items: Iterable[dict]) -> list[Place]:
    """Validate raw dicts into places (unique lower_snake_case ids, non-empty names)."""
    places: list[Place] = []
    seen: set[str] = set()
    for i, item in enumerate(items or []):
        if not isinstance(item, dict):
            raise ValueError(f"place #{i}: expected a mapping, got {type(item).__name__}")
        unknown = set(item) - {"id", "name", "description", "aliases", "kind", "near"}
        if unknown:
            raise ValueError(f"place #{i}: unknown keys {sorted(unknown)}")
        pid = str(item.get("id", "")).strip()
        name = str(item.get("name", "")).strip()
        if not _ID.match(pid):
            raise ValueError(f"place #{i}: id {pid!r} is not lower_snake_case")
        if pid in seen:
            raise ValueError(f"place #{i}: duplicate id {pid!r}")
        if not name:
            raise ValueError(f"place {pid!r}: empty name")
        aliases = item.get("aliases") or []
        near = item.get("near") or []
        for key, value in (("aliases", aliases), ("near", near)):
            if isinstance(value, str) or not all(isinstance(a, str) for a in value):
                raise ValueError(f"place {pid!r}: {key} must be a list of strings")
        seen.add(pid)
        places.append(Place(pid, name, str(item.get("description") or "").strip(),
                            tuple(a.strip() for a in aliases if a.strip()),
                            str(item.get("kind") or "").strip(),
                            tuple(z.strip() for z in near if z.strip())))
    return places


def load_places(path: str | Path) -> list[Place]:
    """Read ``places:`` from a YAML file (e.g. config/places.yaml)."""
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    return parse_places(data.get("places", []) if isinstance(data, dict) else data)
