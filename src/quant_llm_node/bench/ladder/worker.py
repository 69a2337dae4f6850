"""Child-process entry: ``python -m quant_llm_node.bench.ladder.worker {perf|quality} SPEC.json OUT.json``.

Each variant is measured in a fresh process so its RSS and load time are its own.
Progress lines go to stdout (the runner relays them); the result goes to OUT.json.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _progress(line: str) -> None:
    print(line, flush=True)


def quality(spec: dict) -> dict:
    """Score the calibration text; save or compare against the reference distributions."""
    from quant_llm_node.bench.host import peak_rss_bytes
    from quant_llm_node.bench.ladder.quality import RefDist, evaluate_model
    ref_path = spec.get("reference_path")
    reference = RefDist.load(Path(ref_path)) if ref_path else None
    save = spec.get("save_reference_path")
    result, own = evaluate_model(spec["model_path"], Path(spec["calibration_path"]).read_text(),
                                 reference=reference, keep_top_k=spec["top_k"] if save else 0,
                                 ctx=spec["ctx"], threads=spec["threads"],
                                 n_gpu_layers=spec["n_gpu_layers"], max_chunks=spec["max_chunks"])
    if save:
        own.save(Path(save))
    out = result.to_dict()
    out["rss_peak_bytes"] = peak_rss_bytes()
    return out


def main(argv: list[str] | None = None) -> int:
    kind, spec_path, out_path = (argv if argv is not None else sys.argv[1:])
    spec = json.loads(Path(spec_path).read_text())
    if kind == "perf":
        from quant_llm_node.bench.ladder.perf import run
        result = run(spec, _progress)
    elif kind == "quality":
        result = quality(spec)
    else:
        raise SystemExit(f"unknown worker kind {kind!r}")
    Path(out_path).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
