"""The fleet benchmark's report: fleet.json (everything), fleet.md (tables), fleet.png."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

NAME = "fleet"


def _ms(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x / 1e3:.1f} s"


def _pct(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.0f} %"


def line(e: dict[str, Any]) -> str:
    """One-line summary of a run (progress output)."""
    return (f"{e.get('throughput_dps', math.nan):.3f} decisions/s, p50 {_ms(e.get('latency_ms', {}).get('p50'))}, "
            f"p95 {_ms(e.get('latency_ms', {}).get('p95'))}, local {_pct(e.get('local_share', math.nan))}, "
            f"sent {e.get('sent')}, lost {e.get('lost')}, misses {e.get('deadline_misses')}, "
            f"load {e.get('loadavg_end')}")


def remote_errors(e: dict[str, Any]) -> dict[str, int]:
    """Remote errors by kind, summed over the robots' remote diagnostics (cumulative per node)."""
    out: dict[str, int] = {}
    for st in (e.get("remote_status") or {}).values():
        for k, v in st.items():
            if k.startswith("errors."):
                out[k[7:]] = out.get(k[7:], 0) + int(v)
    return out


def _row(label: str, e: dict[str, Any]) -> str:
    lat = e["latency_ms"]
    return (f"| {label} | {e['robots']} | {e['throughput_dps']:.3f} | {_ms(lat['p50'])} | {_ms(lat['p95'])} "
            f"| {_pct(e['local_share'])} | {e['sent']} | {e['answered']} | {e['lost']} "
            f"| {e['deadline_misses']} | {e['fallbacks']} |")


HEAD = ("| run | robots | decisions/s (fleet) | p50 | p95 | answered locally | sent | answered | lost "
        "| deadline misses | fallbacks |\n|---|---|---|---|---|---|---|---|---|---|---|")


def table(res: dict[str, Any]) -> str:
    """The main table (README copies it)."""
    rows = [_row(e["mode"], e) for e in res["runs"]]
    k = res.get("kill_run")
    if k and "kill" in k:
        rows.append(_row("hybrid, kill: before", k["kill"]["before"]))
        rows.append(_row("hybrid, kill: after", k["kill"]["after"]))
    return "\n".join([HEAD, *rows])


def _comparison(res: dict[str, Any]) -> list[str]:
    by = {(e["mode"], e["robots"]): e for e in res["runs"]}
    out = []
    for n in sorted({e["robots"] for e in res["runs"]}):
        h, l = by.get(("hybrid", n)), by.get(("local", n))
        if h and l and l["throughput_dps"]:
            out.append(f"- {n} robot(s): shared server {h['throughput_dps']:.3f} vs local-only "
                       f"{l['throughput_dps']:.3f} decisions/s ({h['throughput_dps'] / l['throughput_dps']:.1f}x); "
                       f"remote answers p50 {_ms(h['remote_latency_ms']['p50'])}, local-only p50 "
                       f"{_ms(l['local_latency_ms']['p50'])}")
    return out


def settings(res: dict[str, Any]) -> str:
    """How the runs were set up: server, robots, deadline."""
    m = res["meta"]
    runs = res["runs"] + ([res["kill_run"]] if res.get("kill_run") else [])
    hybrid = next((e for e in runs if e.get("server")), None)
    share = runs[0]["deadline_share"] if runs else float("nan")
    srv = (f"one `{m['server']}` on 127.0.0.1 with N slots (`-np N --cont-batching -c {2048}·N "
           f"-t {hybrid['server']['threads']}`), the robots' own GGUF" if hybrid else "no server")
    threads = ", ".join(sorted({f"{e['robots']} robot(s): {e['robot_threads']}" for e in runs}))
    return (f"Setup: {srv}. Each robot is a node process with config/robot.yaml and `-p` overrides "
            f"(engine.backend hybrid | local, remote.url, engine.n_threads = the robot's share of the "
            f"cores: {threads}; remote.read_timeout_s = the server's share of the deadline), driven by "
            f"its own planner process over ROS 2 services on loopback, requests back to back. Deadline "
            f"{m['deadline_ms']} ms for every request: the server gets deadline_share {share:g} of it, the "
            f"local model the rest, chosen above local-only p95 at the largest fleet on this host so that "
            f"a fallback to the robot's model can still meet it.")


def markdown(res: dict[str, Any]) -> str:
    m = res["meta"]
    lines = [
        "# Fleet benchmark: robots against one site server vs local-only", "",
        f"{m['time']} · model {m['model']} · {m['cpus']} CPU(s) ({m['cpu']}) · server {m['server']} · "
        f"deadline {m['deadline_ms']} ms · {m['duration_s']:.0f} s per run after {m['warmup']} warm-up "
        f"request(s) per robot · {m['cases']} dev-corpus decisions · load average {m['loadavg_start']} "
        f"at start, {m['loadavg_end']} at end · {m['duration_s_total'] / 60:.1f} min in all", "",
        f"Command: `{' '.join(['quant-llm-bench', 'fleet', *m['argv']])}`", "",
        settings(res), "",
        table(res), "", "![fleet](fleet.png)", "",
        "Latency is the round trip a robot's planner sees; answered locally = local / (local + remote) "
        "among model answers; lost = sent − answered − rejected. Load averages per run (start → end):", "",
    ]
    for e in res["runs"] + ([res["kill_run"]] if res.get("kill_run") else []):
        what = "kill run" if e.get("kill_run") else e["mode"]
        lines.append(f"- {what} ×{e['robots']} (robot threads {e['robot_threads']}): "
                     f"{e['loadavg_start']} → {e['loadavg_end']}; remote p50/p95 "
                     f"{_ms(e['remote_latency_ms']['p50'])}/{_ms(e['remote_latency_ms']['p95'])}, local p50/p95 "
                     f"{_ms(e['local_latency_ms']['p50'])}/{_ms(e['local_latency_ms']['p95'])}"
                     + (f"; remote errors by kind (robots' diagnostics, cumulative): {remote_errors(e) or 'none'}"
                        if e["mode"] == "hybrid" else ""))
    lines += ["", "Shared server against local-only:", "", *_comparison(res)]
    k = res.get("kill_run")
    if k and "kill" in k:
        kk = k["kill"]
        lines += ["", f"Kill run: {k['robots']} robots, server SIGKILLed after {kk['kill_after_s']:.0f} s; "
                  f"{kk['in_flight']['sent']} request(s) in flight at the kill, answered by "
                  f"{kk['in_flight']['backends']}; lost {k['lost']}, deadline misses {k['deadline_misses']}, "
                  f"longest round trip {_ms(k['max_round_trip_ms'])} (deadline {k['deadline_ms']} ms)."]
    return "\n".join(lines) + "\n"


def write(res: dict[str, Any], out: Path) -> dict[str, Path]:
    from quant_llm_node.bench.fleet.plot import plot
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{NAME}.json", "md": out / f"{NAME}.md", "png": out / f"{NAME}.png"}
    paths["json"].write_text(json.dumps(res, indent=1, default=str) + "\n")
    paths["md"].write_text(markdown(res))
    try:
        plot(res, paths["png"])
    except ImportError:  # matplotlib missing: JSON and Markdown still written
        paths.pop("png")
    return paths
