"""Quantization math: properties of each scheme, bit-exactness with ggml, and the CLI on a real GGUF.

Everything is seeded; the real-model tests skip (with the reason) when no GGUF file is found.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
try:
    import quant_llm_node  # noqa: F401
except ImportError:  # running from a bare checkout
    sys.path.insert(0, str(ROOT / "src"))

from quant_llm_node.quant import awq, ggml_blocks, gptq, metrics, nf4, uniform  # noqa: E402

PUBLISHED_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]


def _model_path() -> Path | None:
    first = Path(os.environ.get("QLN_MODEL_PATH", str(ROOT / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")))
    for p in (first, Path("/tmp/models/q05.gguf")):
        if p.is_file():
            return p
    return None


MODEL = _model_path()
needs_model = pytest.mark.skipif(MODEL is None, reason="no GGUF model: set QLN_MODEL_PATH or put one at models/ or /tmp/models/q05.gguf")


def _rtn_zp4(w: np.ndarray, group: int | None = 128) -> np.ndarray:
    if group is None:
        return uniform.fake_quant(w, 4, "zeropoint", "channel")
    return uniform.fake_quant(w, 4, "zeropoint", "group", group)


def _correlated_activations(in_features: int, n: int, seed: int) -> np.ndarray:
    """Activations with correlated channels (low-rank mixing + noise), like real layer inputs."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((in_features, 16))
    x = basis @ rng.standard_normal((16, n)) + 0.3 * rng.standard_normal((in_features, n))
    return x.astype(np.float32)


# ----------------------------------------------------------------------------- NF4


def test_nf4_codebook_derived_equals_published():
    cb = nf4.nf4_codebook()
    assert cb.shape == (16,)
    np.testing.assert_allclose(cb, PUBLISHED_NF4, rtol=0, atol=1e-6)
    assert np.all(np.diff(cb) > 0) and cb[7] == 0.0 and cb[0] == -1.0 and cb[-1] == 1.0


def test_normal_ppf_inverts_cdf():
    # known quantiles of N(0, 1)
    assert nf4.normal_ppf(0.5) == pytest.approx(0.0, abs=1e-12)
    assert nf4.normal_ppf(0.975) == pytest.approx(1.959963984540054, abs=1e-9)
    assert nf4.normal_ppf(0.841344746068543) == pytest.approx(1.0, abs=1e-9)


def test_nf4_beats_uniform_int4_on_gaussian_weights():
    w = np.random.default_rng(1).standard_normal((256, 512)).astype(np.float32)
    e_nf4 = metrics.weight_rel_error(w, nf4.fake_quant_nf4(w, 64))
    e_int4 = metrics.weight_rel_error(w, uniform.fake_quant(w, 4, "absmax", "group", 64))
    assert e_nf4 < 0.9 * e_int4, (e_nf4, e_int4)


def test_nf4_codes_hit_codebook_and_block_absmax_is_exact():
    w = np.random.default_rng(2).standard_normal((8, 128)).astype(np.float32)
    codes, absmax = nf4.quantize_nf4(w, 64)
    assert codes.max() <= 15
    deq = nf4.dequantize_nf4(codes, absmax, w.shape).reshape(-1, 64)
    # the largest-magnitude entry of every block maps to +-1 * absmax
    np.testing.assert_allclose(np.max(np.abs(deq), axis=1), absmax[:, 0], rtol=0)


# ----------------------------------------------------------------------------- uniform


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("scheme", ["absmax", "zeropoint"])
def test_per_channel_beats_per_tensor_with_outlier_rows(bits, scheme):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    w[[3, 17, 40]] *= 50.0  # a few output rows with a much larger range
    e_tensor = metrics.weight_rel_error(w, uniform.fake_quant(w, bits, scheme, "tensor"))
    e_channel = metrics.weight_rel_error(w, uniform.fake_quant(w, bits, scheme, "channel"))
    e_group = metrics.weight_rel_error(w, uniform.fake_quant(w, bits, scheme, "group", 64))
    assert e_channel <= e_tensor
    assert e_channel < 0.8 * e_tensor, (e_channel, e_tensor)
    assert e_group <= e_channel * 1.001


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
def test_zero_point_beats_absmax_on_positive_data(bits, granularity):
    w = np.abs(np.random.default_rng(4).standard_normal((32, 256))).astype(np.float32) + 0.1
    e_abs = metrics.weight_rel_error(w, uniform.fake_quant(w, bits, "absmax", granularity, 64))
    e_zp = metrics.weight_rel_error(w, uniform.fake_quant(w, bits, "zeropoint", granularity, 64))
    assert e_zp < 0.75 * e_abs, (e_zp, e_abs)


@pytest.mark.parametrize("bits,scheme", [(8, "absmax"), (4, "absmax"), (8, "zeropoint"), (4, "zeropoint")])
def test_uniform_codes_in_range_and_error_bounded(bits, scheme):
    w = np.random.default_rng(5).standard_normal((16, 256)).astype(np.float32)
    q = uniform.quantize(w, bits, scheme, "group", 64)
    lo, hi = ((-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if scheme == "absmax" else (0, 2**bits - 1))
    assert q.codes.min() >= lo and q.codes.max() <= hi
    assert np.all(q.codes == np.round(q.codes))
    # round to nearest on a grid that covers the range: every value is within half a step
    err = np.abs(q.dequantize().reshape(-1, 64).astype(np.float64) - w.reshape(-1, 64))
    assert np.all(err <= q.scale * 0.5 * (1 + 1e-5))
    assert np.all(q.scale == q.scale.astype(np.float16))  # scales are float16 values
    assert q.bits_per_weight() == pytest.approx(bits + (16 + (bits if scheme == "zeropoint" else 0)) / 64)


def test_uniform_bits_per_weight():
    shape = (64, 256)
    assert uniform.bits_per_weight(8, "absmax", "tensor", shape) == pytest.approx(8 + 16 / (64 * 256))
    assert uniform.bits_per_weight(8, "absmax", "channel", shape) == pytest.approx(8 + 16 / 256)
    assert uniform.bits_per_weight(4, "zeropoint", "channel", shape) == pytest.approx(4 + 20 / 256)
    assert uniform.bits_per_weight(4, "zeropoint", "group", shape, 128) == pytest.approx(4 + 20 / 128)


def test_zero_maps_to_zero_exactly():
    w = np.random.default_rng(6).standard_normal((8, 128)).astype(np.float32)
    w[:, ::7] = 0.0
    for scheme in ("absmax", "zeropoint"):
        assert np.all(uniform.fake_quant(w, 4, scheme, "group", 64)[:, ::7] == 0.0)


# ----------------------------------------------------------------------------- ggml blocks


def _ggml_test_data() -> np.ndarray:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((48, 256)) * rng.lognormal(0, 3, (48, 1))).astype(np.float32)
    x[0, :32] = 0.0  # all-zero block
    x[1, :32] = np.arange(32) - 16.0  # exact ties at .5 after scaling
    x[2, :32] = -np.arange(32, dtype=np.float32)  # largest magnitude negative
    x[3, :32] = np.float32(0.5) * (np.arange(32) % 3)
    x[4, :32] = 7.0  # constant block, max repeated
    x[5, :64] = rng.standard_normal(64).astype(np.float32) * 1e-6  # scales near fp16 subnormals
    x[6, :32] = 0.5 + np.arange(32) * 2.0 - 32.0  # d = 1 in Q8_0 below: exact .5 ties both signs
    x[6, 0] = 127.0
    return x


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0"])
def test_ggml_blocks_bit_exact_with_gguf(name):
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    qtype = GGMLQuantizationType[name]
    ours_q = {"Q8_0": ggml_blocks.quantize_q8_0, "Q4_0": ggml_blocks.quantize_q4_0}[name]
    ours_dq = {"Q8_0": ggml_blocks.dequantize_q8_0, "Q4_0": ggml_blocks.dequantize_q4_0}[name]
    x = _ggml_test_data()
    raw = ours_q(x)
    ref = quantize(x, qtype)
    assert raw.dtype == np.uint8 and raw.shape == ref.shape
    assert raw.tobytes() == ref.tobytes()
    np.testing.assert_array_equal(ours_dq(raw), dequantize(ref, qtype))


def test_ggml_blocks_bit_exact_property():
    hypothesis = pytest.importorskip("hypothesis")
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    floats = st.floats(-1e4, 1e4, width=32, allow_subnormal=False)

    @settings(max_examples=60, derandomize=True, deadline=None, database=None)
    @given(arrays(np.float32, st.integers(1, 4).map(lambda k: (k * 32,)), elements=floats))
    def check(x):
        assert ggml_blocks.quantize_q8_0(x).tobytes() == quantize(x, GGMLQuantizationType.Q8_0).tobytes()
        assert ggml_blocks.quantize_q4_0(x).tobytes() == quantize(x, GGMLQuantizationType.Q4_0).tobytes()

    assert hypothesis.__version__
    check()


def test_ggml_error_levels_and_sizes():
    x = np.random.default_rng(8).standard_normal((64, 1024)).astype(np.float32)
    e8 = metrics.weight_rel_error(x, ggml_blocks.fake_quant_q8_0(x))
    e4 = metrics.weight_rel_error(x, ggml_blocks.fake_quant_q4_0(x))
    assert 0.003 < e8 < 0.008 and 0.06 < e4 < 0.11  # shared README: 0.0054 / 0.086 on random data
    assert ggml_blocks.quantize_q8_0(x).shape == (64, 1024 // 32 * 34)
    assert ggml_blocks.quantize_q4_0(x).shape == (64, 1024 // 32 * 18)
    assert ggml_blocks.Q8_0_BITS_PER_WEIGHT == 8.5 and ggml_blocks.Q4_0_BITS_PER_WEIGHT == 4.5
    with pytest.raises(ValueError):
        ggml_blocks.quantize_q8_0(np.zeros((2, 33), np.float32))


# ----------------------------------------------------------------------------- GPTQ


@pytest.mark.parametrize("group", [128, None])
def test_gptq_output_error_not_worse_than_rtn(group):
    rng = np.random.default_rng(9)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    x = _correlated_activations(256, 2048, seed=10)
    res = gptq.gptq_quantize(w, x, bits=4, scheme="zeropoint", group_size=group)
    e_gptq = metrics.output_rel_error(w, res.weight, x)
    e_rtn = metrics.output_rel_error(w, _rtn_zp4(w, group), x)
    assert e_gptq <= e_rtn
    assert e_gptq < 0.8 * e_rtn, (e_gptq, e_rtn)
    # every column still sits on its group's 4-bit grid
    gi = np.arange(256) // (group or 256)
    codes = res.weight / res.scale[:, gi] + res.zero[:, gi]
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    assert codes.min() > -1e-3 and codes.max() < 15 + 1e-3


def test_gptq_equals_rtn_when_hessian_is_diagonal():
    """With H proportional to I there is no error feedback: GPTQ must reduce to rounding."""
    w = np.random.default_rng(11).standard_normal((32, 256)).astype(np.float32)
    x = np.eye(256, dtype=np.float32) * 3.0
    res = gptq.gptq_quantize(w, x, bits=4, scheme="zeropoint", group_size=64)
    np.testing.assert_array_equal(res.weight, _rtn_zp4(w, 64))


def test_gptq_result_does_not_depend_on_block_size():
    rng = np.random.default_rng(12)
    w = rng.standard_normal((32, 256)).astype(np.float32)
    x = _correlated_activations(256, 1024, seed=13)
    a = gptq.gptq_quantize(w, x, group_size=64, block_size=128).weight
    b = gptq.gptq_quantize(w, x, group_size=64, block_size=16).weight
    assert np.mean(a != b) < 1e-3  # identical up to rare float-rounding flips


def test_gptq_inverse_hessian_factor():
    x = _correlated_activations(96, 400, seed=14)
    h = gptq.hessian(x)
    u = gptq.inverse_hessian_cholesky(h, damp=0.01)
    hd = h + 0.01 * np.mean(np.diag(h)) * np.eye(96)
    assert np.allclose(u, np.triu(u)) and np.all(np.diag(u) > 0)
    np.testing.assert_allclose(u.T @ u, np.linalg.inv(hd), rtol=1e-8, atol=1e-10 * np.abs(np.linalg.inv(hd)).max())


def test_gptq_dead_inputs_are_zeroed():
    rng = np.random.default_rng(15)
    w = rng.standard_normal((16, 128)).astype(np.float32)
    x = _correlated_activations(128, 512, seed=16)
    x[[5, 77]] = 0.0
    res = gptq.gptq_quantize(w, x, group_size=64)
    assert res.dead_inputs == 2
    assert np.all(res.weight[:, [5, 77]] == 0.0) and np.all(np.isfinite(res.weight))


# ----------------------------------------------------------------------------- AWQ


def test_awq_helps_when_few_input_channels_are_large():
    rng = np.random.default_rng(17)
    w = rng.standard_normal((128, 256)).astype(np.float32)
    x = rng.standard_normal((256, 1024)).astype(np.float32)
    x[[7, 60, 130, 200]] *= 30.0
    res = awq.awq_quantize(w, x, bits=4, scheme="zeropoint", group_size=128)
    e_awq = metrics.output_rel_error(w, res.weight, x)
    e_rtn = metrics.output_rel_error(w, _rtn_zp4(w), x)
    assert e_awq <= e_rtn
    assert e_awq < 0.9 * e_rtn, (e_awq, e_rtn)
    assert res.alpha > 0 and res.scales[[7, 60, 130, 200]].min() > np.median(res.scales)
    # alpha = 0 of the search is exactly round-to-nearest
    assert res.errors[0.0] == pytest.approx(float(np.mean(((w - _rtn_zp4(w)) @ x) ** 2)), rel=1e-3)


def test_awq_never_worse_than_rtn_on_calibration():
    rng = np.random.default_rng(18)
    w = rng.standard_normal((64, 128)).astype(np.float32)
    x = rng.standard_normal((128, 64)).astype(np.float32)  # fewer samples than features: direct path
    res = awq.awq_quantize(w, x, group_size=64, n_grid=10)
    assert metrics.output_rel_error(w, res.weight, x) <= metrics.output_rel_error(w, _rtn_zp4(w, 64), x) * (1 + 1e-6)


# ----------------------------------------------------------------------------- metrics


def test_metrics():
    rng = np.random.default_rng(19)
    w = rng.standard_normal((8, 32))
    w_hat = w + 0.01 * rng.standard_normal((8, 32))
    assert metrics.output_rel_error(w, w_hat, np.eye(32)) == pytest.approx(metrics.weight_rel_error(w, w_hat), rel=1e-5)
    assert metrics.weight_rel_error(w, w) == 0.0 and metrics.sqnr_db(w, w) == float("inf")
    assert metrics.sqnr_db(w, w_hat) == pytest.approx(-20 * np.log10(metrics.weight_rel_error(w, w_hat)))


# ----------------------------------------------------------------------------- real GGUF


@pytest.fixture(scope="module")
def reader():
    from quant_llm_node.quant import gguf_tensors

    return gguf_tensors.open_gguf(MODEL)


@needs_model
def test_real_tensors_load_and_q8_0_decodes_bit_exact(reader):
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    from quant_llm_node.quant import gguf_tensors

    w = gguf_tensors.load_tensor(reader, "blk.0.attn_q.weight")
    assert w.shape == (896, 896) and w.dtype == np.float32 and np.isfinite(w).all()
    rows = gguf_tensors.load_tensor(reader, "token_embd.weight", rows=[0, 10, 151935])
    assert rows.shape == (3, 896)
    q8 = [t for t in gguf_tensors.list_tensors(reader) if t.type_name == "Q8_0" and len(t.shape) == 2]
    assert q8, "the model has Q8_0 tensors"
    raw, _ = gguf_tensors.raw_tensor(reader, q8[-1].name)
    deq = ggml_blocks.dequantize_q8_0(raw)
    np.testing.assert_array_equal(deq, dequantize(np.asarray(raw), GGMLQuantizationType.Q8_0))
    # re-quantizing the decoded values reproduces the stored bytes
    assert ggml_blocks.quantize_q8_0(deq).tobytes() == np.asarray(raw).tobytes()


@needs_model
def test_cli_on_real_gguf_tensor(reader, tmp_path, capsys):
    from quant_llm_node.cli import quant_math

    out = tmp_path / "quant.json"
    rc = quant_math.main(["--model", str(MODEL), "--samples", "2048", "--heldout", "256", "--json", str(out)])
    assert rc == 0
    table = capsys.readouterr().out
    rec = json.loads(out.read_text())
    res = {r["scheme"]: r for r in rec["results"]}
    expected = {f"{s}{b}-{g}" for s in ("absmax", "zp") for b in (8, 4) for g in ("tensor", "channel", "g128")}
    expected |= {"nf4-g64", "q8_0", "q4_0", "gptq4-g128", "awq4-g128"}
    assert set(res) == expected
    assert all(name in table for name in expected)
    assert rec["tensor"] == "blk.0.attn_q.weight" and rec["shape"] == [896, 896]
    assert rec["calibration"]["source"] == "real"
    for r in rec["results"]:
        assert 0 < r["weight_rel_error"] < 1 and 0 < r["output_rel_error"] < 1 and r["seconds"] >= 0
    assert res["q8_0"]["bits_per_weight"] == 8.5 and res["q4_0"]["bits_per_weight"] == 4.5
    assert res["nf4-g64"]["bits_per_weight"] == 4.25
    for s in ("absmax", "zp"):
        assert res[f"{s}8-g128"]["output_rel_error"] < res[f"{s}4-g128"]["output_rel_error"]
        assert res[f"{s}4-channel"]["weight_rel_error"] <= res[f"{s}4-tensor"]["weight_rel_error"]
    assert res["q8_0"]["output_rel_error"] < res["q4_0"]["output_rel_error"]
    rtn = res["zp4-g128"]["output_rel_error"]
    assert res["gptq4-g128"]["output_rel_error"] <= rtn
    assert res["awq4-g128"]["output_rel_error"] <= rtn * (1 + 1e-9)


@needs_model
def test_cli_synthetic_fallback_and_errors(reader, tmp_path, capsys):
    from quant_llm_node.cli import quant_math

    out = tmp_path / "syn.json"
    rc = quant_math.main([
        "--model", str(MODEL), "--tensor", "blk.0.attn_output.weight", "--samples", "1024",
        "--heldout", "0", "--schemes", "zp4-g128,awq4-g128", "--json", str(out),
    ])
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["calibration"]["source"] == "synthetic"
    res = {r["scheme"]: r for r in rec["results"]}
    assert res["awq4-g128"]["output_rel_error"] < res["zp4-g128"]["output_rel_error"]
    assert quant_math.main(["--model", str(MODEL), "--tensor", "no.such.weight"]) == 2
    assert quant_math.main(["--model", str(MODEL), "--schemes", "bogus"]) == 2
    capsys.readouterr()


def test_cli_missing_model(tmp_path, capsys):
    from quant_llm_node.cli import quant_math

    assert quant_math.main(["--model", str(tmp_path / "absent.gguf")]) == 2
    assert "not found" in capsys.readouterr().err
