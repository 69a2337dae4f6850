"""Picks what generates decisions from ``engine.backend``: the local generator, the remote
engine behind its breaker, or the hybrid of both. One function for assembly to call."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from quant_llm_node.config import Config
from quant_llm_node.engine.remote import RemoteEngine
from quant_llm_node.engine.remote_security import RemoteConfigError
from quant_llm_node.serving.breaker import CircuitBreaker
from quant_llm_node.serving.hybrid import HybridGenerator, LocalGenerator
from quant_llm_node.serving.remote_guard import GuardedRemote
from quant_llm_node.serving.remote_status import RemoteMonitor, RemoteStatus

BACKEND_LOCAL, BACKEND_REMOTE, BACKEND_HYBRID = "local", "remote", "hybrid"


@dataclass
class Backend:
    """The generator the service calls, and the remote side's status when there is one."""

    mode: str
    generator: Any                       # the service's Generator
    remote: Optional[GuardedRemote] = None
    local: Any = None                    # the local generator it falls back on (hybrid)

    def status(self) -> Optional[RemoteStatus]:
        """The ``remote`` diagnostic's snapshot; None for the local backend."""
        return self.remote.monitor.snapshot() if self.remote is not None else None

    @property
    def passes_deadline(self) -> bool:
        """Whether ``generate`` takes ``deadline_s`` (remote and hybrid do)."""
        return self.remote is not None

    def close(self) -> None:
        """Close the remote connections (the local engine is closed by its owner)."""
        if self.remote is not None:
            self.remote.close()


def build_backend(cfg: Config, local: Optional[LocalGenerator],
                  validate: Callable[[str], object]) -> Backend:
    """The backend ``cfg.engine.backend`` names. Raises RemoteConfigError (code
    CONFIG_INVALID) for unsafe or incomplete remote settings, before any traffic."""
    mode = cfg.engine.backend
    if mode == BACKEND_LOCAL:
        if local is None:
            raise RemoteConfigError("engine.backend local needs a local model")
        return Backend(mode, local)
    r = cfg.remote
    engine = RemoteEngine(r)
    breaker = CircuitBreaker(r.breaker_failures, r.breaker_cooldown_s)
    monitor = RemoteMonitor(breaker, mode=mode, server=engine.endpoint.origin, api=r.api,
                            model=r.model, window=r.stats_window,
                            warn_local_share=r.warn_local_share)
    guarded = GuardedRemote(engine, breaker, monitor, validate)
    if mode == BACKEND_REMOTE:
        return Backend(mode, guarded, guarded, local)
    if local is None:
        engine.close()
        raise RemoteConfigError("engine.backend hybrid needs a local model to fall back on")
    return Backend(mode, HybridGenerator(guarded, local, r.deadline_share), guarded, local)
