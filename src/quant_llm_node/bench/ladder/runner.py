"""The ladder benchmark: produce variants, measure each in fresh processes, compare, report."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import quant_llm_node
from quant_llm_node.bench.ladder import estimate, variants as ladder
from quant_llm_node.bench.host import host_info
from quant_llm_node.bench.ladder.quality import KL_TOP_K, QUALITY_CTX
from quant_llm_node.bench.ladder.report import MIB, PERCENT, write_all
from quant_llm_node.bench.ladder.targets import (host_bandwidth_gbps, host_bound, roofline_fields,
                                                  target_bandwidths)
from quant_llm_node.engine.gguf_file import read_gguf_info
from quant_llm_node.models.registry import resolve_model_path
from quant_llm_node.paths import cache_dir, repo_root

CHILD_TIMEOUT_S = 3600
DEFAULT_SEED = 42
RESULTS_SUBDIR = "results"
PLACES_FILE = "places.yaml"
CONFIG_FILE = "robot.yaml"
GROUNDING_FILE = "grounding.yaml"
FULL_PRECISION = ("F32", "BF16", "F16")
BUSY_LOAD_PER_CORE = 0.5  # 1-minute load average per core above which timings are flagged
CHARS_PER_TOKEN = 5   # English prose, Qwen/Gemma tokenizers (estimate only)


def _repo_file(*parts: str) -> Path | None:
    root = repo_root()
    return root.joinpath(*parts) if root else None


@dataclass
class LadderOptions:
    """Everything the ladder command takes (CLI flags map 1:1)."""

    model: str = ""
    variants: list[str] = field(default_factory=lambda: list(ladder.DEFAULT_VARIANTS))
    runs: int = 3
    warmup: int = 1
    max_tokens: int = 64
    prompt_tokens: int = 256
    threads: int = 0
    n_gpu_layers: int = 0
    n_ctx: int = 2048
    n_batch: int = 512
    out: Path | None = None
    bandwidth_gbps: float = 0.0
    calibration: Path | None = field(default_factory=lambda: _repo_file("bench", "data", "calibration.txt"))
    scenarios_file: Path | None = field(default_factory=lambda: _repo_file("test", "data", "scenarios.yaml"))
    max_scenarios: int = 0        # 0 = all
    scenario_passes: int = 1
    scenario_max_tokens: int = 0  # 0 = the node config's engine.max_tokens
    quality_chunks: int = 0       # 0 = the whole calibration text
    quality_ctx: int = QUALITY_CTX
    ladder_root: Path | None = None
    dry_run: bool = False
    quantize_only: bool = False


def load_scenarios(path: Path | None, limit: int) -> list[dict]:
    if path is None or not path.is_file():
        return []
    items = yaml.safe_load(path.read_text()).get("scenarios", [])
    return items[:limit] if limit else items


def ground_scenarios(scenarios: list[dict], progress=print) -> str:
    """Fill ``grounded`` place ids with the node's grounder (once, in this process)."""
    goals = [s for s in scenarios if s.get("goal")]
    if not goals:
        return "none needed"
    try:
        from quant_llm_node.grounding.factory import open_place_index
        from quant_llm_node.reasoning.task import config_path, load_map
        index = open_place_index(load_map(PLACES_FILE).places, config_path(GROUNDING_FILE))
    except Exception as exc:  # embedder not built: prompts carry the goal text only
        progress(f"[ground] grounder unavailable ({exc}); prompts carry goals without place ids")
        return f"unavailable: {exc}"
    for s in goals:
        r = index.ground(s["goal"])
        s["grounded"] = r.place_id if r.ok else ""
    return "node grounder"


def run_child(kind: str, spec: dict, work: Path, tag: str, log_path: Path, progress=print) -> dict:
    """Run the worker in a fresh interpreter; relays its progress, returns its result."""
    spec_path, out_path = work / f"{tag}.{kind}.spec.json", work / f"{tag}.{kind}.out.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    src = str(Path(quant_llm_node.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "quant_llm_node.bench.ladder.worker", kind, str(spec_path), str(out_path)]
    t0 = time.perf_counter()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        watchdog = threading.Timer(CHILD_TIMEOUT_S, proc.kill)
        watchdog.start()
        try:
            for line in proc.stdout:
                progress(line.rstrip())
            rc = proc.wait()
        finally:
            watchdog.cancel()
    if rc != 0 or not out_path.is_file():
        return {"error": f"{kind} worker exited with {rc}; see {log_path}"}
    out = json.loads(out_path.read_text())
    out["wall_s"] = time.perf_counter() - t0
    return out


def _agreement(actions: list[str], ref_actions: list[str]) -> float | None:
    pairs = list(zip(actions, ref_actions))
    return PERCENT * sum(a == b for a, b in pairs) / len(pairs) if pairs else None


def _mib(nbytes: int | None) -> float | None:
    return nbytes / MIB if nbytes else None


def build_row(name: str, info, perf: dict, qual: dict, host_gbps: float, targets: dict,
              ref_actions: list[str] | None, quantize_s: float) -> dict:
    """One flat CSV/Markdown row per variant."""
    speed, scen = perf.get("speed", {}), perf.get("scenarios", {})
    actions = [s["action"] for s in scen.get("scenarios", [])]
    acc = scen.get("acceptable_rate")
    row = {
        "variant": name, "file_type": info.file_type, "file_mib": info.file_bytes / MIB,
        "bits_per_weight": info.bits_per_weight, "n_params": info.n_params,
        "tensor_bytes": info.tensor_bytes,
        "quantize_s": quantize_s or None, "load_ms": perf.get("load_ms"),
        "rss_after_load_mib": _mib(perf.get("rss_after_load_bytes")),
        "rss_peak_mib": _mib(perf.get("rss_peak_bytes")),
        "ttft_ms": speed.get("ttft_ms_median"), "ttft_warm_p50_ms": scen.get("ttft_p50_ms"),
        "prompt_tps": speed.get("prompt_tps_median"), "decode_tps": speed.get("decode_tps_median"),
        "latency_p50_ms": scen.get("latency_p50_ms"), "latency_p95_ms": scen.get("latency_p95_ms"),
        "perplexity": qual.get("perplexity"), "kl_mean": qual.get("kl_mean"), "kl_p99": qual.get("kl_p99"),
        "top1_pct": PERCENT * qual["top1_agreement"] if qual.get("top1_agreement") is not None else None,
        "decision_agreement_pct": _agreement(actions, ref_actions) if ref_actions else None,
        "acceptable_pct": PERCENT * acc if acc is not None else None,
        "actions": " ".join(actions) or None, "backend": perf.get("backend"),
    }
    row.update(roofline_fields(info.tensor_bytes, row["decode_tps"] or 0.0, host_gbps, targets))
    errors = "; ".join(e for e in (perf.get("error"), qual.get("error")) if e)
    row["error"] = errors or None
    return row


def print_estimate(opts: LadderOptions, source, names: list[str], n_scen: int, n_chunks: int,
                   host_gbps: float, threads: int, progress=print) -> tuple[float, dict[str, float]]:
    """Print the plan; returns the estimated wall time and each variant's measuring time."""
    info = read_gguf_info(str(source))
    dest = ladder.ladder_dir(_model_name(opts.model, source), opts.ladder_root)
    total, measure = 0.0, {}
    for name in names:
        nbytes = estimate.nominal_bytes(name, info.n_params, info.tensor_bytes)
        missing = name != ladder.SOURCE and not ladder.is_valid_variant(dest / f"{name}.gguf", name)
        q = estimate.quantize_seconds(name, info.n_params) if missing else 0.0
        m = estimate.variant_seconds(info.n_params, nbytes, host_gbps, threads,
                                     quality_tokens=n_chunks * opts.quality_ctx, quality_chunks=n_chunks,
                                     speed_runs=opts.runs + opts.warmup, prompt_tokens=opts.prompt_tokens,
                                     max_tokens=opts.max_tokens, n_scenarios=n_scen,
                                     scenario_passes=opts.scenario_passes)
        total += q + m
        measure[name] = m
        progress(f"[plan] {name}: ~{nbytes / MIB:.0f} MiB, quantize ~{estimate.fmt_duration(q)}, "
                 f"measure ~{estimate.fmt_duration(m)}")
    progress(f"[plan] estimated wall time: ~{estimate.fmt_duration(total)} on an idle machine "
             f"({threads} threads, {host_gbps:.1f} GB/s)")
    return total, measure


def _model_name(model: str, source: Path) -> str:
    return source.stem if ("/" in model or model.endswith(".gguf")) else model


def _n_chunks(opts: LadderOptions) -> int:
    """Quality chunks the calibration text gives (a tokenizer-free guess, for the estimate)."""
    text = opts.calibration.read_text() if opts.calibration else ""
    n = len(text) // CHARS_PER_TOKEN // opts.quality_ctx
    return min(n, opts.quality_chunks) if opts.quality_chunks else n


def _host_bandwidth(opts: LadderOptions, threads: int, model_bytes: int = 0) -> tuple[float, str, dict]:
    """The probe figure (or --bandwidth-gbps), a description, and every probe reading."""
    if opts.bandwidth_gbps:
        return opts.bandwidth_gbps, "--bandwidth-gbps", {}
    gbps, probes = host_bandwidth_gbps(threads, model_bytes)
    rates = ", ".join(f"{k[len('probe_'):-len('_gbps')].replace('_', ' ')} {v:.1f}"
                      for k, v in probes.items() if k.endswith("_gbps"))
    return gbps, (f"streaming read probe ({probes['probe_kernel']}, {probes['probe_bytes'] / MIB:.0f} MiB, "
                  f"LLC {probes['llc_bytes'] / MIB:.0f} MiB, load {probes['probe_loadavg']}): {rates}"), probes


def bound_rows(rows: list[dict], reference: str, probe_gbps: float, targets: dict,
               probe: str = "the probe") -> tuple[float, str]:
    """Floor the host bandwidth at the reference's decode read rate (``targets.host_bound``)
    and redo every row's roofline fields with it (``sets_host_roofline`` marks the reference
    when its rate is the floor); returns the bound and its note."""
    ref = next((r for r in rows if r["variant"] == reference and r.get("decode_tps")), None)
    if ref is None:
        return probe_gbps, f"{probe}; no reference decode rate to cross-check"
    gbps, note, floored = host_bound(probe_gbps, ref["decode_tps"], ref["tensor_bytes"], reference, probe)
    for row in rows:
        row.update(roofline_fields(row["tensor_bytes"], row.get("decode_tps") or 0.0, gbps, targets))
        row["sets_host_roofline"] = floored and row is ref
    return gbps, note


def measure_all(order: list[str], by_name: dict, perf_spec: dict, qual_spec: dict,
                planned_each: dict[str, float], log_path: Path, progress=print) -> dict[str, dict]:
    """Reference first: perf and quality children per variant, with a running time-left."""
    results: dict[str, dict] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qln-ladder-") as tmp:
        work = Path(tmp)
        ref_npz = work / "reference.npz"
        for i, vname in enumerate(order, 1):
            tag, path = f"[{i}/{len(order)}] {vname}", str(by_name[vname].path)
            progress(f"{tag}: perf ({by_name[vname].path.name})")
            perf = run_child("perf", dict(perf_spec, model_path=path), work, vname, log_path, progress)
            progress(f"{tag}: quality")
            spec = dict(qual_spec, model_path=path)
            if i == 1:
                spec["save_reference_path"] = str(ref_npz)
            elif ref_npz.is_file():
                spec["reference_path"] = str(ref_npz)
            qual = run_child("quality", spec, work, vname, log_path, progress)
            results[vname] = {"perf": perf, "quality": qual}
            done = sum(planned_each[n] for n in order[:i])
            pace = (time.perf_counter() - t0) / done if done else 1.0
            left = pace * sum(planned_each[n] for n in order[i:])
            decode = perf.get("speed", {}).get("decode_tps_median", float("nan"))
            progress(f"{tag}: done; decode {decode:.1f} tok/s, PPL {qual.get('perplexity', float('nan')):.3f}; "
                     f"~{estimate.fmt_duration(left)} left")
    return results


def run_ladder(opts: LadderOptions, progress=print) -> dict:
    """The whole benchmark; returns {'rows', 'doc', 'paths'} (or {'estimate_s'} on a dry run)."""
    from quant_llm_node.models.registry import load_manifest
    t_start, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S")
    model = opts.model or load_manifest().default
    source, _ = resolve_model_path(model)
    name = _model_name(model, source)
    threads = opts.threads or os.cpu_count() or 1
    names = list(dict.fromkeys(opts.variants))
    reference = ladder.reference_of(names)
    src_info = read_gguf_info(str(source))
    probe_gbps, bw_source, probes = _host_bandwidth(opts, threads, src_info.tensor_bytes)
    host_gbps = probe_gbps
    scenarios = load_scenarios(opts.scenarios_file, opts.max_scenarios)
    src_type = src_info.file_type
    caveat = ladder.REQUANT_CAVEAT.format(src=src_type) if src_type not in FULL_PRECISION else ""
    progress(f"[ladder] {name}: variants {' '.join(names)}; reference {reference}; "
             f"{len(scenarios)} scenarios; host bandwidth {host_gbps:.1f} GB/s ({bw_source})")
    if caveat:
        progress(f"[ladder] NOTE: {caveat}")
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load1 > BUSY_LOAD_PER_CORE * (os.cpu_count() or 1):
        progress(f"[ladder] WARNING: load average {load1:.1f} on {os.cpu_count()} cores: other work is "
                 "running, timings will be slow and noisy (quality numbers are unaffected)")
    planned, planned_each = print_estimate(opts, source, names, len(scenarios), _n_chunks(opts),
                                           host_gbps, threads, progress)
    if opts.dry_run:
        return {"estimate_s": planned}
    out_dir = opts.out or (cache_dir() / ladder.LADDER_SUBDIR / name / RESULTS_SUBDIR
                           / time.strftime("%Y%m%d-%H%M%S"))
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "llama.log"
    host = host_info(threads, opts.n_gpu_layers)
    variants = ladder.ensure_variants(source, name, names, threads, opts.ladder_root, log_path, progress)
    by_name = {v.name: v for v in variants}
    if opts.quantize_only:
        return {"variants": {n: str(v.path) for n, v in by_name.items()}}
    ground_mode = ground_scenarios(scenarios, progress)
    base = {"threads": threads, "n_gpu_layers": opts.n_gpu_layers, "calibration_path": str(opts.calibration)}
    perf_spec = dict(base, n_ctx=opts.n_ctx, n_batch=opts.n_batch, seed=DEFAULT_SEED, runs=opts.runs,
                     warmup=opts.warmup, max_tokens=opts.max_tokens, prompt_tokens=opts.prompt_tokens,
                     scenarios=scenarios, places_file=PLACES_FILE, config_file=CONFIG_FILE,
                     scenario_max_tokens=opts.scenario_max_tokens or None,
                     scenario_passes=opts.scenario_passes)
    qual_spec = dict(base, ctx=opts.quality_ctx, max_chunks=opts.quality_chunks, top_k=KL_TOP_K)
    order = [reference] + [n for n in names if n != reference]
    results = measure_all(order, by_name, perf_spec, qual_spec, planned_each, log_path, progress)

    targets = target_bandwidths()
    ref_scen = results[reference]["perf"].get("scenarios", {}).get("scenarios", [])
    ref_actions = [s["action"] for s in ref_scen] or None
    rows = [build_row(n, read_gguf_info(str(by_name[n].path)), results[n]["perf"], results[n]["quality"],
                      host_gbps, targets, ref_actions, by_name[n].quantize_s) for n in names]
    for row in rows:
        if row["variant"] == reference and not results[reference]["quality"].get("error"):
            row.update(kl_mean=0.0, kl_p99=0.0, top1_pct=PERCENT)  # the reference, by definition
    host_gbps, bound_note = bound_rows(rows, reference, probe_gbps, targets)
    progress(f"[ladder] host roofline {host_gbps:.1f} GB/s ({bound_note})")
    total_s = time.perf_counter() - t_start
    host["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    meta = {"model": name, "source": str(source), "source_file_type": src_type, "reference": reference,
            "caveat": caveat, "host_bandwidth_gbps": host_gbps, "bandwidth_source": bw_source,
            "host_bandwidth_probe_gbps": probe_gbps, "bandwidth_probes": probes, "bandwidth_bound": bound_note,
            "target_bandwidth_gbps": targets, "grounding": ground_mode, "kl_top_k": KL_TOP_K,
            "quality_ctx": opts.quality_ctx,
            "quality_scored_tokens": results[reference]["quality"].get("n_scored"),
            "calibration": str(opts.calibration), "scenarios_file": str(opts.scenarios_file),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
            "estimate_s": planned, "total_s": total_s, "started": started}
    doc = {"meta": meta, "host": host, "rows": rows,
           "variants": {n: dict(results[n], path=str(by_name[n].path)) for n in names}}
    paths = write_all(rows, doc, out_dir)
    progress(f"[ladder] finished in {estimate.fmt_duration(total_s)} "
             f"(estimated {estimate.fmt_duration(planned)})")
    return {"rows": rows, "doc": doc, "paths": paths}
