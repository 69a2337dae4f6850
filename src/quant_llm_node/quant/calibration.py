"""Calibration activations X (in_features, n_samples) for a linear layer of a GGUF model.

Real source: for ``blk.N.attn_{q,k,v}.weight`` the layer input is
``rmsnorm(h) * blk.N.attn_norm.weight``; with ``h`` = token embedding rows of random token
ids this is exact for layer 0 (a proxy for deeper layers, whose residual stream also holds
the earlier blocks' outputs). ``ffn_gate``/``ffn_up`` use ``ffn_norm`` the same way and
``ffn_down`` gets ``silu(W_gate x) * (W_up x)`` of that; both skip attention, so they are
proxies. Anything else falls back to a seeded Gaussian with a few large-magnitude channels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import gguf_tensors


@dataclass
class Calibration:
    """Activations X (in_features, n) and a word on where they came from."""

    x: np.ndarray
    source: str  # "real", "proxy" or "synthetic"
    detail: str


def synthetic_activations(in_features: int, n: int, seed: int = 0, n_outliers: int = 8, outlier_gain: float = 20.0) -> np.ndarray:
    """Gaussian activations (in, n) with ``n_outliers`` channels scaled by ``outlier_gain``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((in_features, n)).astype(np.float32)
    idx = rng.choice(in_features, size=min(n_outliers, in_features), replace=False)
    x[idx] *= outlier_gain
    return x


def rmsnorm(h: np.ndarray, weight: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Row-wise RMS normalization of ``h`` (n, d) times ``weight`` (d,)."""
    h = np.asarray(h, dtype=np.float32)
    return h / np.sqrt(np.mean(h * h, axis=1, keepdims=True) + eps) * weight


def _silu(v: np.ndarray) -> np.ndarray:
    return v / (1.0 + np.exp(-v))


def model_activations(reader: Any, tensor: str, n: int, seed: int = 0) -> Calibration | None:
    """Activations feeding ``tensor`` built from the model's own embeddings and norms, or None."""
    m = re.fullmatch(r"blk\.(\d+)\.(attn_q|attn_k|attn_v|ffn_gate|ffn_up|ffn_down)\.weight", tensor)
    if m is None:
        return None
    layer, kind = int(m.group(1)), m.group(2)
    names = {t.name for t in gguf_tensors.list_tensors(reader)}
    norm_name = f"blk.{layer}.{'attn_norm' if kind.startswith('attn') else 'ffn_norm'}.weight"
    if "token_embd.weight" not in names or norm_name not in names:
        return None
    vocab = gguf_tensors.tensor_info(reader, "token_embd.weight").shape[0]
    ids = np.sort(np.random.default_rng(seed).choice(vocab, size=n, replace=False))
    emb = gguf_tensors.load_tensor(reader, "token_embd.weight", rows=ids)
    eps = float(gguf_tensors.metadata_value(reader, f"{gguf_tensors.metadata_value(reader, 'general.architecture', 'llama')}.attention.layer_norm_rms_epsilon", 1e-6))
    xin = rmsnorm(emb, gguf_tensors.load_tensor(reader, norm_name), eps)  # (n, d)
    exact = kind.startswith("attn") and layer == 0
    detail = f"rmsnorm(token_embd[{n} random ids]) * {norm_name}"
    if kind == "ffn_down":
        gate = gguf_tensors.load_tensor(reader, f"blk.{layer}.ffn_gate.weight")
        up = gguf_tensors.load_tensor(reader, f"blk.{layer}.ffn_up.weight")
        xin = _silu(xin @ gate.T) * (xin @ up.T)
        detail = f"silu(ffn_gate x) * (ffn_up x), x = {detail}"
    if not exact:
        detail += " (skips attention / earlier blocks)"
    return Calibration(np.ascontiguousarray(xin.T, dtype=np.float32), "real" if exact else "proxy", detail)
