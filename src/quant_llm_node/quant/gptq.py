"""GPTQ: Hessian-aware column-by-column weight quantization with error feedback.

For a layer ``y = W x`` and calibration activations ``X`` (in_features, n_samples), the
layer-wise objective ``||W X - W' X||^2`` has Hessian ``H = 2 X X^T / n``. Columns are
quantized left to right; each column's rounding error, divided by the diagonal of the
upper Cholesky factor ``U`` of ``H^-1`` (``H^-1 = U^T U``), is fed into the not yet
quantized columns through the matching row of ``U``. Updates inside a block of columns
are applied at once ("lazy batch"), outside the block after it; the result does not
depend on the block size (up to float rounding). ``damp`` adds ``damp * mean(diag H)``
to the diagonal; inputs that never fire (``H_ii = 0``) get their weights set to zero.
The grid is the same uniform quantizer as round-to-nearest (``uniform.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import uniform


@dataclass
class GPTQResult:
    """Dequantized weights plus the bookkeeping of a GPTQ run."""

    weight: np.ndarray  # float32 (out, in), dequantized
    scale: np.ndarray  # (out, n_groups)
    zero: np.ndarray  # (out, n_groups)
    loss: float  # sum over columns of err^2 / d^2 (GPTQ's own proxy loss)
    dead_inputs: int


def hessian(x: np.ndarray) -> np.ndarray:
    """``2 X X^T / n`` (float64) for activations ``X`` of shape (in_features, n_samples)."""
    x = np.asarray(x, dtype=np.float32)
    return (2.0 / x.shape[1]) * (x @ x.T).astype(np.float64)


def _upper_triangular_inverse(v: np.ndarray, leaf: int = 256) -> np.ndarray:
    """Inverse of an upper-triangular matrix by block recursion (matmul-bound)."""
    n = v.shape[0]
    if n <= leaf:
        return np.triu(np.linalg.inv(v))
    k = n // 2
    a_inv = _upper_triangular_inverse(v[:k, :k], leaf)
    c_inv = _upper_triangular_inverse(v[k:, k:], leaf)
    out = np.zeros_like(v)
    out[:k, :k] = a_inv
    out[k:, k:] = c_inv
    out[:k, k:] = -(a_inv @ v[:k, k:]) @ c_inv
    return out


def inverse_hessian_cholesky(h: np.ndarray, damp: float = 0.01) -> np.ndarray:
    """Upper-triangular ``U`` with ``(H + damp*mean(diag H) I)^-1 = U^T U``.

    With ``J`` the order-reversing permutation, the lower Cholesky factor ``R`` of
    ``J H J`` gives ``H = V V^T`` with ``V = J R J`` upper-triangular, hence
    ``H^-1 = V^-T V^-1`` and ``U = V^-1``: no explicit inverse of ``H`` is formed.
    """
    h = np.array(h, dtype=np.float64)
    n = h.shape[0]
    h[np.diag_indices(n)] += damp * float(np.mean(np.diag(h)))
    r = np.linalg.cholesky(h[::-1, ::-1])
    v = np.ascontiguousarray(r[::-1, ::-1])
    return _upper_triangular_inverse(v)


def gptq_quantize(
    w: np.ndarray,
    x: np.ndarray,
    bits: int = 4,
    scheme: str = "zeropoint",
    group_size: int | None = 128,
    block_size: int = 128,
    damp: float = 0.01,
) -> GPTQResult:
    """Quantize ``w`` (out, in) with GPTQ on calibration activations ``x`` (in, n).

    ``group_size=None`` uses one scale per output row; otherwise one per row and group of
    ``group_size`` input columns, computed from the error-updated weights when the group
    starts (as in the GPTQ paper's grouped variant).
    """
    w = np.array(w, dtype=np.float64)
    rows, cols = w.shape
    if x.shape[0] != cols:
        raise ValueError(f"activations have {x.shape[0]} features, weight expects {cols}")
    if group_size is not None and cols % group_size != 0:
        raise ValueError(f"in_features {cols} is not a multiple of group_size {group_size}")
    h = hessian(x)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    u = inverse_hessian_cholesky(h, damp)

    n_groups = 1 if group_size is None else cols // group_size
    scales = np.zeros((rows, n_groups), dtype=np.float32)
    zeros = np.zeros((rows, n_groups), dtype=np.float32)
    if group_size is None:
        s, z = uniform.compute_params(w, bits, scheme)
        scales[:, 0], zeros[:, 0] = s[:, 0], z[:, 0]

    q_all = np.zeros_like(w)
    loss = 0.0
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        w1 = w[:, i1:i2].copy()
        err1 = np.zeros_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if group_size is None:
                s, z = scales[:, :1], zeros[:, :1]
            else:
                gi = col // group_size
                if col % group_size == 0:
                    # current (error-updated) weights of the group: part in this block, rest after it
                    span = np.concatenate([w1[:, i:], w[:, i2:]], axis=1)[:, :group_size]
                    s, z = uniform.compute_params(span, bits, scheme)
                    scales[:, gi], zeros[:, gi] = s[:, 0], z[:, 0]
                s, z = scales[:, gi : gi + 1], zeros[:, gi : gi + 1]
            wc = w1[:, i : i + 1]
            qc = uniform.dequantize_codes(uniform.quantize_with_params(wc, s, z, bits, scheme), s, z).astype(np.float64)
            q_all[:, col] = qc[:, 0]
            d = u1[i, i]
            e = (wc - qc) / d
            loss += float(np.sum(e**2)) / 2
            w1[:, i:] -= e @ u1[i : i + 1, i:]
            err1[:, i] = e[:, 0]
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return GPTQResult(q_all.astype(np.float32), scales, zeros, loss, int(dead.sum()))
