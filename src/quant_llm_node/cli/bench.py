"""`quant-llm-bench`: benchmarks of the node's models.

  ladder   quantization ladder (F16 .. Q4_0): size, speed, memory, quality, rooflines
  serve    serving benchmark (when quant_llm_node.bench.serve.run is installed)
  fleet    N robot nodes against one site server vs local-only (quant_llm_node.bench.fleet.run)
  batch    the decision path: batching off/on vs llama-server -np, jump-forward, grammar vs free
  jump     jump-forward against step-by-step decoding on every scenario of the corpus
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

from quant_llm_node.bench.ladder import variants as ladder
from quant_llm_node.bench.ladder.runner import LadderOptions, run_ladder

SERVE_MODULE = "quant_llm_node.bench.serve.run"
FLEET_MODULE = "quant_llm_node.bench.fleet.run"
BATCH_MODULE = "quant_llm_node.bench.batch_bench"
JUMP_MODULE = "quant_llm_node.bench.jump_bench"
QUICK = dict(variants=list(ladder.QUICK_VARIANTS), runs=1, warmup=0, max_tokens=16, prompt_tokens=64,
             max_scenarios=3, quality_chunks=1)


def _available(module: str = SERVE_MODULE) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _serve_available() -> bool:
    return _available(SERVE_MODULE)


def _ladder_parser(sub) -> None:
    d = LadderOptions()
    p = sub.add_parser("ladder", help="quantization ladder benchmark",
                       description="Requantize a model into variants and compare size, speed, memory "
                                   "and quality (KLD / top-1 / perplexity / decisions) against the "
                                   "highest-precision variant.")
    p.add_argument("--model", default="", help="manifest name or .gguf path (default: manifest default)")
    p.add_argument("--variants", nargs="+", default=None, metavar="V",
                   help=f"from {' '.join(ladder.LADDER)} {ladder.SOURCE} (default: all but {ladder.SOURCE})")
    p.add_argument("--runs", type=int, default=None, help=f"timed speed runs per variant ({d.runs})")
    p.add_argument("--warmup", type=int, default=None, help=f"untimed runs first ({d.warmup})")
    p.add_argument("--max-tokens", type=int, default=None, help=f"decode tokens per speed run ({d.max_tokens})")
    p.add_argument("--prompt-tokens", type=int, default=None, help=f"speed-run prompt length ({d.prompt_tokens})")
    p.add_argument("--threads", type=int, default=d.threads, help="CPU threads (0 = all cores)")
    p.add_argument("--n-gpu-layers", type=int, default=d.n_gpu_layers, help="layers to offload (-1 = all)")
    p.add_argument("--bandwidth-gbps", type=float, default=0.0,
                   help="host memory bandwidth for the roofline (default: measured)")
    p.add_argument("--scenarios", type=int, default=None, dest="max_scenarios",
                   help="use only the first N planner scenarios (0 = all)")
    p.add_argument("--scenario-passes", type=int, default=d.scenario_passes, help="passes over the scenarios")
    p.add_argument("--quality-chunks", type=int, default=None,
                   help=f"{d.quality_ctx}-token chunks of the calibration text to score (0 = all)")
    p.add_argument("--calibration", type=Path, default=d.calibration, help="calibration text file")
    p.add_argument("--scenarios-file", type=Path, default=d.scenarios_file, help="planner scenarios YAML")
    p.add_argument("--ladder-dir", type=Path, default=None, dest="ladder_root",
                   help="where variants are written (default: cache_dir()/ladder)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: under the ladder dir)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: Q8_0+Q4_0, 1 run, 16 tokens, 3 scenarios, 1 quality chunk")
    p.add_argument("--dry-run", action="store_true", help="print the plan and time estimate only")
    p.add_argument("--quantize-only", action="store_true", help="produce the variant files and stop")


def options_from_args(args: argparse.Namespace) -> LadderOptions:
    """Defaults < --quick < explicit flags."""
    opts = LadderOptions()
    if args.quick:
        for key, value in QUICK.items():
            setattr(opts, key, value)
    for key in ("model", "threads", "n_gpu_layers", "bandwidth_gbps", "scenario_passes", "calibration",
                "scenarios_file", "ladder_root", "out", "dry_run", "quantize_only"):
        setattr(opts, key, getattr(args, key))
    for key in ("variants", "runs", "warmup", "max_tokens", "prompt_tokens", "max_scenarios", "quality_chunks"):
        value = getattr(args, key)
        if value is not None:
            setattr(opts, key, value)
    bad = [v for v in opts.variants if v not in ladder.LADDER and v != ladder.SOURCE]
    if bad:
        raise SystemExit(f"unknown variant(s) {bad}; known: {' '.join(ladder.LADDER)} {ladder.SOURCE}")
    if opts.calibration is None or not Path(opts.calibration).is_file():
        raise SystemExit(f"calibration text not found ({opts.calibration}); pass --calibration")
    return opts


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        if not _serve_available():
            print(f"quant-llm-bench serve: {SERVE_MODULE} is not installed", file=sys.stderr)
            return 2
        return importlib.import_module(SERVE_MODULE).main(argv[1:]) or 0
    if argv[:1] == ["fleet"]:
        if not _available(FLEET_MODULE):
            print(f"quant-llm-bench fleet: {FLEET_MODULE} is not installed", file=sys.stderr)
            return 2
        return importlib.import_module(FLEET_MODULE).main(argv[1:]) or 0
    if argv[:1] == ["batch"]:
        return importlib.import_module(BATCH_MODULE).main(argv[1:]) or 0
    if argv[:1] == ["jump"]:
        return importlib.import_module(JUMP_MODULE).main(argv[1:]) or 0
    parser = argparse.ArgumentParser(prog="quant-llm-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    _ladder_parser(sub)
    if _serve_available():
        sub.add_parser("serve", help="serving benchmark (see quant-llm-bench serve --help)", add_help=False)
    if _available(FLEET_MODULE):
        sub.add_parser("fleet", help="fleet benchmark (see quant-llm-bench fleet --help)", add_help=False)
    sub.add_parser("batch", help="decision-path speed benchmark (see quant-llm-bench batch --help)",
                   add_help=False)
    sub.add_parser("jump", help="jump-forward identity on the corpus (see quant-llm-bench jump --help)",
                   add_help=False)
    args = parser.parse_args(argv)
    if args.cmd == "ladder":
        result = run_ladder(options_from_args(args))
        for kind, path in result.get("paths", {}).items():
            print(f"[ladder] {kind}: {path}")
        if "paths" in result:
            print(result["paths"]["md"].read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
