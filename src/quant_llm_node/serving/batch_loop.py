"""The engine's one owner thread when requests are batched (``engine.n_parallel`` > 1).

``BatchLoop`` is a Generator: any number of worker threads call ``generate``, which hands the
request to the loop thread and blocks until its sequence ends. The loop thread alone drives
the engine (``Llama`` is not thread-safe): it admits waiting requests into free slots of the
``BatchDecoder``, runs one batched step, and answers the sequences that ended. Stop checks and
text callbacks run on the loop thread, once per token of their own sequence, as they do on the
worker thread without batching. A request still waiting for a slot is asked ``should_stop("")``
at every step, so a cancel, a preemption or a deadline ends it without a slot.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable, Optional

from quant_llm_node.engine import compute_thread
from quant_llm_node.engine.batch_decode import BatchDecoder, SeqRequest
from quant_llm_node.engine.llama_engine import FINISH_INTERRUPTED, EngineError, GenerationResult, LlamaEngine

log = logging.getLogger("quant_llm_node")


class _Ticket:
    """A caller waiting for one generation."""

    def __init__(self, req: SeqRequest):
        self.req = req
        self.result: Optional[GenerationResult] = None
        self.error: Optional[BaseException] = None
        self.done = threading.Event()

    def answer(self, result: GenerationResult | None = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


class BatchLoop:
    """Generator over a LlamaEngine loaded with ``n_parallel`` > 1: decodes the concurrent
    requests as sequences of one batch. ``close()`` stops the thread (the engine stays)."""

    def __init__(self, engine: LlamaEngine, n_parallel: int, jump_forward: bool | str = False):
        self.engine = engine
        self.n_parallel = n_parallel
        self._decoder = BatchDecoder(engine, n_parallel, jump_forward)
        self._cv = threading.Condition()
        self._waiting: deque[_Ticket] = deque()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="qln-batch", daemon=True)
        self._thread.start()

    @property
    def decoder(self) -> BatchDecoder:
        """The batch decoder this loop's thread drives (read its settings; benchmarks set
        ``shared_drafts`` between rounds)."""
        return self._decoder

    # ---- Generator -------------------------------------------------------------------------
    def generate(self, prompt: str, max_tokens: int, grammar: Optional[str] = None,
                 temperature: float = 0.0,
                 should_stop: Optional[Callable[[str], bool]] = None,
                 on_text: Optional[Callable[[str, int], None]] = None,
                 min_room: int = 1) -> GenerationResult:
        """Blocks until the request's sequence ends; raises EngineError as the engine does."""
        ticket = _Ticket(SeqRequest(prompt, max_tokens, grammar, temperature, should_stop,
                                    on_text, min_room))
        with self._cv:
            if self._closed:
                raise EngineError("MODEL_UNAVAILABLE", "the batch loop is closed")
            self._waiting.append(ticket)
            self._cv.notify_all()
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result

    def close(self) -> None:
        """Answer waiting and running requests with MODEL_UNAVAILABLE and join the thread."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()

    # ---- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        d = self._decoder
        try:
            while True:
                with self._cv:
                    while not self._closed and not self._waiting and not d.running:
                        self._cv.wait()
                    if self._closed:
                        break
                    waiting = list(self._waiting)
                for ticket in self._admit(waiting):
                    with self._cv:
                        self._waiting.remove(ticket)
                if not d.running:
                    with self._cv:
                        if self._waiting and not self._closed:
                            self._cv.wait(0.005)  # nothing fits yet (cannot last: nothing runs)
                    continue
                try:
                    ended = compute_thread.run(d.step)  # sampling and callbacks there too
                except EngineError as exc:
                    log.error("batched decode failed: %s", exc)
                    for seq in d.abort():
                        seq.ticket.answer(error=exc)
                    self.engine.reset_cache()  # sequence 0's prefix is evaluated again next time
                    continue
                now = time.perf_counter()
                for seq in ended:
                    seq.ticket.answer(seq.result(now))
        finally:
            closed = EngineError("MODEL_UNAVAILABLE", "the batch loop stopped")
            for seq in d.abort():
                seq.ticket.answer(error=closed)
            with self._cv:
                self._closed = True
                left, self._waiting = list(self._waiting), deque()
            for ticket in left:
                ticket.answer(error=closed)
            d.close()

    def _admit(self, waiting: list[_Ticket]) -> list[_Ticket]:
        """Start waiting requests in arrival order while slots and cells allow; returns the
        tickets that left the queue (started, stopped while waiting, or failed)."""
        d, gone = self._decoder, []
        blocked = False
        for ticket in waiting:
            req = ticket.req
            if req.should_stop is not None and req.should_stop(""):
                gone.append(ticket)
                now = time.perf_counter()
                ticket.answer(GenerationResult(
                    text="", prompt_tokens=0, cached_tokens=0, completion_tokens=0, prompt_ms=0.0,
                    first_token_ms=(now - req.submitted) * 1e3, decode_ms=0.0,
                    total_ms=(now - req.submitted) * 1e3, finish_reason=FINISH_INTERRUPTED))
                continue
            if blocked or not d.has_slot:
                blocked = True
                continue
            try:
                seq = d.admit(req)
            except Exception as exc:  # noqa: BLE001 — e.g. CONTEXT_OVERFLOW: this caller's error
                gone.append(ticket)
                ticket.answer(error=exc)
                continue
            if seq is None:
                blocked = True  # first come, first served: later ones wait behind it
                continue
            seq.ticket = ticket
            gone.append(ticket)
        return gone
