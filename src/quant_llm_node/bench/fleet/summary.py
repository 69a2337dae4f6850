"""Figures of one fleet run from its outcomes: throughput, latency, who answered, deadline
misses, the sent/answered reconciliation; and the split of a run at the server kill."""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable

from quant_llm_node.bench.fleet.driver import Outcome
from quant_llm_node.serving.metrics import percentiles

DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"


def _lat(outcomes: Iterable[Outcome]) -> dict[str, float]:
    return percentiles((o.round_trip_ms for o in outcomes), (50, 95))


def figures(outcomes: list[Outcome], deadline_ms: int, t_from: float, t_to: float,
            robots: int) -> dict[str, Any]:
    """The run's figures; throughput counts answers completed in [t_from, t_to]."""
    answered = [o for o in outcomes if o.status == "answered"]
    by_backend = Counter(o.backend for o in answered)
    modelled = by_backend["remote"] + by_backend["local"]
    late = [o for o in answered if o.error_code == DEADLINE_EXCEEDED or o.round_trip_ms > deadline_ms]
    wall = max(t_to - t_from, 1e-9)
    done_in = sum(t_from <= o.done_at <= t_to for o in answered)
    return {
        "robots": robots,
        "sent": len(outcomes), "answered": len(answered),
        "rejected": sum(o.status == "rejected" for o in outcomes),
        "lost": sum(o.status == "lost" for o in outcomes),
        "unanswered": len(outcomes) - len(answered),
        "throughput_dps": done_in / wall, "per_robot_dps": done_in / wall / max(robots, 1),
        "wall_s": wall,
        "latency_ms": _lat(answered),
        "remote_latency_ms": _lat(o for o in answered if o.backend == "remote"),
        "local_latency_ms": _lat(o for o in answered if o.backend == "local"),
        "answered_remote": by_backend["remote"], "answered_local": by_backend["local"],
        "local_share": by_backend["local"] / modelled if modelled else math.nan,
        "fallbacks": sum(o.source == "fallback" for o in answered),
        "deadline_misses": len(late),
        "max_round_trip_ms": max((o.round_trip_ms for o in answered), default=math.nan),
        "error_codes": dict(Counter(o.error_code for o in outcomes if o.error_code)),
    }


def run_figures(outcomes: list[Outcome], deadline_ms: int, start_at: float, robots: int) -> dict:
    end = max((o.done_at for o in outcomes), default=start_at)
    return figures(outcomes, deadline_ms, start_at, end, robots)


def kill_split(outcomes: list[Outcome], deadline_ms: int, start_at: float, kill_at: float,
               robots: int) -> dict[str, Any]:
    """Before / after the kill: requests by send time; throughput by completion time.
    ``in_flight`` are the requests sent before the kill and answered after it."""
    end = max((o.done_at for o in outcomes), default=kill_at)
    before = [o for o in outcomes if o.sent_at < kill_at]
    after = [o for o in outcomes if o.sent_at >= kill_at]
    in_flight = [o for o in before if o.done_at >= kill_at]
    b = figures(before, deadline_ms, start_at, kill_at, robots)
    a = figures(after, deadline_ms, kill_at, end, robots)
    a["throughput_dps"] = sum(o.status == "answered" and o.done_at >= kill_at for o in outcomes) \
        / max(end - kill_at, 1e-9)
    a["per_robot_dps"] = a["throughput_dps"] / max(robots, 1)
    return {"kill_after_s": kill_at - start_at, "before": b, "after": a,
            "in_flight": {**figures(in_flight, deadline_ms, kill_at, end, robots),
                          "backends": dict(Counter(o.backend for o in in_flight))}}


def timeline(outcomes: list[Outcome], start_at: float) -> list[list]:
    """[seconds since start at completion, round trip ms, backend, robot] per answered request."""
    return [[round(o.done_at - start_at, 3), round(o.round_trip_ms, 1), o.backend, o.robot]
            for o in sorted(outcomes, key=lambda o: o.done_at) if o.status == "answered"]
