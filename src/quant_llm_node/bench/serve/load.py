"""Planner load generator: N separate planner processes, each sending queries to the node's
service one after another, every outcome recorded (answered, rejected with a code, or no
answer before the client time-out) so that sent = answered + rejected + lost reconciles."""
from __future__ import annotations

import json
import multiprocessing as mp
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from quant_llm_node.bench.scenarios import raw_request
from quant_llm_node.serving.metrics import percentiles

CLIENT_TIMEOUT_S = 120.0
DISCOVERY_TIMEOUT_S = 30.0


@dataclass
class Outcome:
    """One request as the planner saw it."""

    client: int
    seq: int
    request_id: str
    status: str          # answered | rejected | lost
    error_code: str
    source: str
    round_trip_ms: float
    total_ms: float      # node-side total (0 when rejected before the worker)
    engine_ms: float     # prompt + decode time inside the node
    error_message: str = ""
    raw_text: str = ""


@dataclass
class LoadReport:
    clients: int
    per_client: int
    outcomes: list[Outcome] = field(default_factory=list)
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        out = self.outcomes
        answered = [o for o in out if o.status == "answered"]
        rejected = [o for o in out if o.status == "rejected"]
        lost = [o for o in out if o.status == "lost"]
        codes: dict[str, int] = {}
        for o in out:
            if o.error_code:
                codes[o.error_code] = codes.get(o.error_code, 0) + 1
        return {
            "clients": self.clients, "per_client": self.per_client,
            "sent": len(out), "answered": len(answered), "rejected": len(rejected), "lost": len(lost),
            "reconciled": len(out) == len(answered) + len(rejected) + len(lost)
                          and len(out) == self.clients * self.per_client,
            "llm_decisions": sum(o.source in ("llm", "safety_override") for o in answered),
            "fallbacks": sum(o.source == "fallback" for o in answered),
            "deadline_misses": codes.get("DEADLINE_EXCEEDED", 0),
            "overloaded": codes.get("OVERLOADED", 0),
            "error_codes": codes,
            "throughput_rps": len(answered) / self.wall_s if self.wall_s else 0.0,
            "round_trip_ms": percentiles([o.round_trip_ms for o in answered]),
            "wall_s": self.wall_s,
        }


def _planner(client_id: int, service: str, cases: list[dict], n: int, deadline_ms: int,
             seed: int, start_at: float, queue: Any) -> None:
    import rclpy
    from quant_llm_interfaces.srv import NavQuery
    from quant_llm_node.ros.conversions import build_request

    rng = random.Random(seed)
    rclpy.init()
    node = rclpy.create_node(f"planner_{client_id}")
    results = []
    try:
        from quant_llm_node.ros.node import SERVICE_QOS
        cli = node.create_client(NavQuery, service, qos_profile=SERVICE_QOS)
        if not cli.wait_for_service(timeout_sec=DISCOVERY_TIMEOUT_S):
            raise RuntimeError(f"{service} not available")
        while time.time() < start_at:
            time.sleep(0.01)
        for seq in range(n):
            case = rng.choice(cases)
            raw = raw_request(case, request_id=f"c{client_id}-{seq}")
            req = build_request(NavQuery, raw["query"], raw["goal"], raw["state"], raw["context_json"],
                                raw["priority"], deadline_ms, raw["request_id"])
            t0 = time.monotonic()
            future = cli.call_async(req)
            rclpy.spin_until_future_complete(node, future, timeout_sec=CLIENT_TIMEOUT_S)
            rtt = (time.monotonic() - t0) * 1e3
            if not future.done():
                cli.remove_pending_request(future)
                results.append(Outcome(client_id, seq, raw["request_id"], "lost", "", "", rtt, 0, 0))
                continue
            r = future.result()
            status = "answered" if r.success else "rejected"
            results.append(Outcome(client_id, seq, r.request_id, status, r.error_code,
                                   r.decision.source, rtt, r.latency.total_ms,
                                   r.latency.prompt_ms + r.latency.decode_ms,
                                   r.error_message, r.raw_text))
    finally:
        queue.put(json.dumps([asdict(o) for o in results]))
        node.destroy_node()
        rclpy.shutdown()


def run_load(service: str, cases: list[dict], clients: int, per_client: int,
             deadline_ms: int = 0, seed: int = 0) -> LoadReport:
    """Start ``clients`` planner processes at once and collect every outcome."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 3.0 + 0.5 * clients  # all discovered before the first request
    procs = [ctx.Process(target=_planner, args=(i, service, cases, per_client, deadline_ms,
                                                seed + i, start_at, queue), daemon=True)
             for i in range(clients)]
    for p in procs:
        p.start()
    report = LoadReport(clients, per_client)
    wait_s = DISCOVERY_TIMEOUT_S + CLIENT_TIMEOUT_S * per_client
    for _ in procs:
        try:
            report.outcomes += [Outcome(**o) for o in json.loads(queue.get(timeout=wait_s))]
        except Exception:  # a planner died without reporting: its requests count as sent, lost
            break
    for p in procs:
        p.join(30)
    report.wall_s = max(0.0, time.time() - start_at)
    return report
