"""The KV-cache element types the node supports: one table for config, profiles, the memory
budget and the engine."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KvCacheType:
    """One llama.cpp KV-cache element type."""

    ggml_type: int            # ggml_type enum value (ggml.h) for llama.cpp's type_k / type_v
    bytes_per_element: float  # f16 = 2; q8_0 = 34-byte blocks of 32; q4_0 = 18-byte blocks of 32
    smaller: str = ""         # the next smaller type, for memory-budget advice


KV_CACHE_TYPES = {
    "f16": KvCacheType(1, 2.0, "q8_0"),
    "q8_0": KvCacheType(8, 34 / 32, "q4_0"),
    "q4_0": KvCacheType(2, 18 / 32),
}
