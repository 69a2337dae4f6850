"""AWQ: activation-aware per-input-channel scaling before round-to-nearest.

Input channels with large activations matter most for the layer output. AWQ multiplies
column ``j`` of ``W`` by ``s_j`` before quantizing and divides it back afterwards
(in deployment ``1/s`` is folded into the preceding norm or layer, so it costs no bits):
``W' = Q(W diag(s)) diag(s)^-1``. The scales are ``s = mean|x|^alpha`` (normalized so that
``sqrt(max s * min s) = 1``), with ``alpha`` picked from a grid on ``[0, 1]`` by the smallest
output error ``||W X - W' X||`` on the calibration activations. ``alpha = 0`` is plain
round-to-nearest, so the chosen result is never worse than it on the calibration data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import uniform


@dataclass
class AWQResult:
    """Dequantized weights, the chosen per-input-channel scales and the search trace."""

    weight: np.ndarray  # float32 (out, in), dequantized and unscaled
    scales: np.ndarray  # (in,)
    alpha: float
    errors: dict[float, float] = field(default_factory=dict)  # alpha -> output MSE


def _channel_magnitude(x: np.ndarray) -> np.ndarray:
    return np.mean(np.abs(np.asarray(x, dtype=np.float32)), axis=1, dtype=np.float64)


def _scales_from_magnitude(mag: np.ndarray, alpha: float) -> np.ndarray:
    s = np.maximum(mag, 1e-4) ** alpha
    return s / np.sqrt(s.max() * s.min())


def awq_quantize(
    w: np.ndarray,
    x: np.ndarray,
    bits: int = 4,
    scheme: str = "zeropoint",
    group_size: int = 128,
    n_grid: int = 20,
    quantizer: Callable[[np.ndarray], np.ndarray] | None = None,
) -> AWQResult:
    """Search ``alpha`` in ``{0, 1/n_grid, ..., (n_grid-1)/n_grid}`` and quantize ``w`` (out, in).

    ``x`` is (in, n). ``quantizer`` (fake-quant of a matrix) defaults to group-wise uniform
    quantization with ``bits``/``scheme``/``group_size``. The output MSE of a candidate
    with weight error ``D`` is ``sum((D G) * D) / (out * n)`` with ``G = X X^T``, which is
    cheaper than forming ``D X`` when there are more samples than input features.
    """
    w = np.asarray(w, dtype=np.float32)
    x32 = np.asarray(x, dtype=np.float32)
    if x32.shape[0] != w.shape[1]:
        raise ValueError(f"activations have {x32.shape[0]} features, weight expects {w.shape[1]}")
    if quantizer is None:
        def quantizer(m: np.ndarray) -> np.ndarray:
            return uniform.fake_quant(m, bits, scheme, "group", group_size)

    n = x32.shape[1]
    gram = x32 @ x32.T if n > x32.shape[0] else None

    def output_mse(d: np.ndarray) -> float:
        if gram is not None:
            return float(np.sum((d @ gram) * d, dtype=np.float64)) / (d.shape[0] * n)
        return float(np.mean(np.square(d @ x32), dtype=np.float64))

    mag = _channel_magnitude(x32)
    best: tuple[float, float, np.ndarray, np.ndarray] | None = None
    errors: dict[float, float] = {}
    for k in range(n_grid):
        alpha = k / n_grid
        s = _scales_from_magnitude(mag, alpha).astype(np.float32)
        w_hat = quantizer(w * s) / s
        err = output_mse(w - w_hat)
        errors[alpha] = err
        if best is None or err < best[0]:
            best = (err, alpha, w_hat, s)
    assert best is not None
    return AWQResult(best[2].astype(np.float32), best[3], best[1], errors)
