"""Scheduler behaviour with a stand-in handler (this file is about ordering, deadlines and
accounting, not the model: the real engine is exercised in test_engine and the ROS tests)."""
import threading
import time

from quant_llm_node.reasoning.types import Decision, NavRequest, NavResponse
from quant_llm_node.serving.scheduler import Job, Preempted, Scheduler

SAFETY = 200


class Recorder:
    def __init__(self, work_s=0.05, preemptible=True):
        self.order, self.work_s, self.preemptible = [], work_s, preemptible
        self.gate = threading.Event()
        self.gate.set()

    def handle(self, job: Job) -> NavResponse:
        self.gate.wait()
        end = time.monotonic() + self.work_s
        while time.monotonic() < end:
            if job.cancel.is_set():
                return NavResponse(job.request.request_id, False, "CANCELLED")
            if self.preemptible and job.preempt.is_set():
                raise Preempted()
            time.sleep(0.002)
        self.order.append(job.request.request_id)
        return NavResponse(job.request.request_id, True, decision=Decision("stop", source="llm"))


def late(job, why, detail=""):
    return NavResponse(job.request.request_id, True, "DEADLINE_EXCEEDED", why,
                       decision=Decision("wait", source="fallback"))


def make(rec, queue_size=8):
    s = Scheduler(rec.handle, late, queue_size, SAFETY)
    s.start()
    return s


def submit(s, rid, priority=0, deadline_ms=5000):
    box = {}
    done = threading.Event()

    def on_done(resp):
        box.setdefault("responses", []).append(resp)
        done.set()
    job = Job(NavRequest(rid, "q", priority=priority, deadline_ms=deadline_ms), on_done)
    accepted = s.submit(job)
    return accepted, box, done


def test_safety_first_then_earliest_deadline():
    rec = Recorder()
    rec.gate.clear()
    s = make(rec)
    results = [submit(s, "blocker")]
    time.sleep(0.05)  # blocker is running (waiting at the gate)
    results += [submit(s, "late_routine", deadline_ms=9000), submit(s, "early_routine", deadline_ms=3000),
                submit(s, "safety", priority=SAFETY)]
    rec.gate.set()
    for _, _, done in results:
        assert done.wait(5)
    s.stop(lambda j: late(j, "shutting_down"))
    # the safety request preempted the blocker, which was requeued and served later
    assert rec.order[0] == "safety"
    assert rec.order.index("early_routine") < rec.order.index("late_routine")
    assert sorted(rec.order) == sorted(["blocker", "late_routine", "early_routine", "safety"])


def test_full_queue_rejects_and_nothing_is_lost():
    rec = Recorder(work_s=0.01)
    rec.gate.clear()
    s = make(rec, queue_size=3)
    results = [submit(s, "r0")]
    time.sleep(0.05)  # r0 is running
    results += [submit(s, f"r{i}") for i in range(1, 10)]
    accepted = [r for r in results if r[0]]
    assert len(accepted) == 4  # one running + three queued
    rec.gate.set()
    for ok, box, done in accepted:
        assert done.wait(5) and len(box["responses"]) == 1
    for ok, box, done in results:
        if not ok:
            assert "responses" not in box  # the caller answers OVERLOADED itself
    s.stop(lambda j: late(j, "shutting_down"))


def test_safety_request_evicts_routine_when_full():
    rec = Recorder(work_s=0.01)
    rec.gate.clear()
    s = make(rec, queue_size=2)
    first = [submit(s, "r0", deadline_ms=20000)]
    time.sleep(0.05)  # r0 is running
    first += [submit(s, f"r{i}", deadline_ms=5000 * (i + 1)) for i in range(1, 3)]
    ok, box, done = submit(s, "safety", priority=SAFETY)
    assert ok
    time.sleep(0.3)
    evicted = [b for _, b, d in first if d.is_set()]
    assert len(evicted) == 1 and evicted[0]["responses"][0].error_code == "DEADLINE_EXCEEDED"
    assert evicted[0]["responses"][0].request_id == "r2"  # the routine job with the latest deadline
    rec.gate.set()
    assert done.wait(5)
    s.stop(lambda j: late(j, "shutting_down"))


def test_deadline_answered_while_worker_busy():
    rec = Recorder(work_s=2.0, preemptible=False)
    s = make(rec)
    _, _, first_done = submit(s, "long", deadline_ms=10000)
    time.sleep(0.05)
    t0 = time.monotonic()
    ok, box, done = submit(s, "short", deadline_ms=200)
    assert done.wait(2)
    waited = time.monotonic() - t0
    assert 0.15 < waited < 1.5
    assert box["responses"][0].decision.source == "fallback"
    s.stop(lambda j: late(j, "shutting_down"))


def test_running_job_past_deadline_gets_fallback_once():
    rec = Recorder(work_s=1.0, preemptible=False)
    s = make(rec)
    ok, box, done = submit(s, "slow", deadline_ms=150)
    assert done.wait(2)
    time.sleep(1.2)  # the worker finishes later; its result must not be delivered again
    assert len(box["responses"]) == 1
    assert box["responses"][0].error_code == "DEADLINE_EXCEEDED"
    s.stop(lambda j: late(j, "shutting_down"))


def test_stop_answers_queued_jobs():
    rec = Recorder()
    rec.gate.clear()
    s = make(rec)
    results = [submit(s, f"r{i}") for i in range(5)]
    time.sleep(0.05)
    n = s.stop(lambda j: NavResponse(j.request.request_id, False, "SHUTTING_DOWN"))
    rec.gate.set()
    assert n == 4
    for _, box, done in results:
        assert done.wait(3)
        assert len(box["responses"]) == 1
    assert not s.submit(Job(NavRequest("after", "q", deadline_ms=100), lambda r: None))


# ---- several slots (engine.n_parallel: the batch loop decodes their requests together) ----

class Concurrency(Recorder):
    """Records how many jobs run at once."""

    def __init__(self, work_s=0.2, preemptible=True):
        super().__init__(work_s, preemptible)
        self.lock, self.now, self.peak = threading.Lock(), 0, 0

    def handle(self, job):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            return super().handle(job)
        finally:
            with self.lock:
                self.now -= 1


def test_slots_run_jobs_at_once_and_answer_each_once():
    rec = Concurrency(work_s=0.2)
    s = Scheduler(rec.handle, late, 16, SAFETY, slots=3)
    s.start()
    try:
        assert s.slots == 3
        results = [submit(s, f"r{i}") for i in range(7)]
        for accepted, box, done in results:
            assert accepted and done.wait(10)
        assert rec.peak == 3  # never more than the slots, and all of them used
        assert all(len(box["responses"]) == 1 for _, box, _ in results)
        assert sorted(rec.order) == sorted(f"r{i}" for i in range(7))
    finally:
        s.stop(lambda job: late(job, "stop"))


def test_safety_arrival_preempts_only_when_every_slot_is_busy():
    rec = Concurrency(work_s=0.6)
    s = Scheduler(rec.handle, late, 16, SAFETY, slots=2)
    s.start()
    try:
        first = submit(s, "routine_a", deadline_ms=9000)
        time.sleep(0.1)
        safety1 = submit(s, "safety_1", priority=SAFETY)  # a slot is free: nobody preempted
        time.sleep(0.1)
        assert s.running() == 2
        second = submit(s, "routine_b", deadline_ms=8000)
        safety2 = submit(s, "safety_2", priority=SAFETY)  # both busy: routine_a gives way
        for _, box, done in (first, safety1, second, safety2):
            assert done.wait(10)
            assert len(box["responses"]) == 1 and box["responses"][0].success
        assert rec.order.index("safety_2") < rec.order.index("routine_a")
        assert rec.order.index("safety_1") < rec.order.index("routine_a")
    finally:
        s.stop(lambda job: late(job, "stop"))


def test_each_running_job_gets_its_own_deadline():
    rec = Concurrency(work_s=5.0, preemptible=False)
    s = Scheduler(rec.handle, late, 16, SAFETY, slots=2)
    s.start()
    try:
        short = submit(s, "short", deadline_ms=300)
        long_ = submit(s, "long", deadline_ms=20000)
        assert short[2].wait(5)
        assert short[1]["responses"][0].error_code == "DEADLINE_EXCEEDED"
        assert not long_[2].is_set()  # the other slot keeps running
    finally:
        s.stop(lambda job: late(job, "stop"))
