"""Decode rooflines for the host and the Jetson targets: every generated token reads all
weights once, so max decode tok/s = memory bandwidth / tensor bytes.

The host figure is serving.roofline's probe (the one the node's diagnostics use): a streaming
read with one thread per engine thread over a buffer above the last-level cache, which bounds
what llama.cpp reaches. It is cross-checked against the reference variant's decode (the largest
file: tok/s x tensor bytes); where that reads faster, it is the bound's floor, and the report
says so. A point still above the bound gets efficiency 1 at most and ``above_host_roofline``
set, never an efficiency > 1."""
from __future__ import annotations

from quant_llm_node.serving.roofline import (
    bandwidth_bound, efficiency, exceeds_roofline, implied_gbps, measure_read_bandwidth_gbps,
    raw_efficiency, roofline_tps)

# profile name -> (label, LPDDR5 peak GB/s used when the profile file cannot be read)
JETSON_TARGETS = {
    "agx_orin_64gb": ("Jetson AGX Orin 64GB", 204.8),
    "orin_nx_16gb": ("Jetson Orin NX 16GB", 102.4),
    "orin_nano_8gb": ("Jetson Orin Nano 8GB", 68.0),
}
BANDWIDTH_KEY = "memory_bandwidth_gbps"


def host_bandwidth_gbps(threads: int, model_bytes: int = 0) -> tuple[float, dict]:
    """serving.roofline's streaming probe at ``threads`` threads (the engine's count), with a
    1-thread reading beside it, and, for the record (cache effects), one over a buffer of
    ``model_bytes``; returns the higher of the first two and every reading."""
    d: dict = {}
    multi = measure_read_bandwidth_gbps(threads, details=d)
    single = measure_read_bandwidth_gbps(1) if threads > 1 else multi
    probes = {"probe_1_thread_gbps": single, f"probe_{d['threads']}_threads_gbps": multi}
    if model_bytes:
        probes[f"probe_{d['threads']}_threads_model_sized_gbps"] = measure_read_bandwidth_gbps(
            threads, nbytes=model_bytes)
    probes.update(probe_kernel=d["kernel"], probe_bytes=d["bytes"], llc_bytes=d["llc_bytes"],
                  probe_loadavg=d["loadavg"])
    return max(single, multi), probes


def host_bound(probe_gbps: float, reference_tps: float, reference_bytes: int,
               reference: str = "reference", probe: str = "the probe") -> tuple[float, str, bool]:
    """The roofline bandwidth for the ladder: the probe, floored at what the reference
    variant's decode reads (``serving.roofline.bandwidth_bound``), a note saying which, and
    whether the floor was taken."""
    gbps, floored = bandwidth_bound(probe_gbps, reference_tps, reference_bytes)
    read = implied_gbps(reference_tps, reference_bytes) if reference_tps else float("nan")
    if floored:
        return gbps, (f"floor: {reference} decode reads {read:.1f} GB/s, above {probe}'s "
                      f"{probe_gbps:.1f}, which underestimates this host"), True
    return gbps, f"{probe}; {reference} decode reads {read:.1f} GB/s, within it", False


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
