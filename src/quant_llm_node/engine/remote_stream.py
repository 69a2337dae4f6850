"""A blocking network stream read on its own thread, handed over a queue.

Why a thread: a socket read blocks until bytes come or the read timeout fires, so a caller
that reads the stream itself cannot notice a cancel, a preemption or a deadline while the
server is silent. Here the caller waits on a queue in short slices and checks its stop
conditions between them. When it gives up, ``abandon()`` runs the interrupt the reader
registered (the remote engine's shuts the socket down, which wakes the blocked read and
tells the server at once) and the caller returns without waiting for the reader.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Callable, Generic, Optional, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class StreamEnd:
    """The stream is over: ``error`` is None when it ended normally."""

    error: Optional[BaseException] = None


class StreamReader(Generic[T]):
    """Runs ``produce(emit, reader)`` on a daemon thread.

    ``produce`` reads the stream, calls ``emit(item)`` per item and returns when the stream
    ends or ``reader.stopped`` is set; once its connection is open it registers how to break
    it off with ``reader.set_interrupt``. Whatever it raises is handed to the caller as the
    ``StreamEnd.error`` of the last item.
    """

    def __init__(self, produce: Callable[[Callable[[T], None], "StreamReader[T]"], None],
                 name: str = "remote-stream"):
        self._produce = produce
        self._items: queue.Queue = queue.Queue()
        self.stopped = threading.Event()
        self._interrupt: Optional[Callable[[], None]] = None
        self._interrupt_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "StreamReader[T]":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._produce(self._items.put, self)
        except BaseException as exc:  # handed over, never lost on this thread
            self._items.put(StreamEnd(exc))
        else:
            self._items.put(StreamEnd())

    def next(self, timeout_s: float) -> T | StreamEnd | None:
        """The next item, a StreamEnd, or None when nothing came within ``timeout_s``."""
        try:
            return self._items.get(timeout=max(timeout_s, 0.0))
        except queue.Empty:
            return None

    def set_interrupt(self, interrupt: Optional[Callable[[], None]]) -> None:
        """Called by ``produce`` on the reader thread: how to break its open connection off
        (None once the connection is released). Runs at once if the caller gave up already."""
        with self._interrupt_lock:
            self._interrupt = interrupt
            if interrupt is not None and self.stopped.is_set():
                _quietly(interrupt)

    def abandon(self) -> None:
        """Stop reading: break the open connection off now, and let the reader go. Under the
        lock, so a connection the reader has already let go of is never touched."""
        with self._interrupt_lock:
            if self.stopped.is_set():
                return
            self.stopped.set()
            if self._interrupt is not None:
                _quietly(self._interrupt)

    @property
    def alive(self) -> bool:
        """Whether the reader still holds the connection."""
        return self._thread.is_alive()


def _quietly(interrupt: Callable[[], None]) -> None:
    try:
        interrupt()
    except OSError:
        pass  # already closed: nothing to break off
