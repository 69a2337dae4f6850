"""Input defects found through ROS (issue 13): context_json that used to fail inside the parser or
the worker (finding 7), an unset RobotState.battery_pct (finding 8), the interface files that
`ros2 interface show` reads (finding 4), and the node's graph against the SROS2 policy."""
from __future__ import annotations

import json
import math
import threading

import pytest

from conftest import ROOT
from ros_harness import NodeProcess, nav_request

pytestmark = pytest.mark.ros

CLEAR = {"speed_mps": 0.5, "obstacle_distance_m": 10.0, "zone": "aisle_7"}


@pytest.fixture(scope="module")
def node(ros, model_path):
    # rule-forced answers off: the battery tests need the deterministic deadline fallback path
    proc = NodeProcess("inputs", {"serving.rule_forced": False}).start()
    try:
        ros.wait_state(proc.name, "active", proc)
        yield proc
    finally:
        assert proc.stop() == 0, proc.log()[-2000:]


def call(ros, node, req, timeout=120.0):
    from quant_llm_interfaces.srv import NavQuery
    return ros.call(NavQuery, node.service, req, timeout=timeout)


def publish_and_wait(ros, node, msg, timeout=60.0):
    """Publish one QueryRequest on ~/query_in, return the QueryResult with its request_id."""
    from quant_llm_interfaces.msg import QueryRequest, QueryResult
    got, done = [], threading.Event()

    def on_result(res):
        if res.request_id == msg.request_id:
            got.append(res)
            done.set()
    sub = ros.node.create_subscription(QueryResult, f"/{node.name}/query_out", on_result, 10)
    pub = ros.node.create_publisher(QueryRequest, f"/{node.name}/query_in", 10)
    try:
        for _ in range(100):
            if pub.get_subscription_count() and sub.get_publisher_count():
                break
            threading.Event().wait(0.1)
        pub.publish(msg)
        assert done.wait(timeout), f"no QueryResult for {msg.request_id}"
        return got[0]
    finally:
        ros.node.destroy_publisher(pub)
        ros.node.destroy_subscription(sub)


# ---- finding 7: context_json ---------------------------------------------------------------------
@pytest.mark.parametrize("context", [
    "[" * 1500 + "]" * 1500,                 # deeper than the JSON parser's recursion limit
    '{"a": ' + "{" * 1900 + "}" * 1901,
])
def test_deeply_nested_context_is_invalid_context_json(ros, node, context):
    resp = call(ros, node, nav_request("Status?", state=CLEAR, context=context, request_id="deep-1"))
    assert not resp.success
    assert resp.error_code == "INVALID_CONTEXT_JSON", (resp.error_code, resp.error_message)
    assert "nested deeper" in resp.error_message
    assert resp.request_id == "deep-1"
    assert node.alive()


@pytest.mark.parametrize("context", ['{"note": "\\ud800"}', '{"\\udfff": "x"}',
                                     '{"a": [{"b": "ok \\udbff"}]}'])
def test_escaped_lone_surrogate_is_rejected_before_the_worker(ros, node, context):
    resp = call(ros, node, nav_request("Status?", state=CLEAR, context=context, request_id="sur-1"))
    assert not resp.success
    assert resp.error_code == "INVALID_CONTEXT_JSON", (resp.error_code, resp.error_message)
    assert "surrogate" in resp.error_message
    assert resp.latency.prompt_ms == 0 and resp.completion_tokens == 0  # never reached the model


def test_escaped_lone_surrogate_on_the_topic(ros, node):
    from quant_llm_interfaces.msg import QueryRequest
    msg = QueryRequest(request_id="sur-topic", query="Status?", context_json='{"note": "\\ud800"}')
    msg.state.obstacle_distance_m = 10.0
    res = publish_and_wait(ros, node, msg)
    assert not res.success and res.error_code == "INVALID_CONTEXT_JSON", res.error_message


def test_escaped_surrogate_pair_is_served(ros, node):
    """A valid escaped non-BMP character (a pair) reaches the model and gets a decision."""
    context = json.dumps({"note": "\U0001F6A7 wet floor sign"})  # ensure_ascii: \ud83d\udea7
    assert "\\ud83d" in context
    resp = call(ros, node, nav_request("The aisle is clear for 10 m.", state=CLEAR, context=context))
    assert resp.success, (resp.error_code, resp.error_message)
    assert resp.error_code != "INTERNAL_ERROR"
    assert resp.completion_tokens > 0


# ---- finding 8: battery_pct left alone -----------------------------------------------------------
def untouched_battery_request(query: str, deadline_ms: int = 0, request_id: str = ""):
    """A NavQuery request whose state sets everything a planner would, except battery_pct."""
    from quant_llm_interfaces.srv import NavQuery
    req = NavQuery.Request(request_id=request_id, query=query, deadline_ms=deadline_ms)
    req.state.speed_mps, req.state.obstacle_distance_m, req.state.zone = 0.5, 10.0, "aisle_7"
    return req


def test_unset_battery_is_the_documented_sentinel():
    from quant_llm_interfaces.msg import RobotState
    from quant_llm_interfaces.srv import NavQuery
    from quant_llm_node.ros.conversions import BATTERY_UNKNOWN, request_to_raw
    assert RobotState().battery_pct == RobotState.BATTERY_UNKNOWN == BATTERY_UNKNOWN == -1.0
    assert math.isnan(request_to_raw(NavQuery.Request())["state"]["battery_pct"])
    req = NavQuery.Request()
    req.state.battery_pct = 0.0
    assert request_to_raw(req)["state"]["battery_pct"] == 0.0  # a real 0 % stays 0 %
    req.state.battery_pct = -5.0
    assert request_to_raw(req)["state"]["battery_pct"] == -5.0  # still rejected downstream


def test_unset_battery_does_not_force_docking(ros, node):
    from quant_llm_node.reasoning.safety import RULE_BATTERY_DOCK
    resp = call(ros, node, untouched_battery_request("The aisle ahead is clear for 10 m. Continue "
                                                     "the patrol?", request_id="bat-unset"))
    assert resp.success, (resp.error_code, resp.error_message)
    assert RULE_BATTERY_DOCK not in resp.decision.rules_fired, list(resp.decision.rules_fired)
    assert resp.decision.action != "dock", resp.decision


def test_unset_battery_fallback_sees_battery_unknown(ros, node):
    """The deterministic path: a 1 ms deadline gets the rule-based fallback, which docks on a
    known low battery and must not dock on an unknown one."""
    unset = call(ros, node, untouched_battery_request("Status?", deadline_ms=1))
    assert unset.success and unset.decision.source == "fallback", unset.error_code
    assert unset.error_code == "DEADLINE_EXCEEDED"
    assert unset.decision.action != "dock", unset.decision
    empty = untouched_battery_request("Status?", deadline_ms=1)
    empty.state.battery_pct = 0.0  # the planner says 0 %: docking is right
    low = call(ros, node, empty)
    assert low.success and low.decision.source == "fallback"
    assert low.decision.action == "dock", low.decision


def test_explicit_negative_battery_is_still_invalid(ros, node):
    req = untouched_battery_request("Status?")
    req.state.battery_pct = -5.0
    resp = call(ros, node, req)
    assert not resp.success and resp.error_code == "INVALID_STATE"
    assert "battery_pct" in resp.error_message


# ---- finding 4: what `ros2 interface show` displays ------------------------------------------------
def test_installed_interface_files_are_the_checked_ones():
    """`ros2 interface show` reads the installed share/ copies: they are the source files (a
    stale build would show the old comments)."""
    from ament_index_python.packages import get_package_share_directory
    share = get_package_share_directory("quant_llm_interfaces")
    src = ROOT / "ros2_ws" / "src" / "quant_llm_interfaces"
    for rel in ("srv/NavQuery.srv", "msg/RobotState.msg", "msg/QueryRequest.msg",
                "msg/QueryResult.msg", "action/Reason.action"):
        installed = open(f"{share}/{rel}").read()
        assert installed == (src / rel).read_text(), f"{rel}: rebuild the workspace"
    assert "INVALID_QUERY" not in open(f"{share}/srv/NavQuery.srv").read()


# ---- the node's graph against config/sros2_policy.xml ---------------------------------------------
def test_sros2_policy_covers_the_running_node(ros, node):
    """Every service, publisher and subscription the running node has is allowed for it by the
    example policy (actions expand to their _action services and topics)."""
    import test_ros_inputs_ops_config as ops
    allowed = ops.permissions("/quant_llm_node")
    ns_node = node.name.rsplit("/", 1)
    ns, name = "/" + ns_node[0], ns_node[1]
    prefix = f"/{node.name}"

    def policy_name(full: str) -> str:  # the policy is written for the root namespace
        return full.replace(prefix, "/quant_llm_node", 1) if full.startswith(prefix) else full

    actions = allowed.get("execute", set())  # resolved names, e.g. /quant_llm_node/reason

    def via_action(full: str) -> bool:
        return any(full.startswith(a + "/_action/") for a in actions)

    g = ros.node
    missing = []
    for full, _ in g.get_service_names_and_types_by_node(name, ns):
        if policy_name(full) not in allowed.get("reply", set()) and not via_action(policy_name(full)):
            missing.append(("reply", full))
    for full, _ in g.get_publisher_names_and_types_by_node(name, ns):
        if policy_name(full) not in allowed.get("publish", set()) and not via_action(policy_name(full)):
            missing.append(("publish", full))
    for full, _ in g.get_subscriber_names_and_types_by_node(name, ns):
        if policy_name(full) not in allowed.get("subscribe", set()):
            missing.append(("subscribe", full))
    assert not missing, missing
    services = {s for s, _ in g.get_service_names_and_types_by_node(name, ns)}
    assert f"{prefix}/query" in services and f"{prefix}/reason/_action/send_goal" in services
