"""Error metrics for quantized weights."""

from __future__ import annotations

import numpy as np


def weight_rel_error(w: np.ndarray, w_hat: np.ndarray) -> float:
    """Relative Frobenius error ``||W - W'|| / ||W||``."""
    w = np.asarray(w, dtype=np.float64)
    return float(np.linalg.norm(w - np.asarray(w_hat, dtype=np.float64)) / np.linalg.norm(w))


def output_rel_error(w: np.ndarray, w_hat: np.ndarray, x: np.ndarray) -> float:
    """Relative layer-output error ``||W X - W' X|| / ||W X||`` for activations X (in, n).

    Products run in float32 (as ``(W - W') X``, so the small difference is not lost);
    norms are accumulated in float64.
    """
    w = np.asarray(w, dtype=np.float32)
    x = np.asarray(x, dtype=np.float32)
    diff = (w - np.asarray(w_hat, dtype=np.float32)) @ x
    ref = w @ x
    return float(np.linalg.norm(diff.astype(np.float64)) / np.linalg.norm(ref.astype(np.float64)))


def sqnr_db(w: np.ndarray, w_hat: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (``-20 log10`` of the relative error)."""
    e = weight_rel_error(w, w_hat)
    return float("inf") if e == 0 else float(-20.0 * np.log10(e))
