"""The one holder of the model serving now: its pipeline, the assembly that owns its loaded
models, and the live settings in force (as llama-cpp-python's ``LlamaProxy`` holds the current
model). The service, the node and the model swapper all ask it.

Live settings are owned here, not by a pipeline: a change rebuilds the decision task and its
prompts (so the prompt's "Facts:" line and the rules agree), and a pipeline put in place later (a
model swap, or the fallback while one drains) takes the settings in force at the moment it
lands, never those of the configuration it was loaded with.
"""
from __future__ import annotations

import copy
import threading
from typing import TYPE_CHECKING, Optional

from quant_llm_node.config import ApplyMode, Config, iter_settings
from quant_llm_node.reasoning.task import DecisionTask
from quant_llm_node.serving.pipeline import Pipeline
from quant_llm_node.serving.turns import Turns

if TYPE_CHECKING:
    from quant_llm_node.serving.assembly import Assembly


def carry_live(live: Config, target: Config) -> Config:
    """``target`` with every live setting (``mode=live``) taken from ``live``."""
    out = copy.deepcopy(target)
    for name, sec, f in iter_settings():
        if f.metadata["mode"] is ApplyMode.LIVE:
            setattr(getattr(out, sec), f.name, copy.deepcopy(getattr(getattr(live, sec), f.name)))
    return out


def with_settings(pipeline: Pipeline, cfg: Config) -> Pipeline:
    """``pipeline`` with its decision task and prompts rebuilt for ``cfg``'s live settings (the
    map and the prompt levers stay)."""
    old = pipeline.task
    task = DecisionTask(old.places, cfg.safety, cfg.engine.use_grammar, cfg.engine.max_tokens,
                        cfg.engine.temperature, old.prompt_options)
    prompts = pipeline.prompts.with_safety(cfg.safety) if pipeline.prompts else None
    return pipeline.with_task(task, prompts)


class ModelHolder:
    """Holds (settings, pipeline, assembly). ``turns`` counts the requests running on the
    current pipeline; ``install`` waits for them before it replaces it."""

    def __init__(self, cfg: Config, pipeline: Pipeline, assembly: Optional["Assembly"] = None):
        self._lock = threading.Lock()
        self._cfg = cfg
        self._pipeline = pipeline
        self._assembly = assembly
        self.turns = Turns()

    @classmethod
    def of(cls, assembly: "Assembly") -> "ModelHolder":
        return cls(assembly.cfg, assembly.pipeline(), assembly)

    @property
    def cfg(self) -> Config:
        """The settings in force."""
        return self._cfg

    @property
    def pipeline(self) -> Pipeline:
        return self._pipeline

    @property
    def assembly(self) -> Optional["Assembly"]:
        """What owns the loaded models (None: a pipeline built by hand, as in tests)."""
        return self._assembly

    def snapshot(self) -> tuple[Config, Pipeline]:
        """One consistent (settings, pipeline) pair for a request."""
        with self._lock:
            return self._cfg, self._pipeline

    def apply_settings(self, cfg: Config) -> None:
        """Live settings for the next request: task and prompts are replaced whole, never
        half-changed under a request."""
        with self._lock:
            self._cfg = carry_live(cfg, self._cfg)
            self._pipeline = with_settings(self._pipeline, self._cfg)

    def install(self, assembly: Optional["Assembly"], pipeline: Optional[Pipeline] = None
                ) -> Optional["Assembly"]:
        """Put ``assembly`` (or ``pipeline`` over the current assembly, e.g. the fallback-only
        pipeline of a drain) in place between two requests, under the live settings in force at
        this moment. Returns the assembly that no request uses any more (the caller closes it
        when it is not the one installed)."""
        with self.turns.exclusive():
            with self._lock:
                old = self._assembly
                if assembly is not None:
                    self._cfg = carry_live(self._cfg, assembly.cfg)
                    pipeline = pipeline or assembly.pipeline()
                    self._assembly = assembly
                self._pipeline = with_settings(pipeline, self._cfg)
        return old

    def replace_pipeline(self, pipeline: Pipeline) -> Pipeline:
        """Tools: put ``pipeline`` in place as it is (its own task, e.g. other prompt levers),
        between two requests; returns the old one."""
        with self.turns.exclusive():
            with self._lock:
                old, self._pipeline = self._pipeline, pipeline
        return old

    def close(self) -> None:
        """Free the models."""
        with self._lock:
            assembly, self._assembly = self._assembly, None
        if assembly is not None:
            assembly.close()
