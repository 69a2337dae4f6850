"""Operating the node over ROS from another process: live parameters, a model swap under load,
and diagnostics present in every lifecycle state."""
from __future__ import annotations

import os
import threading
import time

import pytest

from ros_harness import (
    NodeProcess, describe_parameters, diagnostic_array, diagnostics_of, nav_request, set_parameters)

pytestmark = pytest.mark.ros

STATUSES = ("model", "inference latency", "queue", "grounding", "settings")
STALE = b"\x03"
CLEAR = {"speed_mps": 0.8, "battery_pct": 80.0, "obstacle_distance_m": 15.0, "zone": "aisle_7"}


@pytest.fixture(scope="module")
def node(ros):
    proc = NodeProcess("ops", {"node.diagnostics_period_s": 0.2}).start()
    ros.wait_state(proc.name, "active", proc)
    yield proc
    assert proc.stop() == 0


def ask(ros, node, query="The aisle ahead is empty and well lit for 15 m. Go on?", state=None):
    from quant_llm_interfaces.srv import NavQuery
    return ros.call(NavQuery, node.service, nav_request(query, state=state or CLEAR), timeout=300)


def test_set_safety_threshold_changes_the_next_decision(ros, node):
    before = ask(ros, node)
    assert before.success and before.decision.action not in ("stop", "wait")
    assert before.decision.speed_limit_mps > 0.2, "the case needs a model speed above the new cap"
    results = set_parameters(ros, node.name, {"safety.max_speed_mps": 0.2})
    assert results[0].successful, results[0].reason
    after = ask(ros, node)
    assert after.success and after.decision.speed_limit_mps <= 0.2 + 1e-6  # float32 in the message
    if after.decision.action not in ("stop", "wait"):
        assert "max_speed_cap" in after.decision.rules_fired
    st = diagnostics_of(ros, node.name, lambda s: any(
        kv.key == "safety.max_speed_mps" and kv.value == "0.20" for kv in s.values), status="settings")
    assert st is not None, "diagnostics report the active value"
    back = set_parameters(ros, node.name, {"safety.max_speed_mps": 1.5})[0]
    assert not back.successful and "at launch" in back.reason  # a running node only tightens


def test_invalid_live_value_is_refused_like_configure_would(ros, node):
    res = set_parameters(ros, node.name, {"safety.person_slow_distance_m": 0.5})  # < stop distance
    assert not res[0].successful and "person_slow_distance_m" in res[0].reason


def test_parameter_that_needs_a_reload_is_refused_with_the_reason(ros, node):
    res = set_parameters(ros, node.name, {"engine.n_ctx": 1024})
    assert not res[0].successful
    assert "needs a reload" in res[0].reason and "cleanup" in res[0].reason


def test_describe_says_how_each_parameter_applies(ros, node):
    live, reload_, swap, fixed = describe_parameters(
        ros, node.name, ["safety.person_stop_distance_m", "engine.n_ctx", "model.name", "node.autostart"])
    assert "applies: live" in live.additional_constraints and not live.read_only
    assert "applies: reload" in reload_.additional_constraints and not reload_.read_only
    assert "applies: swap" in swap.additional_constraints
    assert fixed.read_only
    assert not set_parameters(ros, node.name, {"node.autostart": False})[0].successful


def test_unknown_model_is_refused_and_the_old_one_keeps_serving(ros, node):
    res = set_parameters(ros, node.name, {"model.name": "no-such-model"})
    assert not res[0].successful and "no-such-model" in res[0].reason
    assert ask(ros, node).success


def test_model_swap_under_continuous_load_loses_nothing(ros, node, model_path, tmp_path):
    # a second model file (same weights under another name, so its model_id differs)
    other = tmp_path / "swapped-in.gguf"
    os.symlink(model_path, other)
    answers, errors, stop = [], [], threading.Event()

    def planner():
        i = 0
        while not stop.is_set():
            i += 1
            try:
                answers.append(ask(ros, node, state={**CLEAR, "people_distances_m": [float(2 + i % 5)]}))
            except AssertionError as exc:  # a lost request: no answer within the time-out
                errors.append(str(exc))

    thread = threading.Thread(target=planner, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)
        res = set_parameters(ros, node.name, {"model.name": str(other)})
        assert res[0].successful, res[0].reason
        end = time.monotonic() + 240
        while time.monotonic() < end and not any(a.model_id.startswith("swapped-in.gguf") for a in answers):
            time.sleep(0.5)
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(300)
    assert not errors, errors
    ids = [a.model_id for a in answers]
    assert any(i.startswith("qwen2.5-coder-0.5b") for i in ids) and any(i.startswith("swapped-in.gguf") for i in ids), ids
    assert all(a.success and a.decision.action and a.decision.source in ("llm", "safety_override")
               for a in answers), [(a.error_code, a.error_message) for a in answers]
    done = diagnostics_of(ros, node.name, lambda s: any(
        kv.key == "swap_phase" and kv.value == "done" for kv in s.values))
    assert done is not None and done.level == b"\x00"


def test_every_status_is_published_in_every_state(ros):
    proc = NodeProcess("diagall", {"node.autostart": False, "node.diagnostics_period_s": 0.2}).start()
    try:
        ros.wait_state(proc.name, "unconfigured", proc, timeout=60)

        def statuses(msg):
            return {st.name.split(": ", 1)[-1]: st for st in msg.status if st.name.startswith(proc.name + ": ")}

        for transition, state in ((None, "unconfigured"), ("configure", "inactive"), ("activate", "active"),
                                  ("deactivate", "inactive"), ("cleanup", "unconfigured")):
            if transition:
                assert ros.change_state(proc.name, transition)
            msg = diagnostic_array(ros, lambda m: set(STATUSES) <= set(statuses(m)) and
                                   state in statuses(m)["model"].message +
                                   " ".join(kv.value for kv in statuses(m)["model"].values))
            assert msg is not None, f"not every status in {state}"
            got = statuses(msg)
            assert all(st.level != STALE for st in got.values()), {k: v.level for k, v in got.items()}
            if state == "unconfigured":
                assert got["model"].level == b"\x01" and "unconfigured" in got["model"].message
    finally:
        assert proc.stop() == 0


def test_rule_forced_request_is_answered_while_the_worker_is_busy(ros, node):
    """A person inside the stop distance: the rules fix the answer whatever the model says, so
    the node answers at once, without waiting for the model busy with another request."""
    slow_done = threading.Event()
    slow: list = []

    def long_request():
        slow.append(ask(ros, node, query="Describe in detail everything you know about every aisle "
                                          "of this warehouse and what the robot should do."))
        slow_done.set()

    thread = threading.Thread(target=long_request, daemon=True)
    thread.start()
    time.sleep(0.5)  # the long request reaches the worker
    forced = ask(ros, node, query="Someone is right in front of me.",
                 state={"speed_mps": 1.0, "people_distances_m": [0.6], "battery_pct": 70.0,
                        "obstacle_distance_m": 10.0})
    finished_first = not slow_done.is_set()
    thread.join(300)
    assert forced.success and forced.decision.action == "stop"
    assert forced.decision.source == "safety_override" and forced.completion_tokens == 0
    assert "person_within_stop_distance" in forced.decision.rules_fired
    assert finished_first, "the forced answer waited for the model"
    assert slow and slow[0].success
