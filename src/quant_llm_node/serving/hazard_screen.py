"""The hazard screen at run time: one forward pass of the screen model per request.

``HazardScreen`` owns the screen's context (a SideContext over the decision model's weights, or
over a model of its own) and its prompt (reasoning/screen.py); ``check`` returns a
``ScreenVerdict``. The verdict goes into the safety rules with the request, before the decision
is generated, so that a streamed action is already checked against it.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

from quant_llm_node.engine import compute_thread
from quant_llm_node.engine.llama_engine import WARM_SLICE, EngineError, LlamaEngine
from quant_llm_node.reasoning.prompt import plain_renderer
from quant_llm_node.reasoning.screen import LABEL_SAFE, LABEL_UNSAFE, ScreenPrompt, ScreenVerdict
from quant_llm_node.reasoning.types import NavRequest

SCREEN_CTX_TOKENS = 3072   # instructions and examples (~650 tokens) plus the longest request
SCREEN_BATCH = 128         # a request's turn is one or two chunks; a small batch keeps the
                           # compute buffer (reserved for a batch of logits) small


def screen_memory_bytes(info, shared: bool) -> int:
    """What the screen adds: its context's KV cache and compute buffer, plus its weights when
    it does not share the decision model's."""
    from quant_llm_node.deploy import estimate_memory
    est = estimate_memory(info, n_ctx=SCREEN_CTX_TOKENS, n_batch=SCREEN_BATCH, overhead_mb=0.0)
    return est.total_bytes - (est.model_bytes if shared else 0)


class HazardScreen:
    """Asks ``engine``'s model (in a context of its own) whether a request describes a hazard."""

    def __init__(self, engine: LlamaEngine, margin: float, owns_engine: bool = False,
                 render: Optional[Callable] = None, clear_margin: float = float("-inf")):
        self.engine = engine
        self.margin = margin
        self.clear_margin = clear_margin
        self.owns_engine = owns_engine  # a screen model of its own, freed with the screen
        self.model_id = engine.model_id
        self.prompt = ScreenPrompt(render or engine.chat_renderer() or plain_renderer)
        self._unsafe = _first_token(engine, LABEL_UNSAFE)
        self._safe = _first_token(engine, LABEL_SAFE)
        if self._unsafe == self._safe:
            raise EngineError("CONFIG_INVALID", "the screen's labels share their first token")
        self.context = engine.side_context(SCREEN_CTX_TOKENS, SCREEN_BATCH)
        self.prefix_tokens = engine.count_tokens(self.prompt.static_prefix)

    def warm(self) -> float:
        """Evaluate the static prefix (instructions and examples); returns milliseconds."""
        t0 = time.perf_counter()
        tokens = self.engine.tokenize(self.prompt.static_prefix)
        if compute_thread.in_background():  # a model swap: slices with pause points between
            for end in range(WARM_SLICE, len(tokens), WARM_SLICE):
                compute_thread.pause_for_serving()
                self.context.last_logits(tokens[:end])
        self.context.last_logits(tokens)
        return (time.perf_counter() - t0) * 1e3

    def check(self, request: NavRequest, margin: Optional[float] = None,
              clear_margin: Optional[float] = None) -> ScreenVerdict:
        """The verdict on ``request`` against the margins (default: the configured ones). Raises
        EngineError (e.g. CONTEXT_OVERFLOW for a request too long for the screen's context)."""
        t0 = time.perf_counter()
        # the request's turn is always evaluated from the end of the static prefix: the same
        # request gets the same verdict, whatever the request before it was
        logits = self.context.last_logits(self.engine.tokenize(self.prompt.build(request)),
                                          reuse=self.prefix_tokens)
        score = float(logits[self._unsafe] - logits[self._safe])
        verdict = ScreenVerdict(score, False, (time.perf_counter() - t0) * 1e3)
        return verdict.at(self.margin if margin is None else margin,
                          self.clear_margin if clear_margin is None else clear_margin)

    def close(self) -> None:
        self.context.close()
        if self.owns_engine:
            self.engine.close()


def _first_token(engine: LlamaEngine, label: str) -> int:
    return engine.tokenize(label, add_bos=False, special=False)[0]
