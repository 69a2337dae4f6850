"""ggml Q8_0 and Q4_0 block formats in plain numpy, byte-compatible with ggml.

Both formats cut each row into blocks of 32 values and store one float16 scale ``d``
per block (little-endian) followed by the codes:

* Q8_0 (34 bytes/block, 8.5 bits/weight): ``d = amax / 127``, codes are int8
  ``round_half_away(x / d)``; value = ``d * q``.
* Q4_0 (18 bytes/block, 4.5 bits/weight): ``d = m / -8`` where ``m`` is the entry of
  largest magnitude (sign kept, first one on ties); codes ``min(15, trunc(x / d + 8.5))``;
  byte ``j`` holds code ``j`` in its low nibble and code ``j + 16`` in its high nibble;
  value = ``d * (q - 8)``.

The arithmetic is done in float32 like the C reference, so the bytes match
``gguf.quants.quantize`` exactly (the tests check it).
"""

from __future__ import annotations

import numpy as np

QK = 32
Q8_0_BLOCK_BYTES = 2 + QK
Q4_0_BLOCK_BYTES = 2 + QK // 2
Q8_0_BITS_PER_WEIGHT = Q8_0_BLOCK_BYTES * 8 / QK
Q4_0_BITS_PER_WEIGHT = Q4_0_BLOCK_BYTES * 8 / QK


def _blocks(x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] % QK != 0:
        raise ValueError(f"last dimension must be a multiple of {QK}, got shape {x.shape}")
    return x.reshape(-1, QK), x.shape


def round_half_away(v: np.ndarray) -> np.ndarray:
    """C ``roundf``: round to nearest, ties away from zero (exact in float32)."""
    a = np.abs(v)
    f = np.floor(a)
    r = f + ((a - f) >= np.float32(0.5))  # a - f is exact for float32
    return np.copysign(r, v).astype(v.dtype, copy=False)


def _inverse(d: np.ndarray) -> np.ndarray:
    out = np.zeros_like(d)
    nz = d != 0
    out[nz] = np.float32(1.0) / d[nz]
    return out


def _pack_scale(d: np.ndarray) -> np.ndarray:
    return d.astype("<f2").view(np.uint8).reshape(-1, 2)


def _unpack_scale(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw[:, :2]).view("<f2").astype(np.float32)  # (n, 1)


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """Quantize float data (last dim multiple of 32) to raw Q8_0 bytes, shape (..., n/32*34)."""
    b, shape = _blocks(x)
    d = np.max(np.abs(b), axis=1, keepdims=True) / np.float32(127)
    q = round_half_away(b * _inverse(d))
    out = np.empty((b.shape[0], Q8_0_BLOCK_BYTES), dtype=np.uint8)
    out[:, :2] = _pack_scale(d)
    out[:, 2:] = q.astype(np.int8).view(np.uint8)
    return out.reshape(*shape[:-1], shape[-1] // QK * Q8_0_BLOCK_BYTES)


def dequantize_q8_0(raw: np.ndarray) -> np.ndarray:
    """Decode raw Q8_0 bytes (..., k*34) to float32 (..., k*32)."""
    raw = np.asarray(raw, dtype=np.uint8)
    shape = raw.shape
    r = raw.reshape(-1, Q8_0_BLOCK_BYTES)
    d = _unpack_scale(r)
    q = np.ascontiguousarray(r[:, 2:]).view(np.int8).astype(np.float32)
    return (d * q).reshape(*shape[:-1], shape[-1] // Q8_0_BLOCK_BYTES * QK)


def quantize_q4_0(x: np.ndarray) -> np.ndarray:
    """Quantize float data (last dim multiple of 32) to raw Q4_0 bytes, shape (..., n/32*18)."""
    b, shape = _blocks(x)
    idx = np.argmax(np.abs(b), axis=1)[:, None]  # first index of the largest magnitude
    m = np.take_along_axis(b, idx, axis=1)
    d = m / np.float32(-8)
    v = b * _inverse(d) + np.float32(8.5)
    q = np.minimum(np.trunc(v), 15).astype(np.uint8)  # v >= 0.5 always, so trunc -> [0, 15]
    out = np.empty((b.shape[0], Q4_0_BLOCK_BYTES), dtype=np.uint8)
    out[:, :2] = _pack_scale(d)
    out[:, 2:] = q[:, : QK // 2] | (q[:, QK // 2 :] << 4)
    return out.reshape(*shape[:-1], shape[-1] // QK * Q4_0_BLOCK_BYTES)


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    """Decode raw Q4_0 bytes (..., k*18) to float32 (..., k*32)."""
    raw = np.asarray(raw, dtype=np.uint8)
    shape = raw.shape
    r = raw.reshape(-1, Q4_0_BLOCK_BYTES)
    d = _unpack_scale(r)
    packed = r[:, 2:]
    q = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.int8) - np.int8(8)
    return (d * q.astype(np.float32)).reshape(*shape[:-1], shape[-1] // Q4_0_BLOCK_BYTES * QK)


def fake_quant_q8_0(x: np.ndarray) -> np.ndarray:
    """Round trip through Q8_0 (quantize then dequantize), same shape as ``x``."""
    return dequantize_q8_0(quantize_q8_0(x))


def fake_quant_q4_0(x: np.ndarray) -> np.ndarray:
    """Round trip through Q4_0 (quantize then dequantize), same shape as ``x``."""
    return dequantize_q4_0(quantize_q4_0(x))
