"""Ladder results as CSV, JSON, a Markdown table and a two-panel PNG."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

MIB = 2**20
PNG_DPI = 120
FIGSIZE_IN = (11.0, 4.5)
CURVE_POINTS = 100
CURVE_X_MARGIN = 0.15   # roofline curve spans the file sizes +-15 %
PERCENT = 100.0
ABOVE_MARK = "†"   # an efficiency clamped to 1: the point is above the host roofline
ABOVE_NOTE = "above the host roofline: the bandwidth probe underestimates this host"
FLOOR_MARK = "‡"   # the variant whose own decode rate is the bound's floor

# (column key, Markdown header, format)
MD_COLUMNS = (
    ("variant", "variant", "{}"), ("file_mib", "size MiB", "{:.0f}"), ("bits_per_weight", "BPW", "{:.2f}"),
    ("load_ms", "load ms", "{:.0f}"), ("rss_peak_mib", "peak RSS MiB", "{:.0f}"),
    ("ttft_ms", "TTFT cold ms", "{:.0f}"), ("ttft_warm_p50_ms", "TTFT node p50 ms", "{:.0f}"),
    ("prompt_tps", "prompt tok/s", "{:.1f}"),
    ("decode_tps", "decode tok/s", "{:.1f}"), ("roofline_host_tps", "host roofline", "{:.1f}"),
    ("efficiency_host", "eff.", "{:.2f}"), ("latency_p50_ms", "e2e p50 ms", "{:.0f}"),
    ("latency_p95_ms", "e2e p95 ms", "{:.0f}"), ("perplexity", "PPL", "{:.3f}"),
    ("kl_mean", "KLD", "{:.4f}"), ("top1_pct", "same top-1 %", "{:.1f}"),
    ("decision_agreement_pct", "same action %", "{:.0f}"), ("acceptable_pct", "acceptable %", "{:.0f}"),
)


def _fmt(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def write_csv(rows: Sequence[dict], path: Path) -> Path:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return path


def write_json(doc: dict, path: Path) -> Path:
    path.write_text(json.dumps(doc, indent=1, default=str))
    return path


def _eff(row: dict) -> str:
    """The host efficiency, never above 1: a clamped one carries ``ABOVE_MARK``."""
    text = _fmt(row.get("efficiency_host"), "{:.2f}")
    if row.get("above_host_roofline"):
        return text + ABOVE_MARK
    return text + FLOOR_MARK if row.get("sets_host_roofline") else text


def markdown(rows: Sequence[dict], doc: dict) -> str:
    """A table plus the facts needed to read it (host, bandwidth, reference, caveats)."""
    meta, host = doc.get("meta", {}), doc.get("host", {})
    lines = [f"# Quantization ladder: {meta.get('model', '?')}", "",
             f"- host: {host.get('cpu_model', '?')}, {host.get('threads_used', '?')} threads, "
             f"GPU offload supported: {host.get('supports_gpu_offload')}, n_gpu_layers {host.get('n_gpu_layers')}",
             f"- host roofline bandwidth {meta.get('host_bandwidth_gbps', float('nan')):.1f} GB/s"
             + (f": {meta['bandwidth_bound']}" if meta.get("bandwidth_bound") else ""),
             f"- bandwidth measured at the run: {meta.get('bandwidth_source', '?')}; load average at start "
             f"{host.get('loadavg_start')}",
             f"- quality reference: {meta.get('reference', '?')}; calibration text "
             f"{meta.get('quality_scored_tokens', '?')} scored tokens; KLD over the reference's top-"
             f"{meta.get('kl_top_k', '?')} + tail",
             f"- {meta.get('caveat', '')}", ""]
    cols = [c for c in MD_COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    lines.append("| " + " | ".join(h for _, h, _ in cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in rows:
        lines.append("| " + " | ".join(_eff(r) if k == "efficiency_host" else _fmt(r.get(k), f)
                                       for k, _, f in cols) + " |")
    above = [r for r in rows if r.get("above_host_roofline")]
    if above:
        lines += ["", f"{ABOVE_MARK} {ABOVE_NOTE} (unclamped: " + ", ".join(
            f"{r['variant']} {_fmt(r.get('efficiency_host_raw'), '{:.2f}')}" for r in above)
            + "); shown as 1, not as an efficiency."]
    floor = [r["variant"] for r in rows if r.get("sets_host_roofline")]
    if floor:
        lines += ["", f"{FLOOR_MARK} {', '.join(floor)}: its own decode rate is the host bandwidth's floor "
                  "(the probe read less), so its 1.00 holds by construction."]
    targets = [k for k in (rows[0] if rows else {}) if k.startswith("roofline_") and k != "roofline_host_tps"]
    if targets:
        lines += ["", "Predicted max decode tok/s (bandwidth / tensor bytes):", "",
                  "| variant | " + " | ".join(t[len("roofline_"):-len("_tps")] for t in targets) + " |",
                  "|---|" + "---|" * len(targets)]
        for r in rows:
            lines.append(f"| {r['variant']} | " + " | ".join(_fmt(r.get(t), "{:.0f}") for t in targets) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(rows: Sequence[dict], doc: dict, path: Path) -> Path:
    path.write_text(markdown(rows, doc))
    return path


def write_png(rows: Sequence[dict], host_gbps: float, path: Path, title: str = "") -> Path:
    """Left: decode tok/s vs file size with the host roofline; right: KLD and top-1 vs BPW."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=FIGSIZE_IN)
    pts = [r for r in rows if r.get("file_mib") and r.get("decode_tps")]
    sizes = [r["file_mib"] for r in rows if r.get("file_mib")]
    if sizes:
        x = np.linspace(min(sizes) * (1 - CURVE_X_MARGIN), max(sizes) * (1 + CURVE_X_MARGIN), CURVE_POINTS)
        floor = [r["variant"] for r in rows if r.get("sets_host_roofline")]
        ax1.plot(x, host_gbps * 1e9 / (x * MIB), "--", color="gray",
                 label=f"host roofline {host_gbps:.1f} GB/s" + (f" (floor: {floor[0]} decode)" if floor else ""))
    flagged = False
    for r in pts:
        above = bool(r.get("above_host_roofline"))
        ax1.scatter(r["file_mib"], r["decode_tps"], color="C3" if above else "C0", marker="x" if above else "o",
                    label=None if not above or flagged else ABOVE_NOTE.replace(": ", ":\n"))
        flagged = flagged or above
        ax1.annotate(r["variant"], (r["file_mib"], r["decode_tps"]), textcoords="offset points", xytext=(4, 4))
    ax1.set_xlabel("file size (MiB)")
    ax1.set_ylabel("decode tok/s")
    ax1.set_title("decode speed vs size")
    ax1.set_ylim(bottom=0)
    ax1.legend(loc="upper right", fontsize="small")
    ax1.grid(alpha=0.3)

    q = sorted((r for r in rows if r.get("bits_per_weight") and r.get("top1_pct") is not None),
               key=lambda r: r["bits_per_weight"])
    if q:
        bpw = [r["bits_per_weight"] for r in q]
        ax2.plot(bpw, [r["top1_pct"] for r in q], "o-", color="C1", label="same top-1 %")
        for r in q:
            ax2.annotate(r["variant"], (r["bits_per_weight"], r["top1_pct"]), textcoords="offset points",
                         xytext=(4, -10))
        ax2.set_ylabel("same top-1 as reference (%)", color="C1")
        kl = [(r["bits_per_weight"], r["kl_mean"]) for r in q if r.get("kl_mean")]
        if kl:
            ax3 = ax2.twinx()
            ax3.plot(*zip(*kl), "s--", color="C2", label="KLD")
            ax3.set_yscale("log")
            ax3.set_ylabel("mean KL divergence (log)", color="C2")
    ax2.set_xlabel("bits per weight")
    ax2.set_title("quality vs bits per weight")
    ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)
    return path


def write_all(rows: Sequence[dict], doc: dict, out_dir: Path, stem: str = "ladder") -> dict[str, Path]:
    """All four outputs into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = doc.get("meta", {})
    return {
        "csv": write_csv(rows, out_dir / f"{stem}.csv"),
        "json": write_json(doc, out_dir / f"{stem}.json"),
        "md": write_markdown(rows, doc, out_dir / f"{stem}.md"),
        "png": write_png(rows, meta.get("host_bandwidth_gbps", float("nan")), out_dir / f"{stem}.png",
                         title=str(meta.get("model", ""))),
    }
