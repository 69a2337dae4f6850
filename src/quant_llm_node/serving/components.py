"""Optional parts plugged into the core service: device profile, memory budget, grounding."""
from __future__ import annotations

import copy
from typing import Callable

from quant_llm_node.config import Config, EngineConfig
from quant_llm_node.deploy import (
    BudgetVerdict, DeviceProfile, available_memory_bytes, check_budget, check_profile_memory,
    estimate_memory, load_profile)
from quant_llm_node.deploy.profiles import ENGINE_KEYS
from quant_llm_node.engine.gguf_file import GGUFInfo
from quant_llm_node.grounding import open_place_index
from quant_llm_node.serving.service import config_path

MemoryCheck = Callable[[GGUFInfo], BudgetVerdict]


def apply_profile(cfg: Config) -> tuple[Config, DeviceProfile | None]:
    """The profile named in ``node.device_profile`` supplies engine settings; a parameter set
    to a value other than its default wins over the profile. Raises ProfileError."""
    if not cfg.node.device_profile:
        return cfg, None
    profile = load_profile(cfg.node.device_profile)
    cfg = copy.deepcopy(cfg)
    defaults = EngineConfig()
    for key in ENGINE_KEYS:
        if getattr(cfg.engine, key) == getattr(defaults, key):
            setattr(cfg.engine, key, getattr(profile, key))
    if not cfg.engine.memory_bandwidth_gbps:
        cfg.engine.memory_bandwidth_gbps = profile.memory_bandwidth_gbps
    effective = profile.replace(**{k: getattr(cfg.engine, k) for k in ENGINE_KEYS})
    return cfg, effective


def memory_check(cfg: Config, profile: DeviceProfile | None) -> MemoryCheck:
    """Estimate weights + KV + buffers against the profile's budget and the free memory
    (against free memory alone when no profile is set)."""
    def check(info: GGUFInfo) -> BudgetVerdict:
        if profile is not None:
            return check_profile_memory(info, profile)
        e = cfg.engine
        estimate = estimate_memory(info, n_ctx=e.n_ctx, kv_cache_type=e.kv_cache_type,
                                   n_batch=e.n_batch, flash_attn=e.flash_attn)
        free = available_memory_bytes()
        return check_budget(estimate, free or estimate.total_bytes, free)
    return check


def grounder_factory(cfg: Config, places):
    """The goal grounder: INT8 ONNX Runtime embedder + place index (no downloads)."""
    return open_place_index(config_path(cfg.grounding.places_file),
                            config_path(cfg.grounding.settings_file))
