"""Quantization ladder: requantize one GGUF model into several variants with llama.cpp.

Variants are written by ``llama_cpp.llama_model_quantize`` (no extra binaries) into
``cache_dir()/ladder/<model>/<VARIANT>.gguf`` and reused when already valid.
The shipped models are Q4_K_M: every variant (F16 included) is a requantization of a
4-bit source, so quality numbers measure requantization loss, not loss against the
original BF16 weights.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import time
from dataclasses import dataclass
from pathlib import Path

from quant_llm_node.engine.gguf_file import ModelFileError, read_gguf_info
from quant_llm_node.paths import cache_dir

# Highest precision first; the first selected variant is the quality reference.
LADDER = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0")
DEFAULT_VARIANTS = LADDER
QUICK_VARIANTS = ("Q8_0", "Q4_0")
SOURCE = "SOURCE"  # the original model file, measured as it is (no requantization)
LADDER_SUBDIR = "ladder"
GGUF_SUFFIX = ".gguf"
PARTIAL_SUFFIX = ".partial"
REQUANT_CAVEAT = (
    "All variants are requantizations of a {src} source file (F16 is a dequantized copy): "
    "quality numbers measure requantization loss against the best available reference, "
    "not loss against the original full-precision weights.")


class QuantizeError(RuntimeError):
    """llama.cpp refused or failed to write a variant."""


@dataclass
class Variant:
    """One rung of the ladder and where its file is."""

    name: str
    path: Path
    created: bool = False
    quantize_s: float = 0.0


def ftype_of(name: str) -> int:
    """llama.cpp's llama_ftype value for a variant name (e.g. Q4_K_M)."""
    import llama_cpp
    value = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}", None)
    if value is None:
        raise ValueError(f"unknown variant {name!r} (known: {', '.join(LADDER)})")
    return int(value)


def precision_rank(name: str) -> int:
    """Lower is more precise; SOURCE and unknown names come last."""
    return LADDER.index(name) if name in LADDER else len(LADDER)


def reference_of(names: list[str]) -> str:
    """The highest-precision variant among ``names``."""
    return min(names, key=precision_rank)


def ladder_dir(model_name: str, root: Path | None = None) -> Path:
    return (root or cache_dir() / LADDER_SUBDIR) / model_name


def is_valid_variant(path: Path, name: str) -> bool:
    """The file exists, its header and size are sound, and its file type is ``name``."""
    try:
        return read_gguf_info(str(path)).file_type == name
    except ModelFileError:
        return False


def quantize(source: Path, dest: Path, name: str, threads: int, log_path: Path | None = None) -> float:
    """Write ``dest`` as variant ``name`` of ``source``; returns seconds. Atomic (rename)."""
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype_of(name)
    params.nthread = threads
    params.allow_requantize = True
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + PARTIAL_SUFFIX)
    t0 = time.perf_counter()
    with _stderr_to(log_path):
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0 or not is_valid_variant(tmp, name):
        tmp.unlink(missing_ok=True)
        raise QuantizeError(f"llama_model_quantize({source.name} -> {name}) failed (rc={rc}); "
                            f"see {log_path or 'stderr'}")
    os.replace(tmp, dest)
    return time.perf_counter() - t0


def ensure_variants(source: Path, model_name: str, names: list[str], threads: int,
                    root: Path | None = None, log_path: Path | None = None,
                    progress=print) -> list[Variant]:
    """Produce the missing variants (existing valid files are kept); in ``names`` order."""
    out = []
    for name in names:
        if name == SOURCE:
            out.append(Variant(name, source))
            continue
        path = ladder_dir(model_name, root) / f"{name}{GGUF_SUFFIX}"
        if is_valid_variant(path, name):
            progress(f"[quantize] {name}: cached {path}")
            out.append(Variant(name, path))
            continue
        progress(f"[quantize] {name}: writing {path} ...")
        seconds = quantize(source, path, name, threads, log_path)
        progress(f"[quantize] {name}: done in {seconds:.1f} s ({path.stat().st_size / 2**20:.0f} MiB)")
        out.append(Variant(name, path, created=True, quantize_s=seconds))
    return out


@contextlib.contextmanager
def _stderr_to(log_path: Path | None):
    """llama.cpp logs every tensor on fd 2: send it to a log file (or keep it)."""
    if log_path is None:
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    saved = os.dup(2)
    try:
        with open(log_path, "ab") as log:
            os.dup2(log.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
