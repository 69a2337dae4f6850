"""Memory estimate (weights + KV + compute + overhead) and the budget check."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from quant_llm_node.deploy.memory_budget import (
    MIB, BudgetError, ModelShape, available_memory_bytes, check_budget, check_profile_memory,
    estimate_memory, kv_cache_bytes)
from quant_llm_node.deploy.profiles import load_profile
from quant_llm_node.engine.gguf_file import GGUFInfo, TensorInfo, read_gguf_info

ROOT = Path(__file__).resolve().parents[1]

QWEN_05B = [ROOT / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", Path("/tmp/models/q05.gguf")]


@pytest.fixture(scope="module")
def qwen():
    path = next((p for p in QWEN_05B if p.is_file()), None)
    if path is None:
        pytest.skip("Qwen2.5-Coder-0.5B GGUF absent: run `quant-llm-models fetch` first")
    return read_gguf_info(str(path))


def _synthetic(**arch) -> GGUFInfo:
    meta = {"general.architecture": "toy", "toy.block_count": 4, "toy.embedding_length": 512,
            "toy.attention.head_count": 8, "toy.attention.head_count_kv": 2,
            "toy.feed_forward_length": 1024, "tokenizer.ggml.tokens": ["a"] * 1000}
    meta.update({f"toy.{k}": v for k, v in arch.items()})
    tensors = [TensorInfo("token_embd.weight", (512, 1000), 1, 0)]
    return GGUFInfo("toy.gguf", 0, 3, meta, tensors)


def test_kv_bytes_on_real_qwen(qwen):
    shape = ModelShape.from_gguf(qwen)
    assert (shape.n_layer, shape.n_head, shape.n_head_kv, shape.head_dim_k) == (24, 14, 2, 64)
    f16 = estimate_memory(qwen, n_ctx=2048, kv_cache_type="f16")
    assert f16.kv_bytes == 2 * 24 * 2048 * 2 * 64 * 2 == 25_165_824
    q8 = estimate_memory(qwen, n_ctx=2048, kv_cache_type="q8_0")
    q4 = estimate_memory(qwen, n_ctx=2048, kv_cache_type="q4_0")
    assert q8.kv_bytes == 25_165_824 * 34 // 64
    assert q4.kv_bytes < q8.kv_bytes < f16.kv_bytes
    assert f16.model_bytes == qwen.tensor_bytes
    assert f16.total_bytes == f16.model_bytes + f16.kv_bytes + f16.compute_bytes + f16.overhead_bytes


def test_compute_buffer_scales_with_context_and_batch(qwen):
    small = estimate_memory(qwen, n_ctx=2048)
    large = estimate_memory(qwen, n_ctx=8192)
    assert large.kv_bytes == 4 * small.kv_bytes
    # logits of a full batch dominate for a 152k vocabulary: n_batch * (n_vocab + 2 n_embd) * 4
    assert small.compute_bytes == large.compute_bytes == 512 * (151_936 + 2 * 896) * 4
    # attention scores over a long context take over without flash attention
    huge = estimate_memory(qwen, n_ctx=32768)
    assert huge.compute_bytes == 15 * 32768 * 512 * 4 + 512 * (5 * 896 + 256) * 4
    assert estimate_memory(qwen, n_ctx=32768, flash_attn=True).compute_bytes == small.compute_bytes
    assert estimate_memory(qwen, n_ctx=2048, n_batch=128).compute_bytes < small.compute_bytes


def test_context_is_padded_and_sequences_multiply():
    info = _synthetic()
    shape = ModelShape.from_gguf(info)
    assert kv_cache_bytes(shape, 1000) == kv_cache_bytes(shape, 1024)
    assert kv_cache_bytes(shape, 1024, n_seq=3) == 3 * kv_cache_bytes(shape, 1024)


def test_head_dim_from_key_length():
    plain = ModelShape.from_gguf(_synthetic())
    assert plain.head_dim_k == 512 // 8 and plain.n_vocab == 1000
    wide = ModelShape.from_gguf(_synthetic(**{"attention.key_length": 128,
                                              "attention.value_length": 96}))
    assert (wide.head_dim_k, wide.head_dim_v) == (128, 96)
    assert kv_cache_bytes(wide, 256) == 4 * 256 * 2 * (128 + 96) * 2


def test_bad_arguments():
    info = _synthetic()
    with pytest.raises(BudgetError, match="kv_cache_type"):
        estimate_memory(info, n_ctx=256, kv_cache_type="q5_1")
    with pytest.raises(BudgetError, match="n_ctx"):
        estimate_memory(info, n_ctx=0)
    with pytest.raises(BudgetError, match="overhead_mb"):
        estimate_memory(info, n_ctx=256, overhead_mb=-1)
    broken = GGUFInfo("x.gguf", 0, 3, {"general.architecture": "toy"}, [])
    with pytest.raises(BudgetError, match="block_count"):
        estimate_memory(broken, n_ctx=256)


def test_budget_refusal_names_numbers_and_advice(qwen):
    est = estimate_memory(qwen, n_ctx=8192, kv_cache_type="f16")
    verdict = check_budget(est, budget_bytes=600 * MIB, free_bytes=None)
    assert not verdict.ok
    assert f"{est.total_bytes / MIB:.0f} MiB" in verdict.reason and "600 MiB" in verdict.reason
    assert "budget" in verdict.reason
    text = " ".join(verdict.advice)
    assert "n_ctx" in text and "kv_cache_type q" in text and "smaller quant" in text
    assert "Try:" in verdict.message
    assert verdict.key_values()["memory_ok"] == "false"


def test_budget_advice_picks_a_context_that_fits(qwen):
    est = estimate_memory(qwen, n_ctx=8192)
    limit = estimate_memory(qwen, n_ctx=4096).total_bytes
    verdict = check_budget(est, budget_bytes=limit)
    assert not verdict.ok
    assert any("n_ctx 4096" in tip and "fits" in tip for tip in verdict.advice)
    assert any("kv_cache_type q" in tip for tip in verdict.advice)


def test_free_memory_limit_and_ok(qwen):
    est = estimate_memory(qwen, n_ctx=2048)
    low_free = check_budget(est, budget_bytes=8 << 30, free_bytes=300 * MIB)
    assert not low_free.ok and "available now" in low_free.reason and "300 MiB" in low_free.reason
    fine = check_budget(est, budget_bytes=8 << 30, free_bytes=4 << 30)
    assert fine.ok and fine.advice == () and "fits" in fine.reason
    assert fine.key_values()["memory_total_mb"] == str(round(est.total_bytes / MIB, 1))


@pytest.mark.parametrize("name", ["agx_orin_64gb", "orin_nx_16gb", "orin_nano_8gb", "x86_cpu"])
def test_default_model_fits_every_shipped_profile(qwen, name):
    verdict = check_profile_memory(qwen, load_profile(name), free_bytes=64 << 30)
    assert verdict.ok, verdict.message


@pytest.mark.parametrize("name", ["agx_orin_64gb", "orin_nx_16gb", "orin_nano_8gb", "x86_cpu"])
def test_the_profile_model_and_the_hazard_screen_fit_every_shipped_profile(name):
    """Each profile's decision model beside the default screen (its own weights, or a second
    context over the decision model's when they are the same model) fits the budget."""
    from quant_llm_node.config import load_config
    from quant_llm_node.models.registry import resolve_model_path
    from quant_llm_node.paths import config_dir
    from quant_llm_node.serving.hazard_screen import screen_memory_bytes
    profile = load_profile(name)
    screen_name = load_config(config_dir() / "robot.yaml").screen.model
    paths = [resolve_model_path(n)[0] for n in (profile.model, screen_name)]
    if not all(p.is_file() for p in paths):
        pytest.skip("models absent: run scripts/setup.sh")
    decision, screen = (read_gguf_info(str(p)) for p in paths)
    extra = screen_memory_bytes(screen, shared=profile.model == screen_name)
    verdict = check_profile_memory(decision, profile, free_bytes=64 << 30, resident_bytes=extra)
    assert verdict.ok, verdict.message
    assert extra > kv_cache_bytes(ModelShape.from_gguf(screen), 1024)  # its context, at least


def test_available_memory_from_meminfo(tmp_path):
    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal:       16000000 kB\nMemFree:  1000 kB\nMemAvailable:    12345678 kB\n")
    assert available_memory_bytes(str(fake)) == 12345678 * 1024
    assert available_memory_bytes(str(tmp_path / "absent")) is None
    real = available_memory_bytes()
    assert real is None or real > 0


def test_default_overhead_is_the_x86_profile_value():
    from quant_llm_node.deploy.memory_budget import DEFAULT_OVERHEAD_MB
    assert DEFAULT_OVERHEAD_MB == load_profile("x86_cpu").runtime_overhead_mb


_PROBE = r"""
import sys, llama_cpp
n_ctx, n_batch, fa, kv = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
llama_cpp.Llama(sys.argv[1], n_ctx=n_ctx, n_batch=n_batch, flash_attn=fa, type_k=kv, type_v=kv,
                n_threads=1, verbose=True)
"""


@pytest.mark.parametrize("n_ctx, n_batch, flash_attn, kv_type", [
    (2048, 512, False, "f16"),
    (4096, 256, True, "q8_0"),
])
def test_estimate_matches_llama_cpp_buffers(qwen, n_ctx, n_batch, flash_attn, kv_type):
    """Regression guard for a new llama.cpp: its own KV and compute buffer sizes vs ours."""
    import re
    import subprocess

    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    from quant_llm_node.engine.kv_types import KV_CACHE_TYPES
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, qwen.path, str(n_ctx), str(n_batch), str(int(flash_attn)),
         str(KV_CACHE_TYPES[kv_type].ggml_type)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    kv_mib = float(re.search(r"CPU KV buffer size =\s*([\d.]+) MiB", proc.stderr).group(1))
    compute_mib = float(re.search(r"CPU compute buffer size =\s*([\d.]+) MiB", proc.stderr).group(1))
    est = estimate_memory(qwen, n_ctx=n_ctx, kv_cache_type=kv_type, n_batch=n_batch,
                          flash_attn=flash_attn)
    assert est.kv_bytes / MIB == pytest.approx(kv_mib, rel=0.01)
    assert est.compute_bytes / MIB == pytest.approx(compute_mib, rel=0.05)
