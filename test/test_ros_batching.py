"""Batching through ROS: the node with engine.n_parallel 3 answers concurrent planners from one
batch (separate processes, real llama.cpp) and says so in its queue diagnostics."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from ros_harness import Client, NodeProcess, diagnostics_of, nav_request

pytestmark = pytest.mark.ros

SLOTS = 3


@pytest.fixture(scope="module")
def node(ros, model_path):
    proc = NodeProcess("batching", {"engine.n_parallel": SLOTS, "engine.n_ctx": 4096,
                                    "serving.rule_forced": False,
                                    "node.diagnostics_period_s": 0.2}).start()
    try:
        ros.wait_state(proc.name, "active", proc)
        yield proc
    finally:
        assert proc.stop() == 0, proc.log()[-2000:]


def test_queue_diagnostics_show_the_batch_slots(ros, node):
    st = diagnostics_of(ros, node.name, lambda s: True, 30, status="queue")
    kv = {v.key: v.value for v in st.values}
    assert kv["batch_slots"] == str(SLOTS)


def test_concurrent_planners_are_answered_from_one_batch(ros, node):
    from quant_llm_interfaces.srv import NavQuery
    planners = [Client(f"batch_planner_{i}") for i in range(SLOTS + 1)]
    try:
        queries = ["Long clear corridor ahead, nobody around.", "A pallet was left in aisle 3.",
                   "The floor near the dock looks dry and clear.", "What should I do next?"]

        def ask(i):
            return planners[i].call(NavQuery, node.service, nav_request(
                queries[i], state={"speed_mps": 0.8}, request_id=f"b{i}"), timeout=600)
        def running(st) -> int:
            return int({v.key: v.value for v in st.values}.get("running", "0"))
        with ThreadPoolExecutor(len(planners)) as pool:
            futures = [pool.submit(ask, i) for i in range(len(planners))]
            # while they run, the queue status counts more than one request being served
            busy = diagnostics_of(ros, node.name, lambda st: running(st) >= 2, 600, status="queue")
            answers = [f.result() for f in futures]
        assert busy is not None and running(busy) <= SLOTS
        assert sorted(a.request_id for a in answers) == [f"b{i}" for i in range(len(planners))]
        for a in answers:
            assert a.success and a.error_code == "", (a.error_code, a.error_message)
            assert a.decision.source in ("llm", "safety_override") and a.completion_tokens > 0
    finally:
        for p in planners:
            p.close()
