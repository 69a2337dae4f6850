"""Token selection with llama.cpp's native samplers, grammar checked lazily.

A grammar sampler applied to the whole vocabulary at every step costs a pass over
~150k candidates. Like llama.cpp's own common sampler, we first take the greedy token
and ask the grammar about that single candidate; when the grammar rejects it, the next
highest candidates are asked one by one, and only when none of the top k is allowed is
the grammar applied to the whole vocabulary and the choice made again.
"""
from __future__ import annotations

import ctypes
import math
from typing import Callable, Optional

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
    """Greedy (or seeded temperature) sampling, optionally under a GBNF grammar."""

    def __init__(self, model_ptr, ctx_ptr, n_vocab: int, grammar: str | None,
                 temperature: float = 0.0, seed: int = 0):
        self._setup(ctx_ptr, n_vocab, temperature <= 0.0)
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

    def _setup(self, ctx_ptr, n_vocab: int, greedy: bool) -> None:
        self._chain = self._grammar = None
        self._ctx = ctx_ptr
        self._n_vocab = n_vocab
        self._greedy = greedy
        self._one = llama_cpp.llama_token_data()
        self._one_arr = llama_cpp.llama_token_data_array(
            data=ctypes.pointer(self._one), size=1, selected=-1, sorted=False)
        self.full_grammar_passes = 0
        self.topk_hits = 0
        self.topk = TOPK_FALLBACK
        self.steps = 0

    def fork(self, ctx_ptr, n_vocab: int) -> "TokenSampler":
        """A greedy sampler over another context (a draft model with the same tokenizer) whose
        grammar starts as a copy of this one's current state; close it after use."""
        twin = object.__new__(TokenSampler)
        twin._setup(ctx_ptr, n_vocab, True)
        twin.topk = self.topk
        twin._chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if self._grammar is not None:
            twin._grammar = llama_cpp.llama_sampler_clone(self._grammar)
            llama_cpp.llama_sampler_chain_add(twin._chain, twin._grammar)  # owned by the chain
        llama_cpp.llama_sampler_chain_add(twin._chain, llama_cpp.llama_sampler_init_greedy())
        return twin

    def _grammar_allows(self, token: int) -> bool:
        self._one.id, self._one.logit, self._one.p = token, 0.0, 0.0
        self._one_arr.size, self._one_arr.selected = 1, -1
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(self._one_arr))
        return not math.isinf(self._one.logit)

    def sample(self) -> int:
        """Choose the next token from the last evaluated position's logits and accept it."""
        if not self._greedy:
            self.steps += 1
            return int(llama_cpp.llama_sampler_sample(self._chain, self._ctx, -1))
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(self._ctx, -1), shape=(self._n_vocab,))
        return self.sample_at(-1, logits)

    def sample_at(self, i: int, logits: np.ndarray) -> int:
        """Greedy choice from output row ``i`` of the last batch (``logits`` is that row)."""
        self.steps += 1
        token = int(logits.argmax())
        if self._grammar is None or self._grammar_allows(token):
            llama_cpp.llama_sampler_accept(self._chain, token)
            return token
        if self.topk > 0:
            t = constrained_argmax_topk(logits, self._grammar_allows, token, self.topk)
            if t is not None:
                self.topk_hits += 1
                llama_cpp.llama_sampler_accept(self._chain, t)
                return t
        self.full_grammar_passes += 1
        # llama_sampler_sample applies the whole chain and accepts the result.
        return int(llama_cpp.llama_sampler_sample(self._chain, self._ctx, i))

    def accept(self, token: int) -> None:
        """Advance the grammar (and the chain) over a token chosen elsewhere."""
        llama_cpp.llama_sampler_accept(self._chain, token)

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = self._grammar = None

    def __del__(self):
        self.close()
