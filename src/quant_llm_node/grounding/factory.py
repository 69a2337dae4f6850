"""One call for the node: config files -> ready PlaceIndex (no downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .config import GroundingSettings
from .embedder import Embedder
from .index import PlaceIndex
from .places import Place
from .recipe import locate


def open_place_index(places: Sequence[Place], config_path: str | Path | None = None,
                     cache_dir: str | Path | None = None) -> PlaceIndex:
    """Load the settings, open the INT8 embedder, embed the given places once.

    The model is ``grounding.model.path`` if set, else the build cache; a
    missing model raises FileNotFoundError naming ``quant-llm-embedder build``.
    """
    config = GroundingSettings.from_yaml(config_path) if config_path else GroundingSettings()
    model = Path(config.model.path).expanduser() if config.model.path else locate(cache_dir).int8
    if not model.is_file():
        raise FileNotFoundError(f"{model} missing: run `quant-llm-embedder build`")
    embedder = Embedder(model, providers=list(config.model.providers),
                        intra_op_threads=config.model.intra_op_threads)
    return PlaceIndex(places, embedder, config)
