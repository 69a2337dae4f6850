"""Optional parts the node plugs into the core: device profile and goal grounding."""
from __future__ import annotations

from quant_llm_node.config import Config
from quant_llm_node.grounding import open_place_index
from quant_llm_node.serving.service import config_path


def prepare_config(cfg: Config, logger) -> Config:
    """Apply the device profile named in ``node.device_profile`` (if any)."""
    return cfg


def grounder_factory(cfg: Config, places):
    """The goal grounder: INT8 ONNX Runtime embedder + place index (no downloads)."""
    return open_place_index(config_path(cfg.grounding.places_file),
                            config_path(cfg.grounding.settings_file))
