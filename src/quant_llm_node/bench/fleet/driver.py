"""Robot drivers: one planner process per robot, sending decision requests to its own robot's
service back to back for a fixed time (or count), every outcome recorded with its send time,
so that sent = answered + rejected + lost reconciles and a run splits at any instant."""
from __future__ import annotations

import json
import multiprocessing as mp
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

from quant_llm_node.bench.scenarios import raw_request

DISCOVERY_TIMEOUT_S = 30.0
CLIENT_MARGIN_S = 60.0     # client time-out beyond the deadline: the node answers at the deadline
BARRIER_TIMEOUT_S = 900.0  # every driver discovered its service and warmed up


@dataclass
class Outcome:
    """One request as the robot's planner saw it (times: wall clock, seconds)."""

    robot: int
    seq: int
    request_id: str
    sent_at: float
    done_at: float
    status: str          # answered | rejected | lost
    error_code: str = ""
    source: str = ""     # llm | safety_override | fallback
    backend: str = ""    # remote | local | "" (no model text)
    round_trip_ms: float = 0.0
    total_ms: float = 0.0
    first_token_ms: float = 0.0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Plan:
    """What every driver does: ``warmup`` untimed requests, then (all drivers at once, at a
    barrier) timed requests for ``duration_s`` or ``count`` each (0 = no such limit)."""

    deadline_ms: int
    duration_s: float
    count: int = 0
    warmup: int = 1
    seed: int = 0


def _ask(node, cli, case: dict, robot: int, seq: int, plan: Plan, tag: str) -> Outcome:
    import rclpy
    from quant_llm_interfaces.srv import NavQuery
    from quant_llm_node.ros.conversions import build_request
    raw = raw_request(case, request_id=f"{tag}{robot}-{seq}")
    req = build_request(NavQuery, raw["query"], raw["goal"], raw["state"], raw["context_json"],
                        raw["priority"], plan.deadline_ms, raw["request_id"])
    sent, t0 = time.time(), time.monotonic()
    future = cli.call_async(req)
    rclpy.spin_until_future_complete(node, future, timeout_sec=plan.deadline_ms / 1e3 + CLIENT_MARGIN_S)
    rtt = (time.monotonic() - t0) * 1e3
    if not future.done():
        cli.remove_pending_request(future)
        return Outcome(robot, seq, raw["request_id"], sent, time.time(), "lost", round_trip_ms=rtt)
    r = future.result()
    return Outcome(robot, seq, r.request_id, sent, time.time(), "answered" if r.success else "rejected",
                   r.error_code, r.decision.source, r.backend, rtt, r.latency.total_ms,
                   r.latency.first_token_ms, int(r.completion_tokens))


def _drive(robot: int, service: str, cases: list[dict], plan: Plan, barrier: Any, queue: Any) -> None:
    import rclpy
    from quant_llm_interfaces.srv import NavQuery
    from quant_llm_node.ros.node import SERVICE_QOS

    order = random.Random(plan.seed + robot).sample(cases, len(cases))  # each robot its own order
    rclpy.init()
    node = rclpy.create_node(f"fleet_driver_{robot}")
    out: list[Outcome] = []
    try:
        cli = node.create_client(NavQuery, service, qos_profile=SERVICE_QOS)
        if not cli.wait_for_service(timeout_sec=DISCOVERY_TIMEOUT_S):
            raise RuntimeError(f"{service} not available")
        for i in range(plan.warmup):
            _ask(node, cli, order[-1 - i % len(order)], robot, i, plan, "w")
        barrier.wait(BARRIER_TIMEOUT_S)
        stop_at = time.time() + plan.duration_s if plan.duration_s > 0 else float("inf")
        seq = 0
        while time.time() < stop_at and (not plan.count or seq < plan.count):
            out.append(_ask(node, cli, order[seq % len(order)], robot, seq, plan, "r"))
            seq += 1
    finally:
        queue.put(json.dumps({"robot": robot, "outcomes": [asdict(o) for o in out]}))
        node.destroy_node()
        rclpy.shutdown()


class Drivers:
    """One driver process per service. ``start`` returns the wall-clock time at which the timed
    part began (every driver warmed up); ``collect`` waits for all their outcomes."""

    def __init__(self, services: list[str], cases: list[dict], plan: Plan):
        self._ctx = mp.get_context("spawn")
        self._queue = self._ctx.Queue()
        self._barrier = self._ctx.Barrier(len(services) + 1)
        self.plan = plan
        self._procs = [self._ctx.Process(target=_drive, args=(i, s, cases, plan, self._barrier,
                                                              self._queue), daemon=True)
                       for i, s in enumerate(services)]
        self.start_at = 0.0

    def start(self) -> float:
        for p in self._procs:
            p.start()
        self._barrier.wait(BARRIER_TIMEOUT_S)
        self.start_at = time.time()
        return self.start_at

    def collect(self) -> tuple[list[Outcome], list[int]]:
        """(every outcome, robots whose driver died without reporting)."""
        left = max(0.0, self.start_at + self.plan.duration_s - time.time()) if self.plan.duration_s > 0 \
            else 3600.0
        wait_s = left + self.plan.deadline_ms / 1e3 + CLIENT_MARGIN_S + DISCOVERY_TIMEOUT_S
        outcomes: list[Outcome] = []
        seen: set[int] = set()
        for _ in self._procs:
            try:
                doc = json.loads(self._queue.get(timeout=wait_s))
            except Exception:
                break
            seen.add(doc["robot"])
            outcomes += [Outcome(**o) for o in doc["outcomes"]]
        for p in self._procs:
            p.join(30)
        return outcomes, [i for i in range(len(self._procs)) if i not in seen]
