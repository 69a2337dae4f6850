"""The site server of the fleet benchmark, on 127.0.0.1 only: llama.cpp's ``llama-server``
(built by scripts/native_baseline.sh --build-only) with ``-np`` slots and continuous batching,
or llama-cpp-python's ``python -m llama_cpp.server`` (one request at a time; CI has it)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import httpx

from quant_llm_node.ros.node_process import _die_with_parent  # no server outlives the benchmark

LOOPBACK = "127.0.0.1"
LLAMA_SERVER = "llama-server"
LLAMA_CPP_PYTHON = "llama-cpp-python"
KINDS = (LLAMA_SERVER, LLAMA_CPP_PYTHON)
CTX_PER_SLOT = 2048            # the robot's engine.n_ctx: each slot holds one robot's decision
START_TIMEOUT_S = 180.0
POLL_S = 0.2
SEED = 42


class ServerStartError(RuntimeError):
    """The site server did not come up (missing binary or model, load failure, time-out)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def find_llama_server(explicit: str = "") -> Path:
    """``explicit``, else the binary that ``native_baseline.sh --build-only`` reports."""
    if explicit:
        path = Path(explicit)
    else:
        from quant_llm_node.paths import repo_root
        script = (repo_root() or Path.cwd()) / "scripts" / "native_baseline.sh"
        out = subprocess.run(["bash", str(script), "--build-only"], capture_output=True, text=True,
                             check=True, timeout=7200)
        path = Path(json.loads(out.stdout)["llama_server"])
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"llama-server not found at {path}: run scripts/native_baseline.sh --build-only")
    return path


@dataclass
class SiteServer:
    """One inference server process; ``slots`` parallel sequences (llama-server only)."""

    kind: str
    model: Path
    slots: int = 1
    threads: int = 2
    binary: Optional[Path] = None
    port: int = field(default_factory=free_port)
    proc: Optional[subprocess.Popen] = None
    log_path: Optional[Path] = None
    startup_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        if self.kind == LLAMA_SERVER:
            return [str(self.binary), "-m", str(self.model), "--host", LOOPBACK, "--port", str(self.port),
                    "-np", str(self.slots), "--cont-batching", "-c", str(CTX_PER_SLOT * self.slots),
                    "-t", str(self.threads), "-tb", str(self.threads), "--seed", str(SEED),
                    "--no-webui"]
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model),
                "--host", LOOPBACK, "--port", str(self.port), "--n_threads", str(self.threads),
                "--n_ctx", str(CTX_PER_SLOT), "--seed", str(SEED), "--verbose", "false"]

    def start(self, log_dir: Path) -> "SiteServer":
        if self.kind not in KINDS:
            raise ValueError(f"server kind {self.kind!r} not in {KINDS}")
        env = {k: v for k, v in os.environ.items() if k != "API_KEY"}
        if self.binary is not None:  # the shared libs sit beside the binary
            env["LD_LIBRARY_PATH"] = os.pathsep.join([str(self.binary.parent), env.get("LD_LIBRARY_PATH", "")])
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.kind}_{self.slots}slots_{self.port}.log"
        try:
            with open(self.log_path, "w") as log:
                self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                             env=env, start_new_session=True,
                                             preexec_fn=_die_with_parent)
        except OSError as exc:
            raise ServerStartError(f"{self.kind} did not start: {exc}") from exc
        t0 = time.monotonic()
        try:
            self._wait_ready()
        except Exception:
            self.stop()
            raise ServerStartError(f"{self.kind} did not start: {self.log_tail()}")
        self.startup_s = time.monotonic() - t0
        return self

    def _wait_ready(self) -> None:
        """Until GET /v1/models answers 200 (llama-server answers 503 while it loads)."""
        end = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2.0, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(POLL_S)
        raise TimeoutError(f"not ready after {START_TIMEOUT_S:.0f} s")

    def log_tail(self, n: int = 2000) -> str:
        return self.log_path.read_text()[-n:] if self.log_path and self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> float:
        """SIGKILL (a crashed or powered-off server); returns the wall-clock time of the kill."""
        t = time.time()
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        return t

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
