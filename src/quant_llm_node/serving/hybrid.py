"""``engine.backend: hybrid``: the site's server first, the robot's own model when it fails.

The server gets ``deadline_share`` of the time the request has left (``deadline_s``, passed by
the service); the local generator answers when the server is unreachable, slow, errors, is
skipped by the open circuit, or finishes with text that does not parse as a decision. A
stream stopped by the request itself (cancel, preemption, its deadline) is returned as it is:
no local run for a request nobody waits for.

The result says who answered (``backend``: remote | local). When the local model answers
after a failed remote try, the time that try took is added to ``first_token_ms`` and
``total_ms`` (the planner waited for it); ``prompt_ms`` and ``decode_ms`` stay the local
model's. Partial text (``on_text``) is the server's while it streams; when the local model
takes over after the server streamed something, ``on_text("", 0)`` says that text is void, and
the local model's partial text follows from its first token. A consumer that derives state
from partial text (the service's safety-checked stream view) must start over on a text that
does not continue the previous one.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Protocol

from quant_llm_node.engine.llama_engine import FINISH_INTERRUPTED, GenerationResult
from quant_llm_node.engine.remote import BACKEND_REMOTE, FINISH_DEADLINE, RemoteError
from quant_llm_node.serving.remote_guard import GuardedRemote
from quant_llm_node.serving.remote_status import AnsweredBy

BACKEND_LOCAL = "local"
RESTART_TEXT = ""      # on_text(RESTART_TEXT, 0): partial text so far is void, a new answer follows


class LocalGenerator(Protocol):
    """The local engine (or a speculative decoder over it): the service's Generator."""

    def generate(self, prompt: str, max_tokens: int, grammar: str | None = None,
                 temperature: float = 0.0,
                 should_stop: Callable[[str], bool] | None = None,
                 on_text: Callable[[str, int], None] | None = None,
                 min_room: int = 1) -> GenerationResult: ...


class HybridGenerator:
    """Remote first within a share of the deadline, then local; the generator contract."""

    def __init__(self, remote: GuardedRemote, local: LocalGenerator, deadline_share: float):
        """``remote`` judges its finished texts (its ``validate``): one that is not a decision
        is a failure, and the local model answers."""
        if not 0.0 < deadline_share <= 1.0:
            raise ValueError("deadline_share must be in (0, 1]")
        self.remote = remote
        self.local = local
        self.deadline_share = deadline_share
        self.monitor = remote.monitor

    @property
    def model_id(self) -> str:
        return self.remote.model_id

    def close(self) -> None:
        """Close the remote side; the local generator belongs to whoever made it."""
        self.remote.close()

    def generate(self, prompt: str, max_tokens: int, grammar: str | None = None,
                 temperature: float = 0.0,
                 should_stop: Callable[[str], bool] | None = None,
                 on_text: Callable[[str, int], None] | None = None,
                 min_room: int = 1, deadline_s: float | None = None) -> GenerationResult:
        """``deadline_s``: seconds the request has left when the call starts; without it the
        server is bounded only by its timeouts and the request's ``should_stop``."""
        self.monitor.record_request()
        t0 = time.perf_counter()
        budget = deadline_s * self.deadline_share if deadline_s is not None else None
        streamed = []

        def remote_text(text: str, n_tokens: int) -> None:
            streamed.append(n_tokens)
            on_text(text, n_tokens)

        try:
            result = self.remote.attempt(prompt, max_tokens, grammar, temperature, should_stop,
                                         remote_text if on_text is not None else None, min_room,
                                         budget)
        except RemoteError:
            pass  # counted by the guard (a text that is no decision too); the local model answers
        else:
            if result.finish_reason == FINISH_INTERRUPTED:
                self.monitor.record_answer(AnsweredBy.NONE)
                return result
            if result.finish_reason != FINISH_DEADLINE:
                self.monitor.record_answer(AnsweredBy.REMOTE)
                return dataclasses.replace(result, backend=BACKEND_REMOTE)
        waited_ms = (time.perf_counter() - t0) * 1e3
        if streamed:
            on_text(RESTART_TEXT, 0)   # the server's partial text is void: the answer restarts
        try:
            local = self.local.generate(prompt, max_tokens, grammar, temperature, should_stop,
                                        on_text, min_room=min_room)
        except Exception:
            self.monitor.record_answer(AnsweredBy.NONE)
            raise
        answered = local.finish_reason != FINISH_INTERRUPTED
        self.monitor.record_answer(AnsweredBy.LOCAL if answered else AnsweredBy.NONE)
        return dataclasses.replace(local, backend=BACKEND_LOCAL,
                                   first_token_ms=local.first_token_ms + waited_ms,
                                   total_ms=local.total_ms + waited_ms)
