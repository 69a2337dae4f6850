"""``quant-llm-quant``: apply every quantization scheme to one real GGUF weight tensor.

Loads a 2-D weight (dequantized from its stored type, so every scheme is a
requantization), builds calibration activations (the model's own layer input where
possible, else a seeded Gaussian with a few large channels), and prints per scheme:
bits/weight incl. scales, relative weight error, relative output error
``||WX - W'X|| / ||WX||`` on the calibration set and on a held-out set, and time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from quant_llm_node.quant import calibration, gguf_tensors, metrics, schemes

DEFAULT_TENSOR = "blk.0.attn_q.weight"
REPO_MODEL = Path(__file__).resolve().parents[3] / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
FALLBACK_MODEL = Path("/tmp/models/q05.gguf")


def default_model_path() -> Path:
    """``$QLN_MODEL_PATH``, else the repo's models/ file, else /tmp/models/q05.gguf (first that exists)."""
    candidates = [os.environ.get("QLN_MODEL_PATH"), str(REPO_MODEL), str(FALLBACK_MODEL)]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return Path(candidates[0] or REPO_MODEL)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quant-llm-quant", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="GGUF file (default: $QLN_MODEL_PATH, models/, /tmp/models/q05.gguf)")
    p.add_argument("--tensor", default=DEFAULT_TENSOR, help=f"2-D weight tensor name (default {DEFAULT_TENSOR})")
    p.add_argument("--samples", type=int, default=4096, help="calibration activations (tokens)")
    p.add_argument("--heldout", type=int, default=1024, help="held-out activations for the output error")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synthetic", action="store_true", help="use Gaussian activations with outlier channels")
    p.add_argument("--schemes", default="", help="comma-separated scheme names (default: all)")
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--damp", type=float, default=0.01, help="GPTQ damping (fraction of mean diag H)")
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--list-tensors", action="store_true", help="list the file's 2-D tensors and exit")
    return p


def _activations(reader: Any, tensor: str, in_features: int, n: int, seed: int, synthetic: bool) -> calibration.Calibration:
    cal = None if synthetic else calibration.model_activations(reader, tensor, n, seed)
    if cal is None:
        cal = calibration.Calibration(
            calibration.synthetic_activations(in_features, n, seed),
            "synthetic",
            "seeded N(0,1) with 8 channels x20",
        )
    return cal


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Quantize the tensor with every selected scheme and return the result record."""
    path = args.model or default_model_path()
    reader = gguf_tensors.open_gguf(path)
    info = gguf_tensors.tensor_info(reader, args.tensor)
    if len(info.shape) != 2:
        raise ValueError(f"{args.tensor} has shape {info.shape}; a 2-D weight is needed")
    w = gguf_tensors.load_tensor(reader, args.tensor)
    total = args.samples + args.heldout
    cal = _activations(reader, args.tensor, w.shape[1], total, args.seed, args.synthetic)
    order = np.random.default_rng(args.seed).permutation(cal.x.shape[1])
    x_cal, x_eval = cal.x[:, order[: args.samples]], cal.x[:, order[args.samples :]]

    chosen = schemes.default_schemes(args.group_size, damp=args.damp)
    if args.schemes:
        wanted = [s.strip() for s in args.schemes.split(",") if s.strip()]
        unknown = sorted(set(wanted) - {s.name for s in chosen})
        if unknown:
            raise ValueError(f"unknown schemes {unknown}; known: {[s.name for s in chosen]}")
        chosen = [s for s in chosen if s.name in wanted]

    rows = []
    for s in chosen:
        t0 = time.perf_counter()
        w_hat = s.apply(w, x_cal)
        dt = time.perf_counter() - t0
        rows.append(
            {
                "scheme": s.name,
                "description": s.description,
                "bits_per_weight": round(s.bits(w.shape), 4),
                "weight_rel_error": metrics.weight_rel_error(w, w_hat),
                "output_rel_error": metrics.output_rel_error(w, w_hat, x_cal),
                "output_rel_error_heldout": metrics.output_rel_error(w, w_hat, x_eval) if x_eval.shape[1] else None,
                "seconds": dt,
            }
        )
    return {
        "model": str(path),
        "tensor": args.tensor,
        "shape": list(w.shape),
        "stored_type": info.type_name,
        "calibration": {"source": cal.source, "detail": cal.detail, "samples": int(x_cal.shape[1]), "heldout": int(x_eval.shape[1]), "seed": args.seed},
        "results": rows,
    }


def format_table(record: dict[str, Any]) -> str:
    """Human-readable table of a result record."""
    cal = record["calibration"]
    lines = [
        f"model   {record['model']}",
        f"tensor  {record['tensor']} {tuple(record['shape'])} stored as {record['stored_type']} (dequantized = reference)",
        f"calib   {cal['source']}: {cal['detail']}; {cal['samples']} calibration + {cal['heldout']} held-out columns, seed {cal['seed']}",
        "",
        f"{'scheme':<16}{'bits/w':>8}{'weight err':>12}{'out err cal':>13}{'out err held':>14}{'time s':>9}",
    ]
    for r in record["results"]:
        held = r["output_rel_error_heldout"]
        lines.append(
            f"{r['scheme']:<16}{r['bits_per_weight']:>8.3f}{r['weight_rel_error']:>12.5f}{r['output_rel_error']:>13.5f}"
            f"{(f'{held:.5f}' if held is not None else '-'):>14}{r['seconds']:>9.3f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    path = args.model or default_model_path()
    if not path.is_file():
        print(f"quant-llm-quant: model file not found: {path} (set --model or QLN_MODEL_PATH)", file=sys.stderr)
        return 2
    if args.list_tensors:
        for t in gguf_tensors.list_tensors(gguf_tensors.open_gguf(path)):
            if len(t.shape) == 2:
                print(f"{t.name:<32}{str(t.shape):>16}  {t.type_name}")
        return 0
    if args.samples < 1 or args.heldout < 0:
        print("quant-llm-quant: --samples must be >= 1 and --heldout >= 0", file=sys.stderr)
        return 2
    try:
        record = run(args)
    except (KeyError, ValueError) as exc:
        print(f"quant-llm-quant: {exc}", file=sys.stderr)
        return 2
    print(format_table(record))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
