"""Counters of the remote backend and their typed snapshot, the ``remote`` diagnostic.

Fed by the guard (every remote attempt) and the hybrid generator (who answered); read by
diagnostics through :meth:`RemoteMonitor.snapshot`. Thread-safe.
"""
from __future__ import annotations

import enum
import math
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Optional

from quant_llm_node.engine.llama_engine import GenerationResult
from quant_llm_node.engine.remote import RemoteErrorKind
from quant_llm_node.serving.breaker import BreakerSnapshot, BreakerState, CircuitBreaker
from quant_llm_node.serving.metrics import percentiles

MODE_REMOTE = "remote"     # engine.backend whose only other answer is the fallback decision
# failures that say nothing answered at the far end (the others prove the server is there)
UNREACHED = (RemoteErrorKind.UNREACHABLE, RemoteErrorKind.TLS, RemoteErrorKind.TIMEOUT)


class HealthLevel(str, enum.Enum):
    """diagnostic_msgs levels the remote status maps to."""

    OK = "OK"
    WARN = "WARN"
    ERROR = "ERROR"


class AnsweredBy(str, enum.Enum):
    """Who produced the text a request used."""

    REMOTE = "remote"
    LOCAL = "local"
    NONE = "none"      # nobody: the node's fallback decides (remote mode, or both failed)


@dataclass(frozen=True)
class RemoteStatus:
    """One snapshot of the remote backend (never holds the token)."""

    level: HealthLevel
    message: str
    mode: str                      # remote | hybrid
    server: str                    # scheme://host:port
    api: str                       # llama_cpp | vllm
    model: str
    reachable: Optional[bool]      # None until the first attempt
    breaker: BreakerSnapshot
    requests: int                  # generate calls
    answered_remote: int
    answered_local: int
    unanswered: int
    local_share: float             # of recent answered requests, answered locally (NaN: none yet)
    latency_p50_ms: float          # remote answers, whole call
    latency_p95_ms: float
    first_token_p50_ms: float
    decode_tps_p50: float
    errors: dict[str, int] = field(default_factory=dict)   # by RemoteErrorKind value
    last_error: str = ""

    def key_values(self) -> dict[str, str]:
        """Flat strings for a diagnostic_msgs/DiagnosticStatus."""
        kv = {
            "mode": self.mode, "server": self.server, "api": self.api, "model": self.model,
            "reachable": "unknown" if self.reachable is None else str(self.reachable).lower(),
            "breaker_state": self.breaker.state.value,
            "breaker_consecutive_failures": str(self.breaker.consecutive_failures),
            "breaker_opens": str(self.breaker.opens),
            "breaker_rejected": str(self.breaker.rejected),
            "breaker_retry_in_s": f"{self.breaker.retry_in_s:.1f}",
            "requests": str(self.requests), "answered_remote": str(self.answered_remote),
            "answered_local": str(self.answered_local), "unanswered": str(self.unanswered),
            "local_share": _fmt(self.local_share, 3),
            "remote_latency_p50_ms": _fmt(self.latency_p50_ms, 1),
            "remote_latency_p95_ms": _fmt(self.latency_p95_ms, 1),
            "remote_first_token_p50_ms": _fmt(self.first_token_p50_ms, 1),
            "remote_decode_tps_p50": _fmt(self.decode_tps_p50, 1),
            "last_error": self.last_error,
        }
        kv.update({f"errors.{kind}": str(n) for kind, n in sorted(self.errors.items())})
        return kv


def _fmt(value: float, digits: int) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


class RemoteMonitor:
    """Accumulates what happened to remote calls; ``snapshot()`` judges the health."""

    def __init__(self, breaker: CircuitBreaker, *, mode: str, server: str, api: str, model: str,
                 window: int, warn_local_share: float):
        self.breaker = breaker
        self._ident = dict(mode=mode, server=server, api=api, model=model)
        self._warn_local_share = warn_local_share
        self._lock = threading.Lock()
        self._latency: deque = deque(maxlen=window)
        self._first_token: deque = deque(maxlen=window)
        self._tps: deque = deque(maxlen=window)
        self._answers: deque = deque(maxlen=window)
        self._counts: Counter = Counter()
        self._errors: Counter = Counter()
        self._reachable: Optional[bool] = None
        self._last_ok = True
        self._last_error = ""

    def record_request(self) -> None:
        with self._lock:
            self._counts["requests"] += 1

    def record_remote_ok(self, result: GenerationResult) -> None:
        """A remote call finished (any text: parsing is the caller's business)."""
        with self._lock:
            self._reachable, self._last_ok = True, True
            self._latency.append(result.total_ms)
            self._first_token.append(result.first_token_ms)
            if result.decode_tps > 0:
                self._tps.append(result.decode_tps)

    def record_failure(self, kind: RemoteErrorKind, message: str) -> None:
        """A remote call failed, was skipped (circuit open) or gave unusable text."""
        with self._lock:
            self._errors[kind.value] += 1
            if kind is RemoteErrorKind.CIRCUIT_OPEN:
                return  # says nothing new about the server
            self._last_ok = False
            self._last_error = f"{kind.value}: {message}"
            self._reachable = kind not in UNREACHED

    def record_answer(self, who: AnsweredBy) -> None:
        """Who produced the text the request used."""
        with self._lock:
            self._counts[f"answered_{who.value}"] += 1
            self._answers.append(who)

    def snapshot(self) -> RemoteStatus:
        breaker = self.breaker.snapshot()
        with self._lock:
            answered = [a for a in self._answers if a is not AnsweredBy.NONE]
            recent = list(self._answers)
            share = (sum(a is AnsweredBy.LOCAL for a in answered) / len(answered)
                     if answered else float("nan"))
            lat = percentiles(self._latency, (50, 95))
            ttft = percentiles(self._first_token, (50,))["p50"]
            tps = percentiles(self._tps, (50,))["p50"]
            level, message = self._judge(breaker, share, recent)
            return RemoteStatus(
                level=level, message=message, reachable=self._reachable, breaker=breaker,
                requests=self._counts["requests"], answered_remote=self._counts["answered_remote"],
                answered_local=self._counts["answered_local"],
                unanswered=self._counts["answered_none"], local_share=share,
                latency_p50_ms=lat["p50"], latency_p95_ms=lat["p95"], first_token_p50_ms=ttft,
                decode_tps_p50=tps, errors=dict(self._errors), last_error=self._last_error,
                **self._ident)

    def _judge(self, breaker: BreakerSnapshot, share: float,
               recent: list) -> tuple[HealthLevel, str]:
        """Server down (circuit open, or unreachable): ERROR for the remote backend, where
        only the fallback answers, WARN for hybrid, where the local model does. Degraded
        (half-open, last call failed, local share above the limit): WARN. Else OK."""
        down = HealthLevel.ERROR if self._ident["mode"] == MODE_REMOTE else HealthLevel.WARN
        if breaker.state is BreakerState.OPEN:
            return down, (f"circuit open after {breaker.consecutive_failures} failures "
                          f"({self._last_error}); probe in {breaker.retry_in_s:.1f} s")
        if self._reachable is False:
            return down, f"server unreachable ({self._last_error})"
        if breaker.state is BreakerState.HALF_OPEN:
            return HealthLevel.WARN, "circuit half-open: probing the server"
        if not self._last_ok:
            return HealthLevel.WARN, f"last remote call failed ({self._last_error})"
        if not math.isnan(share) and share > self._warn_local_share:
            return HealthLevel.WARN, (f"{share:.0%} of recent requests answered locally "
                                      f"(limit {self._warn_local_share:.0%})")
        if not recent and self._reachable is None:
            return HealthLevel.OK, "no remote request yet"
        return HealthLevel.OK, "server answering"
