"""The fleet benchmark's code path at tiny scale: 2 robot node processes (engine.backend hybrid)
against llama-cpp-python's real server on loopback, a few requests each; and the kill split
on synthetic outcomes. Skips only when the server cannot start."""
from __future__ import annotations

import json
import math

import pytest

from quant_llm_node.bench.fleet import run as fleet_run, summary
from quant_llm_node.bench.fleet.driver import Outcome
from quant_llm_node.bench.fleet.server import LLAMA_CPP_PYTHON, ServerStartError

DEADLINE_MS = 240_000        # the remote must answer: a busy 2-core host is slow on a cold prefix
FIELDS = ("sent", "answered", "lost", "throughput_dps", "latency_ms", "local_share",
          "deadline_misses", "answered_remote", "answered_local", "remote_latency_ms")


@pytest.mark.ros
def test_fleet_hybrid_two_robots_against_a_real_server(tmp_path):
    a = fleet_run._parser().parse_args([
        "--robots", "2", "--modes", "hybrid", "--count", "2", "--duration-s", "0", "--warmup", "0",
        "--kill-duration-s", "0", "--deadline-ms", str(DEADLINE_MS), "--read-timeout-s", "200",
        "--server", LLAMA_CPP_PYTHON, "--server-threads", "2", "--out", str(tmp_path),
        "--logs", str(tmp_path / "logs")])
    try:
        res = fleet_run.run(a)
    except ServerStartError as exc:
        pytest.skip(f"llama_cpp.server could not start: {exc}")
    (run,) = res["runs"]
    assert run["mode"] == "hybrid" and run["robots"] == 2 and not run["dead_drivers"]
    for key in FIELDS:
        assert key in run, key
    assert run["sent"] == 4 and run["lost"] == 0 and run["answered"] == 4, run["error_codes"]
    assert run["answered_remote"] > 0 and run["local_share"] < 1.0
    assert run["deadline_misses"] == 0 and run["throughput_dps"] > 0
    assert res["meta"]["cpus"] >= 1 and res["meta"]["loadavg_start"]
    paths = fleet_run.fleet_report.write(res, tmp_path)
    assert json.loads(paths["json"].read_text())["runs"][0]["lost"] == 0
    assert "| hybrid | 2 |" in paths["md"].read_text()
    assert paths["png"].stat().st_size > 0


def _o(robot, seq, sent, done, backend, status="answered", code=""):
    return Outcome(robot, seq, f"r{robot}-{seq}", sent, done, status, code, "llm", backend,
                   (done - sent) * 1e3)


def test_kill_split_counts_before_after_and_in_flight():
    outs = [_o(0, 0, 0.0, 1.0, "remote"), _o(0, 1, 1.0, 6.0, "local"),   # in flight at t=5
            _o(0, 2, 6.0, 9.0, "local"), _o(1, 0, 0.0, 2.0, "remote"),
            _o(1, 1, 2.0, 4.0, "remote"), _o(1, 2, 5.5, 12.0, "local", code="DEADLINE_EXCEEDED")]
    k = summary.kill_split(outs, 5000, 0.0, 5.0, 2)
    assert k["kill_after_s"] == 5.0
    assert k["before"]["sent"] == 4 and k["before"]["answered_remote"] == 3
    assert k["after"]["sent"] == 2 and k["after"]["local_share"] == 1.0
    assert k["after"]["deadline_misses"] == 1           # the DEADLINE_EXCEEDED one (6.5 s > 5 s)
    assert k["in_flight"]["sent"] == 1 and k["in_flight"]["backends"] == {"local": 1}
    assert math.isclose(k["before"]["throughput_dps"], 3 / 5.0)
    assert k["before"]["lost"] == 0 and k["after"]["lost"] == 0
