"""One OS thread for every llama.cpp computation in the process, serving work first.

llama.cpp's CPU backend is built with OpenMP (``OPENMP = 1`` in its system info). An OpenMP
thread team belongs to the thread that opens the parallel region, and its threads stay alive.
So loading a model on one thread (ROS configure), warming its prefix on another, and decoding on
a third (the scheduler's worker or the batch loop) leaves several teams in the process. Once
there are more OpenMP threads than cores, libgomp throttles its spin-waiting, every barrier of
every decode step sleeps and wakes, and decoding got ~40% slower here (26.7 → 14-16 tok/s
for the 0.5B model on 2 cores, with the same engine, prompts and settings). Running every
computation (model load, prompt evaluation, decode steps, whole generations) on one long-lived
thread keeps exactly one team, whichever thread asks.

``run(fn, ...)`` calls ``fn`` on that thread and returns its result (or raises its exception);
called from the compute thread itself, it simply calls ``fn``. Callbacks passed into a
generation (``should_stop``, ``on_text``) therefore run on the compute thread.

Background work (a model swap: checksum, model load, warm-ups) is one call queued from a thread
inside ``background()``. It starts in a gap between requests (``hold()`` is taken by each request
for its whole path) and calls ``pause_for_serving()`` often: after BACKGROUND_SLICE_S of work it
pauses while a request holds the thread, running that request's calls there and then, on this
same thread (so still one OpenMP team, and no Python work of the swap competing for the
interpreter lock meanwhile). Under load without any gap it goes on once per
BACKGROUND_MAX_WAIT_S. The model that is serving keeps its latency, and the swap still finishes.
"""
from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import threading
import time
from typing import Any, Callable, Iterator, TypeVar

T = TypeVar("T")
THREAD_NAME = "qln-llama-compute"
SERVING, BACKGROUND = 0, 1
BACKGROUND_MAX_WAIT_S = 5.0  # under load without pause, one background slice at most this often
BACKGROUND_SLICE_S = 0.1     # background work runs this long, then lets waiting requests go first


class _Call:
    __slots__ = ("fn", "args", "kwargs", "done", "result", "error", "queued")

    def __init__(self, fn, args, kwargs):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.queued = time.monotonic()


class _ComputeThread:
    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._heap: list[tuple[int, int, _Call]] = []
        self._seq = itertools.count()
        self._holds = 0
        self._last_background = 0.0
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._current = SERVING  # priority of the call running on the compute thread
        self._slice_start = 0.0  # when the running background call last went on after a pause
        self.background_calls, self.background_s, self.background_max_s = 0, 0.0, 0.0

    def _ensure(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._serve, name=THREAD_NAME, daemon=True)
            self._thread.start()

    def _next(self) -> tuple[int, _Call]:
        """The next call to run: serving first; background when nothing holds the thread, or
        when the last background call ran long enough ago."""
        with self._cv:
            while True:
                if self._heap:
                    prio, _, call = self._heap[0]
                    now = time.monotonic()
                    due = self._last_background + BACKGROUND_MAX_WAIT_S
                    if prio == SERVING or self._holds == 0 or now >= due:
                        heapq.heappop(self._heap)
                        if prio == BACKGROUND:
                            self._last_background = self._slice_start = now
                        return prio, call
                    self._cv.wait(max(0.0, due - now))
                else:
                    self._cv.wait()

    def _serve(self) -> None:
        while True:
            self._execute(*self._next())

    def _execute(self, prio: int, call: _Call) -> None:
        outer, self._current = self._current, prio
        t0 = time.monotonic()
        try:
            call.result = call.fn(*call.args, **call.kwargs)
        except BaseException as exc:  # noqa: BLE001 — handed back to the caller
            call.error = exc
        finally:
            self._current = outer
            if prio == BACKGROUND:
                took = time.monotonic() - t0
                self.background_calls += 1
                self.background_s += took
                self.background_max_s = max(self.background_max_s, took)
            call.done.set()

    def pause_for_serving(self) -> None:
        """On the compute thread, inside a long background call (a model swap's load, checksum
        and warm-ups, which call this often): once the call has run for BACKGROUND_SLICE_S since
        it last paused, pause it while a request holds the thread, running the request's calls
        here as they come; go on in a gap between requests (or after BACKGROUND_MAX_WAIT_S of
        continuous holds). A request waits at most one slice. Elsewhere: does nothing."""
        if not self.on_it() or self._current != BACKGROUND:
            return
        if time.monotonic() - self._slice_start < BACKGROUND_SLICE_S:
            return
        while True:
            with self._cv:
                now = time.monotonic()
                if self._heap and self._heap[0][0] == SERVING:
                    prio, _, call = heapq.heappop(self._heap)
                elif self._holds == 0 or now >= self._last_background + BACKGROUND_MAX_WAIT_S:
                    self._slice_start = self._last_background = now
                    return
                else:
                    self._cv.wait(self._last_background + BACKGROUND_MAX_WAIT_S - now)
                    continue
            self._execute(prio, call)

    def on_it(self) -> bool:
        return threading.current_thread() is self._thread

    def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        if self.on_it():
            return fn(*args, **kwargs)
        call = _Call(fn, args, kwargs)
        prio = BACKGROUND if getattr(self._local, "background", False) else SERVING
        with self._cv:
            self._ensure()
            heapq.heappush(self._heap, (prio, next(self._seq), call))
            self._cv.notify_all()
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    @contextlib.contextmanager
    def background(self) -> Iterator[None]:
        previous = getattr(self._local, "background", False)
        self._local.background = True
        try:
            yield
        finally:
            self._local.background = previous

    def in_background(self) -> bool:
        if self.on_it():
            return self._current == BACKGROUND
        return bool(getattr(self._local, "background", False))

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._cv:
            self._holds += 1
        try:
            yield
        finally:
            with self._cv:
                self._holds -= 1
                self._cv.notify_all()


_COMPUTE = _ComputeThread()


def run(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` on the process's llama.cpp compute thread."""
    return _COMPUTE.run(fn, *args, **kwargs)


def background() -> contextlib.AbstractContextManager:
    """Within it, this thread's compute calls are background work (see the module docstring)."""
    return _COMPUTE.background()


def in_background() -> bool:
    """Whether this thread's compute calls (on the compute thread: the call running now) are
    background work (then slice long ones)."""
    return _COMPUTE.in_background()


def background_stats() -> dict:
    """Background calls run so far, their total and longest time in seconds (a model load's
    serving calls run inside it are counted in its time)."""
    c = _COMPUTE
    return {"calls": c.background_calls, "total_s": round(c.background_s, 2),
            "longest_s": round(c.background_max_s, 3)}


def pause_for_serving() -> None:
    """A pause point of background work: see ``_ComputeThread.pause_for_serving``."""
    _COMPUTE.pause_for_serving()


def hold() -> contextlib.AbstractContextManager:
    """While held (a request on its way), background work waits."""
    return _COMPUTE.hold()


def computes(method: Callable[..., T]) -> Callable[..., T]:
    """Decorator: the method always runs on the compute thread."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        return _COMPUTE.run(method, *args, **kwargs)
    return wrapper
