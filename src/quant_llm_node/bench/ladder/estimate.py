"""Rough wall-clock estimate of a ladder run, printed before it starts (and refined as it goes).

Constants come from idle-machine figures of the 2-core x86 dev box (shared/README.md: Qwen
0.5B Q4_K_M decodes at ~0.8x its roofline; Qwen 1.5B evaluates a 475-token prompt in ~11 s);
they only size the run, nothing is measured with them. The runner rescales its "time left"
by the measured pace as it goes.
"""
from __future__ import annotations

# seconds per billion parameters to write each variant from a Q4_K_M source
QUANT_S_PER_GPARAM = {"F16": 35.0, "Q8_0": 20.0, "Q6_K": 25.0, "Q5_K_M": 35.0,
                      "Q4_K_M": 25.0, "Q4_0": 15.0}
# nominal bits per weight of each variant (to size a file before it exists)
NOMINAL_BPW = {"F16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.7, "Q4_K_M": 4.9, "Q4_0": 4.6}
BITS_PER_BYTE = 8
PROMPT_GFLOPS_PER_THREAD = 40.0   # effective prompt-eval throughput (2 x params x tok/s)
DECODE_EFFICIENCY = 0.7           # achieved / roofline decode on CPU
GRAMMAR_SLOWDOWN = 1.5            # decode under the decision grammar
CHILD_OVERHEAD_S = 4.0            # process start, imports, model load
SCORE_S_PER_CHUNK = 1.5           # log-softmax / top-K of one quality chunk
PREFIX_TOKENS = 450               # static prompt prefix (system prompt, schema, map)
SUFFIX_TOKENS = 90                # per-scenario dynamic part
ANSWER_TOKENS = 35                # a decision JSON
FLOPS_PER_PARAM_TOKEN = 2.0


def variant_seconds(n_params: int, tensor_bytes: int, host_gbps: float, threads: int, *,
                    quality_tokens: int, quality_chunks: int, speed_runs: int, prompt_tokens: int,
                    max_tokens: int, n_scenarios: int, scenario_passes: int) -> float:
    """Measurement time of one variant (two child processes)."""
    prompt_tps = PROMPT_GFLOPS_PER_THREAD * 1e9 * max(1, threads) / (FLOPS_PER_PARAM_TOKEN * n_params)
    decode_tps = DECODE_EFFICIENCY * host_gbps * 1e9 / tensor_bytes
    prefill = quality_tokens + speed_runs * prompt_tokens
    decode = speed_runs * max_tokens
    if n_scenarios:
        prefill += PREFIX_TOKENS + n_scenarios * scenario_passes * SUFFIX_TOKENS
        decode += n_scenarios * scenario_passes * ANSWER_TOKENS * GRAMMAR_SLOWDOWN
    return (2 * CHILD_OVERHEAD_S + quality_chunks * SCORE_S_PER_CHUNK
            + prefill / prompt_tps + decode / decode_tps)


def quantize_seconds(variant: str, n_params: int) -> float:
    return QUANT_S_PER_GPARAM.get(variant, max(QUANT_S_PER_GPARAM.values())) * n_params / 1e9


def fmt_duration(seconds: float) -> str:
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s" if minutes else f"{sec} s"


def nominal_bytes(variant: str, n_params: int, source_bytes: int) -> int:
    """Expected tensor bytes of a variant (the source's own size for unknown names)."""
    bpw = NOMINAL_BPW.get(variant)
    return int(bpw * n_params / BITS_PER_BYTE) if bpw else source_bytes
