"""INT8 vs FP32 check: cosine, latency, RSS, file sizes, providers in use.

Each model is measured in its own child process (``--worker``) so RSS figures
do not mix; the parent compares the embeddings the children return.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

SENTENCES = (
    "charging dock 1: charging dock next to aisle 4, north wall",
    "charging dock 2: charging dock by the loading bay, south wall",
    "aisle 3: narrow aisle with high shelving, pallets of cans",
    "aisle 7: wide aisle used by forklifts",
    "loading bay: truck loading bay with roller doors",
    "packing station: packing tables where people work",
    "freight elevator: freight elevator between floors",
    "the charging dock near aisle 4",
    "dock by the loading bay",
    "moon base",
    "A person stepped into the corridor 1.5 m ahead. What should I do?",
    "A fallen pallet blocks aisle 3 completely. My goal is the loading bay.",
    "The freight elevator door is open but a person is inside with a cart.",
    "Sensors report a wet floor patch in aisle 4 ahead.",
    "Battery is at 7 percent. What now?",
    "A forklift is crossing the intersection 4 m ahead.",
)
LATENCY_QUERY = "Take me to the charging dock near aisle 4."


def _proc_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _mb(kb: float | None) -> float | None:
    return round(kb / 1024.0, 1) if kb is not None else None


def measure(model: str, vocab: str | None, providers: Sequence[str], runs: int,
            sentences: Sequence[str] = SENTENCES) -> dict:
    """Load one model in this process; time it and return its embeddings."""
    from .embedder import Embedder

    base = _proc_kb("VmRSS")
    t0 = time.perf_counter()
    emb = Embedder(model, providers=list(providers), intra_op_threads=1, vocab_path=vocab)
    load_s = time.perf_counter() - t0
    vectors = emb.embed_many(list(sentences))
    for _ in range(3):
        emb.embed(LATENCY_QUERY)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        emb.embed(LATENCY_QUERY)
        times.append((time.perf_counter() - t) * 1000.0)
    rss = _proc_kb("VmRSS")
    return {
        "model": model, "bytes": os.path.getsize(model),
        "requested_providers": emb.requested_providers, "providers": emb.providers,
        "fallbacks": emb.fallbacks, "load_s": round(load_s, 3),
        "latency_ms_median": round(statistics.median(times), 3),
        "latency_ms_p90": round(sorted(times)[int(0.9 * (len(times) - 1))], 3),
        "query_tokens": len(emb.tokenizer.encode(LATENCY_QUERY).tokens),
        "rss_mb": _mb(rss), "rss_delta_mb": _mb(rss - base) if rss and base else None,
        "peak_rss_mb": _mb(_proc_kb("VmHWM")), "embeddings": vectors.tolist(),
    }


def measure_in_child(model: Path, vocab: Path, providers: Sequence[str], runs: int) -> dict:
    """Run ``measure`` in a fresh Python process and parse its JSON."""
    cmd = [sys.executable, "-m", "quant_llm_node.grounding.check", "--worker", str(model),
           "--vocab", str(vocab), "--runs", str(runs), "--providers", *providers]
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"check worker for {model} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cosines(a, b) -> np.ndarray:
    """Row-wise cosine between two stacks of vectors."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def run_check(fp32: Path, int8: Path, vocab: Path, providers: Sequence[str] = ("CPUExecutionProvider",),
              runs: int = 100) -> dict:
    """Measure both models in child processes and compare their embeddings."""
    results = {name: measure_in_child(path, vocab, providers, runs)
               for name, path in (("fp32", fp32), ("int8", int8))}
    cos = cosines(results["fp32"].pop("embeddings"), results["int8"].pop("embeddings"))
    return {"sentences": len(SENTENCES), "latency_query": LATENCY_QUERY, "threads": 1,
            "cosine_mean": round(float(cos.mean()), 4), "cosine_min": round(float(cos.min()), 4),
            "models": results}


def format_table(report: dict) -> str:
    """Human-readable table of a ``run_check`` report."""
    rows = [("", "fp32", "int8")]
    m = report["models"]
    for label, key in (("file MB", "bytes"), ("latency ms (median)", "latency_ms_median"),
                       ("latency ms (p90)", "latency_ms_p90"), ("RSS MB", "rss_mb"),
                       ("RSS delta MB (session)", "rss_delta_mb"), ("peak RSS MB", "peak_rss_mb"),
                       ("providers", "providers")):
        vals = [m[k][key] for k in ("fp32", "int8")]
        if key == "bytes":
            vals = [f"{v / 1e6:.1f}" for v in vals]
        rows.append((label, *(",".join(v) if isinstance(v, list) else str(v) for v in vals)))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(width[i]) for i, c in enumerate(r)) for r in rows]
    lines.append(f"cosine int8 vs fp32 over {report['sentences']} sentences: "
                 f"mean {report['cosine_mean']:.4f}, min {report['cosine_min']:.4f}")
    lines.append(f"latency: 1 thread, query {report['latency_query']!r} "
                 f"({m['int8']['query_tokens']} tokens)")
    for k in ("fp32", "int8"):
        if m[k]["fallbacks"]:
            lines.append(f"WARNING {k}: requested {m[k]['fallbacks']} not in use")
    return "\n".join(lines)


def _worker(argv: Sequence[str]) -> None:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--worker", required=True)
    p.add_argument("--vocab", required=True)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--providers", nargs="+", default=["CPUExecutionProvider"])
    a = p.parse_args(argv)
    print(json.dumps(measure(a.worker, a.vocab, a.providers, a.runs)))


if __name__ == "__main__":
    _worker(sys.argv[1:])
