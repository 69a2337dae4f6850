"""Serving metrics: per-stage latency percentiles over a recent window, and counters."""
from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Iterable

import numpy as np

from quant_llm_node.reasoning.types import LATENCY_STAGES as STAGES, SOURCE_FALLBACK, SOURCE_SAFETY, NavResponse
PERCENTILES = (50, 95, 99)


def percentiles(values: Iterable[float], ps: Iterable[int] = PERCENTILES) -> dict[str, float]:
    """``{"p50": …}``; NaN when there are no values."""
    arr = np.asarray(list(values), dtype=float)
    return {f"p{p}": (float(np.percentile(arr, p)) if arr.size else float("nan")) for p in ps}


class ServingMetrics:
    """Thread-safe accumulator fed by the worker, read by diagnostics."""

    def __init__(self, window: int):
        self._lock = threading.Lock()
        self._stages = {s: deque(maxlen=window) for s in STAGES}
        self._decode_tps: deque = deque(maxlen=window)
        self._service_overhead: deque = deque(maxlen=window)
        self.counters: Counter = Counter()
        self.errors: Counter = Counter()
        self.last_decode_tps = 0.0

    def record(self, response: NavResponse) -> None:
        """Count one answered request."""
        with self._lock:
            c = self.counters
            c["answered"] += 1
            if not response.success:
                c["rejected"] += 1
                self.errors[response.error_code] += 1
                return
            c["served"] += 1
            if response.error_code:
                self.errors[response.error_code] += 1
            src = response.decision.source
            c["fallback"] += src == SOURCE_FALLBACK
            c["safety_override"] += src == SOURCE_SAFETY
            for s in STAGES:
                self._stages[s].append(getattr(response.latency, s))
            if response.decode_tps > 0:
                self._decode_tps.append(response.decode_tps)
                self.last_decode_tps = response.decode_tps

    def count(self, event: str, n: int = 1) -> None:
        with self._lock:
            self.counters[event] += n

    def snapshot(self) -> dict:
        """Percentiles per stage, decode tok/s, counters and error codes."""
        with self._lock:
            stages = {s: percentiles(v) for s, v in self._stages.items()}
            tps = percentiles(self._decode_tps, (50,))["p50"]
            return {"stages": stages, "decode_tps_p50": tps, "counters": dict(self.counters),
                    "errors": dict(self.errors), "window": len(self._stages["total_ms"])}
