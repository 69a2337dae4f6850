"""Hot model swap: a new model is verified and loaded in the background while the old one keeps
answering, then put in place between two requests, under the live settings in force when it
lands (serving/model_holder.py). Its checksum, load and warm-ups run as background work on the
compute thread, in slices between requests, so the model in place keeps its latency meanwhile.

When both models cannot fit in memory at once, the old one is drained (the fallback answers,
marked MODEL_UNAVAILABLE, during the gap), freed, and the new one loaded. A new model that fails
to load leaves the old one serving (reloaded, in the drain case), and the failure is kept for the
ERROR diagnostic.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from enum import Enum
from typing import Callable, Optional

from quant_llm_node.config import Config
from quant_llm_node.engine import compute_thread
from quant_llm_node.serving.assembly import Assembly, ConfigureError, assemble
from quant_llm_node.serving.model_holder import ModelHolder

log = logging.getLogger("quant_llm_node")

MEMORY_BUDGET_EXCEEDED = "MEMORY_BUDGET_EXCEEDED"


class SwapPhase(str, Enum):
    IDLE = "idle"
    LOADING = "loading"        # the new model loads beside the serving one
    DRAINED = "drained"        # both do not fit: the old one is gone, the fallback answers
    DONE = "done"
    FAILED = "failed"          # the new model did not load; the old one serves


@dataclass(frozen=True)
class SwapStatus:
    """What diagnostics say about the last swap."""

    phase: SwapPhase = SwapPhase.IDLE
    target: str = ""           # model.name asked for
    serving: str = ""          # model id answering now
    error: str = ""
    both_loaded: bool = True   # False when the swap had to drain (both did not fit)
    duration_ms: float = 0.0


class ModelSwapper:
    """Runs one swap at a time on a background thread, through the model holder (the one owner
    of the serving model). ``on_change`` is called after every phase change (e.g. to publish
    diagnostics)."""

    def __init__(self, holder: ModelHolder,
                 on_change: Callable[[SwapStatus], None] = lambda s: None,
                 load: Callable[..., Assembly] = assemble):
        self._holder = holder
        self._on_change = on_change
        self._load = load
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self.status = SwapStatus(serving=holder.pipeline.model_id)

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, cfg: Config) -> bool:
        """Begin swapping to ``cfg``'s model; False when a swap is already running."""
        with self._lock:
            if self.busy:
                return False
            self._thread = threading.Thread(target=self._run, args=(cfg,), name="qln-model-swap",
                                            daemon=True)
            self._phase(SwapPhase.LOADING, target=cfg.model.name, error="", both_loaded=True)
            self._thread.start()
            return True

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _phase(self, phase: SwapPhase, **changes) -> None:
        self.status = replace(self.status, phase=phase, serving=self._holder.pipeline.model_id,
                              **changes)
        self._on_change(self.status)

    def _run(self, cfg: Config) -> None:
        t0 = time.monotonic()
        try:
            self._swap(cfg, t0)
        except Exception as exc:  # noqa: BLE001 — a swap never dies stuck at loading
            log.exception("model swap failed unexpectedly")
            self._fail(f"INTERNAL_ERROR: {type(exc).__name__}: {exc}", t0)

    def _swap(self, cfg: Config, t0: float) -> None:
        old = self._holder.assembly
        try:
            new = self._background(cfg, resident_bytes=old.memory_bytes, reuse=old)
        except ConfigureError as exc:
            if exc.code != MEMORY_BUDGET_EXCEEDED:
                self._fail(f"{exc.code}: {exc}", t0)
                return
            new = self._drain_and_load(cfg, old, exc, t0)
            if new is None:
                return
        else:
            self._holder.install(new)
            old.hand_over(new)
            old.close()
        self._phase(SwapPhase.DONE, duration_ms=(time.monotonic() - t0) * 1e3)
        log.info("model swap: %s serving", new.model_id)

    def _drain_and_load(self, cfg: Config, old: Assembly, first: ConfigureError,
                        t0: float) -> Optional[Assembly]:
        """Both do not fit: answer with the fallback (under the live settings) while the old
        model is replaced."""
        log.warning("model swap: both models do not fit (%s); draining the old one", first)
        self._holder.install(None, old.pipeline().without_model())
        old.close()
        self._phase(SwapPhase.DRAINED, both_loaded=False)
        try:
            new = self._background(cfg)
        except ConfigureError as exc:
            self._restore(old.cfg, f"{exc.code}: {exc}", t0)
            return None
        self._holder.install(new)
        return new

    def _restore(self, old_cfg: Config, error: str, t0: float) -> None:
        try:
            back = self._background(old_cfg)
        except ConfigureError as exc:
            self._fail(f"{error}; the old model did not reload either ({exc.code}: {exc})", t0)
            return
        self._holder.install(back)
        self._fail(error, t0)

    def _background(self, cfg: Config, **kwargs) -> Assembly:
        """Load ``cfg``'s models as background work on the compute thread: it starts between
        two requests and lets every request go first (engine/compute_thread.py)."""
        with compute_thread.background():
            return compute_thread.run(self._load, cfg, **kwargs)

    def _fail(self, error: str, t0: float) -> None:
        log.error("model swap failed: %s", error)
        self._phase(SwapPhase.FAILED, error=error, duration_ms=(time.monotonic() - t0) * 1e3)

