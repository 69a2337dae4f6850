"""One request's state, from the moment a worker takes it to its answer.

A ``Turn`` is filled in by the stages (serving/stages.py) in order: grounding, the hazard
screen's verdict, the model's generation. It is the one place that state lives; the evaluation
and the replay build Turns of their own and call the same stages.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

from quant_llm_node.config import Config
from quant_llm_node.reasoning.types import Latency, NavRequest

if TYPE_CHECKING:
    from quant_llm_node.engine.llama_engine import GenerationResult
    from quant_llm_node.grounding.index import GroundingResult
    from quant_llm_node.reasoning.screen import ScreenVerdict
    from quant_llm_node.serving.pipeline import Pipeline
    from quant_llm_node.serving.scheduler import Job


@dataclass
class GoalError:
    """The goal named no single map place: the request is decided without it, and the code
    goes back beside a halt (or as the rejection, when the decision would move)."""

    code: str
    message: str


@dataclass
class Turn:
    """The state of one request on its way through the stages."""

    request: NavRequest
    parts: "Pipeline"                       # the model, task and prompts it runs on
    settings: Config                        # the live settings in force for it
    submitted: float = field(default_factory=time.monotonic)
    job: Optional["Job"] = None             # cancel, preemption, deadline, streaming callback
    stopping: Callable[[], bool] = lambda: False  # the node is deactivating
    latency: Latency = field(default_factory=Latency)
    grounding: Optional["GroundingResult"] = None
    goal_error: Optional[GoalError] = None
    screen: Optional["ScreenVerdict"] = None
    generation: Optional["GenerationResult"] = None

    @property
    def grounded(self) -> str:
        """The place id the planner's goal grounded to ("" = none)."""
        g = self.grounding
        return g.place_id if g is not None and g.place_id and self.goal_error is None else ""

    def remaining_s(self) -> float:
        if self.job is not None:
            return self.job.remaining_s()
        return self.submitted + self.request.deadline_ms / 1e3 - time.monotonic()

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.submitted) * 1e3

    @property
    def cancelled(self) -> bool:
        return self.job is not None and self.job.cancel.is_set()

    @property
    def preempted(self) -> bool:
        return self.job is not None and self.job.preempt.is_set()
