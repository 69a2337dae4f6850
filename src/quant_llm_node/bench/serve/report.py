"""Summaries and the Markdown/JSON report of the serving benchmark."""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from quant_llm_node.serving.metrics import percentiles

OVERHEAD_TARGET_P50_MS = 2.0
FORCED_TARGET_P50_MS = 5.0  # rule-forced answers, node-side, while the worker is busy
TTFT_CACHED_TARGET = 0.20  # cached-prefix TTFT <= 20 % of cold


def _ratio(a: float | None, b: float | None) -> float:
    """a / b, NaN when either is missing."""
    if a is None or not b or math.isnan(b):
        return float("nan")
    return a / b


def node_decode(records: Iterable[dict]) -> dict[str, float]:
    """Decode rate through the node: sum of completion tokens / sum of decode time."""
    rs = [r for r in records if r.get("completion_tokens", 0) > 0 and r.get("decode_ms", 0) > 0]
    ms = sum(r["decode_ms"] for r in rs)
    toks = sum(r["completion_tokens"] for r in rs)
    return {"requests": len(rs), "tokens_per_s": toks / ms * 1e3 if ms else float("nan"),
            "mean_tokens": toks / len(rs) if rs else float("nan")}


def overhead(model_recs: list[dict], empty_recs: list[dict]) -> dict[str, Any]:
    """Service overhead (round trip - node total) and the bare round trip of rejected requests."""
    answered = [r for r in model_recs if r["status"] == "answered"]
    firsts = [r["first_token_ms"] for r in answered if r["completion_tokens"] > 0]
    out = {
        "requests": len(model_recs), "answered": len(answered),
        "lost": sum(r["status"] == "lost" for r in model_recs),
        "error_codes": dict(Counter(r.get("error_code", "") for r in model_recs if r.get("error_code"))),
        "overhead_ms": percentiles(r["overhead_ms"] for r in answered),
        "round_trip_ms": percentiles(r["round_trip_ms"] for r in answered),
        "node_total_ms": percentiles(r["total_ms"] for r in answered),
        "node_first_token_ms": percentiles(firsts),
        "transport": {
            "requests": len(empty_recs),
            "lost": sum(r["status"] == "lost" for r in empty_recs),
            "error_codes": dict(Counter(r.get("error_code", "") for r in empty_recs)),
            "round_trip_ms": percentiles(r["round_trip_ms"] for r in empty_recs if r["status"] != "lost"),
        },
        "target_p50_ms": OVERHEAD_TARGET_P50_MS,
    }
    out["meets_target"] = out["overhead_ms"]["p50"] <= OVERHEAD_TARGET_P50_MS
    return out


def forced_entry(idle: list[dict], busy: list[dict]) -> dict[str, Any]:
    """Rule-forced requests: node-side and round-trip latency, worker idle and busy."""
    def side(recs: list[dict]) -> dict[str, Any]:
        ok = [r for r in recs if r["status"] == "answered"]
        return {"requests": len(recs), "answered": len(ok),
                "without_model": sum(r["source"] == "safety_override" and r["completion_tokens"] == 0
                                     for r in ok),
                "node_total_ms": percentiles(r["total_ms"] for r in ok),
                "round_trip_ms": percentiles(r["round_trip_ms"] for r in ok)}
    out = {"idle": side(idle), "busy": side(busy), "target_p50_ms": FORCED_TARGET_P50_MS}
    out["meets_target"] = out["busy"]["node_total_ms"]["p50"] <= FORCED_TARGET_P50_MS
    return out


def load_entry(report, node_cpu: dict, first: list[dict]) -> dict[str, Any]:
    """LoadReport.summary() plus node-side latency, overhead under load, the reconciliation and
    throughput relative to the first (baseline) client count."""
    s = report.summary()
    s["throughput_vs_first"] = _ratio(s["throughput_rps"], first[0]["throughput_rps"]) if first else 1.0
    answered = [o for o in report.outcomes if o.status == "answered"]
    s["node_total_ms"] = percentiles(o.total_ms for o in answered)
    s["overhead_ms"] = percentiles(o.round_trip_ms - o.total_ms for o in answered)
    s["reconciliation_ok"] = bool(s["reconciled"]) and s["lost"] == 0
    s["node_cpu"] = node_cpu
    return s


def ttft_entry(engine_ttft: dict, node_first_token: dict) -> dict[str, Any]:
    out = dict(engine_ttft)
    out["node_first_token_ms"] = node_first_token
    out["target_cached_over_cold"] = TTFT_CACHED_TARGET
    out["meets_target"] = out.get("cached_over_cold", math.inf) <= TTFT_CACHED_TARGET
    return out


def decode_entry(node: dict, engine: dict | None, native: dict | None, spec: dict | None,
                 threads: int) -> dict:
    out: dict[str, Any] = {"node": node, "threads": threads}
    if engine:
        out["engine"] = engine
        out["node_over_engine"] = _ratio(node["tokens_per_s"], engine["tokens_per_s"])
    if native:
        tg = float(native["tg_tps"])
        out["native"] = {"tg_tps": tg, "loadavg": native.get("loadavg"), "threads": native.get("threads"),
                         "threads_match": native.get("threads") == threads,
                         "kv_depth": (native.get("tg") or {}).get("n_depth", 0)}
        out["node_over_native"] = _ratio(node["tokens_per_s"], tg)
        if engine:
            out["engine_over_native"] = _ratio(engine["tokens_per_s"], tg)
    if spec is not None:
        out["speculative"] = spec
    return out


def _clean(x: Any) -> Any:
    """NaN / inf -> null, so that the JSON is strict."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _f(x: Any, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _cpu(c: dict | None) -> str:
    """'1.9 cores · load 2.1': how much CPU a phase got, beside the host's load average."""
    if not c:
        return "–"
    la = c.get("loadavg") or []
    return f"{_f(c.get('cores_used'), 2)} cores · load {_f(la[0], 2) if la else '–'}"


def _pct(d: dict, nd: int = 1) -> str:
    return " / ".join(_f(d.get(k), nd) for k in ("p50", "p95", "p99"))


def markdown(res: dict) -> str:
    """The report as Markdown tables."""
    m = res["meta"]
    lines = [f"# Serving benchmark — {m['model']}", "",
             f"{m['time']} · host {m['cpu']} · {m['threads']} threads · load average "
             f"{m['loadavg_start']} → {m['loadavg_end']} · {m['duration_s']:.0f} s"
             + (" · quick" if m.get("quick") else ""), ""]
    o = res.get("overhead")
    if o:
        t = o["transport"]
        lines += ["## ROS service overhead (ms, p50 / p95 / p99)", "",
                  "| measure | value | n |", "|---|---|---|",
                  f"| round trip − node total_ms (model requests) | {_pct(o['overhead_ms'], 2)} | {o['answered']} |",
                  f"| bare round trip (EMPTY_QUERY, rejected before the model) | {_pct(t['round_trip_ms'], 2)} | {t['requests']} |",
                  f"| round trip (model requests) | {_pct(o['round_trip_ms'])} | {o['answered']} |",
                  f"| node total_ms (baseline) | {_pct(o['node_total_ms'])} | {o['answered']} |",
                  "", f"Target overhead p50 <= {o['target_p50_ms']} ms: "
                  f"**{'met' if o['meets_target'] else 'missed'}** (node {_cpu(o.get('node_cpu'))}).", ""]
    fo = res.get("forced")
    if fo:
        lines += ["## Rule-forced requests (answered without the model, ms, p50 / p95 / p99)", "",
                  "| worker | node total_ms | round trip | answered without the model |", "|---|---|---|---|"]
        for k in ("idle", "busy"):
            s = fo[k]
            lines.append(f"| {k} | {_pct(s['node_total_ms'], 2)} | {_pct(s['round_trip_ms'], 2)} "
                         f"| {s['without_model']}/{s['requests']} |")
        lines += ["", f"Target node-side p50 <= {fo['target_p50_ms']} ms with the worker busy: "
                  f"**{'met' if fo['meets_target'] else 'missed'}**.", ""]
    if res.get("load"):
        lines += ["## Concurrent planners", "",
                  "| clients | sent | answered | rejected | lost | reconciled | req/s (vs first) | round trip p50 / p95 / p99 ms "
                  "| node total p50 ms | deadline misses | OVERLOADED | fallbacks | node cores used · load avg |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in res["load"]:
            lines.append(f"| {s['clients']} | {s['sent']} | {s['answered']} | {s['rejected']} | {s['lost']} "
                         f"| {'yes' if s['reconciliation_ok'] else 'NO'} | {_f(s['throughput_rps'], 2)} "
                         f"({_f(s['throughput_vs_first'], 2)}×) "
                         f"| {_pct(s['round_trip_ms'], 0)} | {_f(s['node_total_ms']['p50'], 0)} "
                         f"| {s['deadline_misses']} | {s['overloaded']} | {s['fallbacks']} | {_cpu(s['node_cpu'])} |")
        lines.append("")
    tt = res.get("ttft")
    if tt:
        lines += ["## Time to first token (in-process LlamaEngine, ms)", "",
                  "| KV cache state | p50 / p95 / p99 | cached tokens | ratio to cold |", "|---|---|---|---|"]
        for k in ("cold", "cached", "evicted"):
            ratio = 1.0 if k == "cold" else tt.get(f"{k}_over_cold")
            lines.append(f"| {k} | {_pct(tt[k]['first_token_ms'])} | {_f(tt[k]['cached_tokens_mean'], 0)} "
                         f"| {_f(ratio, 3)} |")
        lines.append(f"| node responses (cached prefix) | {_pct(tt['node_first_token_ms'])} | | "
                     f"{_f(_ratio(tt['node_first_token_ms'].get('p50'), tt['cold']['first_token_ms']['p50']), 3)} |")
        lines += ["", f"Static prefix {tt['prefix_tokens']} tokens. Target cached <= "
                  f"{tt['target_cached_over_cold']:.0%} of cold: **{'met' if tt['meets_target'] else 'missed'}** "
                  f"(in-process {_cpu(tt.get('cpu'))}).", ""]
    d = res.get("decode")
    if d:
        lines += ["## Decode rate (tokens/s)", "", "| path | tok/s | vs engine | vs native |", "|---|---|---|---|",
                  f"| node (completion_tokens / decode_ms) | {_f(d['node']['tokens_per_s'])} "
                  f"| {_f(d.get('node_over_engine'), 3)} | {_f(d.get('node_over_native'), 3)} |"]
        if "engine" in d:
            lines.append(f"| LlamaEngine in-process | {_f(d['engine']['tokens_per_s'])} | 1.000 "
                         f"| {_f(d.get('engine_over_native'), 3)} |")
        if "native" in d:
            nat = d["native"]
            warn = "" if nat["threads_match"] else f", {nat['threads']} threads: NOT comparable"
            depth = f"KV depth {nat.get('kv_depth', 0)}, "
            lines.append(f"| native llama-bench tg ({depth}load {nat['loadavg']}{warn}) | {_f(nat['tg_tps'])} "
                         f"| | 1.000 |")
        lines += ["", f"Node {_cpu(d.get('node_cpu'))}; in-process {_cpu(d.get('engine', {}).get('cpu'))}."]
        sp = d.get("speculative")
        if sp and "skipped" not in sp:
            lines += ["", f"Speculative ({sp['mode']}, k={sp['k']}): generation-time speedup "
                      f"{_f(sp['speedup'], 2)}×, acceptance {_f(sp['acceptance'], 2)}, plain "
                      f"{_f(sp['plain']['tokens_per_s'])} vs speculative {_f(sp['spec']['tokens_per_s'])} tok/s, "
                      f"outputs identical: {sp['identical']}."]
        elif sp:
            lines += ["", f"Speculative: skipped ({sp['skipped']})."]
        lines.append("")
    return "\n".join(lines)


def write(res: dict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "serve.json", "md": out_dir / "serve.md"}
    paths["json"].write_text(json.dumps(_clean(res), indent=1, allow_nan=False) + "\n")
    paths["md"].write_text(markdown(res) + "\n")
    return paths
