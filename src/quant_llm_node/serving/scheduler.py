"""Bounded priority queue in front of the inference workers.

- ``slots`` workers run jobs at once: 1 without batching (the engine is not thread-safe), or
  engine.n_parallel, whose requests the batch loop decodes together (serving/batch_loop.py).
- Safety-critical requests (priority >= safety_priority) go first, then earliest deadline.
- Every accepted request is answered exactly once: by a worker, by the deadline
  watchdog (fallback marked late) or at shutdown (SHUTTING_DOWN). Nothing is dropped.
- A full queue rejects at submit (OVERLOADED): the caller answers at once.
- A safety-critical arrival that finds every slot busy preempts the running routine job
  with the latest deadline, which is requeued.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Callable, Optional

from quant_llm_node.reasoning.types import NavRequest, NavResponse

if TYPE_CHECKING:
    from quant_llm_node.reasoning.task import StreamView


class LateReason(str, Enum):
    """Why a job is answered without the model's decision."""

    DEADLINE = "deadline"              # its deadline passed (queued or running)
    EVICTED = "evicted"                # a full queue made room for safety-critical work
    SHUTTING_DOWN = "shutting_down"    # the node deactivated while it was preempted
    INTERNAL = "internal"              # the handler raised (a bug): answered, never dropped


class Preempted(Exception):
    """Raised by a handler when its job was preempted; the scheduler requeues the job."""


@dataclass
class Job:
    """One accepted request and the means to answer it once."""

    request: NavRequest
    on_done: Callable[[NavResponse], None]
    # streaming: (safety-checked view or None, unchecked partial text, tokens so far)
    on_partial: Optional[Callable[[Optional["StreamView"], str, int], None]] = None
    submitted: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    preempt: threading.Event = field(default_factory=threading.Event)
    preemptions: int = 0
    _answered: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def deadline(self) -> float:
        return self.submitted + self.request.deadline_ms / 1e3

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def answered(self) -> bool:
        return self._answered

    def finish(self, response: NavResponse) -> bool:
        """Deliver the answer; False when the job was already answered."""
        with self._lock:
            if self._answered:
                return False
            self._answered = True
        self.on_done(response)
        return True


Handler = Callable[[Job], NavResponse]
LateHandler = Callable[[Job, LateReason, str], NavResponse]  # (job, why, detail)


class Scheduler:
    """``slots`` worker threads run ``handler`` on jobs; a watchdog answers late jobs."""

    def __init__(self, handler: Handler, late_handler: LateHandler, queue_size: int,
                 safety_priority: int, on_event: Callable[[str], None] | None = None,
                 slots: int = 1):
        self._handler = handler
        self._late = late_handler
        self._queue_size = queue_size
        self._safety_priority = safety_priority
        self._on_event = on_event or (lambda name: None)
        self._heap: list[tuple[int, float, int, Job]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._slots = max(1, slots)
        self._running: list[Job] = []
        self._accepting = False
        self._stop = False
        self._threads: list[threading.Thread] = []

    # ---- control ---------------------------------------------------------------------------
    def start(self) -> None:
        with self._cv:
            self._accepting, self._stop = True, False
        self._threads = [threading.Thread(target=self._work, name=f"qln-inference-{i}", daemon=True)
                         for i in range(self._slots)]
        self._threads.append(threading.Thread(target=self._watch, name="qln-deadlines", daemon=True))
        for t in self._threads:
            t.start()

    def stop(self, answer: Callable[[Job], NavResponse], timeout_s: float = 30.0) -> int:
        """Refuse new work, answer every queued job with ``answer(job)``, cancel the running
        one and join the threads. Returns how many queued jobs were answered here."""
        with self._cv:
            self._accepting = False
            self._stop = True
            queued = [entry[-1] for entry in self._heap]
            self._heap.clear()
            for job in self._running:
                job.cancel.set()
            self._cv.notify_all()
        for job in queued:
            job.finish(answer(job))
        for t in self._threads:
            t.join(timeout_s)
        self._threads = []
        return len(queued)

    def configure(self, queue_size: int, safety_priority: int) -> None:
        """New limits for the next submissions (live settings); queued jobs stay queued."""
        with self._cv:
            self._queue_size, self._safety_priority = queue_size, safety_priority

    @property
    def accepting(self) -> bool:
        return self._accepting

    def depth(self) -> int:
        with self._cv:
            return len(self._heap)

    @property
    def slots(self) -> int:
        return self._slots

    def running(self) -> int:
        """Jobs being served now (at most ``slots``)."""
        with self._cv:
            return len(self._running)

    def is_safety(self, job: Job) -> bool:
        return job.request.priority >= self._safety_priority

    # ---- submission ------------------------------------------------------------------------
    def submit(self, job: Job) -> bool:
        """Queue a job; False (not accepted) when stopped or full."""
        with self._cv:
            if not self._accepting:
                return False
            if len(self._heap) >= self._queue_size:
                if not self.is_safety(job) or not self._evict_routine():
                    return False
            self._push(job)
            if self.is_safety(job) and len(self._running) >= self._slots:
                routine = [j for j in self._running if not self.is_safety(j) and not j.preempt.is_set()]
                if routine:
                    max(routine, key=lambda j: j.deadline).preempt.set()
            self._cv.notify_all()
            return True

    def _push(self, job: Job) -> None:
        klass = 0 if self.is_safety(job) else 1
        heapq.heappush(self._heap, (klass, job.deadline, next(self._seq), job))

    def _evict_routine(self) -> bool:
        """Make room for a safety-critical job: the routine job with the latest deadline is
        answered with its fallback now (never silently dropped)."""
        routine = [e for e in self._heap if e[0] == 1]
        if not routine:
            return False
        victim = max(routine, key=lambda e: e[1])
        self._heap.remove(victim)
        heapq.heapify(self._heap)
        job = victim[-1]
        threading.Thread(target=lambda: job.finish(self._late(job, LateReason.EVICTED, "")), daemon=True).start()
        self._on_event("evicted")
        return True

    # ---- threads ---------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._heap and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                job = heapq.heappop(self._heap)[-1]
                if job.answered:
                    continue
                self._running.append(job)
            try:
                response = self._handler(job)
            except Preempted:
                job.preempt.clear()
                job.preemptions += 1
                self._on_event("preempted")
                with self._cv:
                    self._running.remove(job)
                    if self._accepting:
                        self._push(job)
                        continue
                job.finish(self._late(job, LateReason.SHUTTING_DOWN, ""))
                continue
            except Exception as exc:  # a handler bug must not kill the worker
                response = self._late(job, LateReason.INTERNAL, f"internal error: {exc!r}")
            with self._cv:
                self._running.remove(job)
            if not job.finish(response):
                self._on_event("answered_late_result_dropped")

    def _watch(self) -> None:
        """Answer jobs whose deadline has passed with the late fallback: queued ones, and
        running ones even while llama.cpp is busy (their late results are then dropped)."""
        while True:
            with self._cv:
                if self._stop:
                    return
                now = time.monotonic()
                late = [e for e in self._heap if e[-1].deadline <= now]
                for e in late:
                    self._heap.remove(e)
                if late:
                    heapq.heapify(self._heap)
                soonest = min((e[-1].deadline for e in self._heap), default=None)
                for running in self._running:
                    if running.answered:
                        continue
                    if running.deadline <= now:
                        late.append((0, running.deadline, -1, running))
                        running.cancel.set()  # the worker stops generating for it
                    else:
                        soonest = min(soonest or running.deadline, running.deadline)
                if not late:
                    wait = 0.5 if soonest is None else max(0.0, min(0.5, soonest - now))
                    self._cv.wait(wait)
            for e in late:
                job = e[-1]
                if job.finish(self._late(job, LateReason.DEADLINE, "")):
                    self._on_event("deadline_miss")
