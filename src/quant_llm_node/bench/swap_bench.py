"""Decisions during a model swap: does the model in place keep its latency while the new one
loads and warms?

A planner asks at 1 request/s (closed loop: the next request one second after the last was
sent, or as soon as it was answered when that took longer) with a 5 s deadline, through the
node's own service and model holder (no ROS). Phase 1 measures each query's latency without a
swap; phase 2 starts a swap (default: to the 1.5B model) and repeats the same queries until the
swap lands. It prints, per phase, deadline fallbacks and latency percentiles, and each query's
latency during the swap as a ratio to its own latency without one, measured in the same run.

    python -m quant_llm_node.bench.swap_bench [--to MODEL] [--out docs/results/swap]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import threading
import time
from pathlib import Path

from quant_llm_node.config import Config, load_config
from quant_llm_node.paths import config_dir

QUERIES = (
    ("The aisle ahead is empty and well lit for 15 m. Go on?", {}),
    ("Pallet wrap on the floor near rack 12, nothing else around.", {}),
    ("Two pickers are working at the far end of the aisle, about 20 m away.", {}),
    ("Battery 55%, heading back along aisle 7 with the order.", {}),
    ("Someone left a ladder leaning into the lane up ahead.", {}),
)
STATE = {"speed_mps": 0.8, "battery_pct": 70.0, "obstacle_distance_m": 15.0, "zone": "aisle_7"}


def _raw(i: int, deadline_ms: int) -> dict:
    query, extra = QUERIES[i % len(QUERIES)]
    return {"request_id": f"swap{i}", "query": query, "state": {**STATE, **extra},
            "deadline_ms": deadline_ms}


def _planner(service, deadline_ms: int, period_s: float, stop: threading.Event, out: list) -> None:
    i = 0
    while not stop.is_set():
        t0 = time.monotonic()
        resp = service.ask(_raw(i, deadline_ms), timeout_s=deadline_ms / 1e3 + 30)
        lat = resp.latency
        out.append({"i": i % len(QUERIES), "t": t0, "ms": (time.monotonic() - t0) * 1e3,
                    "code": resp.error_code, "model": resp.model_id, "source": resp.decision.source,
                    "stages": {k: round(getattr(lat, k), 1) for k in
                               ("queue_ms", "screen_ms", "prompt_ms", "decode_ms")}})
        i += 1
        time.sleep(max(0.0, period_s - (time.monotonic() - t0)))


def _summary(rows: list[dict]) -> dict:
    ms = [r["ms"] for r in rows]
    q = statistics.quantiles(ms, n=20) if len(ms) >= 2 else ms * 19
    return {"n": len(rows), "deadline_fallbacks": sum(r["code"] == "DEADLINE_EXCEEDED" for r in rows),
            "p50_ms": round(statistics.median(ms), 1) if ms else float("nan"),
            "p95_ms": round(q[18], 1) if ms else float("nan"), "max_ms": round(max(ms), 1) if ms else 0}


def idle_swap_s(cfg: Config, target: str) -> float:
    """Seconds a swap to ``target`` takes on a node that answers nothing meanwhile."""
    from quant_llm_node.serving.assembly import assemble
    from quant_llm_node.serving.model_holder import ModelHolder
    from quant_llm_node.serving.model_swap import ModelSwapper
    holder = ModelHolder.of(assemble(cfg))
    try:
        swapper = ModelSwapper(holder)
        swap_cfg = copy.deepcopy(holder.cfg)
        swap_cfg.model.name = target
        t0 = time.monotonic()
        swapper.start(swap_cfg)
        swapper.join()
        return time.monotonic() - t0
    finally:
        holder.close()


def run(cfg: Config, target: str, baseline_s: float, deadline_ms: int, period_s: float) -> dict:
    from quant_llm_node.serving.assembly import assemble
    from quant_llm_node.serving.model_holder import ModelHolder
    from quant_llm_node.serving.model_swap import ModelSwapper, SwapPhase
    from quant_llm_node.serving.service import NavigationService
    cfg.serving.rule_forced = True
    holder = ModelHolder.of(assemble(cfg))
    service = NavigationService(holder)
    service.start()
    swapper = ModelSwapper(holder)
    rows: list[dict] = []
    stop = threading.Event()
    planner = threading.Thread(target=_planner, args=(service, deadline_ms, period_s, stop, rows),
                               daemon=True)
    try:
        planner.start()
        time.sleep(baseline_s)
        swap_cfg = copy.deepcopy(holder.cfg)
        swap_cfg.model.name = target
        t_swap = time.monotonic()
        swapper.start(swap_cfg)
        old_model = holder.pipeline.model_id
        while swapper.busy:
            time.sleep(0.1)
        t_done = time.monotonic()
        time.sleep(3 * period_s)
        stop.set()
        planner.join(deadline_ms / 1e3 + 60)
    finally:
        service.stop()
        holder.close()
    before = [r for r in rows if r["t"] < t_swap]
    during = [r for r in rows if t_swap <= r["t"] and r["t"] + r["ms"] / 1e3 <= t_done
              and r["model"] == old_model]
    base = {i: statistics.median([r["ms"] for r in before if r["i"] == i] or [float("nan")])
            for i in range(len(QUERIES))}
    ratios = [r["ms"] / base[r["i"]] for r in during if base[r["i"]] == base[r["i"]]]
    from quant_llm_node.engine import compute_thread
    return {"swap_to": target, "swap_phase": swapper.status.phase.value,
            "background": compute_thread.background_stats(),
            "swap_s": round(t_done - t_swap, 1), "swap_error": swapper.status.error,
            "period_s": period_s, "deadline_ms": deadline_ms,
            "without_swap": _summary(before), "during_swap": _summary(during),
            "ratio_to_own_baseline": {"max": round(max(ratios), 2) if ratios else None,
                                      "median": round(statistics.median(ratios), 2) if ratios else None},
            "phase_done": swapper.status.phase is SwapPhase.DONE, "rows": rows}


def markdown(r: dict) -> str:
    w, d = r["without_swap"], r["during_swap"]
    return "\n".join([
        f"Swap to `{r['swap_to']}`: {r['swap_phase']} in {r['swap_s']} s "
        f"(planner every {r['period_s']} s, deadline {r['deadline_ms']} ms).", "",
        "| phase | decisions | deadline fallbacks | p50 ms | p95 ms | max ms |", "|---|---|---|---|---|---|",
        f"| without a swap | {w['n']} | {w['deadline_fallbacks']} | {w['p50_ms']} | {w['p95_ms']} | {w['max_ms']} |",
        f"| during the swap (old model answering) | {d['n']} | {d['deadline_fallbacks']} | {d['p50_ms']} | "
        f"{d['p95_ms']} | {d['max_ms']} |", "",
        f"Each decision during the swap against the same query without one: median "
        f"{r['ratio_to_own_baseline']['median']}x, worst {r['ratio_to_own_baseline']['max']}x.", ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="swap_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(config_dir() / "robot.yaml"))
    p.add_argument("--to", default="qwen2.5-coder-1.5b-instruct-q4_k_m", help="model swapped in")
    p.add_argument("--baseline-s", type=float, default=40.0)
    p.add_argument("--deadline-ms", type=int, default=5000)
    p.add_argument("--period-s", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    cfg.engine.n_threads = args.threads
    result = run(copy.deepcopy(cfg), args.to, args.baseline_s, args.deadline_ms, args.period_s)
    result["idle_swap_s"] = round(idle_swap_s(cfg, args.to), 1)
    text = markdown(result) + f"The same swap on a node answering nothing: {result['idle_swap_s']} s.\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "swap.json").write_text(json.dumps(result, indent=1))
        (args.out / "swap.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
