"""Builds the node's /diagnostics statuses (one per concern) from core state."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from quant_llm_node.reasoning.types import LATENCY_STAGES
from quant_llm_node.ros.conversions import ros_text
from quant_llm_node.serving.model_swap import SwapPhase, SwapStatus
from quant_llm_node.serving.pipeline import GroundingStatus

OK, WARN, ERROR, STALE = (DiagnosticStatus.OK, DiagnosticStatus.WARN,
                          DiagnosticStatus.ERROR, DiagnosticStatus.STALE)


@dataclass
class StatusSpec:
    """One status before it becomes a message."""

    name: str
    level: bytes
    message: str
    values: dict[str, Any] = field(default_factory=dict)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.2f}"
    return str(v)


def to_message(stamp, hardware_id: str, specs: list[StatusSpec]) -> DiagnosticArray:
    """The statuses as one message; every string valid for ROS (ros_text), whatever it holds."""
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    for spec in specs:
        st = DiagnosticStatus(level=spec.level, name=ros_text(spec.name),
                              message=ros_text(spec.message), hardware_id=ros_text(hardware_id))
        st.values = [KeyValue(key=ros_text(k), value=ros_text(_fmt(v))) for k, v in spec.values.items()]
        arr.status.append(st)
    return arr


def model_status(prefix: str, lifecycle: str, report, configure_error: str,
                 requested_gpu_layers: int, swap: SwapStatus | None = None) -> StatusSpec:
    """Model loaded? backend, quantization, offload (WARN when GPU asked but impossible), and
    the last model swap (ERROR when it failed: the old model serves)."""
    name = f"{prefix}: model"
    if configure_error:
        return StatusSpec(name, ERROR, configure_error, {"lifecycle_state": lifecycle})
    if report is None:
        # unconfigured on purpose (autostart false, or after cleanup): present, never STALE
        return StatusSpec(name, WARN, f"{lifecycle}: no model loaded",
                          {"lifecycle_state": lifecycle})
    g = report.gguf
    values = {
        "lifecycle_state": lifecycle, "model_id": report.model_id,
        "architecture": g.get("architecture"), "quantization": g.get("file_type"),
        "parameters": g.get("n_params"), "file_bytes": g.get("file_bytes"),
        "bits_per_weight": g.get("bits_per_weight"), "backend": report.backend,
        "gpu_offload_supported": report.gpu_offload_supported,
        "n_gpu_layers_requested": report.n_gpu_layers_requested,
        "layers_offloaded": f"{report.n_layers_offloaded}/{report.n_layers + 1}",
        "n_ctx": report.n_ctx, "n_threads": report.n_threads,
        "kv_cache_type": report.kv_cache_type, "load_ms": report.load_ms,
    }
    values.update(report.extra)
    if swap is not None and swap.phase is not SwapPhase.IDLE:
        values.update({"swap_phase": swap.phase.value, "swap_target": swap.target,
                       "swap_both_loaded": swap.both_loaded, "swap_ms": swap.duration_ms,
                       "serving_model_id": swap.serving})
        if swap.phase is SwapPhase.FAILED:
            return StatusSpec(name, ERROR, f"model swap to {swap.target} failed: {swap.error}; "
                                           f"serving {swap.serving or 'no model'}", values)
        if swap.phase is SwapPhase.DRAINED:
            return StatusSpec(name, WARN, f"model swap to {swap.target}: both do not fit, the "
                                          "fallback answers while it loads", values)
        if swap.phase is SwapPhase.LOADING:
            return StatusSpec(name, OK, f"{report.model_id} serving; {swap.target} loading "
                                        f"({lifecycle})", values)
    if requested_gpu_layers != 0 and not report.gpu_offload_supported:
        return StatusSpec(name, WARN, "GPU offload requested but this llama.cpp build cannot "
                                      "offload: running on CPU", values)
    return StatusSpec(name, OK, f"{report.model_id} loaded ({lifecycle})", values)


def latency_status(prefix: str, snap: dict | None, roofline: dict | None = None,
                   lifecycle: str = "") -> StatusSpec:
    """p50/p95/p99 per stage, TTFT, decode tok/s, counters (``snap`` None: not configured)."""
    if snap is None:
        return StatusSpec(f"{prefix}: inference latency", OK, f"no requests served ({lifecycle})", {})
    st = snap["stages"]
    c = snap["counters"]
    values: dict[str, Any] = {}
    for stage in LATENCY_STAGES:
        for p, v in st[stage].items():
            values[f"{stage[:-3]}_{p}_ms"] = v
    values.update({
        "time_to_first_token_p50_ms": st["first_token_ms"]["p50"],
        "decode_tokens_per_s_p50": snap["decode_tps_p50"],
        "requests_served": c.get("served", 0), "requests_answered": c.get("answered", 0),
        "errors": c.get("rejected", 0), "fallbacks": c.get("fallback", 0),
        "safety_overrides": c.get("safety_override", 0),
        "deadline_misses": c.get("deadline_miss", 0), "preemptions": c.get("preempted", 0),
    })
    if c.get("spec_drafted"):
        values["speculative_drafted"] = c["spec_drafted"]
        values["speculative_acceptance"] = c.get("spec_accepted", 0) / c["spec_drafted"]
    for code, n in sorted(snap["errors"].items()):
        values[f"error.{code}"] = n
    if roofline:
        values.update(roofline)
    level, msg = OK, f"{c.get('served', 0)} served"
    if snap["window"] == 0:
        msg = "no requests served yet"
    elif c.get("deadline_miss", 0):
        level, msg = WARN, f"{c['deadline_miss']} deadline misses"
    return StatusSpec(f"{prefix}: inference latency", level, msg, values)


def queue_status(prefix: str, depth: int, capacity: int, accepting: bool, overloaded: int,
                 lifecycle: str = "inactive", running: int = 0, slots: int = 1) -> StatusSpec:
    """Queue depth and the requests being served (``slots``: engine.n_parallel)."""
    level = WARN if depth >= capacity else OK
    msg = "accepting" if accepting else f"not accepting ({lifecycle})"
    return StatusSpec(f"{prefix}: queue", level, msg,
                      {"depth": depth, "capacity": capacity, "rejected_overloaded": overloaded,
                       "running": running, "batch_slots": slots})


def grounding_status(prefix: str, info: GroundingStatus) -> StatusSpec:
    name = f"{prefix}: grounding"
    if not info.enabled:
        return StatusSpec(name, OK, "disabled", {})
    if info.ready is None:
        return StatusSpec(name, OK, "not loaded yet (node not configured)", {})
    if not info.ready:
        return StatusSpec(name, ERROR, f"embedder unavailable: {info.error}", {})
    return StatusSpec(name, OK, "ready", {"providers": info.providers,
                                          "provider_fallbacks": info.provider_fallbacks})


def settings_status(prefix: str, cfg, lifecycle: str, launch_loosened: list[str] = ()) -> StatusSpec:
    """The live settings in force (safety thresholds, serving limits, generation); WARN, naming
    each one, when the launch loosened safety settings against the shipped defaults."""
    name = f"{prefix}: settings"
    level, loose = OK, list(launch_loosened)
    values: dict = {"launch_loosened": ", ".join(loose) or "none"}
    if loose:
        level = WARN
        message = f"launch loosened {len(loose)} safety setting(s) against the defaults: {', '.join(loose)}"
    if cfg is None:
        msg = f"parameters apply at configure ({lifecycle})"
        return StatusSpec(name, level, f"{message}; {msg}" if loose else msg, values)
    values.update({f"safety.{k}": v for k, v in vars(cfg.safety).items()})
    values.update({f"screen.{k}": v for k, v in vars(cfg.screen).items()})
    values.update({f"serving.{k}": v for k, v in vars(cfg.serving).items()})
    values.update({f"engine.{k}": getattr(cfg.engine, k)
                   for k in ("max_tokens", "temperature", "use_grammar")})
    return StatusSpec(name, level, message if loose else "live settings in force", values)


def remote_status(prefix: str, st) -> StatusSpec:
    """The server side of engine.backend remote / hybrid: reachability, breaker, latency,
    errors by kind, share answered locally (never the token)."""
    level = {"OK": OK, "WARN": WARN, "ERROR": ERROR}[st.level.value]
    return StatusSpec(f"{prefix}: remote", level, st.message, st.key_values())
