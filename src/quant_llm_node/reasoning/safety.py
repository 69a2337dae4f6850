"""Safety rules in code: they have the last word over the model.

Whatever the model says, a person inside the stop distance never yields a moving action,
speeds are capped near people, obstacles and per zone, and a low battery forces docking.
On top of those (each can be switched off in ``SafetyConfig`` for ablations):

- **targets** (``strict_targets``): the model cannot choose where the robot goes. go_to and
  reroute head for the planner's grounded goal only (go_to without a goal becomes continue,
  reroute without one has no target); dock goes to the planner's goal when that is a dock,
  else to the dock next to the robot's zone, and only when the battery is at or below
  ``battery_low_pct`` or the planner's goal is a dock, else the robot keeps to the planner's
  goal (go_to it, or continue). A place named in the report or the context can therefore
  never become a target: in a zone the map ties to no dock, dock goes to the map's first dock.
- **low battery, nothing to do** (``battery_low_pct``): a low battery (above the forced-dock
  level), no planner goal and nothing near or named to wait for: continue and wait become dock.
- **slow zone** (``slow_zone_no_travel``): no trip goes on at cruise past people or into a
  close obstacle, whatever speed the model asked for. A person inside the slow distance turns
  continue, go_to and dock into slow_down; an obstacle inside the obstacle slow distance turns
  continue into slow_down and go_to into reroute toward the goal (go around it).
- **text hazards** (``text_hazard_rules``): a request whose text (report, goal or context) names
  a hazard (see ``reasoning.hazards``) makes the decision more cautious even when the state
  shows nothing: a halting hazard (a person down, fallen goods, a spill, fire or smoke, a door
  closing, something coming toward the robot, a blocked or closed way, a stop order) turns every
  moving action but reroute into stop and caps reroute's speed; a wet floor turns continue and
  go_to into slow_down. The text can only add caution.
- **hazard screen** (``reasoning.screen``, a verdict passed with the request): a request the
  screen model flagged is treated as a halting hazard named in the text, except that it does not
  keep a robot on a flat battery from its dock (the rules force that dock whatever the model or
  the screen says, so such requests are still answered without the model).
- **clear way confirmed** (the screen's ``clear`` verdict): the one rule that takes caution
  away, and only when every other signal agrees: the screen is confident the request describes
  no hazard, the state has nobody inside the slow distance and no obstacle inside the obstacle
  slow distance, the lexicon finds no hazard, the request carries no instructions to the robot
  (``reasoning.injection``), and the battery is above ``battery_low_pct``. Then the decision
  model's stop, wait, slow_down or reroute becomes continue, or go_to toward the planner's
  grounded goal: the small model stopping on a clear report is its known failure
  (README: over-caution), and the screen, a larger model, reads the report better.
- **injection hold** (``injection_hold``, on by default): a report, goal or context that carries
  instructions to the robot (``reasoning.injection``: rule overrides, dictated actions or speeds,
  role play, chat-template tokens, claimed goal changes) turns every action into stop, except a
  dock on a low battery (at the dock the rules chose). The model has read that text, so the
  hazards it may hide cannot be ruled out; the planner sees ``suspected_injection_hold``.

The final action depends only on the model's action, the state, the report and the grounded
goal, never on the model's speed or target (``DecisionTask.stream_view`` relies on it).
Thresholds come from ``SafetyConfig`` (config/robot.yaml).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Optional

from quant_llm_node.config import SafetyConfig, parse_zone_limits
from quant_llm_node.reasoning import hazards, injection
from quant_llm_node.reasoning.screen import ScreenVerdict
from quant_llm_node.reasoning.types import (
    HALTING_ACTIONS, SOURCE_LLM, SOURCE_SAFETY, Decision, RobotState)

RULE_PERSON_STOP = "person_within_stop_distance"
RULE_OBSTACLE_STOP = "obstacle_within_stop_distance"
RULE_BATTERY_DOCK = "battery_low_dock"
RULE_PERSON_SLOW = "person_speed_cap"
RULE_OBSTACLE_SLOW = "obstacle_speed_cap"
RULE_ZONE_SPEED = "zone_speed_cap"
RULE_MAX_SPEED = "max_speed_cap"
RULE_HALT_SPEED = "halt_means_zero_speed"
RULE_TARGET_REQUIRED = "target_required"
RULE_GO_TO_GOAL = "go_to_only_to_goal"            # go_to's target replaced by the planner's goal
RULE_GO_TO_NO_GOAL = "go_to_without_goal"         # go_to with no goal: continue
RULE_REROUTE_GOAL = "reroute_only_to_goal"        # reroute's target replaced by the goal (or "")
RULE_DOCK_UNJUSTIFIED = "dock_not_justified"      # dock with a good battery and no dock goal
RULE_DOCK_NEAREST = "dock_at_nearest"             # dock (no dock goal) at the zone's nearest dock
RULE_SLOW_ZONE = "slow_zone_no_travel"            # person/obstacle inside slow distance
RULE_BATTERY_IDLE = "battery_low_no_goal_dock"    # low battery, no goal: continue docks
RULE_TEXT_HALT = "text_hazard_stop"               # the report names a halting hazard
RULE_TEXT_CAUTION = "text_hazard_slow"            # the report names a caution hazard
RULE_TEXT_SPEED = "text_hazard_speed_cap"         # reroute / slow_down speed near a named hazard
RULE_SCREEN_HALT = "screen_hazard_stop"           # the hazard screen flagged the request
RULE_SCREEN_CLEAR = "screen_clear_way"            # the screen and every rule agree: the way is clear
CAUTIOUS_ACTIONS = ("stop", "wait", "slow_down", "reroute")
RULE_INJECTION_HOLD = "suspected_injection_hold"  # instructions to the robot inside request data

TRAVEL_ACTIONS = ("continue", "go_to")


@dataclass(frozen=True)
class DockSites:
    """Charging docks of the map, and which dock is nearest to which zone."""

    dock_ids: tuple[str, ...] = ()
    near: dict = field(default_factory=dict)  # zone id -> dock id

    def nearest(self, zone: str) -> str:
        return self.near.get(zone, self.dock_ids[0] if self.dock_ids else "")


@dataclass(frozen=True)
class Situation:
    """What the rules know besides the decision: the state, the report's hazards and the
    planner's grounded goal (None = unknown to the caller: the target rules do not run)."""

    state: RobotState
    text_level: str = ""                       # hazards.HALT | hazards.CAUTION | ""
    text_hazards: tuple[str, ...] = ()         # hazard classes named in the report
    grounded: Optional[str] = None
    injections: tuple[str, ...] = ()           # kinds of instructions found in the request's data
    screened: bool = False                     # the hazard screen flagged the request
    confirmed_clear: bool = False              # the screen is confident the way is clear

    @classmethod
    def of(cls, state: RobotState, text: str = "", grounded: Optional[str] = None,
           request_text: Optional[str] = None, screen: Optional[ScreenVerdict] = None) -> "Situation":
        """``text``: the request's text scanned for hazards (report, goal, context);
        ``request_text``: the same, scanned for instructions; None = not scanned (a clear
        verdict of the screen has it scanned anyway: it counts only without instructions)."""
        found = hazards.scan(text) if text else []
        clear = screen is not None and screen.clear and not found
        scanned = request_text if request_text is not None else (text if clear else None)
        injected = injection.scan(scanned) if scanned is not None else []
        return cls(state, hazards.severity(found), tuple(dict.fromkeys(m.kind for m in found)), grounded,
                   tuple(m.kind for m in injected) if request_text is not None else (),
                   bool(screen is not None and screen.flagged), clear and not injected)

    @property
    def halting_hazard(self) -> bool:
        """The text names a halting hazard, or the screen flagged the request."""
        return self.text_level == hazards.HALT or self.screened


class SafetyLayer:
    """Applies the rules to a decision; returns the final decision."""

    def __init__(self, cfg: SafetyConfig, docks: DockSites = DockSites()):
        self.cfg = cfg
        self.docks = docks
        self.zone_limits = parse_zone_limits(cfg.zone_speed_limits)

    def person_stop_distance(self, state: RobotState) -> float:
        """Separation at which a person forces a stop: the configured distance plus what the
        robot covers at its current speed before it has reacted and braked."""
        return self.cfg.person_stop_distance(state.speed_mps)

    def situation(self, state: RobotState, report: str = "", grounded: Optional[str] = None,
                  untrusted: str = "", screen: Optional[ScreenVerdict] = None) -> Situation:
        """The Situation of a request: report and ``untrusted`` (the goal and context text) are
        scanned for hazards when text rules are on (wherever a hazard is named, it can only add
        caution), and for instructions when the injection hold is on; ``screen``: the hazard
        screen's verdict (None = not screened)."""
        text = "\n".join(t for t in (report, untrusted) if t)
        if screen is not None and screen.clear and not self.cfg.text_hazard_rules:
            screen = replace(screen, clear=False)  # a clear way is confirmed only on a read text
        return Situation.of(state, text if self.cfg.text_hazard_rules else "", grounded,
                            text if self.cfg.injection_hold else None, screen)

    def speed_cap(self, state: RobotState, text_level: str = "",
                  screened: bool = False) -> tuple[float, list[str]]:
        """Highest speed the rules allow in this state, and the rules that set it."""
        c = self.cfg
        caps = [(c.max_speed_mps, RULE_MAX_SPEED)]
        if state.zone in self.zone_limits:
            caps.append((self.zone_limits[state.zone], RULE_ZONE_SPEED))
        if state.nearest_person_m <= c.person_slow_distance_m:
            caps.append((c.person_slow_speed_mps, RULE_PERSON_SLOW))
        if state.obstacle_distance_m <= c.obstacle_slow_distance_m:
            caps.append((c.obstacle_slow_speed_mps, RULE_OBSTACLE_SLOW))
        if (text_level and c.text_hazard_rules) or screened:
            caps.append((c.obstacle_slow_speed_mps, RULE_TEXT_SPEED))
        cap = min(v for v, _ in caps)
        return cap, [r for v, r in caps if v == cap]

    def battery_low(self, state: RobotState) -> bool:
        return state.battery_pct <= self.cfg.battery_dock_pct

    def apply(self, decision: Decision, state: RobotState, report: str = "",
              grounded: Optional[str] = None, untrusted: str = "",
              screen: Optional[ScreenVerdict] = None) -> Decision:
        """The decision after the rules; ``source`` becomes safety_override when one changed it.
        ``report``: the query text (text-hazard rules); ``grounded``: the planner's grounded goal
        ("" = none; None = unknown, then the target rules are skipped); ``untrusted``: the
        request's other data (``injection.untrusted_text``); ``screen``: the hazard screen's
        verdict."""
        if not self.cfg.enabled:
            return decision
        return self.apply_in(decision, self.situation(state, report, grounded, untrusted, screen))

    def apply_in(self, decision: Decision, sit: Situation) -> Decision:
        """``apply`` for a prepared Situation (the report scanned once)."""
        if not self.cfg.enabled:
            return decision
        c = self.cfg
        state = sit.state
        d = copy.deepcopy(decision)
        fired: list[str] = []

        def halt(rule: str, action: str = "stop") -> None:
            if d.action not in HALTING_ACTIONS:
                d.action = action
                d.target_place_id = ""
                fired.append(rule)

        if c.strict_targets and sit.grounded is not None:
            self._targets(d, sit, fired)

        person_slow = state.nearest_person_m <= c.person_slow_distance_m
        if state.nearest_person_m <= self.person_stop_distance(state):
            halt(RULE_PERSON_STOP)
            if d.action == "wait":  # a person this close: halt now, not "hold until clear"
                d.action = "stop"
                fired.append(RULE_PERSON_STOP)
        elif state.obstacle_distance_m <= c.obstacle_stop_distance_m:
            if d.action != "reroute":  # going around the obstacle is allowed
                halt(RULE_OBSTACLE_STOP)
        elif sit.text_level == hazards.HALT and c.text_hazard_rules:
            if d.action != "reroute":  # going around the named hazard is allowed
                halt(RULE_TEXT_HALT)
        elif self.battery_low(state) and not person_slow:
            # nothing near justifies halting: a robot left standing on a flat battery is stranded
            # (the screen's verdict, a judgement rather than a named hazard, does not either)
            if d.action != "dock":
                d.action = "dock"
                fired.append(RULE_BATTERY_DOCK)
        elif sit.screened:
            if d.action != "reroute":  # going around the flagged hazard is allowed
                halt(RULE_SCREEN_HALT)

        if d.action in ("continue", "wait") and sit.grounded == "" and not sit.text_level and \
                not sit.screened and c.battery_dock_pct < state.battery_pct <= c.battery_low_pct and \
                not person_slow and state.obstacle_distance_m > c.obstacle_slow_distance_m:
            d.action = "dock"  # nothing to do, or wait for, on a low battery: go charge
            fired.append(RULE_BATTERY_IDLE)
        if c.slow_zone_no_travel:
            obstacle_slow = state.obstacle_distance_m <= c.obstacle_slow_distance_m
            if person_slow and d.action in (*TRAVEL_ACTIONS, "dock") or \
                    obstacle_slow and d.action == "continue":
                d.action, d.target_place_id = "slow_down", ""
                fired.append(RULE_SLOW_ZONE)
            elif obstacle_slow and d.action == "go_to":
                # go around the close obstacle toward the goal (without one: creep on)
                goal = sit.grounded if sit.grounded is not None else d.target_place_id
                d.action, d.target_place_id = ("reroute", goal) if goal else ("slow_down", "")
                fired.append(RULE_SLOW_ZONE)

        if sit.confirmed_clear and d.action in CAUTIOUS_ACTIONS and self._all_clear(sit):
            d.action, d.target_place_id = ("go_to", sit.grounded) if sit.grounded else ("continue", "")
            fired.append(RULE_SCREEN_CLEAR)
        # after the slow zone: going around a close obstacle stays the way round a named hazard
        if c.text_hazard_rules and sit.text_level == hazards.CAUTION and d.action in TRAVEL_ACTIONS:
            d.action, d.target_place_id = "slow_down", ""
            fired.append(RULE_TEXT_CAUTION)
        if sit.injections and c.injection_hold and (d.action, d.target_place_id) != ("stop", "") and \
                not (d.action == "dock" and state.battery_pct <= c.battery_low_pct):
            # (a low battery still docks: at the dock the rules chose, never one the text named)
            d.action, d.target_place_id = "stop", ""
            fired.append(RULE_INJECTION_HOLD)
        if d.action == "dock" and d.target_place_id not in self.docks.dock_ids:
            nearest = self.docks.nearest(state.zone)
            if nearest and nearest != d.target_place_id:
                d.target_place_id = nearest
                fired.append(RULE_TARGET_REQUIRED)

        if d.action in HALTING_ACTIONS:
            if d.speed_limit_mps != 0.0:
                d.speed_limit_mps = 0.0
                fired.append(RULE_HALT_SPEED)
        else:
            cap, rules = self.speed_cap(state, sit.text_level, sit.screened)
            if d.speed_limit_mps <= 0.0 or d.speed_limit_mps > cap or math.isnan(d.speed_limit_mps):
                if d.speed_limit_mps > cap:
                    fired.extend(rules)
                d.speed_limit_mps = cap
            if d.action == "continue" and any(r in fired for r in (RULE_PERSON_SLOW, RULE_OBSTACLE_SLOW)):
                d.action = "slow_down"
        changed = (d.action, d.target_place_id) != (decision.action, decision.target_place_id) or \
            d.speed_limit_mps < decision.speed_limit_mps
        d.rules_fired = list(decision.rules_fired) + fired
        if changed and decision.source == SOURCE_LLM:
            d.source = SOURCE_SAFETY
        return d

    def _all_clear(self, sit: Situation) -> bool:
        """Nothing but the decision model's caution stands against moving on: the state has
        nobody and nothing close, no hazard is named, the battery is not low."""
        c, s = self.cfg, sit.state
        return (s.nearest_person_m > c.person_slow_distance_m
                and s.obstacle_distance_m > c.obstacle_slow_distance_m
                and not sit.text_level and not sit.screened and not sit.injections
                and not s.battery_pct <= c.battery_low_pct and sit.grounded is not None)

    def _targets(self, d: Decision, sit: Situation, fired: list[str]) -> None:
        """Only the planner chooses destinations (see the module docstring)."""
        goal = sit.grounded or ""
        goal_is_dock = goal in self.docks.dock_ids
        if d.action == "dock":
            if goal_is_dock:
                if d.target_place_id != goal:
                    d.target_place_id = goal
                    fired.append(RULE_GO_TO_GOAL)
                return
            if sit.state.battery_pct <= self.cfg.battery_low_pct:
                # the dock the robot's zone is next to (a zone the map ties to no dock: the
                # map's first dock), never one the model took from the report or context
                nearest = self.docks.nearest(sit.state.zone)
                if nearest and d.target_place_id != nearest:
                    d.target_place_id = nearest
                    fired.append(RULE_DOCK_NEAREST)
                return
            d.action, d.target_place_id = ("go_to", goal) if goal else ("continue", "")
            fired.append(RULE_DOCK_UNJUSTIFIED)
            return
        if d.action == "go_to":
            if not goal:
                d.action, d.target_place_id = "continue", ""
                fired.append(RULE_GO_TO_NO_GOAL)
            elif d.target_place_id != goal:
                d.target_place_id = goal
                fired.append(RULE_GO_TO_GOAL)
        elif d.action == "reroute" and d.target_place_id != goal:
            d.target_place_id = goal
            fired.append(RULE_REROUTE_GOAL)
