"""Decode rooflines for the host and the Jetson targets: every generated token reads all
weights once, so max decode tok/s = memory bandwidth / tensor bytes.

The host figure is serving.roofline's probe (the one the node's diagnostics use): a streaming
read with one thread per engine thread, which bounds what llama.cpp reaches; a point above it
still gets efficiency 1 at most and ``above_host_roofline`` set, never an efficiency > 1."""
from __future__ import annotations

from quant_llm_node.serving.roofline import (
    efficiency, exceeds_roofline, measure_read_bandwidth_gbps, raw_efficiency, roofline_tps)

# profile name -> (label, LPDDR5 peak GB/s used when the profile file cannot be read)
JETSON_TARGETS = {
    "agx_orin_64gb": ("Jetson AGX Orin 64GB", 204.8),
    "orin_nx_16gb": ("Jetson Orin NX 16GB", 102.4),
    "orin_nano_8gb": ("Jetson Orin Nano 8GB", 68.0),
}
BANDWIDTH_KEY = "memory_bandwidth_gbps"


def host_bandwidth_gbps(threads: int) -> tuple[float, dict]:
    """serving.roofline's streaming probe at ``threads`` threads (the engine's count), with
    a 1-thread reading beside it for the record; returns the higher and both readings."""
    d: dict = {}
    multi = measure_read_bandwidth_gbps(threads, details=d)
    single = measure_read_bandwidth_gbps(1) if threads > 1 else multi
    return max(single, multi), {f"{d['kernel']}_1_thread_gbps": single,
                                f"{d['kernel']}_{d['threads']}_threads_gbps": multi}


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
           "efficiency_host": efficiency(decode_tps, tensor_bytes, host_gbps) if decode_tps else None,
           "efficiency_host_raw": raw_efficiency(decode_tps, tensor_bytes, host_gbps) if decode_tps else None,
           "above_host_roofline": bool(decode_tps) and exceeds_roofline(decode_tps, tensor_bytes, host_gbps)}
    for name, gbps in targets.items():
        out[f"roofline_{name}_tps"] = roofline_tps(tensor_bytes, gbps)
    return out
