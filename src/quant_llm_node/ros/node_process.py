"""The node in its own process (``python -m quant_llm_node.ros.main``), for tests and benchmarks."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from quant_llm_node.paths import config_dir, repo_root

PR_SET_PDEATHSIG = 1
DEFAULT_LOG_DIR = Path(os.environ.get("QLN_LOG_DIR", "/tmp"))


def _die_with_parent() -> None:
    """Linux: the node gets SIGTERM when the process that started it dies (no orphans
    holding a model in memory after a crashed test run)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class NodeProcess:
    """Starts the node with config/robot.yaml, ``-p`` overrides and an optional namespace."""

    def __init__(self, namespace: str = "", params: dict[str, Any] | None = None,
                 log_path: Path | None = None):
        self.namespace = namespace.strip("/")
        self.name = f"{self.namespace}/quant_llm_node".strip("/")  # full name without leading /
        self.params = dict(params or {})
        root = repo_root()
        log_dir = root / "ros2_ws" / "log" if root else DEFAULT_LOG_DIR
        self.log_path = log_path or log_dir / f"node_{self.namespace or 'root'}_{os.getpid()}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def service(self) -> str:
        return f"/{self.name}/query"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    def start(self) -> "NodeProcess":
        args = [sys.executable, "-m", "quant_llm_node.ros.main", "--ros-args",
                "-r", f"__ns:=/{self.namespace}", "--params-file", str(config_dir() / "robot.yaml")]
        for key, value in self.params.items():
            if isinstance(value, bool):
                value = str(value).lower()
            args += ["-p", f"{key}:={value}"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        root = repo_root()
        if root is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), env.get("PYTHONPATH", "")])
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def rss_bytes(self) -> int:
        """Resident set size of the node process (Linux /proc)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Signal the node and wait; SIGKILL its process group after ``timeout``."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """Hard kill (crash simulation)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
