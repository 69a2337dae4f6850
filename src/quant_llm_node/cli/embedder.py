"""``quant-llm-embedder``: build the INT8 grounding embedder and check it.

  quant-llm-embedder build [--cache DIR] [--manifest FILE]
  quant-llm-embedder check [--cache DIR] [--runs N] [--providers P ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

from quant_llm_node.grounding import check, recipe


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quant-llm-embedder", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in (("build", "fetch the pinned FP32 source, verify sha256, quantize to INT8"),
                       ("check", "compare INT8 with FP32: cosine, latency, RSS, sizes, providers")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--cache", help="cache dir (default ${QLN_CACHE:-~/.cache/quant_llm_node}/embedder)")
        s.add_argument("--manifest", help="manifest (default models/embedder.yaml)")
    c = sub.choices["check"]
    c.add_argument("--runs", type=int, default=100, help="timed runs per model")
    c.add_argument("--providers", nargs="+", default=["CPUExecutionProvider"])
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    quiet = args.command == "check" and args.json
    log = (lambda msg: print(msg, file=sys.stderr)) if quiet else print
    try:
        art = recipe.build(args.cache, args.manifest, log=log)
    except (recipe.ChecksumError, OSError, ValueError) as exc:
        print(f"quant-llm-embedder: {exc}", file=sys.stderr)
        return 1
    if args.command == "build":
        print(f"int8: {art.int8}\nfp32: {art.fp32}\nvocab: {art.vocab}")
        return 0
    report = check.run_check(art.fp32, art.int8, art.vocab, args.providers, args.runs)
    print(json.dumps(report, indent=1) if args.json else check.format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
