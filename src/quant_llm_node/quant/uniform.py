"""Uniform (integer grid) weight quantization: absmax (symmetric) and zero-point (asymmetric).

Weights are 2-D ``W`` of shape (out_features, in_features), used as ``y = W @ x``.
Scale granularity:

* ``"tensor"``  one scale for the whole matrix,
* ``"channel"`` one scale per output row,
* ``"group"``   one scale per ``group_size`` consecutive input columns of each row.

Absmax: ``s = max|w| / (2^(b-1) - 1)``, ``q = clip(round(w / s), -qmax, qmax)``, ``w' = s q``.
Zero-point: the range ``[min(w, 0), max(w, 0)]`` is mapped to ``0 .. 2^b - 1``,
``z = round(-lo / s)``, ``q = clip(round(w / s) + z, 0, 2^b - 1)``, ``w' = s (q - z)``.
Scales are stored as float16 (rounded up to it before use); a zero point takes ``b`` bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMES = ("absmax", "zeropoint")
GRANULARITIES = ("tensor", "channel", "group")
SCALE_BITS = 16


def _to_fp16(s: np.ndarray) -> np.ndarray:
    """Round scales up to the next float16 (as stored), so the grid still covers the range;
    a zero or underflowed scale becomes 1."""
    s = np.asarray(s, dtype=np.float32)
    s16 = s.astype(np.float16)
    s16 = np.where(s16.astype(np.float32) < s, np.nextafter(s16, np.float16(np.inf)), s16)
    s16 = s16.astype(np.float32)
    return np.where(s16 > 0, s16, np.float32(1.0))


def split_groups(w: np.ndarray, granularity: str, group_size: int = 128) -> np.ndarray:
    """View a 2-D matrix as (n_groups, group_len) rows sharing one scale each."""
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight matrix, got shape {w.shape}")
    if granularity == "tensor":
        return w.reshape(1, -1)
    if granularity == "channel":
        return w
    if granularity == "group":
        if group_size <= 0 or w.shape[1] % group_size != 0:
            raise ValueError(f"in_features {w.shape[1]} is not a multiple of group_size {group_size}")
        return w.reshape(-1, group_size)
    raise ValueError(f"unknown granularity {granularity!r}; expected one of {GRANULARITIES}")


def compute_params(g: np.ndarray, bits: int, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point (float arrays of shape (n, 1)) for rows ``g`` of shape (n, k)."""
    g = np.asarray(g, dtype=np.float32)
    if scheme == "absmax":
        qmax = 2 ** (bits - 1) - 1
        scale = _to_fp16(np.max(np.abs(g), axis=1, keepdims=True) / qmax)
        return scale, np.zeros_like(scale)
    if scheme == "zeropoint":
        levels = 2**bits - 1
        lo = np.minimum(np.min(g, axis=1, keepdims=True), 0)
        hi = np.maximum(np.max(g, axis=1, keepdims=True), 0)
        scale = _to_fp16((hi - lo) / levels)
        zero = np.clip(np.round(-lo / scale), 0, levels)
        return scale, zero.astype(np.float32)
    raise ValueError(f"unknown scheme {scheme!r}; expected one of {SCHEMES}")


def quantize_with_params(g: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int, scheme: str) -> np.ndarray:
    """Integer codes of ``g`` (float32 array of the same shape) for given scale / zero point."""
    g = np.asarray(g, dtype=np.float32)
    if scheme == "absmax":
        qmax = 2 ** (bits - 1) - 1
        return np.clip(np.round(g / scale), -qmax, qmax)
    return np.clip(np.round(g / scale) + zero, 0, 2**bits - 1)


def dequantize_codes(q: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    """Map integer codes back to values: ``scale * (q - zero)``."""
    return (scale * (q - zero)).astype(np.float32)


def fake_quant_rows(g: np.ndarray, bits: int, scheme: str) -> np.ndarray:
    """Quantize-dequantize each row of ``g`` with its own scale (round to nearest)."""
    scale, zero = compute_params(g, bits, scheme)
    return dequantize_codes(quantize_with_params(g, scale, zero, bits, scheme), scale, zero)


@dataclass
class UniformQuant:
    """A quantized matrix: integer codes plus per-group scales and zero points."""

    codes: np.ndarray  # (n_groups, group_len) integer-valued float32
    scale: np.ndarray  # (n_groups, 1)
    zero: np.ndarray  # (n_groups, 1)
    shape: tuple[int, int]
    bits: int
    scheme: str
    granularity: str

    def dequantize(self) -> np.ndarray:
        """Reconstructed float32 matrix of the original shape."""
        return dequantize_codes(self.codes, self.scale, self.zero).reshape(self.shape)

    def bits_per_weight(self) -> float:
        """Storage cost per weight, counting fp16 scales and b-bit zero points."""
        return bits_per_weight(self.bits, self.scheme, self.granularity, self.shape, self.codes.shape[1])


def quantize(w: np.ndarray, bits: int = 8, scheme: str = "absmax", granularity: str = "channel", group_size: int = 128) -> UniformQuant:
    """Round-to-nearest uniform quantization of a 2-D weight matrix."""
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in 2..16, got {bits}")
    w = np.asarray(w, dtype=np.float32)
    g = split_groups(w, granularity, group_size)
    scale, zero = compute_params(g, bits, scheme)
    codes = quantize_with_params(g, scale, zero, bits, scheme)
    return UniformQuant(codes, scale, zero, (w.shape[0], w.shape[1]), bits, scheme, granularity)


def fake_quant(w: np.ndarray, bits: int = 8, scheme: str = "absmax", granularity: str = "channel", group_size: int = 128) -> np.ndarray:
    """Quantize then dequantize ``w``; returns a float32 matrix of the same shape."""
    return quantize(w, bits, scheme, granularity, group_size).dequantize()


def bits_per_weight(bits: int, scheme: str, granularity: str, shape: tuple[int, int], group_size: int = 128) -> float:
    """Bits per weight including one fp16 scale (and a b-bit zero point) per group."""
    n = shape[0] * shape[1]
    groups = {"tensor": 1, "channel": shape[0], "group": n // group_size}[granularity]
    per_group = SCALE_BITS + (bits if scheme == "zeropoint" else 0)
    return bits + groups * per_group / n
