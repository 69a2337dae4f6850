"""The remote engine behind a circuit breaker, every attempt counted: ``engine.backend: remote``.

``attempt`` is one guarded remote call (the hybrid generator builds on it); ``generate`` is
the generator contract for the remote-only backend, where a failure raises RemoteError (an
EngineError, code MODEL_UNAVAILABLE) and the service answers with its fallback decision.

Verdicts for the breaker: a finished stream whose text is a decision is a success; an error, a
finished text that is not a decision, or a stream that ran out of its deadline (the server was
too slow), is a failure; a stream stopped by ``should_stop`` (cancel, preemption, the request's
own deadline) says nothing and only frees the probe slot.
"""
from __future__ import annotations

import logging
from typing import Callable

from quant_llm_node.engine.llama_engine import FINISH_INTERRUPTED, GenerationResult
from quant_llm_node.engine.remote import (FINISH_DEADLINE, RemoteEngine, RemoteError,
                                          RemoteErrorKind)
from quant_llm_node.engine.remote_dialect import clean_text
from quant_llm_node.serving.breaker import CircuitBreaker
from quant_llm_node.serving.remote_status import AnsweredBy, RemoteMonitor

log = logging.getLogger("quant_llm_node")


class GuardedRemote:
    """A RemoteEngine, its breaker and its monitor. ``validate(text)`` raises ValueError when a
    finished text is not a usable decision: such an answer is a failure too (INVALID_OUTPUT)."""

    def __init__(self, engine: RemoteEngine, breaker: CircuitBreaker, monitor: RemoteMonitor,
                 validate: Callable[[str], object] | None = None):
        self.engine = engine
        self.breaker = breaker
        self.monitor = monitor
        self.validate = validate

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    def close(self) -> None:
        self.engine.close()

    def warm(self, prefix: str) -> float:
        """Prime the server's prefix cache (ms); a failure is counted and re-raised."""
        if not self.breaker.allow():
            raise self._skipped()
        try:
            ms = self.engine.warm(prefix)
        except RemoteError as exc:
            self._failed(exc.kind, str(exc))
            raise
        self.breaker.record_success()
        return ms

    def attempt(self, prompt: str, max_tokens: int, grammar: str | None, temperature: float,
                should_stop: Callable[[str], bool] | None, on_text: Callable[[str, int], None] | None,
                min_room: int, deadline_s: float | None) -> GenerationResult:
        """One remote call under the breaker. Raises RemoteError: CIRCUIT_OPEN when the breaker
        skips it, INVALID_OUTPUT when the finished text is not a decision, the engine's kind
        otherwise (anything else the engine raises is the server's BAD_RESPONSE). A result that
        ran out of ``deadline_s`` comes back with finish reason ``deadline`` and is counted as a
        SLOW failure."""
        if not self.breaker.allow():
            raise self._skipped()
        try:
            result = self.engine.generate(prompt, max_tokens, grammar, temperature, should_stop,
                                          on_text, min_room=min_room, deadline_s=deadline_s)
        except RemoteError as exc:
            self._failed(exc.kind, str(exc))
            raise
        except Exception as exc:  # noqa: BLE001 — a server's answer never takes the node down
            log.exception("remote answer could not be read")
            err = RemoteError(RemoteErrorKind.BAD_RESPONSE, self.engine.redact(
                f"{self.engine.endpoint.origin}: unreadable answer ({type(exc).__name__})"))
            self._failed(err.kind, str(err))
            raise err from None
        if result.finish_reason == FINISH_DEADLINE:
            self._failed(RemoteErrorKind.SLOW,
                         f"no complete answer within {deadline_s:.3f} s ({result.completion_tokens} tokens)")
        elif result.finish_reason == FINISH_INTERRUPTED:
            self.breaker.release()
        else:
            self._judge(result)
        return result

    def _judge(self, result: GenerationResult) -> None:
        """A finished answer: a success when its text is a decision, else INVALID_OUTPUT."""
        if self.validate is not None:
            try:
                self.validate(result.text)
            except ValueError as exc:
                err = RemoteError(RemoteErrorKind.INVALID_OUTPUT, self.engine.redact(
                    clean_text(f"{self.engine.endpoint.origin}: not a decision: {exc}")))
                self._failed(err.kind, str(err))
                raise err from None
        self.breaker.record_success()
        self.monitor.record_remote_ok(result)

    def generate(self, prompt: str, max_tokens: int, grammar: str | None = None,
                 temperature: float = 0.0,
                 should_stop: Callable[[str], bool] | None = None,
                 on_text: Callable[[str, int], None] | None = None,
                 min_room: int = 1, deadline_s: float | None = None) -> GenerationResult:
        """The generator contract, remote only (see RemoteEngine.generate)."""
        self.monitor.record_request()
        try:
            result = self.attempt(prompt, max_tokens, grammar, temperature, should_stop, on_text,
                                  min_room, deadline_s)
        except RemoteError:
            self.monitor.record_answer(AnsweredBy.NONE)
            raise
        finished = result.finish_reason not in (FINISH_DEADLINE, FINISH_INTERRUPTED)
        self.monitor.record_answer(AnsweredBy.REMOTE if finished else AnsweredBy.NONE)
        return result

    def _skipped(self) -> RemoteError:
        snap = self.breaker.snapshot()
        exc = RemoteError(RemoteErrorKind.CIRCUIT_OPEN,
                          f"{self.engine.endpoint.origin} skipped: circuit open, next probe in "
                          f"{snap.retry_in_s:.1f} s")
        self.monitor.record_failure(exc.kind, str(exc))
        return exc

    def _failed(self, kind: RemoteErrorKind, message: str) -> None:
        self.breaker.record_failure()
        self.monitor.record_failure(kind, message)
