"""Catalog of weight quantization schemes with a common interface.

Each scheme maps a weight ``W`` (out, in) and calibration activations ``X`` (in, n) to a
dequantized ``W'`` and reports its storage cost in bits per weight (scales included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import awq, ggml_blocks, gptq, nf4, uniform


@dataclass(frozen=True)
class Scheme:
    """A named quantizer: ``apply(W, X) -> W'`` and ``bits(shape) -> bits/weight``."""

    name: str
    description: str
    apply: Callable[[np.ndarray, np.ndarray], np.ndarray]
    bits: Callable[[tuple[int, int]], float]
    uses_activations: bool = False


def _uniform(bits: int, scheme: str, gran: str, group: int) -> Scheme:
    label = {"absmax": "absmax", "zeropoint": "zp"}[scheme]
    where = {"tensor": "tensor", "channel": "channel", "group": f"g{group}"}[gran]
    return Scheme(
        f"{label}{bits}-{where}",
        f"INT{bits} {scheme}, {'per-' + gran if gran != 'group' else f'groups of {group}'}, round to nearest",
        lambda w, x: uniform.fake_quant(w, bits, scheme, gran, group),
        lambda shape: uniform.bits_per_weight(bits, scheme, gran, shape, group),
    )


def default_schemes(group_size: int = 128, nf4_block: int = 64, damp: float = 0.01, awq_grid: int = 20) -> list[Scheme]:
    """All schemes of the bench: uniform 8/4-bit x absmax/zero-point x tensor/channel/group,
    NF4, ggml Q8_0/Q4_0, GPTQ and AWQ (4-bit zero-point groups, like ``zp4-g{group}``)."""
    out = [_uniform(b, s, g, group_size) for b in (8, 4) for s in ("absmax", "zeropoint") for g in ("tensor", "channel", "group")]
    out += [
        Scheme(f"nf4-g{nf4_block}", f"NF4 codebook, absmax per {nf4_block}", lambda w, x: nf4.fake_quant_nf4(w, nf4_block), lambda shape: nf4.nf4_bits_per_weight(nf4_block)),
        Scheme("q8_0", "ggml Q8_0 (blocks of 32)", lambda w, x: ggml_blocks.fake_quant_q8_0(w), lambda shape: ggml_blocks.Q8_0_BITS_PER_WEIGHT),
        Scheme("q4_0", "ggml Q4_0 (blocks of 32)", lambda w, x: ggml_blocks.fake_quant_q4_0(w), lambda shape: ggml_blocks.Q4_0_BITS_PER_WEIGHT),
        Scheme(
            f"gptq4-g{group_size}",
            f"GPTQ, INT4 zero-point groups of {group_size}, damp {damp}",
            lambda w, x: gptq.gptq_quantize(w, x, 4, "zeropoint", group_size, 128, damp).weight,
            lambda shape: uniform.bits_per_weight(4, "zeropoint", "group", shape, group_size),
            True,
        ),
        Scheme(
            f"awq4-g{group_size}",
            f"AWQ scale search ({awq_grid} alphas), INT4 zero-point groups of {group_size}",
            lambda w, x: awq.awq_quantize(w, x, 4, "zeropoint", group_size, awq_grid).weight,
            lambda shape: uniform.bits_per_weight(4, "zeropoint", "group", shape, group_size),
            True,
        ),
    ]
    return out
