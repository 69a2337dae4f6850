"""Token selection with llama.cpp's native samplers, grammar checked lazily.

A grammar sampler applied to the whole vocabulary at every step costs a pass over
~150k candidates. Like llama.cpp's own common sampler, we first take the greedy token
and ask the grammar about that single candidate; only when the grammar rejects it is
the grammar applied to the whole vocabulary and the choice made again.
"""
from __future__ import annotations

import ctypes
import math

import numpy as np

import llama_cpp


class GrammarError(ValueError):
    """The GBNF grammar did not parse."""


class TokenSampler:
    """Greedy (or seeded temperature) sampling, optionally under a GBNF grammar."""

    def __init__(self, model_ptr, ctx_ptr, n_vocab: int, grammar: str | None,
                 temperature: float = 0.0, seed: int = 0):
        self._chain = self._grammar = None
        self._ctx = ctx_ptr
        self._n_vocab = n_vocab
        self._greedy = temperature <= 0.0
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
        self._one = llama_cpp.llama_token_data()
        self._one_arr = llama_cpp.llama_token_data_array(
            data=ctypes.pointer(self._one), size=1, selected=-1, sorted=False)
        self.full_grammar_passes = 0
        self.steps = 0

    def _grammar_allows(self, token: int) -> bool:
        self._one.id, self._one.logit, self._one.p = token, 0.0, 0.0
        self._one_arr.size, self._one_arr.selected = 1, -1
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(self._one_arr))
        return not math.isinf(self._one.logit)

    def sample(self) -> int:
        """Choose the next token from the last evaluated position's logits and accept it."""
        self.steps += 1
        if self._greedy:
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(self._ctx, -1), shape=(self._n_vocab,))
            token = int(logits.argmax())
            if self._grammar is None or self._grammar_allows(token):
                llama_cpp.llama_sampler_accept(self._chain, token)
                return token
        self.full_grammar_passes += self._grammar is not None
        # llama_sampler_sample applies the whole chain and accepts the result.
        return int(llama_cpp.llama_sampler_sample(self._chain, self._ctx, -1))

    def accept(self, token: int) -> None:
        """Advance the grammar (and the chain) over a token chosen elsewhere."""
        llama_cpp.llama_sampler_accept(self._chain, token)

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = self._grammar = None

    def __del__(self):
        self.close()
