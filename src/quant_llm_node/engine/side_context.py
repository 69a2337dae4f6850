"""A second llama.cpp context over a loaded model: short scoring passes beside the decisions.

The hazard screen asks its model one question per request and reads the logits of the answer's
first token. When the screen's model is the decision model, a second context over the same
``llama_model`` serves it: the weights are shared (only this context's KV cache and compute
buffers are new), and the decision context keeps its cached static prefix.

Like the engine, a side context is driven from the process's one compute thread
(engine/compute_thread.py). It keeps the tokens of its last prompt in its KV cache, so a static
prefix shared by every prompt (the screen's instructions and examples) is evaluated once.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from quant_llm_node.engine.compute_thread import computes
from quant_llm_node.engine.llama_engine import EngineError, _Batch, common_prefix

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from quant_llm_node.engine.llama_engine import LlamaEngine


class SideContext:
    """A context of ``n_ctx`` tokens over ``engine``'s model (sharing its weights)."""

    def __init__(self, engine: "LlamaEngine", n_ctx: int, n_batch: int):
        import llama_cpp
        from llama_cpp import _internals
        self.engine = engine
        llm = engine.llama
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = min(n_batch, n_ctx)
        params.n_threads = params.n_threads_batch = engine.settings.threads
        params.flash_attn_type = llm.context_params.flash_attn_type
        params.type_k = params.type_v = llm.context_params.type_k
        self._context = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self._ctx = self._context.ctx
        self._n_ctx = int(llama_cpp.llama_n_ctx(self._ctx))
        self._n_vocab = engine.n_vocab
        self._batch = _Batch(min(n_batch, self._n_ctx))
        self._cached: list[int] = []

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @computes
    def last_logits(self, tokens: Sequence[int], reuse: int | None = None) -> "np.ndarray":
        """Evaluate ``tokens`` (reusing the longest prefix kept from the last call, at most
        ``reuse`` tokens) and return a copy of the last position's logits. Capping the reuse at a
        static prefix makes the logits independent of the previous call: the rest is always
        evaluated in the same chunks, and llama.cpp's batched kernels round by chunk. Raises
        EngineError (CONTEXT_OVERFLOW, DECODE_FAILED)."""
        import llama_cpp
        import numpy as np
        tokens = list(tokens)
        if not tokens:
            raise EngineError("DECODE_FAILED", "nothing to evaluate")
        if len(tokens) > self._n_ctx:
            raise EngineError("CONTEXT_OVERFLOW", f"{len(tokens)} tokens; the screen context "
                                                  f"holds {self._n_ctx}")
        common = common_prefix(self._cached, tokens,
                               len(tokens) - 1 if reuse is None else min(reuse, len(tokens) - 1))
        mem = llama_cpp.llama_get_memory(self._ctx)
        if not llama_cpp.llama_memory_seq_rm(mem, 0, common, -1):
            llama_cpp.llama_memory_clear(mem, True)
            common = 0
        self._cached = tokens[:common]
        cap = self._batch.capacity
        try:
            for i in range(common, len(tokens), cap):
                chunk = tokens[i:i + cap]
                self._batch.decode(self._ctx, chunk, i, False)
                self._cached.extend(chunk)
        except EngineError:
            llama_cpp.llama_memory_clear(mem, True)
            self._cached = []
            raise
        ptr = llama_cpp.llama_get_logits_ith(self._ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()

    @computes
    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()
            self._batch = None
        if self._context is not None:
            self._context.close()
            self._context = None
