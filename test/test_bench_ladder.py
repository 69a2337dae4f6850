"""Quantization ladder bench: variant production, quality metrics, reports, rooflines, CLI."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from quant_llm_node.bench.ladder import quality, report, targets
from quant_llm_node.bench.ladder import variants as ladder
from quant_llm_node.engine.gguf_file import read_gguf_info

ROOT = Path(__file__).resolve().parents[1]
SMALL_MODEL = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
CALIBRATION = ROOT / "bench" / "data" / "calibration.txt"
SHORT_CTX = 32
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
THREADS = 2


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict[str, Path]:
    if not SMALL_MODEL.is_file():
        pytest.skip(f"{SMALL_MODEL.name} not assembled (quant-llm-models fetch gemma-3-270m-q4_k_m)")
    root = tmp_path_factory.mktemp("ladder")
    made = ladder.ensure_variants(SMALL_MODEL, "gemma", ["Q8_0", "Q4_0"], THREADS, root=root,
                                  log_path=root / "quantize.log", progress=lambda _: None)
    assert all(v.created for v in made)
    return {v.name: v.path for v in made}


def test_quantized_file_types(variants):
    infos = {name: read_gguf_info(str(path)) for name, path in variants.items()}
    for name, path in variants.items():
        assert infos[name].file_type == name
        assert path.parent.name == "gemma" and path.name == f"{name}.gguf"
    assert infos["Q8_0"].bits_per_weight > infos["Q4_0"].bits_per_weight


def test_existing_variants_are_reused(variants):
    root = variants["Q8_0"].parent.parent
    again = ladder.ensure_variants(SMALL_MODEL, "gemma", ["Q8_0"], THREADS, root=root, progress=lambda _: None)
    assert not again[0].created and again[0].path == variants["Q8_0"]


def test_quality_self_zero_other_positive(variants):
    text = CALIBRATION.read_text()[:SHORT_CTX * 12]
    llm = quality.load_for_logits(variants["Q8_0"], SHORT_CTX, THREADS)
    try:
        chunks = list(quality.calibration_logits(llm, text, SHORT_CTX, max_chunks=1))
    finally:
        llm.close()
    _, ref = quality.score(chunks, keep_top_k=quality.KL_TOP_K)
    same, _ = quality.score(chunks, reference=ref)
    other, _ = quality.evaluate_model(variants["Q4_0"], text, reference=ref, ctx=SHORT_CTX,
                                      threads=THREADS, max_chunks=1)
    assert same.n_scored == other.n_scored == SHORT_CTX // 2 - 1
    assert same.kl_mean == 0.0 and same.kl_max == 0.0 and same.top1_agreement == 1.0
    assert other.kl_mean > 0.0 and 0.0 <= other.top1_agreement <= 1.0
    assert math.isfinite(other.perplexity) and other.perplexity > 1.0


def test_topk_kl_equals_exact_kl_when_k_covers_vocab():
    rng = np.random.default_rng(0)
    vocab, n = 50, 8
    ref_logits, var_logits = rng.normal(size=(n, vocab)), rng.normal(size=(n, vocab))
    p, q = quality.log_softmax(ref_logits), quality.log_softmax(var_logits)
    exact = (np.exp(p) * (p - q)).sum(axis=-1)
    ids, vals = quality.top_k(p, vocab)
    assert np.allclose(quality.kl_to_reference(ids, vals, q), exact, atol=1e-5)
    ids, vals = quality.top_k(p, vocab // 5)  # truncated: a lower bound
    assert np.all(quality.kl_to_reference(ids, vals, q) <= exact + 1e-6)
    assert np.all(quality.kl_to_reference(ids, vals, p) == 0.0)


def test_score_rejects_mismatched_reference():
    rng = np.random.default_rng(1)
    chunk = (rng.normal(size=(4, 10)).astype(np.float32), np.array([1, 2, 3, 4]))
    _, ref = quality.score([chunk], keep_top_k=10)
    with pytest.raises(ValueError):
        quality.score([(chunk[0], np.array([4, 3, 2, 1]))], reference=ref)


def _rows() -> list[dict]:
    return [
        {"variant": "Q8_0", "file_mib": 500.0, "bits_per_weight": 8.5, "decode_tps": 14.0,
         "top1_pct": 100.0, "kl_mean": 0.0, "perplexity": 9.1, "roofline_host_tps": 20.0},
        {"variant": "Q4_0", "file_mib": 300.0, "bits_per_weight": 4.6, "decode_tps": 25.0,
         "top1_pct": 88.0, "kl_mean": 0.17, "perplexity": 10.2, "roofline_host_tps": 33.0, "error": None},
    ]


def test_report_writers(tmp_path):
    meta = {"model": "m", "host_bandwidth_gbps": 15.2, "caveat": "requantized"}
    doc = {"meta": meta, "host": {}, "rows": _rows()}
    paths = report.write_all(_rows(), doc, tmp_path)
    with open(paths["csv"]) as f:
        parsed = list(csv.DictReader(f))
    assert [r["variant"] for r in parsed] == ["Q8_0", "Q4_0"] and float(parsed[1]["kl_mean"]) == 0.17
    assert json.loads(paths["json"].read_text())["meta"]["model"] == "m"
    assert paths["png"].read_bytes()[:len(PNG_MAGIC)] == PNG_MAGIC
    md = paths["md"].read_text()
    assert "| variant |" in md and "| Q4_0 |" in md and "requantized" in md


def test_roofline_scales_with_bandwidth():
    tensor_bytes = 400 * 2**20
    one = targets.roofline_fields(tensor_bytes, 10.0, 10.0, {"a": 50.0, "b": 100.0})
    two = targets.roofline_fields(tensor_bytes, 10.0, 20.0, {"a": 50.0, "b": 100.0})
    assert two["roofline_host_tps"] == pytest.approx(2 * one["roofline_host_tps"])
    assert one["roofline_b_tps"] == pytest.approx(2 * one["roofline_a_tps"])
    assert two["efficiency_host"] == pytest.approx(one["efficiency_host"] / 2)
    jetson = targets.target_bandwidths()
    assert jetson["agx_orin_64gb"] > jetson["orin_nx_16gb"] > jetson["orin_nano_8gb"] > 0


def test_reference_is_highest_precision():
    assert ladder.reference_of(["Q4_0", "Q6_K", "Q8_0"]) == "Q8_0"
    assert ladder.reference_of(["Q4_K_M", ladder.SOURCE, "F16"]) == "F16"
    with pytest.raises(ValueError):
        ladder.ftype_of("Q9_9")


def test_cli_options_and_serve_dispatch(monkeypatch):
    from quant_llm_node.cli import bench
    import argparse
    parser_args = ["ladder", "--quick", "--runs", "2", "--variants", "Q6_K", "Q4_0"]
    parser = argparse.ArgumentParser()
    bench._ladder_parser(parser.add_subparsers(dest="cmd"))
    opts = bench.options_from_args(parser.parse_args(parser_args))
    assert opts.variants == ["Q6_K", "Q4_0"] and opts.runs == 2 and opts.warmup == 0
    monkeypatch.setattr(bench, "SERVE_MODULE", "quant_llm_node.bench._not_installed")
    assert bench.main(["serve"]) == 2


def test_perf_worker_in_child(variants, tmp_path):
    from quant_llm_node.bench.ladder.runner import run_child
    spec = {"model_path": str(variants["Q4_0"]), "threads": THREADS, "n_gpu_layers": 0, "n_ctx": 64,
            "n_batch": 32, "seed": 1, "runs": 1, "warmup": 0, "max_tokens": 2, "prompt_tokens": 8,
            "calibration_path": str(CALIBRATION), "scenarios": []}
    out = run_child("perf", spec, tmp_path, "t", tmp_path / "log.txt", progress=lambda _: None)
    assert "error" not in out, out
    assert out["rss_peak_bytes"] >= out["rss_after_load_bytes"] > 0 and out["load_ms"] > 0
    assert out["speed"]["prompt_tokens_median"] > 0 and out["speed"]["ttft_ms_median"] > 0
