"""Conversions between quant_llm_interfaces messages and the core's plain types."""
from __future__ import annotations

import math
from typing import Any

from quant_llm_node.reasoning.types import LATENCY_STAGES, NavResponse

# RobotState.BATTERY_UNKNOWN, the default of RobotState.battery_pct: "not given" (a .msg cannot
# default a float to NaN). Any other negative value stays negative and is rejected.
BATTERY_UNKNOWN = -1.0


def ros_text(value: Any) -> str:
    """Any text as a valid ROS string, whatever a server or a model produced: valid UTF-8 (a
    lone surrogate becomes U+FFFD) and no NUL (ROS strings end at the first one)."""
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def battery_from_msg(state: Any) -> float:
    """RobotState.battery_pct for the core: the not-given sentinel becomes NaN (unknown)."""
    value = float(state.battery_pct)
    return math.nan if value == getattr(type(state), "BATTERY_UNKNOWN", BATTERY_UNKNOWN) else value


def request_to_raw(msg: Any) -> dict[str, Any]:
    """NavQuery.Request / QueryRequest / Reason.Goal -> the dict validate_request takes."""
    s = msg.state
    return {
        "request_id": msg.request_id,
        "query": msg.query,
        "goal": msg.goal,
        "context_json": msg.context_json,
        "priority": int(msg.priority),
        "deadline_ms": int(msg.deadline_ms),
        "state": {
            "x": s.pose.x, "y": s.pose.y, "theta": s.pose.theta,
            "speed_mps": s.speed_mps, "battery_pct": battery_from_msg(s),
            "obstacle_distance_m": s.obstacle_distance_m,
            "people_distances_m": list(s.people_distances_m),
            "zone": s.zone,
        },
    }


def build_request(srv_type, query: str, goal: str, state: dict, context: str,
                  priority: int, deadline_ms: int, request_id: str = ""):
    """A NavQuery.Request from plain values (unknown numbers stay NaN / +inf)."""
    req = srv_type.Request()
    req.request_id, req.query, req.goal, req.context_json = request_id, query, goal, context
    req.priority, req.deadline_ms = priority, deadline_ms
    s = req.state
    # float() everywhere: rosidl's C conversion aborts the process on an int in a float field
    s.pose.x, s.pose.y, s.pose.theta = (float(state.get(k, 0.0)) for k in ("x", "y", "theta"))
    s.speed_mps = float(state.get("speed_mps", 0.0))
    s.battery_pct = float(state.get("battery_pct", math.nan))
    s.obstacle_distance_m = float(state.get("obstacle_distance_m", math.inf))
    s.people_distances_m = [float(d) for d in state.get("people_distances_m", [])]
    s.zone = str(state.get("zone", ""))
    return req


def fill_response(out: Any, resp: NavResponse, with_request_id: bool = True) -> Any:
    """Copy a NavResponse into NavQuery.Response / QueryResult / Reason.Result."""
    if with_request_id:
        out.request_id = ros_text(resp.request_id)
    out.success = resp.success
    out.error_code = ros_text(resp.error_code)
    out.error_message = ros_text(resp.error_message)
    d = resp.decision
    out.decision.action = ros_text(d.action)
    out.decision.speed_limit_mps = float(d.speed_limit_mps)
    out.decision.target_place_id = ros_text(d.target_place_id)
    out.decision.reason = ros_text(d.reason)
    out.decision.source = ros_text(d.source)
    out.decision.rules_fired = [ros_text(r) for r in d.rules_fired]
    out.raw_text = ros_text(resp.raw_text)
    _copy_latency(out.latency, resp.latency)
    out.prompt_tokens = int(resp.prompt_tokens)
    out.completion_tokens = int(resp.completion_tokens)
    out.model_id = ros_text(resp.model_id)
    out.backend = ros_text(resp.backend)
    return out


def response_to_dict(msg: Any) -> dict[str, Any]:
    """A NavQuery.Response / QueryResult as a plain dict (for CLIs and logs)."""
    d = msg.decision
    lat = msg.latency
    return {
        "request_id": getattr(msg, "request_id", ""),
        "success": msg.success, "error_code": msg.error_code, "error_message": msg.error_message,
        "decision": {"action": d.action, "speed_limit_mps": round(d.speed_limit_mps, 3),
                     "target_place_id": d.target_place_id, "reason": d.reason,
                     "source": d.source, "rules_fired": list(d.rules_fired)},
        "raw_text": msg.raw_text,
        "latency_ms": {k: round(getattr(lat, k), 2) for k in LATENCY_STAGES},
        "prompt_tokens": msg.prompt_tokens, "completion_tokens": msg.completion_tokens,
        "model_id": msg.model_id,
    }


def fill_stats(out: Any, resp: NavResponse, stamp: Any) -> Any:
    """One QueryStats message for an answered request."""
    out.stamp = stamp
    out.request_id = ros_text(resp.request_id)
    out.success = resp.success
    out.error_code = ros_text(resp.error_code)
    out.action = ros_text(resp.decision.action)
    out.source = ros_text(resp.decision.source)
    out.backend = ros_text(resp.backend)
    out.model_id = ros_text(resp.model_id)
    _copy_latency(out.latency, resp.latency)
    out.prompt_tokens = int(resp.prompt_tokens)
    out.completion_tokens = int(resp.completion_tokens)
    out.decode_tokens_per_s = float(resp.decode_tps)
    return out


def _copy_latency(msg: Any, lat: Any) -> None:
    for name in LATENCY_STAGES:
        setattr(msg, name, float(getattr(lat, name)))
