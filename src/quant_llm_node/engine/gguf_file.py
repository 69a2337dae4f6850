"""GGUF file checks and metadata, read without loading the model.

Used at configure time to refuse a bad model file with a clear reason before
llama.cpp sees it, and to report architecture, quantization type and size.
"""
from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from quant_llm_node.engine import compute_thread
from quant_llm_node.errors import CodedError

GGUF_MAGIC = b"GGUF"

# llama.cpp's llama_ftype enum (llama.h), the value of general.file_type.
FILE_TYPE_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
    15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS",
    20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
    25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M",
    30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4",
}

# ggml_type -> (block size in elements, bytes per block), for tensor byte counts.
GGML_TYPE_SIZES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
    8: (32, 34), 9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144),
    13: (256, 176), 14: (256, 210), 15: (256, 292), 16: (256, 66),
    17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4),
    27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54),
    35: (256, 66), 39: (32, 17),
}

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f",
           7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_ARRAY_DEPTH = 2      # an array of arrays at most (llama.cpp reads no deeper nesting)
MAX_DIMS = 4             # GGML_MAX_DIMS
MAX_ALIGNMENT = 1 << 16


class ModelFileError(CodedError):
    """The model file cannot be used; ``code`` names the reason for diagnostics."""


@dataclass
class TensorInfo:
    """Name, shape and storage type of one tensor in a GGUF file."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def n_bytes(self) -> int:
        block, size = GGML_TYPE_SIZES.get(self.ggml_type, (1, 4))
        return self.n_elements // block * size


@dataclass
class GGUFInfo:
    """What the node reports about a model file."""

    path: str
    file_bytes: int
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def name(self) -> str:
        return str(self.metadata.get("general.name", os.path.basename(self.path)))

    @property
    def file_type(self) -> str:
        ft = self.metadata.get("general.file_type")
        return FILE_TYPE_NAMES.get(ft, f"unknown({ft})") if ft is not None else "unknown"

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.tensor_bytes / max(1, self.n_params)

    @property
    def has_chat_template(self) -> bool:
        return "tokenizer.chat_template" in self.metadata

    def arch_value(self, key: str, default: Any = None) -> Any:
        """Value of ``{architecture}.{key}``, e.g. ``block_count``."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "file_type": self.file_type,
            "n_params": self.n_params,
            "file_bytes": self.file_bytes,
            "bits_per_weight": round(self.bits_per_weight, 2),
            "n_layers": self.arch_value("block_count"),
            "context_length": self.arch_value("context_length"),
            "chat_template": self.has_chat_template,
        }


class _Reader:
    def __init__(self, f: "_BufferedFile", size: int):
        self.f = f
        self.size = size

    def take(self, n: int) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            raise ModelFileError("MODEL_TRUNCATED", "GGUF header is truncated")
        return b

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def skip_string(self) -> None:
        n = self.unpack("<Q")
        if n > 1 << 26:
            raise ModelFileError("MODEL_CORRUPT", f"GGUF string length {n} is implausible")
        self.take(n)

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > 1 << 26:
            raise ModelFileError("MODEL_CORRUPT", f"GGUF string length {n} is implausible")
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep_arrays: bool, depth: int = 0) -> Any:
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise ModelFileError("MODEL_CORRUPT", f"GGUF arrays nested deeper than {MAX_ARRAY_DEPTH}")
            itype, count = self.unpack("<I"), self.unpack("<Q")
            least = struct.calcsize(_SCALAR[itype]) if itype in _SCALAR else 8 if itype in (_STRING, _ARRAY) else 0
            if not least:
                raise ModelFileError("MODEL_CORRUPT", f"unknown GGUF array item type {itype}")
            if count * least > self.size - self.f.tell():
                raise ModelFileError("MODEL_TRUNCATED", f"GGUF array of {count} items does not fit "
                                                      f"in the {self.size}-byte file")
            if itype in _SCALAR and not keep_arrays:
                self.f.skip_to(self.f.tell() + least * count)
                return ArrayLength(count)
            if itype == _STRING and not keep_arrays:  # a vocabulary: skipped, not decoded
                for i in range(count):
                    self.skip_string()
                    if i % 16384 == 0:
                        compute_thread.pause_for_serving()
                return ArrayLength(count)
            items = [self.value(itype, keep_arrays, depth + 1) for _ in range(count)]
            return items if keep_arrays else ArrayLength(count)
        raise ModelFileError("MODEL_CORRUPT", f"unknown GGUF value type {vtype}")


class ArrayLength(int):
    """Stands in for a GGUF array that was skipped; its value is the length."""


def read_gguf_info(path: str, keep_arrays: bool = False) -> GGUFInfo:
    """Parse the GGUF header: metadata key/values and tensor infos.

    Arrays (tokenizer vocabularies) are skipped unless ``keep_arrays``: their
    entry holds an :class:`ArrayLength`. Raises :class:`ModelFileError`, with a reason, for
    every malformed header (never another exception).
    """
    if not os.path.exists(path):
        raise ModelFileError("MODEL_NOT_FOUND", f"model file not found: {path}")
    if not os.path.isfile(path):
        raise ModelFileError("MODEL_NOT_FOUND", f"model path is not a file: {path}")
    try:
        return _read_header(path, keep_arrays)
    except ModelFileError:
        raise
    except (OSError, struct.error, ValueError, OverflowError, MemoryError, RecursionError) as exc:
        raise ModelFileError("MODEL_CORRUPT", f"GGUF header unreadable "
                                              f"({type(exc).__name__}: {exc})"[:300]) from exc


def _read_header(path: str, keep_arrays: bool) -> GGUFInfo:
    size = os.path.getsize(path)
    with open(path, "rb") as raw:
        r = _Reader(_BufferedFile(raw), size)
        magic = raw.read(4) if size >= 4 else b""
        if magic != GGUF_MAGIC:
            raise ModelFileError(
                "MODEL_BAD_MAGIC", f"not a GGUF file (magic {magic!r}, expected b'GGUF'): {path}")
        r.f.skip_to(4)
        version = r.unpack("<I")
        if version not in (2, 3):
            raise ModelFileError("MODEL_UNSUPPORTED", f"GGUF version {version} is not supported")
        n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
        if n_tensors > 1 << 20 or n_kv > 1 << 20:
            raise ModelFileError("MODEL_CORRUPT", "GGUF header counts are implausible")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            metadata[key] = r.value(r.unpack("<I"), keep_arrays)
        tensors = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.unpack("<I")
            if not 1 <= n_dims <= MAX_DIMS:
                raise ModelFileError("MODEL_CORRUPT", f"tensor {name[:64]!r} has {n_dims} dimensions")
            shape = tuple(r.unpack("<Q") for _ in range(n_dims))
            ggml_type = r.unpack("<I")
            if ggml_type not in GGML_TYPE_SIZES:
                raise ModelFileError("MODEL_CORRUPT", f"tensor {name[:64]!r} has unknown type {ggml_type}")
            tensors.append(TensorInfo(name, shape, ggml_type, r.unpack("<Q")))
        header_end = r.f.tell()
    info = GGUFInfo(path, size, version, metadata, tensors)
    if tensors:
        align = metadata.get("general.alignment", 32)
        if isinstance(align, bool) or not isinstance(align, int) or not 0 < align <= MAX_ALIGNMENT \
                or align & (align - 1):
            raise ModelFileError("MODEL_CORRUPT", f"general.alignment {align!r} is not a power of two")
        data_start = (header_end + align - 1) // align * align
        last = max(tensors, key=lambda t: t.offset + t.n_bytes)
        if data_start + last.offset + last.n_bytes > size:
            raise ModelFileError(
                "MODEL_TRUNCATED",
                f"model file is truncated: {size} bytes, tensors need "
                f"{data_start + last.offset + last.n_bytes}")
    return info


class _BufferedFile:
    """Small read-ahead wrapper: GGUF headers hold ~10^5 tiny strings."""

    def __init__(self, raw: BinaryIO, chunk: int = 1 << 20):
        self.raw, self.chunk = raw, chunk
        self.buf, self.pos, self.base = b"", 0, 0

    def skip_to(self, offset: int) -> None:
        self.raw.seek(offset)
        self.buf, self.pos, self.base = b"", 0, offset

    def tell(self) -> int:
        return self.base + self.pos

    def read(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            rest = self.buf[self.pos:]
            more = self.raw.read(max(n - len(rest), self.chunk))
            self.base += self.pos
            self.buf, self.pos = rest + more, 0
        out = self.buf[self.pos:self.pos + n]
        self.pos += len(out)
        return out


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, streamed (with a pause point per chunk: in a model swap it lets
    requests go first)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            compute_thread.pause_for_serving()
    return h.hexdigest()


def verify_model_file(path: str, expected_sha256: str = "") -> GGUFInfo:
    """Header, size and (when given) checksum checks; returns the parsed info.

    A file with corrupted weights still loads in llama.cpp, so the checksum
    is the only guard against it: configure it for deployed models.
    """
    info = read_gguf_info(path)
    if expected_sha256:
        actual = sha256_file(path)
        if actual.lower() != expected_sha256.lower():
            raise ModelFileError(
                "MODEL_CHECKSUM_MISMATCH",
                f"sha256 of {path} is {actual}, expected {expected_sha256}")
    return info
