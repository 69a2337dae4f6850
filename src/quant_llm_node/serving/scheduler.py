"""Bounded priority queue in front of the single inference worker.

- Safety-critical requests (priority >= safety_priority) go first, then earliest deadline.
- Every accepted request is answered exactly once: by the worker, by the deadline
  watchdog (fallback marked late) or at shutdown (SHUTTING_DOWN). Nothing is dropped.
- A full queue rejects at submit (OVERLOADED): the caller answers at once.
- A running routine job is preempted by a safety-critical arrival and requeued.
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
    """One worker thread runs ``handler`` on jobs; a watchdog answers late jobs."""

    def __init__(self, handler: Handler, late_handler: LateHandler, queue_size: int,
                 safety_priority: int, on_event: Callable[[str], None] | None = None):
        self._handler = handler
        self._late = late_handler
        self._queue_size = queue_size
        self._safety_priority = safety_priority
        self._on_event = on_event or (lambda name: None)
        self._heap: list[tuple[int, float, int, Job]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._running: Job | None = None
        self._accepting = False
        self._stop = False
        self._threads: list[threading.Thread] = []

    # ---- control ---------------------------------------------------------------------------
    def start(self) -> None:
        with self._cv:
            self._accepting, self._stop = True, False
        self._threads = [threading.Thread(target=self._work, name="qln-inference", daemon=True),
                         threading.Thread(target=self._watch, name="qln-deadlines", daemon=True)]
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
            if self._running is not None:
                self._running.cancel.set()
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
            running = self._running
            if running is not None and self.is_safety(job) and not self.is_safety(running):
                running.preempt.set()
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
                self._running = job
            try:
                response = self._handler(job)
            except Preempted:
                job.preempt.clear()
                job.preemptions += 1
                self._on_event("preempted")
                with self._cv:
                    self._running = None
                    if self._accepting:
                        self._push(job)
                        continue
                job.finish(self._late(job, LateReason.SHUTTING_DOWN, ""))
                continue
            except Exception as exc:  # a handler bug must not kill the worker
                response = self._late(job, LateReason.INTERNAL, f"internal error: {exc!r}")
            with self._cv:
                self._running = None
            if not job.finish(response):
                self._on_event("answered_late_result_dropped")

    def _watch(self) -> None:
        """Answer jobs whose deadline has passed with the late fallback: queued ones, and the
        running one even while llama.cpp is busy (its late result is then dropped)."""
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
                running = self._running
                if running is not None and not running.answered:
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
