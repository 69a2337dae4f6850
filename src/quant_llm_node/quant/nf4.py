"""NF4 (4-bit NormalFloat, QLoRA) with the codebook derived from normal quantiles.

Construction (as in bitsandbytes' ``create_normal_map``, re-derived here): take 8 positive
quantiles of N(0, 1) at probabilities ``linspace(offset, 0.5, 9)[:-1]`` and 7 negative ones at
``linspace(offset, 0.5, 8)[:-1]``, add an exact 0, sort, and divide by the largest value, so
the 16 levels span [-1, 1] with 0 represented exactly. ``offset = 0.9677083``.
Weights are scaled per block by their absmax (fp16) and mapped to the nearest level.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

NF4_OFFSET = 0.9677083
SCALE_BITS = 16


def normal_ppf(p: float) -> float:
    """Inverse CDF of the standard normal (bisection on ``math.erf``; ~1e-15 accurate)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return 0.5 * (lo + hi)


@lru_cache(maxsize=None)
def _codebook(offset: float) -> tuple[float, ...]:
    def linspace(a: float, b: float, n: int) -> list[float]:
        return [a + (b - a) * i / (n - 1) for i in range(n)]

    pos = [normal_ppf(p) for p in linspace(offset, 0.5, 9)[:-1]]
    neg = [-normal_ppf(p) for p in linspace(offset, 0.5, 8)[:-1]]
    values = sorted(pos + [0.0] + neg)
    top = max(abs(v) for v in values)
    return tuple(v / top for v in values)


def nf4_codebook(offset: float = NF4_OFFSET) -> np.ndarray:
    """The 16 NF4 levels in ascending order (float64), derived from normal quantiles."""
    return np.array(_codebook(float(offset)), dtype=np.float64)


def quantize_nf4(w: np.ndarray, block_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Return (codes uint8 of shape (n_blocks, block_size), fp16-rounded absmax (n_blocks, 1))."""
    w = np.asarray(w, dtype=np.float32)
    if w.size % block_size != 0:
        raise ValueError(f"size {w.size} is not a multiple of block_size {block_size}")
    b = w.reshape(-1, block_size)
    absmax = np.max(np.abs(b), axis=1, keepdims=True).astype(np.float16).astype(np.float32)
    absmax = np.where(absmax > 0, absmax, np.float32(1.0))
    cb = nf4_codebook().astype(np.float32)
    mids = (cb[1:] + cb[:-1]) / 2  # nearest level via the midpoints between levels
    codes = np.searchsorted(mids, np.clip(b / absmax, -1, 1)).astype(np.uint8)
    return codes, absmax


def dequantize_nf4(codes: np.ndarray, absmax: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Map NF4 codes and block absmax back to a float32 array of ``shape``."""
    cb = nf4_codebook().astype(np.float32)
    return (cb[codes] * absmax).reshape(shape).astype(np.float32)


def fake_quant_nf4(w: np.ndarray, block_size: int = 64) -> np.ndarray:
    """Quantize then dequantize ``w`` with NF4 and per-block absmax scales."""
    w = np.asarray(w, dtype=np.float32)
    codes, absmax = quantize_nf4(w, block_size)
    return dequantize_nf4(codes, absmax, w.shape)


def nf4_bits_per_weight(block_size: int = 64) -> float:
    """4 bits per weight plus one fp16 absmax per block."""
    return 4 + SCALE_BITS / block_size
