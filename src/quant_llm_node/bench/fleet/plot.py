"""fleet.png: throughput and latency per robot count and mode; the kill run's timeline."""
from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"hybrid": "tab:blue", "local": "tab:orange", "remote": "tab:blue"}


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_l, ax_k) = plt.subplots(1, 3, figsize=(16, 4.8))
    for mode in ("hybrid", "local"):
        runs = sorted((e for e in res["runs"] if e["mode"] == mode), key=lambda e: e["robots"])
        if not runs:
            continue
        n = [e["robots"] for e in runs]
        ax_t.plot(n, [e["throughput_dps"] for e in runs], "o-", color=COLORS[mode], label=mode)
        ax_l.plot(n, [e["latency_ms"]["p50"] / 1e3 for e in runs], "o-", color=COLORS[mode], label=f"{mode} p50")
        ax_l.plot(n, [e["latency_ms"]["p95"] / 1e3 for e in runs], "s--", color=COLORS[mode], label=f"{mode} p95")
    counts = sorted({e["robots"] for e in res["runs"]})
    for ax in (ax_t, ax_l):
        ax.set_xticks(counts)
    ax_t.set(xlabel="robots", ylabel="decisions/s (whole fleet)", title="Throughput")
    ax_l.set(xlabel="robots", ylabel="round trip (s)", title="Latency")
    deadline = res["meta"]["deadline_ms"] / 1e3
    ax_l.axhline(deadline, color="grey", lw=0.8, ls=":", label="deadline")
    k = res.get("kill_run")
    if k and k.get("timeline"):
        for backend in ("remote", "local"):
            pts = [p for p in k["timeline"] if p[2] == backend]
            ax_k.scatter([p[0] for p in pts], [p[1] / 1e3 for p in pts], s=14,
                         color=COLORS[backend], label=f"answered {backend}")
        ax_k.axvline(k["kill"]["kill_after_s"], color="red", lw=1, label="server SIGKILL")
        ax_k.axhline(deadline, color="grey", lw=0.8, ls=":", label="deadline")
    ax_k.set(xlabel="s since start (completion)", ylabel="round trip (s)",
             title=f"Kill run ({k['robots'] if k else '-'} robots)")
    for ax in (ax_t, ax_l, ax_k):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.15), ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"Fleet: {res['meta']['model']}, {res['meta']['cpus']} CPUs, server {res['meta']['server']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
