"""Test helpers: the node in its own process, and a client in the test process.

Everything talks over real Fast DDS on loopback (conftest sets the environment).
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from typing import Any

import rclpy
from rclpy.executors import MultiThreadedExecutor

from quant_llm_node.ros.node_process import NodeProcess as BaseNodeProcess

SERVICE_TIMEOUT_S = 30.0
ACTIVE_TIMEOUT_S = 180.0
STATE_IDS = {1: "unconfigured", 2: "inactive", 3: "active", 4: "finalized"}


class NodeProcess(BaseNodeProcess):
    """The node for tests: two llama.cpp threads (the machine has two cores) and a far default
    deadline, so that a busy test machine yields slow answers rather than fallbacks (tests of
    deadlines set their own)."""

    def __init__(self, namespace: str = "", params: dict[str, Any] | None = None):
        super().__init__(namespace, {"engine.n_threads": 2, "serving.default_deadline_ms": 300000,
                                     **(params or {})})


class Client:
    """A ROS node in the test process with a background executor."""

    def __init__(self, name: str = "test_client"):
        self.node = rclpy.create_node(name)
        self.executor = MultiThreadedExecutor(num_threads=4)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self._clients: dict = {}

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(5)
        self.node.destroy_node()

    def client(self, srv_type, name: str):
        key = (srv_type, name)
        if key not in self._clients:
            self._clients[key] = self.node.create_client(srv_type, name)
        return self._clients[key]

    def call(self, srv_type, name: str, request, timeout: float = 120.0):
        cli = self.client(srv_type, name)
        assert cli.wait_for_service(timeout_sec=SERVICE_TIMEOUT_S), f"{name} not available"
        done = threading.Event()
        future = cli.call_async(request)
        future.add_done_callback(lambda _f: done.set())
        assert done.wait(timeout), f"no answer from {name} within {timeout} s"
        return future.result()

    def lifecycle_state(self, node_name: str) -> str:
        from lifecycle_msgs.srv import GetState
        resp = self.call(GetState, f"/{node_name}/get_state", GetState.Request(), timeout=30)
        return STATE_IDS.get(resp.current_state.id, resp.current_state.label)

    def change_state(self, node_name: str, transition: str) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState
        req = ChangeState.Request()
        req.transition.id = getattr(Transition, f"TRANSITION_{transition.upper()}")
        return self.call(ChangeState, f"/{node_name}/change_state", req, timeout=300).success

    def wait_state(self, node_name: str, state: str, node: NodeProcess,
                   timeout: float = ACTIVE_TIMEOUT_S) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert node.alive(), f"node exited:\n{node.log()[-3000:]}"
            try:
                if self.lifecycle_state(node_name) == state:
                    return
            except AssertionError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{node_name} not {state} after {timeout} s:\n{node.log()[-3000:]}")


def nav_request(query: str, goal: str = "", state: dict | None = None, request_id: str = "",
                context: str = "", priority: int = 0, deadline_ms: int = 0):
    """A NavQuery.Request from scenario-style fields."""
    from quant_llm_interfaces.srv import NavQuery
    from quant_llm_node.ros.conversions import build_request
    return build_request(NavQuery, query, goal, dict(state or {}), context, priority,
                         deadline_ms, request_id)


def scenario_request(case: dict, request_id: str = ""):
    """A request for one entry of scenarios.yaml (scenarios or bad_inputs)."""
    query = case.get("query", "")
    if "query_repeat" in case:
        query = case["query_repeat"]["text"] * case["query_repeat"]["times"]
    state = {k: (math.nan if isinstance(v, float) and math.isnan(v) else v)
             for k, v in (case.get("state") or {}).items()}
    return nav_request(query, case.get("goal", ""), state, request_id, case.get("context_json", ""))


def diagnostics_of(ros: Client, node_prefix: str, predicate, timeout: float = 30.0,
                   status: str = "model"):
    """The first ``<prefix>: <status>`` status on /diagnostics that satisfies ``predicate``."""
    def match(st) -> bool:
        return st.name == f"{node_prefix}: {status}" and predicate(st)
    msg = diagnostic_array(ros, lambda m: any(match(st) for st in m.status), timeout)
    return next(st for st in msg.status if match(st)) if msg is not None else None


@contextlib.contextmanager
def refused_configure(ros: Client, namespace: str, params: dict[str, Any], marker: str,
                      timeout: float = 60.0):
    """Start a node whose configure must fail: yields (node, its ERROR status naming ``marker``)
    once it is back in unconfigured and still alive; stops it afterwards."""
    node = NodeProcess(namespace, {"node.diagnostics_period_s": 0.2, **params}).start()
    try:
        st = diagnostics_of(ros, node.name, lambda s: s.level == b"\x02" and marker in s.message,
                            timeout)
        assert st is not None, node.log()[-2000:]
        # the ERROR diagnostic goes out while the failed configure transition is finishing
        ros.wait_state(node.name, "unconfigured", node, timeout=30)
        yield node, st
    finally:
        assert node.stop() == 0


def diagnostic_array(ros: Client, predicate, timeout: float = 30.0):
    """The first DiagnosticArray on /diagnostics that satisfies ``predicate`` (or None)."""
    from diagnostic_msgs.msg import DiagnosticArray
    found: list = []
    done = threading.Event()

    def on_diag(msg):
        if not found and predicate(msg):
            found.append(msg)
            done.set()
    sub = ros.node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    try:
        done.wait(timeout)
    finally:
        ros.node.destroy_subscription(sub)
    return found[0] if found else None


def set_parameters(ros: Client, node_name: str, values: dict[str, Any]):
    """Set parameters of another process's node through its parameter service; the results."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter
    req = SetParameters.Request()
    req.parameters = [Parameter(name, value=value).to_parameter_msg() for name, value in values.items()]
    return ros.call(SetParameters, f"/{node_name}/set_parameters", req, timeout=30).results


def describe_parameters(ros: Client, node_name: str, names: list[str]):
    """ParameterDescriptors of another process's node."""
    from rcl_interfaces.srv import DescribeParameters
    req = DescribeParameters.Request(names=names)
    return ros.call(DescribeParameters, f"/{node_name}/describe_parameters", req, timeout=30).descriptors


def set_parameters_atomically(ros: Client, node_name: str, values: dict[str, Any]):
    """Set several parameters of another process's node as one change; the one result."""
    from rcl_interfaces.srv import SetParametersAtomically
    from rclpy.parameter import Parameter
    req = SetParametersAtomically.Request()
    req.parameters = [Parameter(name, value=value).to_parameter_msg() for name, value in values.items()]
    return ros.call(SetParametersAtomically, f"/{node_name}/set_parameters_atomically", req,
                    timeout=30).result
