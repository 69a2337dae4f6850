"""A hostile OpenAI-compatible server on loopback in front of a real node in hybrid mode, from
another process: every reply shape gets an answer in time from the robot's own model or the
rules, the node stays up, the breaker counts the failure by kind, and the bearer token appears
in no log line, diagnostic or response."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from ros_harness import NodeProcess, diagnostics_of, nav_request, refused_configure
from test_remote_support import HOSTILE_SHAPES, FaultServer

pytestmark = pytest.mark.ros

TOKEN = "hostile-node-token-7d41c0e9b2f3"
DEADLINE_MS = 20_000
CLEAR = {"speed_mps": 0.8, "battery_pct": 80.0, "obstacle_distance_m": 20.0, "zone": "aisle_7"}


class Seen:
    """Every string the node sent on /diagnostics while this module ran."""

    def __init__(self):
        self.texts: list[str] = []
        self.lock = threading.Lock()

    def on_diag(self, msg) -> None:
        with self.lock:
            for st in msg.status:
                self.texts += [st.name, st.message, st.hardware_id]
                self.texts += [kv.key + "=" + kv.value for kv in st.values]


@pytest.fixture(scope="module")
def hostile():
    with FaultServer("empty_forever", stall_s=30, status=500, body='{"error": "boom"}') as srv:
        yield srv


@pytest.fixture(scope="module")
def seen(ros):
    from diagnostic_msgs.msg import DiagnosticArray
    s = Seen()
    sub = ros.node.create_subscription(DiagnosticArray, "/diagnostics", s.on_diag, 50)
    yield s
    ros.node.destroy_subscription(sub)


@pytest.fixture(scope="module")
def node(ros, hostile, seen, tmp_path_factory):
    token = tmp_path_factory.mktemp("token") / "token"
    token.write_text(TOKEN + "\n")
    os.chmod(token, 0o600)
    # the server sends keep-alives forever at configure: the warm-up must end on its deadline
    proc = NodeProcess("hostile", {
        "engine.backend": "hybrid", "remote.url": hostile.url, "remote.token_file": str(token),
        "remote.breaker_failures": 1000, "remote.read_timeout_s": 2.0,
        "remote.deadline_share": 0.4, "node.diagnostics_period_s": 0.2}).start()
    ros.wait_state(proc.name, "active", proc)
    yield proc
    assert proc.stop() == 0
    assert TOKEN not in proc.log(), "the token reached the node's log"


def errors_of(ros, node, kind: str, more_than: int = -1, timeout: float = 30.0) -> int:
    st = diagnostics_of(ros, node.name, lambda s: int(next(
        (kv.value for kv in s.values if kv.key == f"errors.{kind}"), 0)) > more_than,
        timeout=timeout, status="remote")
    assert st is not None, f"no remote diagnostic with errors.{kind} > {more_than}"
    return int(next((kv.value for kv in st.values if kv.key == f"errors.{kind}"), 0))


# QLN_HOSTILE_REPEAT=n asks each shape n times (RELIABILITY.md's counts); CI asks once.
REPEAT = int(os.environ.get("QLN_HOSTILE_REPEAT", "1"))
RESULTS: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    out = Path(os.environ.get("QLN_HOSTILE_REPORT", "")) if os.environ.get("QLN_HOSTILE_REPORT") else None
    if out is not None and RESULTS:
        out.write_text(json.dumps(RESULTS, indent=1))


@pytest.mark.parametrize("attempt", range(REPEAT))
@pytest.mark.parametrize("mode", sorted(HOSTILE_SHAPES))
def test_every_reply_shape_gets_an_answer_in_time(ros, node, hostile, seen, mode, attempt):
    from quant_llm_interfaces.srv import NavQuery
    kind = HOSTILE_SHAPES[mode]
    before = errors_of(ros, node, kind, timeout=5.0) if kind and _has(ros, node, kind) else 0
    hostile.mode = mode
    state = {**CLEAR, "people_distances_m": [3.0]} if mode == "forbidden_action" else CLEAR
    resp = ros.call(NavQuery, node.service, nav_request(
        "Aisle ahead looks empty, carrying on?", state=state, deadline_ms=DEADLINE_MS), timeout=120)
    RESULTS.append({"shape": mode, "kind": kind, "alive": node.alive(), "success": resp.success,
                    "backend": resp.backend, "action": resp.decision.action,
                    "code": resp.error_code, "total_ms": round(resp.latency.total_ms, 1)})
    assert node.alive(), node.log()[-3000:]
    assert resp.success and resp.decision.action and resp.error_code != "DEADLINE_EXCEEDED", \
        (resp.error_code, resp.error_message)
    assert resp.latency.total_ms < DEADLINE_MS
    for text in (resp.error_message, resp.decision.reason, resp.raw_text, resp.model_id):
        assert TOKEN not in text
    if kind:
        assert resp.backend == "local", (mode, resp.backend, resp.raw_text)
        assert errors_of(ros, node, kind, more_than=before) == before + 1
    else:  # a well-formed "drive on at 1.5 m/s" with a person 3 m ahead: the rules decide
        assert resp.backend == "remote"
        assert resp.decision.action != "continue" and resp.decision.speed_limit_mps <= 0.3 + 1e-6


def _has(ros, node, kind: str) -> bool:
    return diagnostics_of(ros, node.name, lambda s: any(kv.key == f"errors.{kind}" for kv in s.values),
                          timeout=2.0, status="remote") is not None


def test_the_token_is_in_no_diagnostic(node, seen):
    with seen.lock:
        texts = list(seen.texts)
    assert texts, "no diagnostics were seen"
    assert not [t for t in texts if TOKEN in t]


def test_a_two_line_token_file_is_refused_at_configure_without_printing_it(ros, hostile, tmp_path):
    token = tmp_path / "token"
    token.write_text("tokA-3f9e1c\ntokB-77a0d2\n")
    with refused_configure(ros, "hostile2", {"engine.backend": "hybrid", "remote.url": hostile.url,
                                             "remote.token_file": str(token)},
                           "more than one line") as (proc, st):
        assert "tokA-3f9e1c" not in st.message and "tokB-77a0d2" not in st.message
        assert "tokA-3f9e1c" not in proc.log() and "tokB-77a0d2" not in proc.log()
