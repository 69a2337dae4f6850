"""Bursts and rejections before activation, through ROS (issue 13, findings 6 and 9).

Finding 6: a request refused because the node is not active still carries the request id (the
client's, or a generated one when it sent none) and, once a model is loaded, the model_id.
Finding 9: fire-and-forget must still mean answered. Bursts of 500 requests from several
clients, on ~/query_in and on ~/query, each get exactly one answer: a decision (from the model,
the safety rules or a deadline fallback) or OVERLOADED; none is lost in a QoS history.

Deterministic and bounded: a queue of 2 and 3 s deadlines, so almost every request of a burst
is refused OVERLOADED at once and the few admitted ones end within a few seconds; every wait has
a time-out, and the counts asserted are exact."""
from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from ros_harness import Client, NodeProcess, nav_request

pytestmark = pytest.mark.ros

BURST = 500
CLIENTS = 5
QUEUE = 2
DEADLINE_MS = 3000
ANSWER_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def node(ros, model_path):
    """Left unconfigured (autostart false); the tests walk it to active in file order."""
    proc = NodeProcess("burst", {"node.autostart": False, "serving.queue_size": QUEUE,
                                 "serving.default_deadline_ms": DEADLINE_MS}).start()
    try:
        ros.wait_state(proc.name, "unconfigured", proc, timeout=120)
        yield proc
    finally:
        assert proc.stop() == 0, proc.log()[-2000:]


@pytest.fixture(scope="module")
def clients(ros):
    """Several planner processes' worth of ROS nodes, each with its own executor thread."""
    made = [Client(f"burst_planner_{i}") for i in range(CLIENTS)]
    yield made
    for c in made:
        c.close()


def reliable(depth: int):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE)


def wait_for(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def ensure_state(ros, node, state: str) -> None:
    """Take the node to ``state`` (inactive or active) along the lifecycle."""
    current = ros.lifecycle_state(node.name)
    steps = {("unconfigured", "inactive"): ["configure"],
             ("unconfigured", "active"): ["configure", "activate"],
             ("inactive", "active"): ["activate"]}.get((current, state), [])
    for transition in steps:
        assert ros.change_state(node.name, transition), f"{transition} failed:\n{node.log()[-2000:]}"
    assert ros.lifecycle_state(node.name) == state


class TopicRig:
    """Publishers (one per client node) on ~/query_in, one subscription on ~/query_out."""

    def __init__(self, ros, clients, node):
        from quant_llm_interfaces.msg import QueryRequest, QueryResult
        self.QueryRequest = QueryRequest
        self.results: dict[str, list] = {}
        self.unnamed: list = []
        self._lock = threading.Lock()
        self.sub = ros.node.create_subscription(QueryResult, f"/{node.name}/query_out",
                                                self._on_result, reliable(5000))
        self.pubs = [c.node.create_publisher(QueryRequest, f"/{node.name}/query_in", reliable(1000))
                     for c in clients]
        wait_for(lambda: all(p.get_subscription_count() for p in self.pubs)
                 and self.sub.get_publisher_count(), 30, "topic discovery")

    def close(self, ros, clients) -> None:
        ros.node.destroy_subscription(self.sub)
        for c, pub in zip(clients, self.pubs):
            c.node.destroy_publisher(pub)

    def _on_result(self, msg) -> None:
        with self._lock:
            if msg.request_id:
                self.results.setdefault(msg.request_id, []).append(msg)
            else:
                self.unnamed.append(msg)

    def request(self, request_id: str, query: str = "The aisle ahead is clear for 10 m. Continue?"):
        msg = self.QueryRequest(request_id=request_id, query=query, deadline_ms=DEADLINE_MS)
        msg.state.speed_mps, msg.state.obstacle_distance_m, msg.state.zone = 0.5, 10.0, "aisle_7"
        return msg

    def warm_up(self) -> None:
        """One immediately rejected request per publisher, answered, before any burst: every
        writer/reader pair on both topics is matched."""
        for i, pub in enumerate(self.pubs):
            pub.publish(self.request(f"warm-{i}-{time.monotonic_ns()}", query=""))
        wait_for(lambda: sum(k.startswith("warm-") for k in self.results) >= len(self.pubs), 30,
                 "warm-up answers")

    def count(self, prefix: str) -> int:
        with self._lock:
            return sum(1 for k in self.results if k.startswith(prefix))


def test_rejections_while_unconfigured_carry_a_request_id(ros, node):
    from quant_llm_interfaces.srv import NavQuery
    assert ros.lifecycle_state(node.name) == "unconfigured"
    named = ros.call(NavQuery, node.service, nav_request("Status?", request_id="pre-1"))
    assert named.error_code == "NODE_INACTIVE" and named.request_id == "pre-1"
    unnamed = ros.call(NavQuery, node.service, nav_request("Status?"))
    assert unnamed.error_code == "NODE_INACTIVE"
    assert unnamed.request_id, "a request without an id gets a generated one, also when refused"
    again = ros.call(NavQuery, node.service, nav_request("Status?"))
    assert again.request_id and again.request_id != unnamed.request_id


def test_rejections_while_inactive_carry_request_id_and_model_id(ros, clients, node):
    from quant_llm_interfaces.srv import NavQuery
    ensure_state(ros, node, "inactive")
    resp = ros.call(NavQuery, node.service, nav_request("Status?"))
    assert resp.error_code == "NODE_INACTIVE" and not resp.success
    assert resp.request_id, "generated request_id missing"
    assert resp.model_id.startswith("qwen2.5-coder-0.5b"), f"model_id {resp.model_id!r}"
    named = ros.call(NavQuery, node.service, nav_request("Status?", request_id="inact-1"))
    assert named.request_id == "inact-1" and named.model_id == resp.model_id

    rig = TopicRig(ros, clients[:1], node)
    try:
        rig.pubs[0].publish(rig.request(""))  # no id: the answer must still carry one
        rig.pubs[0].publish(rig.request("inact-topic"))
        wait_for(lambda: len(rig.results) + len(rig.unnamed) >= 2, 30, "topic rejections")
        assert not rig.unnamed, "a QueryResult without request_id"
        by_id = {k: v[0] for k, v in rig.results.items()}
        assert by_id["inact-topic"].error_code == "NODE_INACTIVE"
        assert by_id["inact-topic"].model_id == resp.model_id
        generated = [k for k in by_id if k != "inact-topic"]
        assert len(generated) == 1 and by_id[generated[0]].model_id == resp.model_id
    finally:
        rig.close(ros, clients[:1])


def check_answers(answers: dict[str, list], ids: list[str]) -> Counter:
    """Exactly one answer per id, each a decision or OVERLOADED; returns the outcome counts."""
    lost = [i for i in ids if i not in answers]
    twice = [i for i in ids if len(answers.get(i, [])) > 1]
    assert not lost, f"{len(lost)} of {len(ids)} requests never answered (e.g. {lost[:3]})"
    assert not twice, f"answered more than once: {twice[:3]}"
    outcomes = Counter()
    samples: dict[str, str] = {}
    for i in ids:
        a = answers[i][0]
        samples.setdefault(a.error_code or a.decision.source, a.error_message)
        if a.success:
            assert a.decision.action and a.decision.source in ("llm", "safety_override", "fallback")
            outcomes[a.decision.source if not a.error_code else a.error_code] += 1
        else:
            assert a.error_code == "OVERLOADED", (i, a.error_code, a.error_message)
            outcomes["OVERLOADED"] += 1
    print("first message per outcome:", samples)
    return outcomes


def test_burst_on_query_in_every_request_answered(ros, clients, node):
    ensure_state(ros, node, "active")
    rig = TopicRig(ros, clients, node)
    try:
        rig.warm_up()
        per_client = BURST // len(rig.pubs)
        ids = [f"t{c}-{i}" for c in range(len(rig.pubs)) for i in range(per_client)]

        def blast(c: int) -> None:
            for i in range(per_client):
                rig.pubs[c].publish(rig.request(f"t{c}-{i}"))
        t0 = time.monotonic()
        threads = [threading.Thread(target=blast, args=(c,)) for c in range(len(rig.pubs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        sent_s = time.monotonic() - t0
        try:
            wait_for(lambda: rig.count("t") >= len(ids), ANSWER_TIMEOUT_S, "every QueryResult")
        except AssertionError:
            pass  # check_answers says how many are missing
        time.sleep(0.5)  # a duplicate would arrive now
        outcomes = check_answers(rig.results, ids)
        print(f"topic burst: {len(ids)} sent in {sent_s:.2f} s, answered in "
              f"{time.monotonic() - t0:.1f} s: {dict(outcomes)}")
        assert len(ids) >= 500 and outcomes["OVERLOADED"] > 0
        assert sum(outcomes.values()) - outcomes["OVERLOADED"] >= 1  # the queue did serve
        assert node.alive()
    finally:
        rig.close(ros, clients)


def test_burst_on_query_service_every_request_answered(ros, clients, node):
    from quant_llm_interfaces.srv import NavQuery
    ensure_state(ros, node, "active")
    srv_clients = [c.node.create_client(NavQuery, node.service, qos_profile=reliable(1000))
                   for c in clients]
    for cli in srv_clients:
        assert cli.wait_for_service(timeout_sec=30)
    # warm-up: one immediately rejected call per client, so every response path is matched
    for cli in srv_clients:
        done = threading.Event()
        cli.call_async(nav_request("")).add_done_callback(lambda _f, d=done: d.set())
        assert done.wait(30), "warm-up call unanswered"

    per_client = BURST // len(srv_clients)
    ids = [f"s{c}-{i}" for c in range(len(srv_clients)) for i in range(per_client)]
    answers: dict[str, list] = {}
    lock = threading.Lock()

    def on_done(rid: str, future) -> None:
        with lock:
            answers.setdefault(rid, []).append(future.result())

    def blast(c: int) -> None:
        for i in range(per_client):
            rid = f"s{c}-{i}"
            req = nav_request("The aisle ahead is clear for 10 m. Continue?", request_id=rid,
                              state={"speed_mps": 0.5, "obstacle_distance_m": 10.0,
                                     "zone": "aisle_7"}, deadline_ms=DEADLINE_MS)
            srv_clients[c].call_async(req).add_done_callback(lambda f, r=rid: on_done(r, f))
    t0 = time.monotonic()
    threads = [threading.Thread(target=blast, args=(c,)) for c in range(len(srv_clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    sent_s = time.monotonic() - t0
    try:
        wait_for(lambda: len(answers) >= len(ids), ANSWER_TIMEOUT_S, "every NavQuery response")
    except AssertionError:
        pass
    outcomes = check_answers(answers, ids)
    for rid in ids:
        assert answers[rid][0].request_id == rid
    print(f"service burst: {len(ids)} sent in {sent_s:.2f} s, answered in "
          f"{time.monotonic() - t0:.1f} s: {dict(outcomes)}")
    assert len(ids) >= 500 and outcomes["OVERLOADED"] > 0
    assert node.alive()
    # and the node still serves a plain request afterwards
    resp = clients[0].call(NavQuery, node.service,
                           nav_request("Status?", state={"obstacle_distance_m": 10.0}), timeout=60)
    assert resp.success, (resp.error_code, resp.error_message)
