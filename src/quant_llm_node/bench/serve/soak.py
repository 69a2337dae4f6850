"""Soak benchmark (not in CI): the node under mixed queries for a long time, RSS sampled.

    python -m quant_llm_node.bench.serve.soak --minutes 30 --out results/soak

Runs planner processes in rounds (run_load) against one node process, samples the node's RSS
every ``--sample-s`` seconds, and reports growth after a warm-up (first samples excluded),
the per-hour slope, and whether every request was answered or explicitly rejected.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from quant_llm_node.bench.serve.load import run_load
from quant_llm_node.ros.node_process import NodeProcess
from quant_llm_node.bench.scenarios import load_scenarios

ACTIVE_TIMEOUT_S = 300.0
MIB = 2**20


def wait_active(node: NodeProcess, timeout: float = ACTIVE_TIMEOUT_S) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not node.alive():
            raise RuntimeError(f"node exited:\n{node.log()[-2000:]}")
        if "active: serving" in node.log():
            return
        time.sleep(0.5)
    raise RuntimeError("node not active in time")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="quant-llm-bench soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--round-queries", type=int, default=10, help="queries per client per round")
    p.add_argument("--deadline-ms", type=int, default=8000)
    p.add_argument("--warmup-min", type=float, default=3.0, help="RSS samples ignored at start")
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="")
    p.add_argument("--out", default="results/soak")
    args = p.parse_args(argv)

    cases = load_scenarios()
    mixed = cases["scenarios"] + cases["bad_inputs"]
    params = {"engine.n_threads": args.threads}
    if args.model:
        params["model.name"] = args.model
    node = NodeProcess("soak", params).start()
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    totals = {"sent": 0, "answered": 0, "rejected": 0, "lost": 0, "rounds": 0}
    try:
        wait_active(node)
        t0 = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.monotonic() - t0, node.rss_bytes()))
                stop.wait(args.sample_s)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        end = t0 + args.minutes * 60
        while time.monotonic() < end and node.alive():
            s = run_load(node.service, mixed, args.clients, args.round_queries,
                         deadline_ms=args.deadline_ms, seed=totals["rounds"]).summary()
            totals["rounds"] += 1
            for k in ("sent", "answered", "rejected", "lost"):
                totals[k] += s[k]
            print(f"[{(time.monotonic() - t0) / 60:5.1f} min] round {totals['rounds']}: "
                  f"{s['answered']} answered, {s['rejected']} rejected, {s['lost']} lost; "
                  f"RSS {samples[-1][1] / MIB:.0f} MiB", flush=True)
        stop.set()
        sampler.join(5)
        alive = node.alive()
    finally:
        stop.set()
        rc = node.stop()
    t = np.array([x for x, _ in samples]) / 60
    rss = np.array([r for _, r in samples]) / MIB
    steady = t >= args.warmup_min
    slope = float(np.polyfit(t[steady], rss[steady], 1)[0] * 60) if steady.sum() >= 2 else float("nan")
    result = {
        "minutes": round(float(t[-1]) if len(t) else 0.0, 1), "totals": totals,
        "reconciled": totals["sent"] == totals["answered"] + totals["rejected"] + totals["lost"],
        "node_alive_at_end": alive, "node_exit_code": rc,
        "rss_mib": {"first": float(rss[0]) if len(rss) else None,
                    "after_warmup": float(rss[steady][0]) if steady.any() else None,
                    "last": float(rss[-1]) if len(rss) else None,
                    "max": float(rss.max()) if len(rss) else None,
                    "growth_after_warmup": float(rss[-1] - rss[steady][0]) if steady.any() else None,
                    "slope_mib_per_hour": slope},
        "samples": [(round(a, 2), round(b / MIB, 1)) for a, b in samples],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    return 0 if result["reconciled"] and totals["lost"] == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
