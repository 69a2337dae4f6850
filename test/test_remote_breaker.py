"""Circuit breaker: its state machine on a fake clock, then the guard against a dead port
that a real llama-cpp-python server later comes up on (the half-open probe closes it)."""
from __future__ import annotations

import time

import pytest

from quant_llm_node.engine.remote import RemoteEngine, RemoteError, RemoteErrorKind
from quant_llm_node.serving.breaker import BreakerState, CircuitBreaker
from quant_llm_node.serving.remote_guard import GuardedRemote
from quant_llm_node.serving.remote_status import HealthLevel, RemoteMonitor
from test_remote_support import SHORT_PROMPT, FaultServer, LlamaServer, free_port, remote_cfg

FAILURES, COOLDOWN_S = 3, 10.0
SKIP_S = 0.05          # an open circuit answers without touching the network


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_opens_after_consecutive_failures_only():
    b = CircuitBreaker(FAILURES, COOLDOWN_S, Clock())
    for _ in range(FAILURES - 1):
        b.record_failure()
    b.record_success()                       # a success resets the count
    for _ in range(FAILURES - 1):
        b.record_failure()
        assert b.allow() and b.state is BreakerState.CLOSED
    b.record_failure()
    assert b.state is BreakerState.OPEN and not b.allow()
    snap = b.snapshot()
    assert snap.opens == 1 and snap.rejected == 1 and snap.retry_in_s == COOLDOWN_S


def test_half_open_lets_one_probe_through_after_the_cooldown():
    clock = Clock()
    b = CircuitBreaker(1, COOLDOWN_S, clock)
    b.record_failure()
    clock.t += COOLDOWN_S - 0.01
    assert not b.allow()
    clock.t += 0.02
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow() and not b.allow()       # one probe at a time
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.allow() and b.allow()


def test_a_failed_probe_opens_again_for_a_full_cooldown():
    clock = Clock()
    b = CircuitBreaker(FAILURES, COOLDOWN_S, clock)
    for _ in range(FAILURES):
        b.record_failure()
    clock.t += COOLDOWN_S
    assert b.allow()
    b.record_failure()                        # one failure in half-open is enough
    assert b.state is BreakerState.OPEN and b.snapshot().opens == 2
    clock.t += COOLDOWN_S / 2
    assert not b.allow()


def test_a_probe_without_verdict_frees_the_slot():
    clock = Clock()
    b = CircuitBreaker(1, COOLDOWN_S, clock)
    b.record_failure()
    clock.t += COOLDOWN_S
    assert b.allow() and not b.allow()
    b.release()                               # the probe was cancelled
    assert b.state is BreakerState.HALF_OPEN and b.allow()


def test_rejects_nonsense_settings():
    with pytest.raises(ValueError):
        CircuitBreaker(0, COOLDOWN_S)
    with pytest.raises(ValueError):
        CircuitBreaker(1, 0.0)


def _guard(url: str, failures: int, cooldown_s: float, **kw) -> GuardedRemote:
    breaker = CircuitBreaker(failures, cooldown_s)
    engine = RemoteEngine(remote_cfg(url, **kw))
    monitor = RemoteMonitor(breaker, mode="remote", server=engine.endpoint.origin, api="llama_cpp",
                            model="", window=64, warn_local_share=0.2)
    return GuardedRemote(engine, breaker, monitor)


def test_dead_server_opens_the_circuit_then_a_real_server_closes_it_by_probe(tmp_path):
    port = free_port()
    cooldown_s = 1.0
    guard = _guard(f"http://127.0.0.1:{port}", 2, cooldown_s, read_timeout_s=60.0)
    server = None
    try:
        for _ in range(2):
            with pytest.raises(RemoteError) as info:
                guard.generate(SHORT_PROMPT, 4)
            assert info.value.kind is RemoteErrorKind.UNREACHABLE
        assert guard.breaker.state is BreakerState.OPEN
        status = guard.monitor.snapshot()
        assert status.level is HealthLevel.ERROR and status.reachable is False
        assert status.errors == {"unreachable": 2}
        # open: requests skip the server without spending any timeout
        t0 = time.perf_counter()
        with pytest.raises(RemoteError) as info:
            guard.generate(SHORT_PROMPT, 4)
        assert info.value.kind is RemoteErrorKind.CIRCUIT_OPEN
        assert info.value.code == "MODEL_UNAVAILABLE"
        assert time.perf_counter() - t0 < SKIP_S
        # the server comes (back) up on that port; after the cool-down one probe goes through
        server = LlamaServer(port=port).start(tmp_path)
        while guard.breaker.snapshot().retry_in_s > 0:
            time.sleep(0.05)
        assert guard.breaker.state is BreakerState.HALF_OPEN
        gen = guard.generate(SHORT_PROMPT, 4)
        assert gen.completion_tokens >= 1 and gen.backend == "remote"
        status = guard.monitor.snapshot()
        assert status.breaker.state is BreakerState.CLOSED and status.reachable is True
        assert status.level is HealthLevel.OK and status.answered_remote == 1
        assert status.latency_p50_ms > 0 and status.breaker.opens == 1
    finally:
        guard.close()
        if server is not None:
            server.stop()


def test_a_failed_probe_reopens_and_500s_count_as_failures():
    body = '{"error": {"message": "overloaded"}}'
    with FaultServer("status", status=503, body=body) as srv:
        guard = _guard(srv.url, 1, 0.2)
        with pytest.raises(RemoteError):
            guard.generate("p", 4)
        assert guard.breaker.state is BreakerState.OPEN
        time.sleep(0.25)
        with pytest.raises(RemoteError) as info:        # the probe, and it fails
            guard.generate("p", 4)
        assert info.value.kind is RemoteErrorKind.SERVER_ERROR
        assert guard.breaker.snapshot().opens == 2 and len(srv.requests) == 2
        guard.close()


def test_a_stall_past_the_deadline_is_a_failure_but_a_cancel_is_not():
    with FaultServer("stall", stall_s=30) as srv:
        guard = _guard(srv.url, 1, COOLDOWN_S, read_timeout_s=20.0)
        gen = guard.generate("p", 8, deadline_s=0.2)
        assert gen.finish_reason == "deadline"
        assert guard.breaker.state is BreakerState.OPEN
        assert guard.monitor.snapshot().errors == {"slow": 1}
        guard.close()
    with FaultServer("stall", stall_s=30) as srv:
        guard = _guard(srv.url, 1, COOLDOWN_S, read_timeout_s=20.0)
        stop_at = time.perf_counter() + 0.2
        gen = guard.generate("p", 8, should_stop=lambda t: time.perf_counter() > stop_at)
        assert gen.finish_reason == "interrupted"
        assert guard.breaker.state is BreakerState.CLOSED and guard.monitor.snapshot().errors == {}
        guard.close()
