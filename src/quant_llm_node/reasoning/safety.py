"""Safety rules in code: they have the last word over the model.

Whatever the model says, a person inside the stop distance never yields a moving
action, speeds are capped near people, obstacles and per zone, and a low battery
forces docking. Thresholds come from ``SafetyConfig`` (config/robot.yaml).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

from quant_llm_node.config import SafetyConfig, parse_zone_limits
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


@dataclass(frozen=True)
class DockSites:
    """Charging docks of the map, and which dock is nearest to which zone."""

    dock_ids: tuple[str, ...] = ()
    near: dict = field(default_factory=dict)  # zone id -> dock id

    def nearest(self, zone: str) -> str:
        return self.near.get(zone, self.dock_ids[0] if self.dock_ids else "")


class SafetyLayer:
    """Applies the rules to a decision; returns the final decision."""

    def __init__(self, cfg: SafetyConfig, docks: DockSites = DockSites()):
        self.cfg = cfg
        self.docks = docks
        self.zone_limits = parse_zone_limits(cfg.zone_speed_limits)

    def person_stop_distance(self, state: RobotState) -> float:
        """Separation at which a person forces a stop: the configured distance plus what the
        robot covers at its current speed before it has reacted and braked."""
        return self.cfg.person_stop_distance_m + state.speed_mps * self.cfg.person_reaction_time_s

    def speed_cap(self, state: RobotState) -> tuple[float, list[str]]:
        """Highest speed the rules allow in this state, and the rules that set it."""
        c = self.cfg
        caps = [(c.max_speed_mps, RULE_MAX_SPEED)]
        if state.zone in self.zone_limits:
            caps.append((self.zone_limits[state.zone], RULE_ZONE_SPEED))
        if state.nearest_person_m <= c.person_slow_distance_m:
            caps.append((c.person_slow_speed_mps, RULE_PERSON_SLOW))
        if state.obstacle_distance_m <= c.obstacle_slow_distance_m:
            caps.append((c.obstacle_slow_speed_mps, RULE_OBSTACLE_SLOW))
        cap = min(v for v, _ in caps)
        return cap, [r for v, r in caps if v == cap]

    def apply(self, decision: Decision, state: RobotState, place_ids: Sequence[str] = ()) -> Decision:
        """The decision after the rules; ``source`` becomes safety_override when one changed it."""
        if not self.cfg.enabled:
            return decision
        c = self.cfg
        d = copy.deepcopy(decision)
        fired: list[str] = []

        def halt(rule: str, action: str = "stop") -> None:
            if d.action not in HALTING_ACTIONS:
                d.action = action
                d.target_place_id = ""
                fired.append(rule)

        if state.nearest_person_m <= self.person_stop_distance(state):
            halt(RULE_PERSON_STOP)
        elif state.obstacle_distance_m <= c.obstacle_stop_distance_m:
            if d.action != "reroute":  # going around the obstacle is allowed
                halt(RULE_OBSTACLE_STOP)
        elif state.battery_pct <= c.battery_dock_pct and d.action != "dock" and \
                state.nearest_person_m > c.person_slow_distance_m:
            # nothing near justifies halting: a robot left standing on a flat battery is stranded
            d.action = "dock"
            fired.append(RULE_BATTERY_DOCK)
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
            cap, rules = self.speed_cap(state)
            if d.speed_limit_mps <= 0.0 or d.speed_limit_mps > cap:
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
