"""The model manifest: which GGUF files the project knows and where they come from."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from quant_llm_node.paths import models_dir


@dataclass(frozen=True)
class ModelEntry:
    """One known model file."""

    name: str
    file: str
    packages: tuple[str, ...]
    bytes: int
    sha256: str
    license: str
    chat_template: bool
    description: str = ""

    def path(self, directory: Path | None = None) -> Path:
        return (directory or models_dir()) / self.file


@dataclass(frozen=True)
class Manifest:
    default: str                    # the decision model of config/robot.yaml
    models: dict[str, ModelEntry]
    screen: str = ""                # the hazard screen's model of config/robot.yaml

    @property
    def defaults(self) -> list[str]:
        """What a default install assembles: the decision model and the screen's."""
        return list(dict.fromkeys(n for n in (self.default, self.screen) if n))

    def get(self, name: str | None = None) -> ModelEntry:
        key = name or self.default
        if key not in self.models:
            known = ", ".join(sorted(self.models))
            raise KeyError(f"unknown model '{key}' (known: {known})")
        return self.models[key]


def load_manifest(path: Path | None = None) -> Manifest:
    """Read models/manifest.yaml (or ``path``)."""
    path = path or models_dir() / "manifest.yaml"
    doc = yaml.safe_load(Path(path).read_text())
    models = {
        name: ModelEntry(
            name=name, file=m["file"], packages=tuple(m["packages"]), bytes=int(m["bytes"]),
            sha256=m["sha256"], license=m.get("license", ""),
            chat_template=bool(m.get("chat_template", False)),
            description=m.get("description", ""))
        for name, m in doc["models"].items()
    }
    return Manifest(default=doc["default"], models=models, screen=doc.get("screen", ""))


def resolve_model_path(model: str, directory: Path | None = None) -> tuple[Path, str]:
    """A manifest name or a file path -> (path, expected sha256 or ''). A path to a manifest
    model's own file gets that model's sha256."""
    candidate = Path(model).expanduser()
    if candidate.suffix == ".gguf" or "/" in model:
        return candidate, _manifest_sha_of(candidate, directory)
    entry = load_manifest().get(model)
    return entry.path(directory), entry.sha256


def _manifest_sha_of(path: Path, directory: Path | None) -> str:
    try:
        manifest = load_manifest()
        real = path.resolve()
    except (OSError, KeyError, ValueError, yaml.YAMLError):
        return ""
    for entry in manifest.models.values():
        try:
            if entry.path(directory).resolve() == real:
                return entry.sha256
        except OSError:
            continue
    return ""


def unvouched_reason(model: str, sha256: str = "") -> str:
    """Why ``model`` (a manifest name or a .gguf path) is not a known file: "" when the manifest
    names it, or it is a path whose sha256 the manifest or ``sha256`` gives (so the checksum at
    load proves it is the file meant)."""
    try:
        _, manifest_sha = resolve_model_path(model)
    except KeyError as exc:
        return str(exc).strip("'\"")
    if manifest_sha or sha256:
        return ""
    return (f"'{model}' is neither a manifest model nor a path with a known sha256: set "
            "model.sha256 with it, or allow unlisted models at launch (model.allow_unlisted)")
