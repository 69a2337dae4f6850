"""Memory-bandwidth roofline for decoding: every generated token reads all weights once.

max decode tok/s = bandwidth / bytes read per token; efficiency = achieved / max.
"""
from __future__ import annotations

import time

import numpy as np

_PROBE_BYTES = 256 * 2**20
_PROBE_REPEATS = 5


def bytes_per_token(weight_bytes: int, kv_bytes_per_token: int = 0, n_past: int = 0) -> int:
    """Weights plus the KV cache read for ``n_past`` earlier tokens."""
    return weight_bytes + kv_bytes_per_token * n_past


def roofline_tps(bytes_per_tok: int, bandwidth_gbps: float) -> float:
    return bandwidth_gbps * 1e9 / bytes_per_tok if bytes_per_tok > 0 else float("nan")


def efficiency(achieved_tps: float, bytes_per_tok: int, bandwidth_gbps: float) -> float:
    """Achieved decode tok/s x bytes per token / bandwidth."""
    return achieved_tps * bytes_per_tok / (bandwidth_gbps * 1e9) if bandwidth_gbps > 0 else float("nan")


def measure_read_bandwidth_gbps(nbytes: int = _PROBE_BYTES, repeats: int = _PROBE_REPEATS) -> float:
    """Best-of-N streaming read rate of one numpy pass (a single-thread lower bound)."""
    buf = np.ones(nbytes // 8, dtype=np.float64)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        buf.sum()
        best = min(best, time.perf_counter() - t0)
    return nbytes / best / 1e9
