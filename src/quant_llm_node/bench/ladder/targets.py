"""Decode rooflines for the host and the Jetson targets: every generated token reads all
weights once, so max decode tok/s = memory bandwidth / tensor bytes."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from quant_llm_node.serving.roofline import efficiency, measure_read_bandwidth_gbps, roofline_tps

# profile name -> (label, LPDDR5 peak GB/s used when the profile file cannot be read)
JETSON_TARGETS = {
    "agx_orin_64gb": ("Jetson AGX Orin 64GB", 204.8),
    "orin_nx_16gb": ("Jetson Orin NX 16GB", 102.4),
    "orin_nano_8gb": ("Jetson Orin Nano 8GB", 68.0),
}
BANDWIDTH_KEY = "memory_bandwidth_gbps"
PROBE_BYTES_PER_THREAD = 256 * 2**20
PROBE_REPEATS = 5
BYTES_PER_GB = 1e9


def threaded_read_gbps(threads: int, nbytes: int = PROBE_BYTES_PER_THREAD,
                       repeats: int = PROBE_REPEATS) -> float:
    """Best-of-N read rate with ``threads`` numpy sums in parallel (numpy drops the GIL)."""
    bufs = [np.ones(nbytes // 8, dtype=np.float64) for _ in range(threads)]
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(pool.map(np.sum, bufs))
            best = min(best, time.perf_counter() - t0)
    return threads * nbytes / best / BYTES_PER_GB


def host_bandwidth_gbps(threads: int) -> tuple[float, dict]:
    """The higher of serving.roofline's 1-thread probe and a ``threads``-thread probe
    (both lower bounds of the true peak); returns it with both readings."""
    single = measure_read_bandwidth_gbps()
    multi = threaded_read_gbps(threads) if threads > 1 else single
    return max(single, multi), {"numpy_1_thread_gbps": single, f"numpy_{threads}_threads_gbps": multi}


def _profile_bandwidth(name: str) -> float | None:
    """memory_bandwidth_gbps of config/profiles/<name>.yaml, or None."""
    try:
        from quant_llm_node.deploy.profiles import load_profile
        return float(load_profile(name).memory_bandwidth_gbps)
    except Exception:  # module absent or profile unreadable: read the YAML directly
        pass
    try:
        import yaml
        from quant_llm_node.paths import config_dir
        doc = yaml.safe_load((config_dir() / "profiles" / f"{name}.yaml").read_text())
        return float(doc[BANDWIDTH_KEY])
    except Exception:
        return None


def target_bandwidths() -> dict[str, float]:
    """Jetson profile name -> bandwidth GB/s (profile files win over the built-in values)."""
    return {name: _profile_bandwidth(name) or default for name, (_, default) in JETSON_TARGETS.items()}


def roofline_fields(tensor_bytes: int, decode_tps: float, host_gbps: float,
                    targets: dict[str, float]) -> dict:
    """Predicted max decode tok/s on the host and each target, and the host efficiency."""
    out = {"roofline_host_tps": roofline_tps(tensor_bytes, host_gbps),
           "efficiency_host": efficiency(decode_tps, tensor_bytes, host_gbps) if decode_tps else None}
    for name, gbps in targets.items():
        out[f"roofline_{name}_tps"] = roofline_tps(tensor_bytes, gbps)
    return out
