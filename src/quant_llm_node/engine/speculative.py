"""Greedy speculative decoding on top of a loaded LlamaEngine (no ROS, public engine API only).

The draft/verify loop is ``LlamaEngine.generate`` itself (one loop for plain, jump-forward and
speculative decoding); this module supplies the drafts. Each step feeds the target
``[pending, d1..dj]`` in ONE batched ``llama_decode`` with logits for every position, then
walks the drafts in order: the target's own greedy choice at row i (grammar checked lazily as
in ``sampling.TokenSampler``: the argmax alone first, then the top 64 one by one, a full pass
over the vocabulary only if none fits) must equal ``d(i+1)`` for the draft to be accepted. The
first disagreement becomes the next pending token, so the output is the target's greedy output.
Rejected positions are removed from the KV cache (``LlamaEngine.truncate``) of the target and,
in draft mode, of the draft, so prefix reuse and a later plain ``generate`` keep working.

With jump-forward on (``EngineSettings.jump_forward``, under a grammar), a step whose next text
the grammar forces drafts the forced tokens instead of asking the draft source.

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

With ``k=0`` a step is a plain single-token decode: the engine's own loop.

Not thread-safe; greedy only (``temperature > 0`` is plain sampling through ``target.generate``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Callable, Optional

from quant_llm_node.engine.llama_engine import GenerationResult, LlamaEngine
from quant_llm_node.engine.sampling import TokenSampler

MODES = ("lookup", "draft")


@dataclass
class SpeculativeResult(GenerationResult):
    """GenerationResult plus acceptance statistics.

    ``decode_steps`` counts tokens committed to the target's KV after the first token (so
    ``decode_tps`` is effective tokens/s, comparable with LlamaEngine); ``target_batches`` counts
    the target's llama_decode calls after the prompt. ``drafted``/``accepted`` count the draft
    source's tokens only (grammar-forced ones are ``forced_drafted``/``forced_tokens``).
    """

    drafted: int = 0
    accepted: int = 0
    target_batches: int = 0
    draft_ms: float = 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


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


class _Stats:
    def __init__(self):
        self.drafted = self.accepted = 0
        self.ms = 0.0

    def settle(self, hist: list[int], drafted: int, accepted: int) -> None:
        self.drafted += drafted
        self.accepted += accepted


class LookupDrafter(_Stats):
    """Drafts from an n-gram index over the prompt and the committed output."""

    def __init__(self, k: int, ngram: int, ngram_min: int, min_draft: int):
        super().__init__()
        self.k, self.ngram, self.ngram_min, self.min_draft = k, ngram, ngram_min, min_draft
        self.index: Optional[NgramIndex] = None
        self._seen = 0

    def begin(self, prompt_tokens: list[int]) -> None:
        self.index = NgramIndex(prompt_tokens, self.ngram, self.ngram_min)
        self._seen = len(prompt_tokens)

    def propose(self, hist: list[int], j: int, sampler: TokenSampler) -> list[int]:
        for t in hist[self._seen:]:
            self.index.append(t)
        self._seen = len(hist)
        j = min(j, self.k)
        drafts = self.index.propose(j)
        return drafts if len(drafts) >= min(self.min_draft, j) else []

    def abort(self) -> None:
        self.index = None


class ModelDrafter(_Stats):
    """Drafts greedily with a smaller model under a fork of the target's grammar state.

    Invariant: the draft's KV cache holds a prefix of the committed history."""

    def __init__(self, engine: LlamaEngine, k: int):
        super().__init__()
        self.engine, self.k = engine, k

    def begin(self, prompt_tokens: list[int]) -> None:
        _, rest = self.engine.prepare(prompt_tokens)
        if len(rest) > 1:
            self.engine.eval(rest[:-1])  # the last prompt token is fed with the first pending

    def propose(self, hist: list[int], j: int, sampler: TokenSampler) -> list[int]:
        eng = self.engine
        j = min(j, self.k, eng.n_ctx - len(hist))
        if j <= 0:
            return []
        t0 = time.perf_counter()
        feed, cap = hist[eng.n_tokens:], eng.batch_capacity
        for i in range(0, len(feed), cap):
            eng.decode(feed[i:i + cap], False)
        s = eng.fork_sampler(sampler)
        out: list[int] = []
        try:
            while True:
                t = s.sample_at(-1, eng.logits(-1))
                out.append(t)
                if len(out) >= j or eng.is_eog(t):
                    break
                eng.decode((t,), False)
        finally:
            s.close()
            self.ms += (time.perf_counter() - t0) * 1e3
        return out  # the draft's KV: hist + out[:-1]

    def settle(self, hist: list[int], drafted: int, accepted: int) -> None:
        super().settle(hist, drafted, accepted)
        keep = min(len(hist), self.engine.n_tokens)
        if keep < self.engine.n_tokens:
            self.engine.truncate(keep)

    def abort(self) -> None:
        if self.engine.loaded:
            self.engine.reset_cache()


class SpeculativeDecoder:
    """Greedy speculative decoding for a loaded target LlamaEngine."""

    def __init__(self, target_engine: LlamaEngine, mode: str = "lookup",
                 draft_engine: Optional[LlamaEngine] = None, k: int = 4, ngram: int = 3,
                 ngram_min: int = 1, min_draft: int = 1):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if not target_engine.loaded:
            raise ValueError("target engine is not loaded")
        if mode == "draft":
            if draft_engine is None or not draft_engine.loaded:
                raise ValueError("draft mode needs a loaded draft_engine")
            if not target_engine.same_vocab(draft_engine):
                raise ValueError("draft and target vocabularies differ")
        self.target, self.draft = target_engine, draft_engine
        self.mode, self.k = mode, max(0, int(k))
        self.ngram, self.ngram_min = ngram, ngram_min
        # Drafts shorter than this are dropped (plain 1-token step). On AVX2 the repacked Q4_K
        # kernels run 4 columns at a time and the rest one by one, so a 2- or 3-token batch
        # costs ~2-3 single decodes while 4 costs ~2.4-3: k=3, min_draft=3 keeps batches at 1 or 4.
        self.min_draft = max(1, int(min_draft))

    def close(self) -> None:
        """Nothing to free (batches belong to the engines); kept for callers."""

    def _drafter(self):
        if self.k == 0:
            return None
        if self.mode == "draft":
            return ModelDrafter(self.draft, self.k)
        return LookupDrafter(self.k, self.ngram, self.ngram_min, self.min_draft)

    def generate(self, prompt: str, max_tokens: int, grammar: str | None = None,
                 temperature: float = 0.0,
                 should_stop: Callable[[str], bool] | None = None,
                 on_text: Callable[[str, int], None] | None = None,
                 min_room: int = 1, *, jump_forward: bool | None = None) -> GenerationResult:
        """Same contract as LlamaEngine.generate; returns a SpeculativeResult when greedy."""
        if temperature > 0.0:
            return self.target.generate(prompt, max_tokens, grammar, temperature, should_stop, on_text,
                                        min_room)
        drafter = self._drafter()
        res = self.target.generate(prompt, max_tokens, grammar, 0.0, should_stop, on_text, min_room,
                                   jump_forward=jump_forward, drafter=drafter)
        base = {f.name: getattr(res, f.name) for f in fields(GenerationResult)}
        st = drafter or _Stats()
        return SpeculativeResult(**base, drafted=st.drafted, accepted=st.accepted,
                                 target_batches=res.decode_calls, draft_ms=st.ms)
