"""Memory the node will need for a model and settings, checked before the model loads.

``estimate_memory`` adds up weights (from the GGUF tensor table), the KV cache,
llama.cpp's compute buffer and a runtime overhead; ``check_budget`` compares the
total with the profile's budget and with the memory actually free, and says what
to change when it does not fit. On Jetson the GPU allocates from the same RAM, so
``MemAvailable`` is the limit for offloaded layers too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quant_llm_node.engine.gguf_file import GGUFInfo
from quant_llm_node.engine.kv_types import KV_CACHE_TYPES

if TYPE_CHECKING:  # import cycle free at run time
    from quant_llm_node.deploy.profiles import DeviceProfile

MIB = 1 << 20
F32_BYTES = 4
F16_BYTES = 2
# llama.cpp rounds the context up to a multiple of 256 cells.
CTX_PAD = 256
# llama-cpp-python's default prompt batch (n_ubatch = min(n_batch, 512)).
DEFAULT_N_BATCH = 512
MAX_UBATCH = 512
# prompt batch suggested when the compute buffer is what does not fit.
LEAN_N_BATCH = 128
# Runtime overhead when no profile gives one: the x86_cpu profile's runtime_overhead_mb.
DEFAULT_OVERHEAD_MB = 200
# Compute-buffer model, fitted to llama.cpp's reported CPU compute buffer (llama-cpp-python
# 0.3.36, Qwen2.5 0.5B, n_ctx 2048-32768, n_batch 128-512, flash attention on/off: within 1%).
# The graph allocator reuses memory, so the buffer is the largest of three stages, each for
# n_ubatch tokens: output (logits + 2 hidden states), attention (KQ scores per head + the
# mask + 5 hidden states + K and V), feed-forward (3 n_ff-wide tensors + 2 hidden states).
OUTPUT_HIDDEN = 2
ATTN_HIDDEN = 5
FFN_WIDE = 3
FFN_HIDDEN = 2
MEMINFO = "/proc/meminfo"


class BudgetError(ValueError):
    """Bad arguments to the memory estimate (unknown KV type, non-positive sizes)."""


@dataclass(frozen=True)
class ModelShape:
    """The GGUF hyper-parameters that size the KV cache and compute buffer."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    n_vocab: int
    weight_bytes: int
    file_type: str
    bits_per_weight: float

    @classmethod
    def from_gguf(cls, info: GGUFInfo) -> "ModelShape":
        n_layer = _arch_int(info, "block_count")
        n_embd = _arch_int(info, "embedding_length")
        n_head = _per_layer_max(info.arch_value("attention.head_count"), "head_count", info)
        n_head_kv = _per_layer_max(info.arch_value("attention.head_count_kv", n_head),
                                   "head_count_kv", info)
        head_dim = n_embd // n_head
        head_dim_k = int(info.arch_value("attention.key_length", head_dim))
        head_dim_v = int(info.arch_value("attention.value_length", head_dim_k))
        n_ff = _per_layer_max(info.arch_value("feed_forward_length", 0), "feed_forward_length",
                              info, allow_zero=True)
        return cls(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv,
                   head_dim_k=head_dim_k, head_dim_v=head_dim_v, n_ff=n_ff,
                   n_vocab=_vocab_size(info), weight_bytes=info.tensor_bytes,
                   file_type=info.file_type, bits_per_weight=info.bits_per_weight)


def _arch_int(info: GGUFInfo, key: str) -> int:
    value = info.arch_value(key)
    if value is None:
        raise BudgetError(f"{info.path}: GGUF metadata lacks {info.architecture}.{key}")
    return int(value)


def _per_layer_max(value: Any, key: str, info: GGUFInfo, allow_zero: bool = False) -> int:
    """Some architectures store per-layer arrays; size for the largest layer."""
    if isinstance(value, (list, tuple)):
        value = max(value) if value else 0
    if value is None or (int(value) <= 0 and not allow_zero):
        raise BudgetError(f"{info.path}: GGUF metadata lacks a usable {info.architecture}.{key}")
    return int(value)


def _vocab_size(info: GGUFInfo) -> int:
    explicit = info.arch_value("vocab_size")
    if explicit:
        return int(explicit)
    tokens = info.metadata.get("tokenizer.ggml.tokens")
    if tokens is not None:
        return len(tokens) if isinstance(tokens, list) else int(tokens)
    embd = next((t for t in info.tensors if t.name == "token_embd.weight"), None)
    if embd is not None and len(embd.shape) == 2:
        return int(embd.shape[1])
    raise BudgetError(f"{info.path}: cannot tell the vocabulary size from the GGUF header")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes needed by the node for one model and set of engine settings."""

    model_bytes: int
    kv_bytes: int
    compute_bytes: int
    overhead_bytes: int
    total_bytes: int
    n_ctx: int = 0
    kv_cache_type: str = "f16"
    n_batch: int = DEFAULT_N_BATCH
    n_seq: int = 1
    flash_attn: bool = False
    shape: ModelShape | None = field(default=None, compare=False)

    def mb(self, attr: str = "total_bytes") -> float:
        return getattr(self, attr) / MIB

    def summary(self) -> dict[str, Any]:
        """MiB per component, for logs and diagnostics."""
        return {
            "model_mb": round(self.mb("model_bytes"), 1),
            "kv_mb": round(self.mb("kv_bytes"), 1),
            "compute_mb": round(self.mb("compute_bytes"), 1),
            "overhead_mb": round(self.mb("overhead_bytes"), 1),
            "total_mb": round(self.mb(), 1),
            "n_ctx": self.n_ctx,
            "kv_cache_type": self.kv_cache_type,
            "n_batch": self.n_batch,
            "flash_attn": self.flash_attn,
        }


def kv_cache_bytes(shape: ModelShape, n_ctx: int, kv_cache_type: str = "f16", n_seq: int = 1) -> int:
    """K and V for every layer: n_layer * n_ctx * n_head_kv * (head_dim_k + head_dim_v) * bytes."""
    if kv_cache_type not in KV_CACHE_TYPES:
        raise BudgetError(f"kv_cache_type must be one of {sorted(KV_CACHE_TYPES)}, "
                          f"got {kv_cache_type!r}")
    cells = _padded_ctx(n_ctx) * n_seq
    elements = shape.n_layer * cells * shape.n_head_kv * (shape.head_dim_k + shape.head_dim_v)
    return int(math.ceil(elements * KV_CACHE_TYPES[kv_cache_type].bytes_per_element))


def compute_buffer_bytes(shape: ModelShape, n_ctx: int, n_batch: int = DEFAULT_N_BATCH,
                         n_seq: int = 1, flash_attn: bool = False) -> int:
    """llama.cpp's worst-case graph scratch for one prompt batch (see the stage model above).

    The graph is reserved for a full batch whose every token yields logits, so for large
    vocabularies the n_ubatch x n_vocab f32 logits dominate; without flash attention the
    scores over the whole context (n_head x n_ctx x n_ubatch f32) take over at long contexts.
    """
    n_kv = _padded_ctx(n_ctx) * n_seq
    n_ub = min(n_batch, MAX_UBATCH, n_kv)
    n_kv_dim = shape.n_head_kv * (shape.head_dim_k + shape.head_dim_v)
    output = n_ub * (shape.n_vocab + OUTPUT_HIDDEN * shape.n_embd) * F32_BYTES
    hidden = n_ub * (ATTN_HIDDEN * shape.n_embd + n_kv_dim) * F32_BYTES
    if flash_attn:
        attention = n_kv * n_ub * F16_BYTES + hidden  # f16 mask; scores stay in the kernel
    else:
        attention = (shape.n_head + 1) * n_kv * n_ub * F32_BYTES + hidden  # scores + f32 mask
    ffn = n_ub * (FFN_WIDE * shape.n_ff + FFN_HIDDEN * shape.n_embd) * F32_BYTES
    return max(output, attention, ffn)


def estimate_memory(info: GGUFInfo | ModelShape, n_ctx: int, kv_cache_type: str = "f16",
                    n_batch: int = DEFAULT_N_BATCH, n_seq: int = 1,
                    overhead_mb: float = DEFAULT_OVERHEAD_MB, flash_attn: bool = False) -> MemoryEstimate:
    """Weights + KV cache (``n_seq`` sequences of ``n_ctx`` tokens) + compute + overhead."""
    for label, value in (("n_ctx", n_ctx), ("n_batch", n_batch), ("n_seq", n_seq)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise BudgetError(f"{label} must be a positive integer, got {value!r}")
    if overhead_mb < 0:
        raise BudgetError(f"overhead_mb must be >= 0, got {overhead_mb!r}")
    shape = info if isinstance(info, ModelShape) else ModelShape.from_gguf(info)
    kv = kv_cache_bytes(shape, n_ctx, kv_cache_type, n_seq)
    compute = compute_buffer_bytes(shape, n_ctx, n_batch, n_seq, flash_attn)
    overhead = int(overhead_mb * MIB)
    total = shape.weight_bytes + kv + compute + overhead
    return MemoryEstimate(model_bytes=shape.weight_bytes, kv_bytes=kv, compute_bytes=compute,
                          overhead_bytes=overhead, total_bytes=total, n_ctx=n_ctx,
                          kv_cache_type=kv_cache_type, n_batch=n_batch, n_seq=n_seq,
                          flash_attn=flash_attn, shape=shape)


def _padded_ctx(n_ctx: int) -> int:
    return -(-n_ctx // CTX_PAD) * CTX_PAD


@dataclass(frozen=True)
class BudgetVerdict:
    """Whether the estimate fits; ``reason`` and ``advice`` are for operators."""

    ok: bool
    reason: str
    advice: tuple[str, ...] = ()
    estimate: MemoryEstimate | None = None
    budget_bytes: int = 0
    free_bytes: int | None = None

    @property
    def message(self) -> str:
        """Reason and advice in one line (logs, ERROR diagnostics)."""
        if not self.advice:
            return self.reason
        return f"{self.reason}. Try: " + "; or ".join(self.advice)

    def key_values(self) -> dict[str, str]:
        """String key-values for a diagnostic_msgs status."""
        kv = {f"memory_{k}": str(v) for k, v in (self.estimate.summary().items()
                                                 if self.estimate else [])}
        kv["memory_budget_mb"] = f"{self.budget_bytes / MIB:.0f}"
        kv["memory_available_mb"] = ("unknown" if self.free_bytes is None
                                     else f"{self.free_bytes / MIB:.0f}")
        kv["memory_ok"] = str(self.ok).lower()
        return kv


def _mb(n: int | float) -> str:
    return f"{n / MIB:.0f} MiB"


def _with(estimate: MemoryEstimate, **changes: Any) -> MemoryEstimate:
    """The same estimate with other engine settings (needs the model shape)."""
    assert estimate.shape is not None
    args = dict(n_ctx=estimate.n_ctx, kv_cache_type=estimate.kv_cache_type,
                n_batch=estimate.n_batch, n_seq=estimate.n_seq,
                overhead_mb=estimate.overhead_bytes / MIB, flash_attn=estimate.flash_attn)
    args.update(changes)
    return estimate_memory(estimate.shape, **args)


def _effect(estimate: MemoryEstimate, other: MemoryEstimate, limit: int) -> str:
    verdict = ("fits" if other.total_bytes <= limit
               else f"still {_mb(other.total_bytes - limit)} over")
    return (f"{_mb(other.total_bytes)}, saves {_mb(estimate.total_bytes - other.total_bytes)}, "
            f"{verdict}")


def _advice(estimate: MemoryEstimate, limit: int) -> list[str]:
    """Concrete changes, each with the total it would give; the model itself last."""
    tips: list[str] = []
    if estimate.shape is not None:
        n_ctx, option = estimate.n_ctx, None
        while n_ctx > CTX_PAD:
            n_ctx = max(CTX_PAD, _padded_ctx(n_ctx // 2))
            option = _with(estimate, n_ctx=n_ctx)
            if option.total_bytes <= limit:
                break
        if option is not None:
            tips.append(f"smaller n_ctx {option.n_ctx} ({_effect(estimate, option, limit)})")
        kv_type = KV_CACHE_TYPES[estimate.kv_cache_type].smaller
        while kv_type:
            option = _with(estimate, kv_cache_type=kv_type, flash_attn=True)
            if option.total_bytes <= limit or not KV_CACHE_TYPES[kv_type].smaller:
                tips.append(f"kv_cache_type {kv_type} with flash_attn true "
                            f"({_effect(estimate, option, limit)})")
                break
            kv_type = KV_CACHE_TYPES[kv_type].smaller
        if estimate.n_batch > LEAN_N_BATCH:
            option = _with(estimate, n_batch=LEAN_N_BATCH)
            if option.total_bytes < estimate.total_bytes:
                tips.append(f"n_batch {LEAN_N_BATCH} ({_effect(estimate, option, limit)})")
    quant = estimate.shape.file_type if estimate.shape else "current quant"
    tips.append(f"a smaller quant or model (weights are {_mb(estimate.model_bytes)} at {quant}; "
                f"{_mb(estimate.total_bytes - limit)} must go in all)")
    return tips


def check_budget(estimate: MemoryEstimate, budget_bytes: int,
                 free_bytes: int | None = None, resident_bytes: int = 0) -> BudgetVerdict:
    """Refuse when the estimate exceeds the node's budget or the memory free now.

    ``resident_bytes``: another model that stays loaded beside this one (a model swap loads the
    new model while the old one serves): it counts against both the budget and the free memory.
    """
    total = estimate.total_bytes
    if resident_bytes:
        budget_bytes -= resident_bytes
        free_bytes = None if free_bytes is None else free_bytes - resident_bytes
    breakdown = (f"model {_mb(estimate.model_bytes)} + KV {_mb(estimate.kv_bytes)} "
                 f"(n_ctx {estimate.n_ctx}, {estimate.kv_cache_type}) + compute "
                 f"{_mb(estimate.compute_bytes)} + overhead {_mb(estimate.overhead_bytes)}")
    common = dict(estimate=estimate, budget_bytes=budget_bytes, free_bytes=free_bytes)
    beside = f" beside the {_mb(resident_bytes)} model already loaded" if resident_bytes else ""
    if total > budget_bytes:
        limit, what = budget_bytes, f"the node's memory budget of {_mb(budget_bytes)}{beside}"
    elif free_bytes is not None and total > free_bytes:
        limit, what = free_bytes, f"the {_mb(free_bytes)} available now (MemAvailable){beside}"
    else:
        room = budget_bytes if free_bytes is None else min(budget_bytes, free_bytes)
        return BudgetVerdict(True, f"needs {_mb(total)} ({breakdown}); fits in {_mb(room)}",
                             **common)
    reason = f"needs {_mb(total)} ({breakdown}), more than {what}"
    return BudgetVerdict(False, reason, tuple(_advice(estimate, limit)), **common)


def available_memory_bytes(meminfo_path: str = MEMINFO) -> int | None:
    """``MemAvailable`` from /proc/meminfo in bytes; None where there is no such file."""
    try:
        with open(meminfo_path) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    parts = line.split()
                    unit = parts[2].lower() if len(parts) > 2 else "kb"
                    scale = 1024 if unit == "kb" else 1
                    return int(parts[1]) * scale
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_profile_memory(info: GGUFInfo, profile: "DeviceProfile",
                         free_bytes: int | None = None, n_seq: int = 1,
                         resident_bytes: int = 0) -> BudgetVerdict:
    """Configure-time check: the profile's settings and budget against this model and RAM."""
    estimate = estimate_memory(info, n_ctx=profile.n_ctx, kv_cache_type=profile.kv_cache_type,
                               n_batch=profile.n_batch, n_seq=n_seq,
                               overhead_mb=profile.runtime_overhead_mb,
                               flash_attn=profile.flash_attn)
    if free_bytes is None:
        free_bytes = available_memory_bytes()
    return check_budget(estimate, profile.memory_budget_bytes, free_bytes, resident_bytes)


__all__ = [
    "BudgetError", "BudgetVerdict", "MemoryEstimate", "ModelShape", "available_memory_bytes",
    "check_budget", "check_profile_memory", "compute_buffer_bytes", "estimate_memory",
    "kv_cache_bytes",
]
