"""Lifecycle transitions and configure failures of the node process, driven over ROS."""
from __future__ import annotations

import time

import pytest
import yaml

from conftest import ROOT
from ros_harness import NodeProcess, diagnostics_of, nav_request, refused_configure

pytestmark = pytest.mark.ros


def ask(ros, node):
    from quant_llm_interfaces.srv import NavQuery
    return ros.call(NavQuery, node.service, nav_request(
        "The aisle is clear for 10 m.", state={"obstacle_distance_m": 10.0}))


def test_transitions_and_inactive_answers(ros, model_path):
    node = NodeProcess("lc", {"node.autostart": False, "node.diagnostics_period_s": 0.2}).start()
    try:
        ros.wait_state(node.name, "unconfigured", node, timeout=60)
        resp = ask(ros, node)
        assert (resp.success, resp.error_code) == (False, "NODE_INACTIVE")
        assert ros.change_state(node.name, "configure")
        assert ros.lifecycle_state(node.name) == "inactive"
        assert ask(ros, node).error_code == "NODE_INACTIVE"
        assert ros.change_state(node.name, "activate")
        assert ask(ros, node).success
        assert ros.change_state(node.name, "deactivate")
        assert ask(ros, node).error_code == "NODE_INACTIVE"
        assert ros.change_state(node.name, "activate")  # re-activation serves again
        assert ask(ros, node).success
        assert ros.change_state(node.name, "deactivate")
        assert ros.change_state(node.name, "cleanup")
        assert ros.lifecycle_state(node.name) == "unconfigured"
        assert ask(ros, node).error_code == "NODE_INACTIVE"
        assert node.alive()
    finally:
        assert node.stop() == 0


def test_deactivate_with_work_queued_answers_everything(ros, model_path):
    from quant_llm_interfaces.srv import NavQuery
    node = NodeProcess("lcq", {"node.diagnostics_period_s": 0.5}).start()
    try:
        ros.wait_state(node.name, "active", node)
        cli = ros.client(NavQuery, node.service)
        assert cli.wait_for_service(timeout_sec=30)
        futures = [cli.call_async(nav_request(f"Report {i}: aisle clear.", request_id=f"q{i}",
                                              state={"obstacle_distance_m": 10.0}))
                   for i in range(6)]
        time.sleep(0.5)
        assert ros.change_state(node.name, "deactivate")
        end = time.monotonic() + 120
        while not all(f.done() for f in futures):
            assert time.monotonic() < end, "requests left unanswered after deactivate"
            time.sleep(0.1)
        codes = [f.result().error_code for f in futures]
        # each request got an answer: served before the transition, or told why not
        assert all(c in ("", "SHUTTING_DOWN", "NODE_INACTIVE") for c in codes), codes
        assert "SHUTTING_DOWN" in codes or "NODE_INACTIVE" in codes
    finally:
        assert node.stop() == 0


def test_missing_model_fails_configure_with_error_diagnostic(ros):
    with refused_configure(ros, "lcbad", {"model.name": "/nonexistent/model.gguf"},
                           "MODEL_NOT_FOUND") as (node, _):
        assert ask(ros, node).error_code == "NODE_INACTIVE"  # alive, not configured


def test_memory_budget_refusal(ros, model_path, tmp_path):
    profile = yaml.safe_load((ROOT / "config" / "profiles" / "x86_cpu.yaml").read_text())
    profile.update(name="tiny_budget", memory_budget_mb=300)
    path = tmp_path / "tiny_budget.yaml"
    path.write_text(yaml.safe_dump(profile))
    with refused_configure(ros, "lcmem", {"node.device_profile": str(path)},
                           "MEMORY_BUDGET") as (_, st):
        assert "MiB" in st.message and "Try:" in st.message


def test_gpu_requested_on_cpu_build_warns(ros, model_path):
    import llama_cpp
    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama.cpp build can offload; the warning path needs a CPU-only build")
    node = NodeProcess("lcgpu", {"engine.n_gpu_layers": -1, "node.diagnostics_period_s": 0.2}).start()
    try:
        ros.wait_state(node.name, "active", node)
        st = diagnostics_of(ros, node.name, lambda s: s.level == b"\x01", 30)
        assert st is not None
        assert "GPU offload requested" in st.message
        kv = {v.key: v.value for v in st.values}
        assert kv["gpu_offload_supported"] == "False" and kv["n_gpu_layers_requested"] == "-1"
        assert kv["layers_offloaded"].startswith("0/")
        assert ask(ros, node).success  # still serves on the CPU
    finally:
        assert node.stop() == 0


def test_bad_parameter_values_keep_the_node_up(ros):
    with refused_configure(ros, "lcparam", {"engine.n_ctx": 10, "model.sha256": 0},
                           "invalid parameters") as (_, st):
        assert "engine.n_ctx" in st.message and "model.sha256" in st.message
