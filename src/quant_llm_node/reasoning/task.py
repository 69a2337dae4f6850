"""The decision task of one map: places, schema, grammar, token bound, prompts and safety.

Everything that turns a model's text into the final decision lives here, so the service, the
benchmarks and the tests share one pipeline:

    task = DecisionTask.from_config(cfg)
    prompt = task.prompts(renderer).build(request, grounded)
    decision = task.decide(generated_text, request, grounded, screen)
    view = task.stream_view(partial_text, request, grounded, screen)   # while generating
    decision = task.fallback(request, grounded, why, screen)            # no usable model answer

``screen`` is the hazard screen's verdict on the request (reasoning/screen.py; None = none).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from quant_llm_node.config import Config, SafetyConfig
from quant_llm_node.grounding.places import Place, load_places
from quant_llm_node.paths import config_dir
from quant_llm_node.reasoning.fallback import fallback_decision
from quant_llm_node.reasoning.injection import untrusted_text
from quant_llm_node.reasoning.prompt import PromptBuilder, PromptOptions, Renderer, plain_renderer
from quant_llm_node.reasoning import safety as S
from quant_llm_node.reasoning.safety import DockSites, SafetyLayer
from quant_llm_node.reasoning.schema import SPEED_MAX_MPS, DecisionSchema
from quant_llm_node.reasoning.screen import ScreenVerdict
from quant_llm_node.reasoning.types import (
    ACTIONS, HALTING_ACTIONS, SOURCE_LLM, SOURCE_SAFETY, Decision, NavRequest)

RULE_GOAL_TARGET = "target_from_grounded_goal"
# rules a stream view leaves out: they act on the speed (the probe's is the highest possible)
_SPEED_RULES = (RULE_GOAL_TARGET, S.RULE_MAX_SPEED, S.RULE_ZONE_SPEED, S.RULE_PERSON_SLOW,
                S.RULE_OBSTACLE_SLOW, S.RULE_TEXT_SPEED, S.RULE_HALT_SPEED)

# the action value of a (partial) decision, once its closing quote has been generated
_ACTION = re.compile(r'"action"\s*:\s*"([a-z_]+)"')


def config_path(name: str | Path) -> Path:
    """A config file name relative to config/, or an absolute path."""
    p = Path(name).expanduser()
    return p if p.is_absolute() else config_dir() / p


@dataclass(frozen=True)
class MapPlaces:
    """Places of the map: prompt entries, dock sites."""

    places: tuple[Place, ...]
    docks: DockSites

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.places)

    @property
    def zones(self) -> frozenset[str]:
        """The zone ids the map knows: its places and the zones its docks are next to."""
        return frozenset(self.ids) | frozenset(self.docks.near)


def load_map(path: str | Path) -> MapPlaces:
    """Read config/places.yaml: places for the prompt and the docks for the safety layer."""
    places = tuple(load_places(config_path(path)))
    docks = [p for p in places if p.kind == "dock"]
    near: dict[str, str] = {}
    for dock in docks:
        for zone in (dock.id, *dock.near):
            near.setdefault(zone, dock.id)
    return MapPlaces(places, DockSites(tuple(d.id for d in docks), near))


@dataclass(frozen=True)
class StreamView:
    """What a streaming client may be shown once the action of a partial decision is decoded:
    the action the final decision will carry for it (the rules applied) and its source.

    ``action`` is final: the rest of the decision (speed, target, reason) cannot change it.
    ``source`` is ``safety_override`` when the rules changed the model's action; the final
    decision may still become ``safety_override`` because a speed cap or a target rule changes
    the fields not yet generated. ``speed_cap_mps`` bounds the final speed (0 when halting)."""

    action: str
    source: str
    model_action: str
    speed_cap_mps: float
    rules_fired: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return {"action": self.action, "source": self.source, "model_action": self.model_action,
                "speed_cap_mps": self.speed_cap_mps, "rules_fired": list(self.rules_fired)}


class DecisionTask:
    """Schema, grammar, generation bound, prompt builder and safety layer for one map."""

    def __init__(self, places: MapPlaces, safety: SafetyConfig, use_grammar: bool = True,
                 max_tokens: int = 96, temperature: float = 0.0,
                 prompt_options: Optional[PromptOptions] = None):
        self.places = places
        self.temperature = temperature
        self.schema = DecisionSchema(places.ids)
        self.safety = SafetyLayer(safety, places.docks)
        self.prompt_options = prompt_options or PromptOptions()
        self.grammar: Optional[str] = self.schema.gbnf() if use_grammar else None
        # a constrained decision is never cut off half-way: the grammar bounds its tokens
        self.max_tokens = max(max_tokens, self.schema.max_output_chars()) if self.grammar else max_tokens
        # without the grammar any room will do; with it, room for the longest decision
        self.min_room = self.max_tokens if self.grammar else 1

    @classmethod
    def from_config(cls, cfg: Config, places: MapPlaces | None = None,
                    prompt_options: Optional[PromptOptions] = None) -> "DecisionTask":
        """The task of a node configuration (reads the places file unless given)."""
        places = places or load_map(cfg.grounding.places_file)
        return cls(places, cfg.safety, cfg.engine.use_grammar, cfg.engine.max_tokens,
                   cfg.engine.temperature, prompt_options)

    @property
    def zones(self) -> frozenset[str]:
        """Zones a request's state may name: the map's, and those with a speed limit."""
        return self.places.zones | frozenset(self.safety.zone_limits)

    def prompts(self, render: Renderer | None = None) -> PromptBuilder:
        """A prompt builder for a chat template (plain layout when the model has none)."""
        return PromptBuilder(self.places.places, self.schema, render or plain_renderer,
                             self.prompt_options, self.safety.cfg)

    def _goal_target(self, decision: Decision, grounded: str) -> Decision:
        if grounded and decision.target_place_id != grounded and (
                decision.action in ("go_to", "reroute") or
                (decision.action == "dock" and grounded in self.places.docks.dock_ids)):
            # the planner's goal, grounded deterministically, wins over the model's choice
            decision.target_place_id = grounded
            decision.rules_fired.append(RULE_GOAL_TARGET)
        return decision

    def decide(self, text: str, request: NavRequest, grounded: str = "",
               screen: Optional[ScreenVerdict] = None) -> Decision:
        """Parse the model's text (raises DecisionParseError), let the grounded goal choose the
        target, then let the safety rules have the last word (state, request text, goal, the
        screen's verdict)."""
        decision = self._goal_target(self.schema.parse(text), grounded)
        return self.safety.apply(decision, request.state, request.query, grounded or "",
                                 untrusted_text(request), screen)

    def fallback(self, request: NavRequest, grounded: str, why: str,
                 screen: Optional[ScreenVerdict] = None) -> Decision:
        """The deterministic decision when the model's answer is missing or unusable (the
        request's hazards and the screen's verdict count as in ``decide``)."""
        return fallback_decision(request.state, grounded, self.safety, why, report=request.query,
                                 untrusted=untrusted_text(request), screen=screen)

    def stream_view(self, partial_text: str, request: NavRequest, grounded: str = "",
                    screen: Optional[ScreenVerdict] = None) -> Optional[StreamView]:
        """Once the action field of a partial decision is decoded: the safety-checked action
        the final decision will carry, and its source; None before that (or for text that is
        not a decision). Never returns an action the rules would refuse."""
        m = _ACTION.search(partial_text)
        if not m or m.group(1) not in ACTIONS:
            return None
        model_action = m.group(1)
        # the fields not generated yet cannot change the final action; the highest speed the
        # grammar allows is assumed, so that the view is never less cautious than the answer
        probe = Decision(model_action, SPEED_MAX_MPS, "", "", SOURCE_LLM)
        untrusted = untrusted_text(request)
        final = self.safety.apply(self._goal_target(probe, grounded), request.state,
                                  request.query, grounded or "", untrusted, screen)
        if final.action in HALTING_ACTIONS:
            cap = 0.0
        elif self.safety.cfg.enabled:
            sit = self.safety.situation(request.state, request.query, untrusted=untrusted, screen=screen)
            cap = self.safety.speed_cap(request.state, sit.text_level, sit.screened)[0]
        else:
            cap = SPEED_MAX_MPS
        source = SOURCE_SAFETY if final.action != model_action else SOURCE_LLM
        rules = tuple(r for r in final.rules_fired if r not in _SPEED_RULES)
        return StreamView(final.action, source, model_action, cap, rules)

    @staticmethod
    def view_json(view: Optional[StreamView]) -> str:
        """A stream view as compact JSON ("" when there is none yet), for feedback messages."""
        return json.dumps(view.as_dict(), separators=(",", ":")) if view else ""
