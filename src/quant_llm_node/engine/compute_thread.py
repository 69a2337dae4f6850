"""One OS thread for every llama.cpp computation in the process.

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
"""
from __future__ import annotations

import functools
import queue
import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")
THREAD_NAME = "qln-llama-compute"


class _Call:
    __slots__ = ("fn", "args", "kwargs", "done", "result", "error")

    def __init__(self, fn, args, kwargs):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class _ComputeThread:
    def __init__(self) -> None:
        self._queue: "queue.SimpleQueue[_Call]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _ensure(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name=THREAD_NAME, daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            call = self._queue.get()
            try:
                call.result = call.fn(*call.args, **call.kwargs)
            except BaseException as exc:  # noqa: BLE001 — handed back to the caller
                call.error = exc
            finally:
                call.done.set()

    def on_it(self) -> bool:
        return threading.current_thread() is self._thread

    def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        if self.on_it():
            return fn(*args, **kwargs)
        self._ensure()
        call = _Call(fn, args, kwargs)
        self._queue.put(call)
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result


_COMPUTE = _ComputeThread()


def run(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` on the process's llama.cpp compute thread."""
    return _COMPUTE.run(fn, *args, **kwargs)


def on_compute_thread() -> bool:
    """Whether the caller is the compute thread."""
    return _COMPUTE.on_it()


def computes(method: Callable[..., T]) -> Callable[..., T]:
    """Decorator: the method always runs on the compute thread."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        return _COMPUTE.run(method, *args, **kwargs)
    return wrapper
