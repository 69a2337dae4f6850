"""Plain data types of a navigation query and its answer (no ROS imports)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from quant_llm_node.grounding.index import GroundingResult
    from quant_llm_node.reasoning.screen import ScreenVerdict

ACTIONS = ("continue", "slow_down", "stop", "wait", "reroute", "go_to", "dock")
HALTING_ACTIONS = ("stop", "wait")

SOURCE_LLM = "llm"
SOURCE_SAFETY = "safety_override"
SOURCE_FALLBACK = "fallback"


@dataclass
class RobotState:
    """Robot state attached to a query. NaN means unknown."""

    x: float = 0.0
    y: float = 0.0
    theta: float = 0.0
    speed_mps: float = 0.0
    battery_pct: float = math.nan
    obstacle_distance_m: float = math.inf
    people_distances_m: list[float] = field(default_factory=list)
    zone: str = ""

    @property
    def nearest_person_m(self) -> float:
        return min(self.people_distances_m, default=math.inf)


@dataclass
class NavRequest:
    """A validated planner query."""

    request_id: str
    query: str
    goal: str = ""
    state: RobotState = field(default_factory=RobotState)
    context: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    deadline_ms: int = 0


@dataclass
class Decision:
    """What the robot should do, and who decided it."""

    action: str = ""
    speed_limit_mps: float = 0.0
    target_place_id: str = ""
    reason: str = ""
    source: str = ""
    rules_fired: list[str] = field(default_factory=list)


@dataclass
class Latency:
    """Per-stage latency of one query, milliseconds."""

    queue_ms: float = 0.0
    grounding_ms: float = 0.0
    screen_ms: float = 0.0       # the hazard screen's pass (0 when none ran)
    prompt_ms: float = 0.0
    first_token_ms: float = 0.0
    decode_ms: float = 0.0
    total_ms: float = 0.0


LATENCY_STAGES = tuple(f.name for f in fields(Latency))  # queue_ms … total_ms, in message order


@dataclass
class NavResponse:
    """The answer to one query.

    ``success`` means ``decision`` can be acted on. ``error_code`` is set when the request was
    rejected (success false), and also when the decision is a fallback, to say why.
    """

    request_id: str = ""
    success: bool = False
    error_code: str = ""
    error_message: str = ""
    decision: Decision = field(default_factory=Decision)
    raw_text: str = ""
    latency: Latency = field(default_factory=Latency)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_id: str = ""
    backend: str = ""  # who generated the text: local, remote, or "" (nothing was generated)
    grounding: Optional["GroundingResult"] = None
    screen: Optional["ScreenVerdict"] = None  # the hazard screen's verdict (None: not screened)
    decode_tps: float = 0.0  # for metrics; not part of the ROS message

    @classmethod
    def rejected(cls, request_id: str, code: str, message: str, model_id: str = "") -> "NavResponse":
        return cls(request_id=request_id, success=False, error_code=code,
                   error_message=message, model_id=model_id)
