"""The ROS side of the serving benchmark: wait for the node, then time sequential service calls
from this process (round trip seen by the planner vs the node-side latency in the response)."""
from __future__ import annotations

import math
import os
import time
from typing import Any

from quant_llm_node.ros.node_process import NodeProcess
from quant_llm_node.bench.scenarios import raw_request
from quant_llm_node.reasoning.types import LATENCY_STAGES

ACTIVE_TIMEOUT_S = 180.0
DISCOVERY_TIMEOUT_S = 30.0
STATE_TIMEOUT_S = 10.0
POLL_S = 0.5
CALL_TIMEOUT_S = 120.0
STATE_ACTIVE = 3


class BenchClient:
    """One rclpy node in the benchmark process (rclpy must be initialised)."""

    def __init__(self, name: str = "serve_bench_client"):
        import rclpy
        self._rclpy = rclpy
        self.node = rclpy.create_node(name)
        self._clients: dict = {}

    def close(self) -> None:
        self.node.destroy_node()

    def _client(self, srv_type, name: str):
        key = (srv_type, name)
        if key not in self._clients:
            from quant_llm_node.ros.node import SERVICE_QOS  # the node's own service QoS
            cli = self.node.create_client(srv_type, name, qos_profile=SERVICE_QOS)
            if not cli.wait_for_service(timeout_sec=DISCOVERY_TIMEOUT_S):
                raise RuntimeError(f"{name} not available after {DISCOVERY_TIMEOUT_S:.0f} s")
            self._clients[key] = cli
        return self._clients[key]

    def call(self, srv_type, name: str, request, timeout: float = CALL_TIMEOUT_S):
        """(response or None, round trip in ms) as a planner sees it."""
        cli = self._client(srv_type, name)
        t0 = time.monotonic()
        future = cli.call_async(request)
        self._rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout)
        rtt = (time.monotonic() - t0) * 1e3
        if not future.done():
            cli.remove_pending_request(future)
            return None, rtt
        return future.result(), rtt

    def wait_active(self, proc: NodeProcess, timeout: float = ACTIVE_TIMEOUT_S) -> float:
        """Poll lifecycle get_state until active; returns seconds waited."""
        from lifecycle_msgs.srv import GetState
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not proc.alive():
                raise RuntimeError(f"node exited:\n{proc.log()[-3000:]}")
            try:
                resp, _ = self.call(GetState, f"/{proc.name}/get_state", GetState.Request(),
                                    STATE_TIMEOUT_S)
                if resp is not None and resp.current_state.id == STATE_ACTIVE:
                    return time.monotonic() - t0
            except RuntimeError:
                pass
            time.sleep(POLL_S)
        raise RuntimeError(f"{proc.name} not active after {timeout:.0f} s:\n{proc.log()[-3000:]}")


def _record(resp, rtt: float) -> dict[str, Any]:
    if resp is None:
        return {"status": "lost", "round_trip_ms": rtt}
    lat = {k: float(getattr(resp.latency, k)) for k in LATENCY_STAGES}
    return {"status": "answered" if resp.success else "rejected", "error_code": resp.error_code,
            "source": resp.decision.source, "round_trip_ms": rtt,
            "overhead_ms": rtt - lat["total_ms"], "prompt_tokens": int(resp.prompt_tokens),
            "completion_tokens": int(resp.completion_tokens), **lat}


def sequential(client: BenchClient, service: str, raws: list[dict]) -> list[dict[str, Any]]:
    """Send requests one after another; one record per request (nothing dropped)."""
    from quant_llm_interfaces.srv import NavQuery
    from quant_llm_node.ros.conversions import build_request
    out = []
    for raw in raws:
        req = build_request(NavQuery, raw["query"], raw["goal"], raw["state"], raw["context_json"],
                            raw["priority"], raw["deadline_ms"], raw["request_id"])
        out.append(_record(*client.call(NavQuery, service, req)))
    return out


def model_requests(cases: list[dict], n: int, deadline_ms: int, tag: str) -> list[dict]:
    """``n`` scenario requests, cycling through the cases (they all reach the model)."""
    raws = []
    for i in range(n):
        raw = raw_request(cases[i % len(cases)], request_id=f"{tag}-{i}")
        raw["deadline_ms"] = deadline_ms
        raws.append(raw)
    return raws


def forced_requests(n: int, tag: str) -> list[dict]:
    """Requests the safety rules answer whatever the model says (a person inside the stop
    distance): with serving.rule_forced the node answers them without the model."""
    case = {"query": "Someone just stepped in front of the robot.",
            "state": {"speed_mps": 1.0, "people_distances_m": [0.6], "obstacle_distance_m": 10.0}}
    return [raw_request(case, request_id=f"{tag}-{i}") for i in range(n)]


def empty_requests(n: int, tag: str) -> list[dict]:
    """Requests rejected before the model (EMPTY_QUERY): the bare service round trip."""
    return [raw_request({"query": ""}, request_id=f"{tag}-{i}") for i in range(n)]


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc); NaN when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def node_prefix_warm(client: BenchClient, node_name: str,
                     timeout: float = DISCOVERY_TIMEOUT_S) -> dict[str, float]:
    """The node's own static-prefix warm-up at configure, read from its model diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray
    found: dict[str, str] = {}

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name == f"{node_name}: model":
                found.update({kv.key: kv.value for kv in st.values})

    sub = client.node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    try:
        t0 = time.monotonic()
        while "static_prefix_tokens" not in found and time.monotonic() - t0 < timeout:
            client._rclpy.spin_once(client.node, timeout_sec=POLL_S)
    finally:
        client.node.destroy_subscription(sub)
    return {"prefix_tokens": float(found.get("static_prefix_tokens", math.nan)),
            "warm_ms": float(found.get("static_prefix_warm_ms", math.nan))}
