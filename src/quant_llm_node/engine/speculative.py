"""Greedy speculative decoding on top of a loaded LlamaEngine (no ROS, llama.cpp C API only).

Each step feeds the target ``[pending, d1..dj]`` in ONE batched ``llama_decode`` with logits
for every position, then walks the drafts in order: the target's own greedy choice at row i
(grammar checked lazily as in ``sampling.TokenSampler``: the argmax alone first, then the top
64 one by one, a full pass over the vocabulary only if none fits) must equal ``d(i+1)`` for
the draft to be accepted. The first disagreement becomes the next pending token, so the output
is the target's greedy output. Rejected positions are removed from the KV cache
(``llama_memory_seq_rm``) of the target and, in draft mode, of the draft; ``n_tokens`` and
``input_ids`` of both ``Llama`` objects stay in step with their KV, so prefix reuse and a
later plain ``LlamaEngine.generate`` keep working.

Exactness caveat: llama.cpp's CPU backend rounds differently for a 1-token batch (ggml
vec_dot) than for larger ones (llamafile sgemm for n >= 2, repacked gemm), so logits of a
batched verification differ from single-token decoding by up to ~0.4 here, and a near-tie can
flip. The plain engine shows the same when a prompt's tail is evaluated in another batch shape
(e.g. the whole prompt already cached). A build with ``-DGGML_LLAMAFILE=OFF`` and a model
loaded with ``use_extra_bufts=False`` was batch-invariant up to 5 tokens here (k <= 4).

Draft sources:
- ``lookup``: prompt-lookup decoding: the longest (``ngram`` down to ``ngram_min``) suffix of
  prompt + generated tokens that occurred before proposes the ``k`` tokens that followed it.
- ``draft``: a smaller model with the same tokenizer (Qwen2.5 0.5B for 1.5B), greedy, under a
  clone of the target's grammar state when a grammar is used.

With ``k=0`` (or no lookup match) a step is a plain single-token decode through a
preallocated batch: the lean greedy loop proposed for LlamaEngine.

Not thread-safe; greedy only (``temperature > 0`` falls back to ``target.generate``).
"""
from __future__ import annotations

import codecs
import ctypes
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

import llama_cpp
from quant_llm_node.engine.llama_engine import (
    FINISH_INTERRUPTED, FINISH_LENGTH, FINISH_STOP, EngineError, GenerationResult, LlamaEngine,
    context_room)
from quant_llm_node.engine.sampling import TOPK_FALLBACK, TokenSampler

MODES = ("lookup", "draft")


@dataclass
class SpeculativeResult(GenerationResult):
    """GenerationResult plus acceptance statistics.

    ``decode_steps`` counts tokens committed to the target's KV after the first token (so
    ``decode_tps`` is effective tokens/s, comparable with LlamaEngine); ``target_batches`` counts
    the target's llama_decode calls after the prompt.
    """

    drafted: int = 0
    accepted: int = 0
    batch_sizes: dict = field(default_factory=dict)  # target batch size -> count
    target_batches: int = 0
    draft_ms: float = 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


class _Batch:
    """A preallocated llama_batch for one sequence (seq 0)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.batch = llama_cpp.llama_batch_init(capacity, 0, 1)
        b = self.batch
        self._tok, self._pos, self._logits = b.token, b.pos, b.logits
        for i in range(capacity):
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0

    def decode(self, ctx, tokens, pos0: int, all_logits: bool) -> None:
        n = len(tokens)
        if n > self.capacity:
            raise ValueError(f"batch of {n} > capacity {self.capacity}")
        tok, pos, lg = self._tok, self._pos, self._logits
        for i in range(n):
            tok[i] = tokens[i]
            pos[i] = pos0 + i
            lg[i] = all_logits
        lg[n - 1] = 1
        self.batch.n_tokens = n
        rc = llama_cpp.llama_decode(ctx, self.batch)
        if rc != 0:
            raise EngineError("DECODE_FAILED", f"llama_decode returned {rc}")

    def close(self) -> None:
        if self.batch is not None:
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None

    def __del__(self):
        self.close()


class _Logits:
    """Numpy views of output rows, cached per row pointer (as_array costs ~10 us per call)."""

    def __init__(self, ctx, n_vocab: int):
        self._ctx, self._n = ctx, n_vocab
        self._views: dict[int, np.ndarray] = {}

    def row(self, i: int) -> np.ndarray:
        ptr = llama_cpp.llama_get_logits_ith(self._ctx, i)
        addr = ctypes.cast(ptr, ctypes.c_void_p).value
        if not addr:
            raise EngineError("DECODE_FAILED", f"no logits for batch row {i}")
        v = self._views.get(addr)
        if v is None:
            if len(self._views) > 64:
                self._views.clear()
            v = self._views[addr] = np.ctypeslib.as_array(ptr, shape=(self._n,))
        return v


class NgramIndex:
    """Prompt-lookup draft source: n-gram -> position after its latest earlier occurrence."""

    def __init__(self, tokens: list[int], ngram_max: int = 3, ngram_min: int = 1):
        self.nmax, self.nmin = max(1, ngram_max), max(1, min(ngram_min, ngram_max))
        self.hist: list[int] = []
        self._maps = {n: {} for n in range(self.nmin, self.nmax + 1)}
        for t in tokens:
            self.append(t)

    def append(self, token: int) -> None:
        h = self.hist
        p = len(h)  # the n-grams ending at p are now followed by `token`
        for n, m in self._maps.items():
            if p >= n:
                m[tuple(h[p - n:p])] = p
        h.append(token)

    def propose(self, k: int) -> list[int]:
        h = self.hist
        L = len(h)
        for n in range(self.nmax, self.nmin - 1, -1):
            if L < n:
                continue
            p = self._maps[n].get(tuple(h[L - n:]))
            if p is not None:
                return h[p:p + k]
        return []


class SpeculativeDecoder:
    """Greedy speculative decoding for a loaded target LlamaEngine."""

    def __init__(self, target_engine: LlamaEngine, mode: str = "lookup",
                 draft_engine: Optional[LlamaEngine] = None, k: int = 4, ngram: int = 3,
                 ngram_min: int = 1, grammar_topk: int = TOPK_FALLBACK, min_draft: int = 1):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if mode == "draft":
            if draft_engine is None or not draft_engine.loaded:
                raise ValueError("draft mode needs a loaded draft_engine")
            tv = llama_cpp.llama_model_get_vocab(target_engine._llm.model)
            dv = llama_cpp.llama_model_get_vocab(draft_engine._llm.model)
            if llama_cpp.llama_vocab_n_tokens(tv) != llama_cpp.llama_vocab_n_tokens(dv):
                raise ValueError("draft and target vocabularies differ")
        if not target_engine.loaded:
            raise ValueError("target engine is not loaded")
        self.target, self.draft = target_engine, draft_engine
        self.mode, self.k = mode, max(0, int(k))
        self.ngram, self.ngram_min = ngram, ngram_min
        self.grammar_topk = grammar_topk
        # Drafts shorter than this are dropped (plain 1-token step). On AVX2 the repacked Q4_K
        # kernels run 4 columns at a time and the rest one by one, so a 2- or 3-token batch
        # costs ~2-3 single decodes while 4 costs ~2.4-3: k=3, min_draft=3 keeps batches at 1 or 4.
        self.min_draft = max(1, int(min_draft))
        self._tb = _Batch(self.k + 1)
        self._tl = _Logits(target_engine._llm.ctx, target_engine._llm.n_vocab())
        self._db = self._dl = None
        if mode == "draft":
            # Catch-up feed: up to k+1 tokens (accepted drafts the draft never saw + pending).
            self._db = _Batch(self.k + 2)
            self._dl = _Logits(draft_engine._llm.ctx, draft_engine._llm.n_vocab())
            self._dvocab = llama_cpp.llama_model_get_vocab(draft_engine._llm.model)

    def close(self) -> None:
        for b in (self._tb, self._db):
            if b is not None:
                b.close()

    # ---- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _trim(llm, n: int) -> None:
        """Drop KV positions >= n of seq 0 and mark the Llama object as holding n tokens."""
        if not llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(llm.ctx), 0, n, -1):
            raise EngineError("KV_ROLLBACK_FAILED", f"could not remove KV positions >= {n}")
        llm.n_tokens = n

    def _draft_tokens(self, hist: list[int], j: int, target_sampler: TokenSampler) -> list[int]:
        """j greedy tokens from the draft model after hist; its KV ends up holding hist + drafts[:-1].

        The draft samples with a fork of the target's sampler (already past ``hist``): under a
        copy of its grammar state, so it proposes what the constrained target can accept.
        """
        dllm = self.draft._llm
        n = dllm.n_tokens
        # The draft's KV must be a prefix of hist (trimmed after every step).
        feed = hist[n:]
        while feed:
            chunk = feed[: self._db.capacity]
            self._db.decode(dllm.ctx, chunk, n, False)
            dllm.input_ids[n:n + len(chunk)] = chunk
            n += len(chunk)
            feed = feed[len(chunk):]
        dllm.n_tokens = n
        sampler = target_sampler.fork(dllm.ctx, dllm.n_vocab())
        out: list[int] = []
        try:
            while True:
                t = sampler.sample_at(-1, self._dl.row(-1))
                out.append(t)
                if len(out) >= j or llama_cpp.llama_vocab_is_eog(self._dvocab, t):
                    return out
                self._db.decode(dllm.ctx, [t], n, False)
                dllm.input_ids[n] = t
                n += 1
                dllm.n_tokens = n
        finally:
            sampler.close()

    # ---- generation ------------------------------------------------------------------------
    def generate(self, prompt: str, max_tokens: int, grammar: str | None = None,
                 temperature: float = 0.0,
                 should_stop: Callable[[str], bool] | None = None,
                 on_text: Callable[[str, int], None] | None = None,
                 min_room: int = 1) -> GenerationResult:
        """Same contract as LlamaEngine.generate; returns a SpeculativeResult when greedy."""
        if temperature > 0.0:
            return self.target.generate(prompt, max_tokens, grammar, temperature, should_stop, on_text,
                                        min_room)
        eng = self.target
        if eng._llm is None:
            raise EngineError("MODEL_UNAVAILABLE", "no model is loaded")
        llm = eng._llm
        ctx = llm.ctx
        t0 = time.perf_counter()
        tokens = eng.tokenize(prompt)
        n_ctx = llm.n_ctx()
        max_tokens = min(max_tokens, context_room(len(tokens), n_ctx, min_room))
        sampler = TokenSampler(llm.model, ctx, llm.n_vocab(), grammar, 0.0, eng.settings.seed)
        sampler.topk = self.grammar_topk
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        is_eog = llama_cpp.llama_vocab_is_eog
        detok = llm.detokenize
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, n_out, finish = "", 0, FINISH_LENGTH
        drafted = accepted = batches = 0
        sizes: dict[int, int] = {}
        draft_ms = 0.0
        t_first = t0
        lookup = self.mode == "lookup" and self.k > 0
        use_draft = self.mode == "draft" and self.k > 0
        try:
            cached, rest = eng._prepare(tokens)
            llm.eval(rest)
            if use_draft:
                dllm = self.draft._llm
                _, drest = self.draft._prepare(tokens)
                if len(drest) > 1:
                    dllm.eval(drest[:-1])  # the last prompt token is fed with the first pending
            t_prompt = time.perf_counter()
            hist = list(tokens)
            index = NgramIndex(tokens, self.ngram, self.ngram_min) if lookup else None
            pending = sampler.sample_at(-1, self._tl.row(-1))
            t_first = time.perf_counter()
            n_past = llm.n_tokens
            while True:
                # `pending` is the target's choice for position n_past (not in the KV yet).
                if is_eog(vocab, pending):
                    finish = FINISH_STOP
                    break
                n_out += 1
                text += decoder.decode(detok([pending], special=False))
                if on_text is not None:
                    on_text(text, n_out)
                if should_stop is not None and should_stop(text):
                    finish = FINISH_INTERRUPTED
                    break
                if n_out >= max_tokens:
                    break
                hist.append(pending)
                if index is not None:
                    index.append(pending)
                j = min(self.k, max_tokens - n_out, n_ctx - n_past - 1)
                if use_draft:
                    j = min(j, self.draft._llm.n_ctx() - len(hist))
                drafts: list[int] = []
                if j > 0:
                    if index is not None:
                        drafts = index.propose(j)
                        if len(drafts) < min(self.min_draft, j):
                            drafts = []
                    elif use_draft:
                        td = time.perf_counter()
                        drafts = self._draft_tokens(hist, j, sampler)
                        draft_ms += (time.perf_counter() - td) * 1e3
                        d_valid = len(hist)  # draft KV: hist + drafts[:-1]
                batch = [pending] + drafts
                end = n_past + len(batch)  # KV positions written by this step
                self._tb.decode(ctx, batch, n_past, True)
                batches += 1
                sizes[len(batch)] = sizes.get(len(batch), 0) + 1
                llm.input_ids[n_past:n_past + len(batch)] = batch
                n_past += 1
                drafted += len(drafts)
                row, stop = 0, False
                for d in drafts:
                    y = sampler.sample_at(row, self._tl.row(row))
                    row += 1
                    if y != d:
                        pending = y
                        break
                    accepted += 1
                    # d is the target's own choice: commit it exactly as the plain loop would.
                    if is_eog(vocab, d):
                        finish, stop = FINISH_STOP, True
                        break
                    n_out += 1
                    n_past += 1
                    hist.append(d)
                    if index is not None:
                        index.append(d)
                    text += decoder.decode(detok([d], special=False))
                    if on_text is not None:
                        on_text(text, n_out)
                    if should_stop is not None and should_stop(text):
                        finish, stop = FINISH_INTERRUPTED, True
                        break
                    if n_out >= max_tokens:
                        stop = True
                        break
                else:
                    pending = sampler.sample_at(row, self._tl.row(row))
                if n_past < end:
                    self._trim(llm, n_past)  # roll back the rejected drafts
                else:
                    llm.n_tokens = n_past
                if use_draft and drafts:
                    keep = min(len(hist), d_valid + len(drafts) - 1)
                    self._trim(self.draft._llm, keep)
                if stop:
                    break
            text += decoder.decode(b"", final=True)
        except BaseException:
            # KV and n_tokens may disagree after a failed decode: start the next call clean.
            for e in (eng, self.draft if use_draft else None):
                if e is not None and e._llm is not None:
                    e.reset_cache()
            raise
        finally:
            sampler.close()
        t_end = time.perf_counter()
        if n_out == 0:
            t_first = t_end
        return SpeculativeResult(
            text=text, prompt_tokens=len(tokens), cached_tokens=cached, completion_tokens=n_out,
            prompt_ms=(t_prompt - t0) * 1e3, first_token_ms=(t_first - t0) * 1e3,
            decode_ms=(t_end - t_first) * 1e3, total_ms=(t_end - t0) * 1e3,
            finish_reason=finish, decode_steps=llm.n_tokens - len(tokens),
            grammar_full_passes=sampler.full_grammar_passes, grammar_topk_hits=sampler.topk_hits,
            drafted=drafted, accepted=accepted, target_batches=batches, draft_ms=draft_ms,
            batch_sizes=sizes)
