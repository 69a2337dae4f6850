"""Speed of one variant, run inside a fresh process: load time, RSS, cold time to first token,
prompt and decode tok/s on a fixed text prompt, then the planner scenarios answered as the
node answers them (static prefix warmed once, decision grammar, greedy)."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from quant_llm_node.bench.host import peak_rss_bytes, rss_bytes
from quant_llm_node.engine.llama_engine import EngineSettings, LlamaEngine

LATENCY_PERCENTILES = (50, 95)
INVALID_ACTION = "invalid"
MS_PER_S = 1e3


def _cold(engine: LlamaEngine) -> None:
    """Forget the KV cache so the next prompt is evaluated in full."""
    engine.reset_cache()


def speed_prompt(engine: LlamaEngine, text: str, n_tokens: int) -> str:
    """The first ``n_tokens`` tokens of ``text`` as a plain-text prompt."""
    return engine.detokenize(engine.tokenize(text)[:n_tokens])


def speed_runs(engine: LlamaEngine, prompt: str, max_tokens: int, runs: int, warmup: int,
               progress=print) -> dict:
    """Cold prompt + free decode, ``warmup`` untimed then ``runs`` timed; medians."""
    rows = []
    for i in range(warmup + runs):
        _cold(engine)
        g = engine.generate(prompt, max_tokens)
        evaluated = g.prompt_tokens - g.cached_tokens
        row = {"prompt_tokens": evaluated, "prompt_ms": g.prompt_ms, "ttft_ms": g.first_token_ms,
               "prompt_tps": evaluated / (g.prompt_ms / MS_PER_S) if g.prompt_ms > 0 else 0.0,
               "decode_tps": g.decode_tps, "completion_tokens": g.completion_tokens}
        tag = "warmup" if i < warmup else f"run {i - warmup + 1}/{runs}"
        progress(f"  speed {tag}: ttft {g.first_token_ms:.0f} ms, prompt {row['prompt_tps']:.1f} tok/s, "
                 f"decode {g.decode_tps:.1f} tok/s ({g.completion_tokens} tokens)")
        if i >= warmup:
            rows.append(row)
    med = {k: statistics.median(r[k] for r in rows) for k in
           ("ttft_ms", "prompt_tps", "decode_tps", "prompt_tokens", "completion_tokens")}
    return {"runs": rows, **{f"{k}_median": v for k, v in med.items()}}


def scenario_runs(engine: LlamaEngine, scenarios: list[dict], places_file: str, config_file: str,
                  max_tokens: int | None, passes: int, progress=print) -> dict:
    """Answer each scenario as NavigationService does; decisions and end-to-end latencies."""
    from quant_llm_node.config import load_config
    from quant_llm_node.reasoning.schema import DecisionParseError, json_object_complete
    from quant_llm_node.reasoning.task import DecisionTask, config_path, load_map
    from quant_llm_node.reasoning.validation import validate_request

    cfg = load_config(config_path(config_file))
    if max_tokens:
        cfg.engine.max_tokens = max_tokens
    task = DecisionTask.from_config(cfg, load_map(places_file))
    grammar = task.grammar
    stop = None if grammar else json_object_complete
    limit = task.max_tokens
    builder = task.prompts(engine.chat_renderer())
    _cold(engine)
    prefix_ms = engine.warm(builder.static_prefix)
    rows, latencies, ttfts = [], [], []
    for p in range(passes):
        for sc in scenarios:
            raw = {k: sc[k] for k in ("query", "goal", "state") if k in sc}
            req = validate_request(raw, cfg.serving)
            t0 = time.perf_counter()
            g = engine.generate(builder.build(req, sc.get("grounded", "")), limit, grammar,
                                cfg.engine.temperature, stop)
            try:
                decision = task.schema.parse(g.text)
                action, target = decision.action, decision.target_place_id
                final = task.decide(g.text, req, sc.get("grounded", "")).action
            except DecisionParseError:
                action, target, final = INVALID_ACTION, "", INVALID_ACTION
            total_ms = (time.perf_counter() - t0) * MS_PER_S
            latencies.append(total_ms)
            ttfts.append(g.first_token_ms)
            if p == 0:
                rows.append({"id": sc["id"], "action": action, "target": target, "final_action": final,
                             "acceptable": action in sc.get("acceptable", ()), "total_ms": total_ms,
                             "ttft_ms": g.first_token_ms, "completion_tokens": g.completion_tokens,
                             "text": g.text})
            progress(f"  scenario {sc['id']}: {action} ({total_ms:.0f} ms, {g.completion_tokens} tokens)")
    pct = {f"latency_p{q}_ms": float(np.percentile(latencies, q)) for q in LATENCY_PERCENTILES}
    pct.update({f"ttft_p{q}_ms": float(np.percentile(ttfts, q)) for q in LATENCY_PERCENTILES})
    return {"prefix_ms": prefix_ms, "prefix_tokens": engine.count_tokens(builder.static_prefix),
            "grammar": grammar is not None, "max_tokens": limit, "scenarios": rows,
            "acceptable_rate": float(np.mean([r["acceptable"] for r in rows])) if rows else None,
            **pct}


def run(spec: dict, progress=print) -> dict:
    """Worker entry: spec keys as written by runner.perf_spec()."""
    rss_base = rss_bytes()
    settings = EngineSettings(model_path=spec["model_path"], n_ctx=spec["n_ctx"],
                              n_threads=spec["threads"], n_batch=spec["n_batch"],
                              n_gpu_layers=spec["n_gpu_layers"], seed=spec["seed"])  # the ladder's own
    engine = LlamaEngine(settings)
    report = engine.load(verify_checksum=False)
    out = {"load_ms": report.load_ms, "rss_baseline_bytes": rss_base, "rss_after_load_bytes": rss_bytes(),
           "n_layers_offloaded": report.n_layers_offloaded, "backend": report.backend}
    progress(f"  loaded in {report.load_ms:.0f} ms, RSS {out['rss_after_load_bytes'] / 2**20:.0f} MiB")
    try:
        text = Path(spec["calibration_path"]).read_text()
        prompt = speed_prompt(engine, text, spec["prompt_tokens"])
        out["speed"] = speed_runs(engine, prompt, spec["max_tokens"], spec["runs"], spec["warmup"], progress)
        if spec["scenarios"]:
            out["scenarios"] = scenario_runs(engine, spec["scenarios"], spec["places_file"],
                                             spec["config_file"], spec.get("scenario_max_tokens"),
                                             spec.get("scenario_passes", 1), progress)
    finally:
        out["rss_peak_bytes"] = peak_rss_bytes()
        engine.close()
    return out
