"""Requests in flight against one pipeline, and the swap that waits for them to leave."""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator


class Turns:
    """Any number of requests hold a turn at once (one per scheduler slot); ``exclusive``
    waits until none does and keeps new ones out meanwhile (a model swap)."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._inside = 0
        self._closed = False

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        with self._cv:
            while self._closed:
                self._cv.wait()
            self._inside += 1
        try:
            yield
        finally:
            with self._cv:
                self._inside -= 1
                self._cv.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cv:
            while self._closed:
                self._cv.wait()
            self._closed = True
            while self._inside:
                self._cv.wait()
        try:
            yield
        finally:
            with self._cv:
                self._closed = False
                self._cv.notify_all()
