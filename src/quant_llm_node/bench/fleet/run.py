"""`quant-llm-bench fleet`: N simulated robots against one site server, and the same robots with
only their local models.

Each robot is a real node process (config/robot.yaml with ``-p`` overrides), driven by its own
planner process over ROS 2 services on loopback. Modes, at each robot count N:
  hybrid  engine.backend hybrid against ONE llama-server (-np N slots, continuous batching,
          the same GGUF; the node sends the decision grammar with cache_prompt)
  local   engine.backend local: every robot decodes on its own model
Then a kill run on the hybrid fleet of the largest N (same robots, same server): the server
SIGKILLed half-way; figures before and after the kill.
Per run: fleet throughput, round-trip p50/p95, share answered locally (the response's backend
field), deadline misses, lost requests (sent - answered - rejected; must be 0).
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from quant_llm_node.bench.fleet import report as fleet_report, summary
from quant_llm_node.bench.fleet.diag import remote_statuses
from quant_llm_node.bench.fleet.driver import Drivers, Plan
from quant_llm_node.bench.fleet.robots import HYBRID, MODES, Fleet, robot_params, robot_threads
from quant_llm_node.bench.fleet.server import KINDS, LLAMA_SERVER, SiteServer, find_llama_server
from quant_llm_node.bench.host import cpu_model, loadavg

DEADLINE_MS = 60000        # the server gets deadline_share (30 s) of it, the local model the rest
DURATION_S = 60.0
KILL_DURATION_S = 150.0
DEFAULT_DOMAIN = 150
SEED = 7


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quant-llm-bench fleet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--robots", type=int, nargs="+", default=[1, 4, 8], help="robot counts (1 4 8)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="hybrid local")
    p.add_argument("--duration-s", type=float, default=DURATION_S, help="timed seconds per run")
    p.add_argument("--count", type=int, default=0, help="requests per robot instead (0 = by time)")
    p.add_argument("--warmup", type=int, default=1, help="untimed requests per robot first")
    p.add_argument("--kill-duration-s", type=float, default=KILL_DURATION_S,
                   help="kill run length (hybrid, largest N); the server dies half-way (0 = none)")
    p.add_argument("--deadline-ms", type=int, default=DEADLINE_MS, help="every request's deadline")
    p.add_argument("--read-timeout-s", type=float, default=0.0,
                   help="robots' remote.read_timeout_s (0 = the server's share of the deadline)")
    p.add_argument("--server", choices=KINDS, default=LLAMA_SERVER, help="site server kind")
    p.add_argument("--server-bin", default="", help="llama-server binary (default: native_baseline.sh)")
    p.add_argument("--server-threads", type=int, default=0, help="server threads (0 = all cores)")
    p.add_argument("--robot-threads", type=int, default=0,
                   help="llama.cpp threads per robot (0 = cores / N, at least 1)")
    p.add_argument("--model", default="", help="manifest name or .gguf (default: config/robot.yaml)")
    p.add_argument("--scenarios", type=Path, default=None, help="scenarios YAML (default: the dev corpus)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: docs/results)")
    p.add_argument("--logs", type=Path, default=None, help="node and server logs (default: ros2_ws/log/fleet)")
    return p


def _ros_env() -> None:
    """DDS on loopback, a domain id of this run's own (inherited by every child process)."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_LOCALHOST_ONLY"] = "1"
    os.environ.setdefault("ROS_DOMAIN_ID", str(DEFAULT_DOMAIN + os.getpid() % 50))


class Bench:
    """Shared state of one benchmark: options, scenarios, the model, the ROS client."""

    def __init__(self, a: argparse.Namespace, cases: list[dict], model_path: Path, model: str,
                 logs: Path):
        self.a, self.cases, self.model_path, self.model, self.logs = a, cases, model_path, model, logs
        self.server_bin = find_llama_server(a.server_bin) if (
            a.server == LLAMA_SERVER and (HYBRID in a.modes or a.kill_duration_s > 0)) else None
        self.client = None

    def read_timeout_s(self, share: float) -> float:
        return self.a.read_timeout_s or self.a.deadline_ms / 1e3 * share

    def server(self, slots: int) -> SiteServer:
        threads = self.a.server_threads or os.cpu_count() or 1
        return SiteServer(self.a.server, self.model_path, slots, threads, self.server_bin).start(self.logs)

    def one(self, mode: str, n: int, kill_s: float = 0.0) -> list[dict[str, Any]]:
        """One fleet: (server,) N robots, the timed run; with ``kill_s`` then a kill run of that
        length on the same robots and server, the server SIGKILLed half-way."""
        from quant_llm_node.config import load_config
        from quant_llm_node.paths import config_dir
        share = load_config(config_dir() / "robot.yaml").remote.deadline_share
        tag = f"{mode}{n}"
        srv = self.server(n) if mode == HYBRID else None
        threads = robot_threads(self.a.robot_threads, n)
        extra = {"model.name": self.model} if self.a.model else {}
        params = robot_params(mode, srv.url if srv else "", threads, self.read_timeout_s(share), extra)
        fleet = Fleet(n, params, self.logs, tag)
        base: dict[str, Any] = {"mode": mode, "robots": n, "robot_threads": threads,
                                "deadline_ms": self.a.deadline_ms, "deadline_share": share,
                                "read_timeout_s": self.read_timeout_s(share),
                                "server": {"kind": srv.kind, "slots": n, "threads": srv.threads,
                                           "startup_s": round(srv.startup_s, 1)} if srv else None}
        print(f"[fleet] {tag}: starting {n} robot(s)", file=sys.stderr, flush=True)
        entries: list[dict[str, Any]] = []
        try:
            base["fleet_startup_s"] = round(fleet.start(self.client), 1)
            entries.append(self._timed(dict(base), fleet, self.a.duration_s, self.a.warmup))
            if kill_s > 0:
                entries.append(self._timed(dict(base, kill_run=True), fleet, kill_s, 0, srv))
        finally:
            codes = fleet.stop()
            for e in entries:
                e["node_exit_codes"] = codes
            if srv is not None:
                srv.stop()
        return entries

    def _timed(self, entry: dict[str, Any], fleet: Fleet, duration_s: float, warmup: int,
               kill: SiteServer | None = None) -> dict[str, Any]:
        """Drivers for ``duration_s`` (after ``warmup`` requests per robot); with ``kill``, that
        server is SIGKILLed half-way and the figures are split at the kill."""
        n = entry["robots"]
        entry["loadavg_start"] = loadavg()
        drivers = Drivers(fleet.services, self.cases, Plan(self.a.deadline_ms, duration_s,
                                                           self.a.count, warmup, SEED))
        start_at = drivers.start()
        killer = _Killer(kill, start_at + duration_s / 2) if kill is not None else None
        outcomes, dead = drivers.collect()
        entry.update(loadavg_end=loadavg(), dead_drivers=dead, duration_s=duration_s)
        entry.update(summary.run_figures(outcomes, self.a.deadline_ms, start_at, n))
        if entry["mode"] == HYBRID:
            entry["remote_status"] = remote_statuses(self.client, [p.name for p in fleet.procs])
        if killer is not None:
            killer.join()
            entry["kill"] = summary.kill_split(outcomes, self.a.deadline_ms, start_at, killer.killed_at, n)
            entry["timeline"] = summary.timeline(outcomes, start_at)
        label = f"{entry['mode']}{n}{' kill' if kill is not None else ''}"
        print(f"[fleet] {label}: {fleet_report.line(entry)}", file=sys.stderr, flush=True)
        return entry


class _Killer(threading.Thread):
    """SIGKILLs the server at a wall-clock time (or at once if that has passed)."""

    def __init__(self, srv: SiteServer, at: float):
        super().__init__(daemon=True)
        self.srv, self.at, self.killed_at = srv, at, 0.0
        self.start()

    def run(self) -> None:
        time.sleep(max(0.0, self.at - time.time()))
        self.killed_at = self.srv.kill()


def run(a: argparse.Namespace) -> dict[str, Any]:
    import rclpy
    from quant_llm_node.bench.fleet.scenarios import model_cases
    from quant_llm_node.bench.serve.ros_side import BenchClient
    from quant_llm_node.config import load_config
    from quant_llm_node.models.registry import resolve_model_path
    from quant_llm_node.paths import config_dir, repo_root

    _ros_env()
    cfg = load_config(config_dir() / "robot.yaml")
    model = a.model or cfg.model.name
    model_path, _ = resolve_model_path(model)
    logs = a.logs or (repo_root() or Path.cwd()) / "ros2_ws" / "log" / "fleet"
    bench = Bench(a, model_cases(a.scenarios), Path(model_path), model, logs)
    t0 = time.monotonic()
    res: dict[str, Any] = {"meta": {
        "model": model, "model_path": str(model_path), "cpu": cpu_model(), "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": getattr(a, "argv", []), "robots": a.robots,
        "modes": a.modes, "duration_s": a.duration_s, "count": a.count, "warmup": a.warmup,
        "deadline_ms": a.deadline_ms, "server": a.server,
        "server_bin": str(bench.server_bin) if bench.server_bin else None,
        "scenarios": str(a.scenarios or "bench/data/corpus/dev.yaml"), "cases": len(bench.cases),
        "ros_domain_id": os.environ["ROS_DOMAIN_ID"], "loadavg_start": loadavg()}, "runs": []}
    rclpy.init()
    bench.client = BenchClient("fleet_bench_client")
    try:
        for mode in a.modes:
            for n in a.robots:
                kill_s = a.kill_duration_s if mode == HYBRID and n == max(a.robots) else 0.0
                for e in bench.one(mode, n, kill_s):
                    if e.get("kill_run"):
                        res["kill_run"] = e
                    else:
                        res["runs"].append(e)
    finally:
        bench.client.close()
        rclpy.shutdown()
    res["meta"].update(duration_s_total=round(time.monotonic() - t0, 1), loadavg_end=loadavg())
    return res


def _default_out() -> Path:
    from quant_llm_node.paths import repo_root
    return (repo_root() or Path.cwd()) / "docs" / "results"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = _parser().parse_args(argv)
    a.argv = argv
    res = run(a)
    paths = fleet_report.write(res, a.out or _default_out())
    print(paths["md"].read_text())
    for kind, path in paths.items():
        print(f"[fleet] {kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
