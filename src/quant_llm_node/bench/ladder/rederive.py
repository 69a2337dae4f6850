"""Redo a stored ladder report's rooflines without re-running the ladder.

``python -m quant_llm_node.bench.ladder.rederive docs/results/ladder.json [--probe]``

Reads the stored rows (decode tok/s and tensor bytes per variant), bounds the host bandwidth
(``targets.host_bound``: the stored figure, floored at what the reference variant's decode
reads) and rewrites the four outputs beside the JSON. ``--probe`` measures serving.roofline's
streaming probe now, at the run's thread count, and records it with the load average; it joins
the bound only when this CPU is the run's (``--use-probe`` forces it), since another CPU's
bandwidth says nothing about the stored figures.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from quant_llm_node.bench.host import cpu_model
from quant_llm_node.bench.ladder.report import write_all
from quant_llm_node.bench.ladder.runner import bound_rows
from quant_llm_node.bench.ladder.targets import host_bandwidth_gbps


def rederive(doc: dict, probe: dict | None = None, use_probe: bool = False) -> dict:
    """``doc`` with every row's roofline fields redone; ``probe``: {"gbps", "probes", ...}
    measured now (recorded; part of the bound when ``use_probe``)."""
    meta, rows = doc["meta"], doc["rows"]
    stored = meta.get("host_bandwidth_probe_gbps") or meta["host_bandwidth_gbps"]
    meta.setdefault("host_bandwidth_probe_gbps", stored)
    label = "the stored numpy read" if "numpy" in str(meta.get("bandwidth_source")) else "the stored probe"
    base = stored
    if probe is not None:
        meta["probe_rederived"] = probe
        if use_probe:
            base = max(stored, probe["gbps"])
    targets = meta.get("target_bandwidth_gbps", {})
    if base != stored:
        label = "the probe measured now"
    gbps, note = bound_rows(rows, meta.get("reference", rows[0]["variant"]), base, targets, label)
    meta["host_bandwidth_gbps"] = gbps
    meta["bandwidth_bound"] = note + (f"; re-derived from the stored measurements "
                                      f"{time.strftime('%Y-%m-%d')}")
    if probe is not None:
        p = probe["probes"]
        rates = ", ".join(f"{k[len('probe_'):-len('_gbps')].replace('_', ' ')} {v:.1f}"
                          for k, v in p.items() if k.endswith("_gbps"))
        used = "in the bound" if use_probe else "not in the bound: another CPU than the run's"
        meta["bandwidth_bound"] += (f"; streaming probe now on {probe['cpu_model']} "
                                    f"({p['probe_kernel']}, {p['probe_bytes'] / 2**20:.0f} MiB, load "
                                    f"{p['probe_loadavg']}): {rates} ({used})")
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", type=Path, help="a ladder.json written by quant-llm-bench ladder")
    ap.add_argument("--probe", action="store_true", help="measure the streaming probe now and record it")
    ap.add_argument("--use-probe", action="store_true", help="let the probe measured now join the bound")
    args = ap.parse_args(argv)
    doc = json.loads(args.json.read_text())
    probe = None
    if args.probe or args.use_probe:
        threads = doc.get("host", {}).get("threads_used") or os.cpu_count() or 1
        ref = next((r for r in doc["rows"] if r["variant"] == doc["meta"].get("reference")), doc["rows"][0])
        gbps, probes = host_bandwidth_gbps(threads, ref["tensor_bytes"])
        probe = {"gbps": gbps, "probes": probes, "cpu_model": cpu_model(), "threads": threads}
    same_cpu = probe is not None and probe["cpu_model"] == doc.get("host", {}).get("cpu_model")
    rederive(doc, probe, use_probe=args.use_probe or same_cpu)
    paths = write_all(doc["rows"], doc, args.json.parent, stem=args.json.stem)
    meta = doc["meta"]
    print(f"host roofline {meta['host_bandwidth_gbps']:.1f} GB/s ({meta['bandwidth_bound']})")
    for r in doc["rows"]:
        flag = "  ABOVE ROOFLINE (clamped)" if r.get("above_host_roofline") else ""
        print(f"  {r['variant']}: decode {r['decode_tps']:.1f} tok/s, roofline {r['roofline_host_tps']:.1f}, "
              f"efficiency {r['efficiency_host']:.2f}{flag}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
