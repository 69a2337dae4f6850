"""`quant-llm-eval`: score navigation decisions on a scenarios file, with ablations.

    quant-llm-eval                                   # default model, grammar on, safety on
    quant-llm-eval --models qwen2.5-coder-0.5b-instruct-q4_k_m qwen2.5-coder-1.5b-instruct-q4_k_m \
        --grammar both --safety both --out results/eval
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

from quant_llm_node.bench.scenario_eval import Variant, core_asker, evaluate
from quant_llm_node.bench.scenarios import load_scenarios
from quant_llm_node.config import load_config
from quant_llm_node.paths import config_dir

CHOICES = {"on": [True], "off": [False], "both": [True, False]}


def _fmt(v, pct=False):
    if v is None:
        return "n/a"
    return f"{100 * v:.0f}%" if pct else (f"{v:.0f}" if isinstance(v, float) else str(v))


def markdown(rows: list[dict]) -> str:
    head = ("| model | grammar | safety | valid output | acceptable | forbidden | grounding top-1 "
            "| target top-1 | p50 ms | p95 ms | sources |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        v, s = r["variant"], r["scores"]
        src = ", ".join(f"{k} {n}" for k, n in sorted(s["sources"].items()))
        lines.append(f"| {v['model']} | {'on' if v['grammar'] else 'off'} | {'on' if v['safety'] else 'off'} "
                     f"| {_fmt(s['valid_output_rate'], True)} | {_fmt(s['acceptable_rate'], True)} "
                     f"| {s['forbidden']} | {_fmt(s['grounding_top1'], True)} ({s['grounding_cases']}) "
                     f"| {_fmt(s['target_top1'], True)} | {_fmt(s['latency_p50_ms'])} "
                     f"| {_fmt(s['latency_p95_ms'])} | {src} |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="quant-llm-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default=None, help="scenarios file (default test/data/scenarios.yaml)")
    p.add_argument("--config", default=str(config_dir() / "robot.yaml"))
    p.add_argument("--models", nargs="+", default=None, help="manifest names or .gguf paths")
    p.add_argument("--grammar", choices=CHOICES, default="on")
    p.add_argument("--safety", choices=CHOICES, default="on")
    p.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0 = config)")
    p.add_argument("--deadline-ms", type=int, default=300000,
                   help="per-query deadline: far by default, so decisions are the model's own")
    p.add_argument("--out", default="results/eval", help="folder for eval.json and eval.md")
    args = p.parse_args(argv)

    base = load_config(args.config)
    if args.threads:
        base.engine.n_threads = args.threads
    base.serving.default_deadline_ms = args.deadline_ms
    scenarios = load_scenarios(args.scenarios)["scenarios"]
    models = args.models or [base.model.name]
    rows = []
    for model, grammar in itertools.product(models, CHOICES[args.grammar]):
        cfg = Variant(model, grammar, True).apply(base)
        t0 = time.monotonic()
        service, ask = core_asker(cfg)
        configure_s = time.monotonic() - t0
        try:
            for safety in CHOICES[args.safety]:
                variant = Variant(model, grammar, safety)
                service.safety.cfg.enabled = safety  # same loaded model, rules on or off
                print(f"== {variant.label} (configured in {configure_s:.1f} s)")
                summary = evaluate(ask, scenarios, variant)
                summary.configure_s = configure_s
                rows.append({"variant": variant.__dict__, "scores": summary.scores(),
                             "cases": [c.__dict__ for c in summary.cases]})
                print(json.dumps(rows[-1]["scores"]))
        finally:
            service.stop()
            service.cleanup()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(rows, indent=2))
    table = markdown(rows)
    (out / "eval.md").write_text(table)
    print(table)
    print(f"wrote {out / 'eval.json'} and {out / 'eval.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
