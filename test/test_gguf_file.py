"""GGUF header checks and metadata on the real default model and on broken copies."""
import os

import pytest

from quant_llm_node.engine.gguf_file import ModelFileError, read_gguf_info, verify_model_file
from quant_llm_node.models.registry import load_manifest


def test_metadata_of_default_model(model_path):
    info = read_gguf_info(str(model_path))
    assert info.architecture == "qwen2"
    assert info.file_type == "Q4_K_M"
    assert info.arch_value("block_count") == 24
    assert info.has_chat_template
    assert 4.5 < info.bits_per_weight < 7.0
    assert 4.0e8 < info.n_params < 7.0e8
    assert info.file_bytes == os.path.getsize(model_path)


def test_checksum_matches_manifest(model_path):
    entry = load_manifest().get()
    assert verify_model_file(str(model_path), entry.sha256).file_type == "Q4_K_M"


def _copy_head(src, dst, n):
    with open(src, "rb") as f, open(dst, "wb") as g:
        g.write(f.read(n))


@pytest.mark.parametrize("kind, code", [
    ("missing", "MODEL_NOT_FOUND"), ("empty", "MODEL_BAD_MAGIC"), ("magic", "MODEL_BAD_MAGIC"),
    ("truncated_header", "MODEL_TRUNCATED"), ("truncated_data", "MODEL_TRUNCATED"),
    ("checksum", "MODEL_CHECKSUM_MISMATCH"), ("directory", "MODEL_NOT_FOUND"),
])
def test_bad_files_are_refused_with_a_code(model_path, tmp_path, kind, code):
    bad = tmp_path / "bad.gguf"
    expected_sha = ""
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "magic":
        bad.write_bytes(b"GGML" + b"\0" * 64)
    elif kind == "truncated_header":
        _copy_head(model_path, bad, 4096)
    elif kind == "truncated_data":
        _copy_head(model_path, bad, os.path.getsize(model_path) // 2)
    elif kind == "checksum":
        # a file whose weights are corrupted still parses (and would load): only sha256 catches it
        _copy_head(model_path, bad, os.path.getsize(model_path))
        with open(bad, "r+b") as f:
            f.seek(os.path.getsize(model_path) - 1000)
            f.write(b"\xff" * 16)
        read_gguf_info(str(bad))
        expected_sha = load_manifest().get().sha256
    elif kind == "directory":
        bad = tmp_path
    with pytest.raises(ModelFileError) as info:
        verify_model_file(str(bad), expected_sha)
    assert info.value.code == code
    assert str(info.value)
