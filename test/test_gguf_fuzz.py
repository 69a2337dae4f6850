"""Mutated headers of the real model: the GGUF reader turns every malformed header into
ModelFileError with a reason (property-based, hypothesis), never another exception or a hang.

The header is the real model's (every metadata key and type, every tensor's name, shape, type
and offset), with its three vocabulary arrays cut to 64 entries so that one parse takes
milliseconds; the data region is a sparse file of the real size.
"""
from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quant_llm_node.engine.gguf_file import ModelFileError, read_gguf_info, verify_model_file

KEEP_ITEMS = 64
ARRAY, STRING = 9, 8
INTERESTING = (0, 1, 2, 3, 7, 8, 9, 12, 13, 255, 2**16, 2**31 - 1, 2**32 - 1, 2**32, 2**62,
               2**63, 2**64 - 1)


class HeaderWriter:
    """Writes a GGUF header and records where each number field sits (for mutations)."""

    def __init__(self):
        self.buf = bytearray()
        self.fields: list[tuple[int, str]] = []  # (offset, struct format) of every number

    def num(self, fmt: str, value) -> None:
        self.fields.append((len(self.buf), fmt))
        self.buf += struct.pack(fmt, value)

    def string(self, data: bytes) -> None:
        self.num("<Q", len(data))
        self.buf += data


def skeleton(model: Path) -> tuple[bytes, list[tuple[int, str]], int]:
    """(header bytes, number fields, file size) of the real model with short vocabularies."""
    import gguf
    reader = gguf.GGUFReader(str(model))
    info = read_gguf_info(str(model))
    w = HeaderWriter()
    w.buf += b"GGUF"
    w.num("<I", 3)
    w.num("<Q", len(info.tensors))
    kvs = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    w.num("<Q", len(kvs))
    for key, field in kvs.items():
        w.string(key.encode())
        main = int(field.types[0])
        w.num("<I", main)
        if main == ARRAY:
            item = int(field.types[1])
            w.num("<I", item)
            items = [bytes(field.parts[i]) for i in field.data][:KEEP_ITEMS]
            w.num("<Q", len(items))
            for data in items:
                if item == STRING:
                    w.string(data)
                else:
                    w.buf += data
        elif main == STRING:
            w.string(bytes(field.parts[field.data[0]]))
        else:
            w.buf += bytes(field.parts[field.data[0]])
    for t in info.tensors:
        w.string(t.name.encode())
        w.num("<I", len(t.shape))
        for d in t.shape:
            w.num("<Q", d)
        w.num("<I", t.ggml_type)
        w.num("<Q", t.offset)
    header = bytes(w.buf)
    align = 32
    data_start = (len(header) + align - 1) // align * align
    last = max(info.tensors, key=lambda t: t.offset + t.n_bytes)
    return header, w.fields, data_start + last.offset + last.n_bytes


class Base(tuple):
    def __repr__(self) -> str:  # hypothesis prints the fixture with a failing example
        return f"<skeleton header of {len(self[0])} bytes>"


@pytest.fixture(scope="module")
def base(model_path):
    return Base(skeleton(model_path))


def write(path: Path, header: bytes, size: int) -> Path:
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(max(size, len(header)))  # sparse: the data region costs nothing
    return path


def test_the_skeleton_parses_like_the_real_model(base, model_path, tmp_path):
    header, _, size = base
    info = read_gguf_info(str(write(tmp_path / "s.gguf", header, size)))
    real = read_gguf_info(str(model_path))
    assert [(t.name, t.shape, t.ggml_type) for t in info.tensors] == \
        [(t.name, t.shape, t.ggml_type) for t in real.tensors]
    assert info.architecture == real.architecture and info.file_type == real.file_type


mutation = st.one_of(
    st.tuples(st.just("number"), st.integers(0, 10**9), st.sampled_from(INTERESTING)),
    st.tuples(st.just("byte"), st.integers(0, 10**9), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10**9), st.just(0)),
)


@settings(max_examples=1000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(mutation, min_size=1, max_size=4))
@pytest.mark.timeout(600)
def test_mutated_headers_raise_model_file_error_or_parse(base, tmp_path, mutations):
    header, fields, size = base
    data = bytearray(header)
    for kind, where, value in sorted(mutations, key=lambda m: m[0] == "cut"):  # cuts last
        if not data:
            break
        if kind == "number":
            offset, fmt = fields[where % len(fields)]
            width = struct.calcsize(fmt)
            data[offset:offset + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
        elif kind == "byte":
            data[where % len(data)] = value
        else:
            del data[where % len(data):]
    cut = any(kind == "cut" for kind, _, _ in mutations)
    path = write(tmp_path / "m.gguf", bytes(data), len(data) if cut else size)
    try:
        verify_model_file(str(path))
    except ModelFileError as exc:
        assert exc.code and str(exc)


@pytest.mark.parametrize("patch, code", [
    ("alignment_zero", "MODEL_CORRUPT"), ("alignment_odd", "MODEL_CORRUPT"),
    ("nested_arrays", "MODEL_CORRUPT"), ("huge_array", "MODEL_TRUNCATED"),
])
def test_the_findings_of_the_code_read_get_their_code(tmp_path, patch, code):
    w = HeaderWriter()
    w.buf += b"GGUF"
    w.num("<I", 3)
    w.num("<Q", 1)
    w.num("<Q", 1)
    if patch.startswith("alignment"):
        w.string(b"general.alignment")
        w.num("<I", 4)
        w.num("<I", 0 if patch == "alignment_zero" else 7)
    elif patch == "nested_arrays":
        w.string(b"deep")
        w.num("<I", ARRAY)
        for _ in range(2000):  # an array of arrays of arrays ... (RecursionError before)
            w.num("<I", ARRAY)
            w.num("<Q", 1)
    else:
        w.string(b"big")
        w.num("<I", ARRAY)
        w.num("<I", STRING)
        w.num("<Q", 2**60)
    w.string(b"t")
    w.num("<I", 1)
    w.num("<Q", 32)
    w.num("<I", 0)
    w.num("<Q", 0)
    path = write(tmp_path / "p.gguf", bytes(w.buf), len(w.buf) + 4096)
    with pytest.raises(ModelFileError) as info:
        read_gguf_info(str(path))
    assert info.value.code == code, str(info.value)
