"""Read real weight tensors out of a GGUF file with the ``gguf`` package."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass
class TensorInfo:
    """Name, numpy-order shape (rows, cols) and ggml type name of a GGUF tensor."""

    name: str
    shape: tuple[int, ...]
    type_name: str


def open_gguf(path: str | Path) -> Any:
    """Open a GGUF file (memory-mapped, read-only) and return a ``gguf.GGUFReader``.

    Parsing the metadata (a 150k-entry vocabulary) takes seconds, so readers are cached
    per (path, size, mtime) for the life of the process.
    """
    p = Path(path).resolve()
    st = p.stat()
    return _open_cached(str(p), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=4)
def _open_cached(path: str, size: int, mtime_ns: int) -> Any:
    import gguf

    return gguf.GGUFReader(path, "r")


def _find(reader: Any, name: str) -> Any:
    for t in reader.tensors:
        if t.name == name:
            return t
    raise KeyError(f"tensor {name!r} not in GGUF file")


def list_tensors(reader: Any) -> list[TensorInfo]:
    """All tensors with numpy-order shapes (GGUF stores ``ne`` innermost first)."""
    return [TensorInfo(t.name, tuple(int(d) for d in reversed(t.shape)), t.tensor_type.name) for t in reader.tensors]


def tensor_info(reader: Any, name: str) -> TensorInfo:
    """Info for one tensor; raises KeyError when it is absent."""
    t = _find(reader, name)
    return TensorInfo(t.name, tuple(int(d) for d in reversed(t.shape)), t.tensor_type.name)


def load_tensor(reader: Any, name: str, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Dequantize tensor ``name`` (or only the given rows of a 2-D one) to float32.

    A 2-D linear weight comes back as (out_features, in_features), i.e. ``y = W @ x``.
    """
    from gguf.quants import dequantize

    t = _find(reader, name)
    shape = tuple(int(d) for d in reversed(t.shape))
    data = t.data
    if rows is not None:
        if len(shape) != 2:
            raise ValueError("row selection needs a 2-D tensor")
        data = data[np.asarray(rows, dtype=np.int64)]
        shape = (len(rows), shape[1])
    out = dequantize(np.ascontiguousarray(data), t.tensor_type)
    return np.asarray(out, dtype=np.float32).reshape(shape)


def raw_tensor(reader: Any, name: str) -> tuple[np.ndarray, str]:
    """Raw stored data (bytes for quantized types) and the ggml type name."""
    t = _find(reader, name)
    return np.asarray(t.data), t.tensor_type.name


def metadata_value(reader: Any, key: str, default: Any = None) -> Any:
    """Scalar or string metadata value, or ``default`` when the key is missing."""
    f = reader.fields.get(key)
    if f is None:
        return default
    try:
        return f.contents()
    except Exception:  # older gguf without contents(): scalar at the last part
        return f.parts[f.data[0]][0] if f.data else default
