"""Circuit breaker: a dead server must not cost every request its timeout.

closed ──(``failures`` consecutive failures)──▶ open ──(``cooldown_s``)──▶ half-open
half-open lets exactly one probe through: its success closes the circuit, its failure opens
it again for another cool-down, and a probe that ends without a verdict (cancelled) frees the
slot for the next request. While open, ``allow()`` answers False at once.

Thread-safe; the clock is injectable for tests.
"""
from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass
from typing import Callable


class BreakerState(str, enum.Enum):
    CLOSED = "closed"        # requests go to the server
    OPEN = "open"            # requests skip the server until the cool-down is over
    HALF_OPEN = "half_open"  # one probe request is allowed


@dataclass(frozen=True)
class BreakerSnapshot:
    """The breaker as diagnostics see it."""

    state: BreakerState
    consecutive_failures: int
    opens: int                 # how many times the circuit has opened
    rejected: int              # requests refused while open
    retry_in_s: float          # seconds until the next probe is allowed (0 unless open)


class CircuitBreaker:
    """Counts consecutive failures of one server and decides whether to try it."""

    def __init__(self, failures: int, cooldown_s: float,
                 clock: Callable[[], float] = time.monotonic):
        if failures < 1 or cooldown_s <= 0:
            raise ValueError("a breaker needs failures >= 1 and cooldown_s > 0")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probe_out = False
        self._opens = 0
        self._rejected = 0

    def _refresh(self) -> None:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
            self._state = BreakerState.HALF_OPEN
            self._probe_out = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            self._refresh()
            return self._state

    def allow(self) -> bool:
        """May a request go to the server now? In half-open, True once (the probe)."""
        with self._lock:
            self._refresh()
            if self._state is BreakerState.CLOSED:
                return True
            if self._state is BreakerState.HALF_OPEN and not self._probe_out:
                self._probe_out = True
                return True
            self._rejected += 1
            return False

    def record_success(self) -> None:
        """The server answered: close the circuit."""
        with self._lock:
            self._state = BreakerState.CLOSED
            self._consecutive = 0
            self._probe_out = False

    def record_failure(self) -> None:
        """The server failed: a failed probe, or the threshold reached, opens the circuit."""
        with self._lock:
            self._refresh()
            self._consecutive += 1
            if self._state is BreakerState.HALF_OPEN or (
                    self._state is BreakerState.CLOSED and self._consecutive >= self.failures):
                self._open()

    def release(self) -> None:
        """A call ended without a verdict (cancelled, preempted): free the probe slot."""
        with self._lock:
            self._probe_out = False

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._probe_out = False
        self._opens += 1

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            self._refresh()
            retry = (max(0.0, self.cooldown_s - (self._clock() - self._opened_at))
                     if self._state is BreakerState.OPEN else 0.0)
            return BreakerSnapshot(self._state, self._consecutive, self._opens, self._rejected,
                                   retry)
