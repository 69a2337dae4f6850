"""Facts about the machine a benchmark ran on (CPU, llama.cpp build, Jetson power mode) and
process memory readings."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

CMD_TIMEOUT_S = 10.0
TEGRASTATS_INTERVAL_MS = 500
TEGRASTATS_SAMPLE_S = 1.5
JETSON_RELEASE_FILE = Path("/etc/nv_tegra_release")
DEVICE_MODEL_FILE = Path("/proc/device-tree/model")
KIB = 1024


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return ""


def loadavg() -> list[float]:
    """1/5/15-minute load averages, rounded ([] where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, else platform.processor()."""
    for line in _read(Path("/proc/cpuinfo")).splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware"):
            return value.strip()
    return platform.processor() or platform.machine()


def _run(cmd: list[str]) -> str | None:
    """stdout of a command that may not exist (None when missing or failing)."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
        return (out.stdout or out.stderr).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"error: {exc}"


def tegrastats_sample() -> str | None:
    """One tegrastats line (Jetson only; None elsewhere)."""
    exe = shutil.which("tegrastats")
    if exe is None:
        return None
    try:
        proc = subprocess.Popen([exe, "--interval", str(TEGRASTATS_INTERVAL_MS)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    except OSError as exc:
        return f"error: {exc}"
    time.sleep(TEGRASTATS_SAMPLE_S)
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=CMD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    lines = [ln for ln in (out or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def jetson_info() -> dict:
    """nvpmodel power mode, L4T release and a tegrastats sample, when on a Jetson."""
    info = {"nvpmodel": _run(["nvpmodel", "-q"]), "tegrastats": tegrastats_sample(),
            "l4t_release": _read(JETSON_RELEASE_FILE) or None,
            "device_model": _read(DEVICE_MODEL_FILE) or None}
    return {k: v for k, v in info.items() if v is not None}


def llama_info() -> dict:
    """llama-cpp-python version, offload support and the build's system_info line."""
    try:
        import llama_cpp
    except ImportError:
        return {"llama_cpp": None}
    return {"llama_cpp_python": llama_cpp.__version__,
            "supports_gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
            "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()}


def host_info(threads: int, n_gpu_layers: int) -> dict:
    """Everything recorded about the host with each run."""
    try:
        import psutil
        physical = psutil.cpu_count(logical=False)
        mem_total = psutil.virtual_memory().total
    except ImportError:
        physical, mem_total = None, None
    info = {
        "hostname": platform.node(), "platform": platform.platform(), "machine": platform.machine(),
        "python": platform.python_version(), "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(), "physical_cores": physical, "mem_total_bytes": mem_total,
        "threads_used": threads, "n_gpu_layers": n_gpu_layers,
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    info.update(llama_info())
    jetson = jetson_info()
    if jetson:
        info["jetson"] = jetson
    return info


def rss_bytes() -> int:
    """Current resident set size of this process."""
    return _status_kib("VmRSS") * KIB or _psutil_rss()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (VmHWM, else ru_maxrss)."""
    peak = _status_kib("VmHWM") * KIB
    if peak:
        return peak
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB


def _status_kib(field: str) -> int:
    for line in _read(Path("/proc/self/status")).splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _psutil_rss() -> int:
    try:
        import psutil
        return psutil.Process().memory_info().rss
    except ImportError:
        return 0
