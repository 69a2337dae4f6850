"""`quant-llm-bench serve`: serving benchmark of the node, each figure against a baseline.

1. ROS service overhead: round trip seen by a planner − the node-side total_ms (sequential model
   requests), and the bare round trip of requests rejected before the model (EMPTY_QUERY).
2. 1 / 4 / 8 concurrent planner processes: throughput, latency, deadline misses, OVERLOADED,
   sent = answered + rejected (+ lost, must be 0).
3. TTFT in-process: empty KV (cold) vs static prefix cached vs prefix evicted; the node's
   first_token_ms (prefix cached at configure) beside them.
4. Decode tok/s through the node vs LlamaEngine in-process vs native llama-bench
   (--native-json from scripts/native_baseline.sh); speculative speedup when available.

The node runs first (its own process), then the engine in this process: never both at once.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from quant_llm_node.bench.host import cpu_model, loadavg
from quant_llm_node.bench.serve import engine as serve_engine, report as serve_report, ros_side as serve_ros

PHASES = ("overhead", "forced", "load", "ttft", "decode")
NAMESPACE = "serve_bench"
SEQ_DEADLINE_MS = 60000      # sequential requests must reach the model, never the fallback
WARMUP_EMPTY = 3             # untimed calls first: discovery, first-call allocations
WARMUP_MODEL = 1
SEED = 7
ENV_PREFIXES = ("OMP_", "GOMP_", "GGML_", "LLAMA_")  # settings that change llama.cpp timings
FULL = dict(clients=[1, 4, 8], per_client=8, overhead_requests=30, transport_requests=30,
            ttft_samples=10, decode_requests=10, forced_requests=30)
QUICK = dict(clients=[1, 4], per_client=2, overhead_requests=8, transport_requests=15,
             ttft_samples=2, decode_requests=3, forced_requests=10)
BUSY_PLANNERS = 2            # planner processes keeping the worker busy for the forced phase
BUSY_WARMUP_S = 2.0          # until their first requests reach the worker


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quant-llm-bench serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="manifest name or .gguf path (default: config/robot.yaml)")
    p.add_argument("--clients", type=int, nargs="+", default=None, help=f"planner counts ({FULL['clients']})")
    p.add_argument("--per-client", type=int, default=None, help=f"requests per planner ({FULL['per_client']})")
    p.add_argument("--threads", type=int, default=0, help="llama.cpp threads, node and in-process (0 = all cores)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: results/serve)")
    p.add_argument("--quick", action="store_true", help="smoke run (about 3 min on 2 cores, 0.5B)")
    p.add_argument("--overhead-requests", type=int, default=None, help="sequential model requests")
    p.add_argument("--transport-requests", type=int, default=None, help="sequential EMPTY_QUERY requests")
    p.add_argument("--deadline-ms", type=int, default=0, help="planner deadline under load (0 = node default)")
    p.add_argument("--queue-size", type=int, default=0, help="node queue size (0 = config)")
    p.add_argument("--ttft-samples", type=int, default=None, help="cold/cached/evicted triples")
    p.add_argument("--forced-requests", type=int, default=None,
                   help="rule-forced requests with the worker idle, and again with it busy")
    p.add_argument("--decode-requests", type=int, default=None, help="in-process and speculative requests")
    p.add_argument("--native-json", type=Path, default=None, help="output of scripts/native_baseline.sh; "
                   "give it -d about the prompt length (decisions decode on a ~500-token KV)")
    p.add_argument("--draft-model", default="", help="draft GGUF for speculative draft mode (default: lookup)")
    p.add_argument("--no-spec", action="store_true", help="skip speculative decoding")
    p.add_argument("--skip", nargs="+", default=[], choices=PHASES, help="phases to leave out")
    p.add_argument("--scenarios", type=Path, default=None, help="scenarios YAML (default: test/data)")
    p.add_argument("--namespace", default=NAMESPACE, help="namespace of the benchmarked node")
    return p


def options(argv: list[str] | None) -> argparse.Namespace:
    """Defaults < --quick < explicit flags."""
    a = _parser().parse_args(argv)
    base = QUICK if a.quick else FULL
    for key, value in base.items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    return a


class Meter:
    """Wall time and CPU time of one phase (of a process, or of this one): cores_used shows how
    much of the machine the phase really got (about --threads when the host is idle)."""

    def __init__(self, pid: int | None = None):
        self._cpu = (lambda: serve_ros.proc_cpu_s(pid)) if pid else time.process_time
        self._t0, self._c0 = time.monotonic(), self._cpu()

    def done(self) -> dict[str, float]:
        wall, cpu = time.monotonic() - self._t0, self._cpu() - self._c0
        return {"wall_s": wall, "cpu_s": cpu, "cores_used": cpu / wall if wall else float("nan"),
                "loadavg": loadavg()}


def _default_out() -> Path:
    from quant_llm_node.paths import repo_root
    return (repo_root() or Path.cwd()) / "results" / "serve"


def run_node_phases(a, model: str, threads: int, cases: list[dict], res: dict) -> list[dict]:
    """Overhead and load against the node process; returns the sequential model records."""
    import rclpy
    from quant_llm_node.bench.serve.load import run_load
    from quant_llm_node.ros.node_process import NodeProcess

    params: dict[str, Any] = {"model.name": model, "engine.n_threads": threads}
    if a.queue_size:
        params["serving.queue_size"] = a.queue_size
    rclpy.init()
    proc = NodeProcess(a.namespace, params).start()
    client = None
    model_recs: list[dict] = []
    try:
        client = serve_ros.BenchClient()
        res["node"] = {"startup_s": client.wait_active(proc), "log": str(proc.log_path)}
        res["node"].update(serve_ros.node_prefix_warm(client, proc.name))
        serve_ros.sequential(client, proc.service, serve_ros.empty_requests(WARMUP_EMPTY, "warm"))
        if "overhead" not in a.skip:
            serve_ros.sequential(client, proc.service,  # last cases: the timed run starts elsewhere
                                 serve_ros.model_requests(cases[::-1], WARMUP_MODEL, SEQ_DEADLINE_MS, "warm"))
            meter = Meter(proc.pid)
            model_recs = serve_ros.sequential(client, proc.service, serve_ros.model_requests(
                cases, a.overhead_requests, SEQ_DEADLINE_MS, "ovh"))
            empty = serve_ros.sequential(client, proc.service,
                                         serve_ros.empty_requests(a.transport_requests, "bare"))
            res["overhead"] = serve_report.overhead(model_recs, empty)
            res["overhead"]["node_cpu"] = meter.done()
        if "forced" not in a.skip:
            res["forced"] = forced_phase(a, client, proc, cases)
        if "load" not in a.skip:
            res["load"] = []
            for n in a.clients:
                meter = Meter(proc.pid)
                rep = run_load(proc.service, cases, n, a.per_client, a.deadline_ms, SEED)
                res["load"].append(serve_report.load_entry(rep, meter.done(), res["load"][:1]))
        res["node"]["rss_bytes"] = proc.rss_bytes()
    finally:
        if client is not None:
            client.close()
        res.setdefault("node", {})["exit_code"] = proc.stop()
        rclpy.shutdown()
    return model_recs


def forced_phase(a, client, proc, cases: list[dict]) -> dict[str, Any]:
    """Rule-forced requests (a person inside the stop distance): round trip and node-side time
    with the worker idle, then while planner processes keep it busy with model requests."""
    import threading
    from quant_llm_node.bench.serve.load import run_load
    idle = serve_ros.sequential(client, proc.service, serve_ros.forced_requests(a.forced_requests, "fi"))
    busy_load = threading.Thread(target=run_load, args=(
        proc.service, cases, BUSY_PLANNERS, 2, SEQ_DEADLINE_MS, SEED), daemon=True)
    busy_load.start()
    time.sleep(BUSY_WARMUP_S)  # the planners' first requests reach the worker
    busy = serve_ros.sequential(client, proc.service, serve_ros.forced_requests(a.forced_requests, "fb"))
    busy_load.join()
    return serve_report.forced_entry(idle, busy)


def run_engine_phases(a, cfg, model_path: str, threads: int, cases: list[dict],
                      model_recs: list[dict], res: dict) -> None:
    """TTFT and decode in this process, after the node has gone. As in the node, the engine is
    loaded and its prefix warmed on one thread and generates on another (see on_worker_thread)."""
    import json
    eng = serve_engine.load_engine(cfg, model_path, threads)
    draft = serve_engine.load_engine(cfg, a.draft_model, threads) if a.draft_model and not a.no_spec else None
    try:
        prompts = serve_engine.build_prompts(eng, cfg, cases)
        eng.warm(prompts.static_prefix)
        if "ttft" not in a.skip:
            node_first = res.get("overhead", {}).get("node_first_token_ms", {})
            meter = Meter()
            ttft = serve_engine.on_worker_thread(lambda: serve_engine.ttft(eng, prompts, a.ttft_samples))
            res["ttft"] = serve_report.ttft_entry(ttft, node_first)
            res["ttft"]["cpu"] = meter.done()
        if "decode" not in a.skip:
            meter = Meter()
            engine_dec = serve_engine.on_worker_thread(
                lambda: serve_engine.decode(eng, prompts, cfg, a.decode_requests))
            engine_dec["cpu"] = meter.done()
            spec = None if a.no_spec else serve_engine.on_worker_thread(
                lambda: serve_engine.speculative(eng, prompts, cfg, a.decode_requests, draft))
            native = json.loads(a.native_json.read_text()) if a.native_json else None
            res["decode"] = serve_report.decode_entry(serve_report.node_decode(model_recs),
                                                      engine_dec, native, spec, threads)
            res["decode"]["node_cpu"] = res.get("overhead", {}).get("node_cpu")
    finally:
        if draft is not None:
            draft.close()
        eng.close()


def run(a: argparse.Namespace) -> dict:
    from quant_llm_node.bench.scenarios import load_scenarios
    from quant_llm_node.config import load_config
    from quant_llm_node.models.registry import resolve_model_path
    from quant_llm_node.paths import config_dir

    cfg = load_config(config_dir() / "robot.yaml")
    model = a.model or cfg.model.name
    model_path, _ = resolve_model_path(model)
    threads = serve_engine.default_threads(a.threads)
    cases = load_scenarios(a.scenarios)["scenarios"]
    t0 = time.monotonic()
    res: dict[str, Any] = {"meta": {
        "model": model, "model_path": str(model_path), "threads": threads, "cpu": cpu_model(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": a.quick, "argv": sys.argv[1:],
        "clients": a.clients, "per_client": a.per_client, "deadline_ms": a.deadline_ms,
        "ros_domain_id": os.environ.get("ROS_DOMAIN_ID"), "loadavg_start": loadavg(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}}}
    phases: dict[str, float] = {}
    model_recs: list[dict] = []
    if "overhead" not in a.skip or "load" not in a.skip:
        t = time.monotonic()
        model_recs = run_node_phases(a, model, threads, cases, res)
        phases["node"] = time.monotonic() - t
    if "ttft" not in a.skip or "decode" not in a.skip:
        t = time.monotonic()
        run_engine_phases(a, cfg, str(model_path), threads, cases, model_recs, res)
        phases["engine"] = time.monotonic() - t
    res["meta"].update(phases_s=phases, duration_s=time.monotonic() - t0, loadavg_end=loadavg())
    return res


def main(argv: list[str] | None = None) -> int:
    a = options(argv)
    res = run(a)
    paths = serve_report.write(res, a.out or _default_out())
    print(paths["md"].read_text())
    for kind, path in paths.items():
        print(f"[serve] {kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
