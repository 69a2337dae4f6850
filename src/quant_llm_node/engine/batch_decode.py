"""Continuous batching: several generations decoded as sequences of one ``llama_decode``.

Sequence 0 of the engine's KV cache holds the cached static prefix (``LlamaEngine.warm``). A
request joins as sequence s in 1..n_parallel: its longest common prefix with sequence 0 is
shared (``LlamaEngine.seq_share``: the cells get a second sequence tag; nothing is evaluated or
copied), the rest of its prompt is evaluated in the next batch beside the other sequences'
decode tokens, and from then on every step decodes one token per running sequence in ONE
``llama_decode``. Each sequence has its own sampler (grammar state), stop check and text
callback; a sequence that ends frees its slot at once, and a waiting request joins at the next
step (continuous batching, as llama.cpp's server does with ``-np``).

Per sequence the loop is the engine's loop (``LlamaEngine.generate``): the same choices in the
same order. Jump-forward works per sequence as in the engine: the grammar's forced end is
skipped, and a forced span (JSON keys and punctuation, the rest of an enum value) rides in the
step as draft rows after the sequence's pending token, each kept only while the constrained
greedy choice at its row equals it (a rejected draft's KV cells are removed again). A sequence
alone in a step takes as many drafts as the engine would ("exact": only as many as round like
single steps, ``LlamaEngine.exact_rows``; "on": the whole span); a step that several sequences
share is a multi-row batch anyway, which llama.cpp's CPU kernels round differently from single
rows (see llama_engine's docstring), so there every sequence's whole forced span rides along:
on a CPU, where decode is compute-bound, a row in a wide step costs a fraction of a single
step, and on a GPU a step of many rows costs about one. A near tie can flip under multi-row
kernels; with one sequence running, outputs are those of the engine's loop.

KV cells: the cache is unified (n_ctx cells for all sequences). A request is admitted only when
its unshared prompt tokens plus its token bound fit beside sequence 0 and the running
sequences' reservations, so a step never runs out of cells.
"""
from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from quant_llm_node.engine.llama_engine import (
    FINISH_INTERRUPTED, FINISH_LENGTH, FINISH_STOP, FORCED_MAX_TOKENS, JF_OFF, JF_ON, EngineError,
    GenerationResult, LlamaEngine, context_room, jump_forward_mode)


@dataclass
class SeqRequest:
    """One generation asked of the batch (the arguments of ``Generator.generate``)."""

    prompt: str
    max_tokens: int
    grammar: Optional[str] = None
    temperature: float = 0.0
    should_stop: Optional[Callable[[str], bool]] = None
    on_text: Optional[Callable[[str, int], None]] = None
    min_room: int = 1
    submitted: float = field(default_factory=time.perf_counter)


class _Seq:
    """A running sequence: its slot, sampler, pending token and text so far."""

    def __init__(self, seq_id: int, req: SeqRequest, prompt_tokens: list[int], cached: int,
                 max_tokens: int, sampler, forcing: bool, reserve: int):
        self.id, self.req, self.sampler, self.forcing = seq_id, req, sampler, forcing
        self.n_prompt, self.cached, self.max_tokens, self.reserve = len(prompt_tokens), cached, max_tokens, reserve
        self.todo = prompt_tokens[cached:]   # prompt tokens still to evaluate
        self.pos = cached                    # next position of this sequence
        self.pending: Optional[int] = None   # chosen, not in the KV cache yet
        self.span = b""                      # grammar-forced bytes after the pending token
        self.drafts: list[int] = []          # the span's tokens riding in this step
        self.row = -1                        # batch index of its (first) logits row in this step
        self.text, self.n_out, self.finish = "", 0, FINISH_LENGTH
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.t_prompt = self.t_first = 0.0
        self.steps = 0
        self.forced_drafted = self.forced_kept = 0
        self.sizes: dict[int, int] = {}
        self.done = False
        self.ticket = None  # the caller's handle (serving/batch_loop.py)

    def result(self, t_end: float) -> GenerationResult:
        t0 = self.req.submitted
        t_first = self.t_first or t_end
        return GenerationResult(
            text=self.text, prompt_tokens=self.n_prompt, cached_tokens=self.cached,
            completion_tokens=self.n_out, prompt_ms=((self.t_prompt or t_end) - t0) * 1e3,
            first_token_ms=(t_first - t0) * 1e3, decode_ms=(t_end - t_first) * 1e3,
            total_ms=(t_end - t0) * 1e3, finish_reason=self.finish, decode_steps=self.steps,
            grammar_full_passes=self.sampler.full_grammar_passes,
            grammar_topk_hits=self.sampler.topk_hits, decode_calls=self.steps,
            forced_drafted=self.forced_drafted, forced_tokens=self.forced_kept,
            batch_sizes=dict(self.sizes))


class BatchDecoder:
    """Decodes up to ``n_parallel`` sequences together; driven by one thread (the engine's
    owner). ``admit`` a request when ``has_slot``, then ``step`` until it is returned done."""

    def __init__(self, engine: LlamaEngine, n_parallel: int, jump_forward: bool | str = False):
        import llama_cpp
        if engine.n_seq_max < n_parallel + 1:
            raise EngineError("CONFIG_INVALID", f"the context holds {engine.n_seq_max} sequences; "
                                                f"batching {n_parallel} needs n_parallel set at load")
        self.engine = engine
        self.n_parallel = n_parallel
        mode = jump_forward_mode(jump_forward)
        self._exact = mode != JF_OFF  # the grammar's forced end is skipped, forced spans batched
        # drafts of a sequence alone in a step ("exact": what rounds like single steps, probed
        # once the prefix is cached); in a shared step every sequence's whole forced span
        self._on = mode == JF_ON
        # most draft rows per sequence in a shared step (0: the pending token only)
        self.shared_drafts = FORCED_MAX_TOKENS if self._exact else 0
        self.capacity = engine.batch_capacity
        self._llama_batch_free = llama_cpp.llama_batch_free
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._batch = llama_cpp.llama_batch_init(self.capacity, 0, 1)
        for i in range(self.capacity):
            self._batch.n_seq_id[i] = 1
        self._free_ids = list(range(n_parallel, 0, -1))
        self.active: list[_Seq] = []
        self._reserved = 0

    # ---- admission -------------------------------------------------------------------------
    @property
    def has_slot(self) -> bool:
        return bool(self._free_ids)

    @property
    def running(self) -> int:
        return len(self.active)

    def free_cells(self) -> int:
        """KV cells neither sequence 0 nor a running sequence's reservation holds."""
        return self.engine.n_ctx - self.engine.n_tokens - self._reserved

    def admit(self, req: SeqRequest) -> Optional[_Seq]:
        """Start ``req`` as a new sequence, or None when its cells do not fit beside the running
        ones (try again after a step). Raises EngineError (CONTEXT_OVERFLOW, bad grammar)."""
        e = self.engine
        if not self._free_ids:
            return None
        tokens = e.tokenize(req.prompt)
        max_tokens = min(req.max_tokens, context_room(len(tokens), e.n_ctx, req.min_room))
        cached = e.cached_prefix(tokens)
        need = len(tokens) - cached + max_tokens
        free = self.free_cells()
        if need > free:
            if self.active:
                return None
            # alone and still short of cells (sequence 0 holds more than a prefix): bound it
            max_tokens = free - (len(tokens) - cached)
            if max_tokens < max(1, req.min_room):
                raise EngineError("CONTEXT_OVERFLOW", f"prompt needs {len(tokens) - cached} new "
                                                      f"KV cells; {free} are free")
            need = free
        sampler = e.sampler(req.grammar, req.temperature)
        forcing = bool(self._exact and req.grammar and sampler.greedy
                       and sampler.enable_forcing(e.byte_tokens(), e.eog_token()))
        seq_id = self._free_ids.pop()
        e.seq_share(seq_id, cached)
        seq = _Seq(seq_id, req, tokens, cached, max_tokens, sampler, forcing, need)
        self._reserved += need
        self.active.append(seq)
        return seq

    # ---- one step --------------------------------------------------------------------------
    def step(self) -> list[_Seq]:
        """One ``llama_decode`` for every running sequence (a decode token each and its forced
        drafts, plus prompt chunks of joining ones); returns the sequences that ended. Raises
        EngineError, after which ``abort`` must be called."""
        b, cap, n = self._batch, self.capacity, 0
        tok, pos, seq_ids, want = b.token, b.pos, b.seq_id, b.logits
        stepping = [s for s in self.active if s.pending is not None]
        shared = len(stepping) > 1 or any(s.todo for s in self.active)
        most = self.shared_drafts if shared else self._alone_drafts()
        spare = cap - len(stepping)  # rows left for drafts once every pending token has one
        for s in stepping:
            s.drafts = []
            if s.span and most > 0 and spare > 0:
                room = min(most, spare, s.max_tokens - s.n_out)
                if room > 0:
                    s.drafts = self.engine.tokenize(s.span, False, False)[:room]
                    spare -= len(s.drafts)
            s.span = b""
            s.row = n
            for i, t in enumerate((s.pending, *s.drafts)):
                tok[n + i], pos[n + i], seq_ids[n + i][0], want[n + i] = t, s.pos + i, s.id, 1
            n += 1 + len(s.drafts)
        filling: list[tuple[_Seq, int]] = []
        for s in self.active:
            if not s.todo or n >= cap:
                continue
            k = min(len(s.todo), cap - n)
            for i in range(k):
                tok[n + i], pos[n + i], seq_ids[n + i][0], want[n + i] = s.todo[i], s.pos + i, s.id, 0
            n += k
            s.row = n - 1 if k == len(s.todo) else -1
            if s.row >= 0:
                want[s.row] = 1
            filling.append((s, k))
        if n == 0:
            return self._collect()
        b.n_tokens = n
        self.engine.decode_batch(b)
        size = len(stepping) + sum(1 for s, _ in filling if s.row >= 0)
        for s in stepping:
            s.steps += 1
            s.sizes[size] = s.sizes.get(size, 0) + 1
            if s.drafts:
                self._verify(s)
            else:
                s.pos += 1
                self._choose(s, self._sample(s, s.row))
        now = time.perf_counter()
        for s, k in filling:
            s.pos += k
            s.todo = s.todo[k:]
            if s.todo:
                continue
            s.t_prompt = now
            if s.max_tokens <= 0:
                s.done = True
                continue
            token = self._sample(s, s.row)
            s.t_first = time.perf_counter()
            self._choose(s, token)
        return self._collect()

    def _alone_drafts(self) -> int:
        if not self._exact:
            return 0
        return FORCED_MAX_TOKENS if self._on else self.engine.exact_rows() - 1

    def _verify(self, s: _Seq) -> None:
        """Keep the drafts the constrained greedy choice agrees with, row by row (as the
        engine's loop does); the first disagreement is the next pending token. The KV cells of
        rejected drafts are removed."""
        n = len(s.drafts)
        s.forced_drafted += n
        s.pos += 1  # the pending token
        for i, d in enumerate(s.drafts):
            y = self._sample(s, s.row + i)
            if y != d:
                self._drop_after(s)
                self._choose(s, y)
                return
            s.forced_kept += 1
            if self._is_eog(self.engine.vocab, d):
                s.finish, s.done = FINISH_STOP, True
                return
            s.pos += 1
            s.n_out += 1
            s.text += s.decoder.decode(self.engine.token_bytes(d))
            if self._emit(s):
                self._drop_after(s)
                return
        self._choose(s, self._sample(s, s.row + n))

    def _drop_after(self, s: _Seq) -> None:
        """Forget the sequence's KV cells from its next position on (rejected drafts)."""
        self.engine.seq_clear(s.id, s.pos)

    def _sample(self, s: _Seq, row: int) -> int:
        if s.sampler.greedy:
            return s.sampler.sample_at(row, self.engine.logits(row))
        return s.sampler.sample(row)

    def _choose(self, s: _Seq, token: int) -> None:
        """The engine loop's handling of a chosen token (llama_engine.generate)."""
        if self._is_eog(self.engine.vocab, token):
            s.finish, s.done = FINISH_STOP, True
            return
        s.n_out += 1
        s.text += s.decoder.decode(self.engine.token_bytes(token))
        if self._emit(s):
            return
        if s.forcing:
            span, ends = s.sampler.forced_bytes() if self.shared_drafts else s.sampler.forced_bytes(2)
            if ends and len(span) <= 1:
                s.finish, s.done = FINISH_STOP, True
                if span:
                    s.n_out += 1
                    s.text += s.decoder.decode(span)
                    self._emit(s)
                return
            s.span = span
        s.pending = token

    def _emit(self, s: _Seq) -> bool:
        """Stream the text; True when the sequence ends here (stopped or at its bound)."""
        req = s.req
        if req.on_text is not None:
            req.on_text(s.text, s.n_out)
        if req.should_stop is not None and req.should_stop(s.text):
            s.finish, s.done = FINISH_INTERRUPTED, True
        elif s.n_out >= s.max_tokens:
            s.done = True
        return s.done

    def _collect(self) -> list[_Seq]:
        ended = [s for s in self.active if s.done]
        for s in ended:
            self._release(s)
            s.text += s.decoder.decode(b"", final=True)
        return ended

    def _release(self, s: _Seq) -> None:
        self.active.remove(s)
        self._reserved -= s.reserve
        self.engine.seq_clear(s.id)
        s.sampler.close()
        self._free_ids.append(s.id)

    def abort(self) -> list[_Seq]:
        """Drop every running sequence (after a failed decode); returns them."""
        dropped = list(self.active)
        for s in dropped:
            self._release(s)
        return dropped

    def close(self) -> None:
        self.abort()
        if self._batch is not None:
            self._llama_batch_free(self._batch)
            self._batch = None

