"""The simulated robots: one real node process per robot (ros/node_process.py), each in its
own namespace ``robot_<i>``, started together and waited for until all are active."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from quant_llm_node.ros.node_process import NodeProcess

LOCAL = "local"
HYBRID = "hybrid"
MODES = (HYBRID, LOCAL)
NAMESPACE = "robot_{i}"


def robot_threads(requested: int, robots: int) -> int:
    """llama.cpp threads per robot: ``requested``, or (0) the robot's share of this host's
    cores, so that N local models do not fight with N x all-cores spinning threads."""
    return requested if requested > 0 else max(1, (os.cpu_count() or 1) // robots)


def robot_params(mode: str, url: str, threads: int, read_timeout_s: float,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``-p`` overrides of config/robot.yaml for one robot of ``mode``."""
    params: dict[str, Any] = {"engine.backend": mode, "engine.n_threads": threads}
    if mode == HYBRID:
        params.update({"remote.url": url, "remote.read_timeout_s": read_timeout_s})
    params.update(extra or {})
    return params


class Fleet:
    """N node processes; ``start`` returns when every one is active (or raises)."""

    def __init__(self, robots: int, params: dict[str, Any], log_dir: Path, tag: str):
        self.procs = [NodeProcess(NAMESPACE.format(i=i), params,
                                  log_path=log_dir / f"{tag}_robot_{i}.log") for i in range(robots)]

    @property
    def services(self) -> list[str]:
        return [p.service for p in self.procs]

    def start(self, client) -> float:
        """Start all nodes at once, then wait for each (``client``: a serve BenchClient);
        returns the seconds until the last one was active."""
        import time
        t0 = time.monotonic()
        for p in self.procs:
            p.start()
        for p in self.procs:
            client.wait_active(p)
        return time.monotonic() - t0

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> list[int]:
        return [p.stop() for p in self.procs]
