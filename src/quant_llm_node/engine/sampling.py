"""Token selection with llama.cpp's native samplers, grammar checked lazily.

A grammar sampler applied to the whole vocabulary at every step costs a pass over
~150k candidates. Like llama.cpp's own common sampler, we first take the greedy token
and ask the grammar about that single candidate; when the grammar rejects it, the next
highest candidates are asked one by one, and only when none of the top k is allowed is
the grammar applied to the whole vocabulary and the choice made again.

``forced_bytes`` serves jump-forward decoding: it probes the grammar with the 256 single-byte
tokens (one ``llama_sampler_apply`` over 257 candidates) to learn which bytes may come next,
and walks a clone of the grammar while exactly one byte is possible.
"""
from __future__ import annotations

import ctypes
import math
from typing import Callable, Optional, Sequence

import numpy as np

import llama_cpp


TOPK_FALLBACK = 64  # candidates tried one by one before a full grammar pass


class GrammarError(ValueError):
    """The GBNF grammar did not parse."""


def constrained_argmax_topk(logits: np.ndarray, allows: Callable[[int], bool], rejected: int,
                            k: int = TOPK_FALLBACK) -> Optional[int]:
    """The grammar-constrained greedy token, found among the k highest logits, or None.

    Equal to what a full pass (grammar over the whole vocabulary, then greedy: highest logit,
    lowest id on ties) returns, because every token outside the top k has a logit <= the
    k-th; when the winner ties the k-th logit, a lower id outside the set could tie it, so
    that case returns None too (caller does the full pass).
    """
    k = min(k, logits.shape[0])
    idx = np.argpartition(logits, -k)[-k:]
    vals = logits[idx]
    order = np.lexsort((idx, -vals))
    floor = vals.min()
    for j in order:
        t = int(idx[j])
        if t == rejected:
            continue
        if allows(t):
            return t if vals[j] > floor else None
    return None


class TokenSampler:
    """Greedy (or seeded temperature) sampling, optionally under a GBNF grammar.

    ``logits(row)`` returns the numpy view of an output row (``LlamaEngine.logits``, which
    caches the views); without it a view is made per call."""

    def __init__(self, model_ptr, ctx_ptr, n_vocab: int, grammar: str | None,
                 temperature: float = 0.0, seed: int = 0,
                 logits: Optional[Callable[[int], np.ndarray]] = None):
        self._setup(ctx_ptr, n_vocab, temperature <= 0.0, logits)
        vocab = llama_cpp.llama_model_get_vocab(model_ptr)
        params = llama_cpp.llama_sampler_chain_default_params()
        self._chain = llama_cpp.llama_sampler_chain_init(params)
        self._grammar = None
        if grammar:
            g = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
            if not g:
                self.close()
                raise GrammarError("the decision grammar failed to parse")
            llama_cpp.llama_sampler_chain_add(self._chain, g)
            self._grammar = g  # owned by the chain
        if self._greedy:
            llama_cpp.llama_sampler_chain_add(self._chain, llama_cpp.llama_sampler_init_greedy())
        else:
            llama_cpp.llama_sampler_chain_add(self._chain, llama_cpp.llama_sampler_init_temp(temperature))
            llama_cpp.llama_sampler_chain_add(self._chain, llama_cpp.llama_sampler_init_dist(seed))

    def _setup(self, ctx_ptr, n_vocab: int, greedy: bool,
               logits: Optional[Callable[[int], np.ndarray]]) -> None:
        self._chain = self._grammar = None
        self._ctx = ctx_ptr
        self._n_vocab = n_vocab
        self._greedy = greedy
        self._logits = logits or self._view
        self._one = llama_cpp.llama_token_data()
        self._one_arr = llama_cpp.llama_token_data_array(
            data=ctypes.pointer(self._one), size=1, selected=-1, sorted=False)
        self._one_ref = ctypes.byref(self._one_arr)
        self._apply, self._accept = llama_cpp.llama_sampler_apply, llama_cpp.llama_sampler_accept
        self._probe = None
        self.full_grammar_passes = 0
        self.topk_hits = 0
        self.topk = TOPK_FALLBACK

    def _view(self, row: int) -> np.ndarray:
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, row),
                                     shape=(self._n_vocab,))

    @property
    def greedy(self) -> bool:
        return self._greedy

    @property
    def has_grammar(self) -> bool:
        return self._grammar is not None

    def fork(self, ctx_ptr, n_vocab: int,
             logits: Optional[Callable[[int], np.ndarray]] = None) -> "TokenSampler":
        """A greedy sampler over another context (a draft model with the same tokenizer) whose
        grammar starts as a copy of this one's current state; close it after use."""
        twin = object.__new__(TokenSampler)
        twin._setup(ctx_ptr, n_vocab, True, logits)
        twin.topk = self.topk
        twin._chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if self._grammar is not None:
            twin._grammar = llama_cpp.llama_sampler_clone(self._grammar)
            llama_cpp.llama_sampler_chain_add(twin._chain, twin._grammar)  # owned by the chain
        llama_cpp.llama_sampler_chain_add(twin._chain, llama_cpp.llama_sampler_init_greedy())
        return twin

    def allows(self, token: int) -> bool:
        """Whether the grammar (in its current state) admits ``token`` next."""
        if self._grammar is None:
            return True
        one = self._one
        one.id, one.logit = token, 0.0
        self._one_arr.size = 1
        self._apply(self._grammar, self._one_ref)
        return one.logit != -math.inf

    def sample(self, i: int = -1) -> int:
        """Choose the next token from output row ``i`` of the last batch (-1: the last) and
        accept it."""
        if not self._greedy:
            return int(llama_cpp.llama_sampler_sample(self._chain, self._ctx, i))
        return self.sample_at(i, self._logits(i))

    def sample_at(self, i: int, logits: np.ndarray) -> int:
        """Greedy choice from output row ``i`` of the last batch (``logits`` is that row)."""
        token = int(logits.argmax())
        if self._grammar is None or self.allows(token):
            self._accept(self._chain, token)
            return token
        if self.topk > 0:
            t = constrained_argmax_topk(logits, self.allows, token, self.topk)
            if t is not None:
                self.topk_hits += 1
                self._accept(self._chain, t)
                return t
        self.full_grammar_passes += 1
        # llama_sampler_sample applies the whole chain and accepts the result.
        return int(llama_cpp.llama_sampler_sample(self._chain, self._ctx, i))

    def accept(self, token: int) -> None:
        """Advance the grammar (and the chain) over a token chosen elsewhere."""
        self._accept(self._chain, token)

    # ---- grammar-forced text (jump-forward) ------------------------------------------------
    def enable_forcing(self, byte_tokens: Sequence[int], eog_token: int) -> bool:
        """Prepare ``forced_bytes``: ``byte_tokens[b]`` is a token whose text is the single byte
        b (all 256 needed, so that the probe sees every possible next byte), ``eog_token`` an
        end-of-generation token. Returns whether forcing is available."""
        if self._grammar is None or eog_token < 0 or len(byte_tokens) != 256 or min(byte_tokens) < 0:
            return False
        n = 257
        self._probe = (llama_cpp.llama_token_data * n)()
        self._probe_np = np.ctypeslib.as_array(self._probe)
        self._probe_ids = np.array([*byte_tokens, eog_token], dtype=np.int32)
        self._probe_arr = llama_cpp.llama_token_data_array(
            data=ctypes.cast(self._probe, ctypes.POINTER(llama_cpp.llama_token_data)),
            size=n, selected=-1, sorted=False)
        self._probe_ref = ctypes.byref(self._probe_arr)
        self._byte_tokens = list(byte_tokens)
        self._common = (byte_tokens[ord(" ")], byte_tokens[ord("e")])
        return True

    def _next_bytes(self, grammar) -> tuple[np.ndarray, bool]:
        """(bytes the grammar admits next, whether it admits the end of generation)."""
        p = self._probe_np
        p["id"] = self._probe_ids
        p["logit"] = 0.0
        self._probe_arr.size, self._probe_arr.selected, self._probe_arr.sorted = 257, -1, False
        self._apply(grammar, self._probe_ref)
        ok = p["logit"] != -np.inf
        return np.flatnonzero(ok[:256]), bool(ok[256])

    def forced_bytes(self, limit: int = 96) -> tuple[bytes, bool]:
        """(span, ends): the text every continuation the grammar admits from here starts with
        (at most ``limit`` bytes), and whether after it the grammar admits nothing but the end
        of generation (so ``(b"", True)``: only the end is admitted now; always False when the
        span was cut at ``limit``). ``(b"", False)`` when the next byte is free, or when
        ``enable_forcing`` was not (successfully) called."""
        if self._probe is None:
            return b"", False
        if self.allows(self._common[0]) and self.allows(self._common[1]):
            return b"", False  # two bytes possible: nothing is forced (cheap test, free text)
        allowed, eog = self._next_bytes(self._grammar)
        if len(allowed) != 1 or eog:
            return b"", bool(eog and not len(allowed))
        out = bytearray()
        g = llama_cpp.llama_sampler_clone(self._grammar)
        try:
            while True:
                b = int(allowed[0])
                out.append(b)
                if len(out) >= limit:
                    return bytes(out), False
                self._accept(g, self._byte_tokens[b])
                allowed, eog = self._next_bytes(g)
                if len(allowed) != 1 or eog:
                    return bytes(out), bool(eog and not len(allowed))
        finally:
            llama_cpp.llama_sampler_free(g)

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = self._grammar = None

    def __del__(self):
        self.close()
