"""`quant-llm-bench jump`: jump-forward against step-by-step decoding on every scenario of the corpus.

For each scenario the model answers (no expected rejection), the node's own prompt is decoded
with ``engine.jump_forward`` off (step by step: the reference), exact and on, from the same
cache state (only the static prefix cached). Reported per scenario file: how many outputs are
byte-identical to off, llama_decode calls and decode steps saved, and decision latency p50/p95
against off (modes interleaved per scenario, so they share the host's noise).

A file whose name contains "test" is the held-out split: only its aggregates are written (no
scenario ids, no texts). Writes jump.json and jump.md into --out.

    quant-llm-bench jump --cases bench/data/corpus/dev.yaml bench/data/corpus/test.yaml \\
        test/data/scenarios.yaml --out docs/results
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quant_llm_node.bench.host import cpu_model, loadavg
from quant_llm_node.serving.metrics import percentiles

MODES = ("off", "exact", "on")
DEFAULT_CASES = ("bench/data/corpus/dev.yaml", "bench/data/corpus/test.yaml", "test/data/scenarios.yaml")


@dataclass
class FileResult:
    """Per-mode figures over one scenario file."""

    name: str
    held_out: bool
    n: int = 0
    modes: dict[str, dict[str, Any]] = field(default_factory=dict)
    differing: dict[str, list[str]] = field(default_factory=dict)   # ids (not for held-out files)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quant-llm-bench jump", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="manifest name or .gguf (default: config/robot.yaml)")
    p.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0 = all cores)")
    p.add_argument("--cases", type=Path, nargs="+", default=None, help=f"scenario files ({' '.join(DEFAULT_CASES)})")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="off is always run")
    p.add_argument("--limit", type=int, default=0, help="at most N scenarios per file (0 = all)")
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    return p


def _load(path: Path) -> list[dict]:
    import yaml
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    cases = data["scenarios"] if isinstance(data, dict) else data
    return [c for c in cases if not c.get("expect_error")]


def run_file(engine, cfg, task, path: Path, modes: list[str], limit: int) -> FileResult:
    """Decode every scenario of ``path`` in each mode; compare each with off."""
    from quant_llm_node.bench.serve.engine import build_prompts
    cases = _load(path)
    prompts = build_prompts(engine, cfg, cases[:limit] if limit else cases)
    items, static = prompts.items, prompts.static_prefix
    res = FileResult(path.name, "test" in path.name, len(items))
    runs: dict[str, list] = {m: [] for m in ("off", *[m for m in modes if m != "off"])}
    for _, prompt in items:
        for mode in runs:
            engine.warm(static)
            runs[mode].append(engine.generate(prompt, task.max_tokens, task.grammar,
                                              min_room=task.min_room, jump_forward=mode))
    ref = runs["off"]
    for mode, rs in runs.items():
        total = percentiles([r.total_ms for r in rs], (50, 95))
        same = [r.text == o.text for r, o in zip(rs, ref, strict=True)]
        res.modes[mode] = {
            "identical": sum(same), "p50_ms": total["p50"], "p95_ms": total["p95"],
            "decode_calls": sum(r.decode_calls for r in rs), "decode_steps": sum(r.decode_steps for r in rs),
            "tokens": sum(r.completion_tokens for r in rs),
            "forced_kept": sum(r.forced_tokens for r in rs), "forced_drafted": sum(r.forced_drafted for r in rs)}
        if not res.held_out:
            res.differing[mode] = [cid for (cid, _), s in zip(items, same, strict=True) if not s]
    return res


def markdown(meta: dict, files: list[FileResult]) -> str:
    lines = [f"# Jump-forward on the corpus — {meta['model']}", "",
             f"{meta['time']} · {meta['cpu']} · {meta['threads']} threads · load average "
             f"{meta['loadavg_start']} → {meta['loadavg_end']} · {meta['duration_s']:.0f} s", "",
             "| file | mode | scenarios | identical to off | llama_decode calls | vs off | tokens | p50 ms | vs off | p95 ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for f in files:
        off = f.modes["off"]
        for mode, r in f.modes.items():
            lines.append(f"| {f.name}{' (held out)' if f.held_out else ''} | {mode} | {f.n} | {r['identical']}/{f.n} | "
                         f"{r['decode_calls']} | {r['decode_calls'] / max(off['decode_calls'], 1):.2f}× | {r['tokens']} | "
                         f"{r['p50_ms']:.0f} | {r['p50_ms'] / off['p50_ms']:.2f}× | {r['p95_ms']:.0f} |")
    lines.append("")
    for f in files:
        for mode, ids in f.differing.items():
            if ids:
                lines.append(f"- {f.name}, {mode}: differs from off on {', '.join(ids)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from quant_llm_node.bench.serve.engine import load_engine
    from quant_llm_node.config import load_config
    from quant_llm_node.models.registry import resolve_model_path
    from quant_llm_node.paths import config_dir, repo_root
    from quant_llm_node.reasoning.task import DecisionTask

    a = _parser().parse_args(argv)
    cfg = load_config(config_dir() / "robot.yaml")
    if a.model:
        cfg.model.name = a.model
    model_path = str(resolve_model_path(cfg.model.name)[0])
    threads = a.threads or os.cpu_count() or 1
    root = repo_root() or Path.cwd()
    paths = a.cases or [root / p for p in DEFAULT_CASES]
    meta: dict[str, Any] = {"model": cfg.model.name, "threads": threads, "cpu": cpu_model(),
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "loadavg_start": loadavg()}
    t0 = time.monotonic()
    task = DecisionTask.from_config(cfg)
    engine = load_engine(cfg, model_path, threads)
    try:
        files = [run_file(engine, cfg, task, Path(p), a.modes, a.limit) for p in paths]
    finally:
        engine.close()
    meta.update(duration_s=time.monotonic() - t0, loadavg_end=loadavg())
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "jump.json").write_text(json.dumps({"meta": meta, "files": [f.__dict__ for f in files]}, indent=1))
    md = markdown(meta, files)
    (a.out / "jump.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
