"""The compute thread: serving calls before background ones; background work waits while a
request holds the thread, but is never starved (no model needed)."""
from __future__ import annotations

import threading
import time

import pytest

from quant_llm_node.engine import compute_thread


def _background(fn, out: list):
    def target():
        with compute_thread.background():
            out.append(compute_thread.run(fn))
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


@pytest.mark.timeout(60)
def test_serving_calls_go_before_queued_background_calls():
    order: list[str] = []
    gate = threading.Event()
    blocker = threading.Thread(target=lambda: compute_thread.run(gate.wait), daemon=True)
    blocker.start()
    time.sleep(0.1)  # the compute thread is busy with the blocker
    outs: list = []
    threads = [_background(lambda i=i: order.append(f"bg{i}"), outs) for i in range(3)]
    time.sleep(0.1)
    serving = threading.Thread(target=lambda: compute_thread.run(lambda: order.append("serving")),
                               daemon=True)
    serving.start()
    time.sleep(0.1)
    gate.set()
    for t in (blocker, serving, *threads):
        t.join(10)
    assert order[0] == "serving" and sorted(order[1:]) == ["bg0", "bg1", "bg2"]


@pytest.mark.timeout(60)
def test_background_waits_while_held_and_runs_once_released():
    ran = threading.Event()
    with compute_thread.hold():
        t = _background(ran.set, [])
        assert not ran.wait(0.3)  # well under BACKGROUND_MAX_WAIT_S
    assert ran.wait(5)
    t.join(5)


@pytest.mark.timeout(60)
def test_background_is_not_starved_by_a_hold_that_never_ends():
    ran = threading.Event()
    with compute_thread.hold():
        t = _background(ran.set, [])
        assert ran.wait(compute_thread.BACKGROUND_MAX_WAIT_S * 5)
    t.join(5)


@pytest.mark.timeout(60)
def test_errors_come_back_to_the_caller_in_both_modes():
    def boom():
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        compute_thread.run(boom)
    with compute_thread.background():
        assert compute_thread.in_background()
        with pytest.raises(ValueError, match="boom"):
            compute_thread.run(boom)
    assert not compute_thread.in_background()


@pytest.mark.timeout(60)
def test_a_long_background_call_pauses_for_the_requests_that_come_meanwhile():
    """A background call with pause points (a model load's progress callback) runs a request's
    calls at its next pause once its slice is used up, and waits while the request holds."""
    log: list[str] = []
    started, release = threading.Event(), threading.Event()

    def long_job():
        started.set()
        for i in range(400):
            time.sleep(0.005)
            compute_thread.pause_for_serving()
            log.append("bg")
        return "loaded"

    out: list = []
    bg = _background(long_job, out)
    assert started.wait(5)
    with compute_thread.hold():
        t0 = time.monotonic()
        compute_thread.run(lambda: log.append("request"))
        waited = time.monotonic() - t0
        n_bg = log.count("bg")
        time.sleep(0.3)  # the request still holds: the background call stays paused
        assert log.count("bg") == n_bg
    bg.join(30)
    assert out == ["loaded"] and "request" in log
    assert waited < compute_thread.BACKGROUND_SLICE_S + 1.0
