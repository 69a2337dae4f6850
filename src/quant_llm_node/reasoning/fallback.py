"""Deterministic rule-based decision, used when the model's answer is missing or unusable."""
from __future__ import annotations

from typing import Optional

from quant_llm_node.reasoning import hazards
from quant_llm_node.reasoning.safety import SafetyLayer
from quant_llm_node.reasoning.screen import ScreenVerdict
from quant_llm_node.reasoning.types import SOURCE_FALLBACK, Decision, RobotState


def fallback_decision(state: RobotState, target_place_id: str, safety: SafetyLayer,
                      why: str, report: str = "", untrusted: str = "",
                      screen: Optional[ScreenVerdict] = None) -> Decision:
    """Hazard close: stop; a hazard named in the request or flagged by the screen: stop;
    battery low: dock; clear way and a grounded goal: go_to; else wait.

    ``report`` is the query text and ``untrusted`` the goal and context text (the same hazard
    lexicon as the safety rules; they are read even when the rules are switched off, since a
    fallback never moves the robot into a named hazard). The safety rules still apply on top
    (speed caps, dock choice, the injection hold on ``report`` and ``untrusted``).
    """
    c = safety.cfg
    text = "\n".join(t for t in (report, untrusted) if t)
    named = hazards.severity(hazards.scan(text)) if text else ""
    if screen is not None and screen.flagged:
        named = hazards.HALT
    if state.nearest_person_m <= safety.person_stop_distance(state) or \
            state.obstacle_distance_m <= c.obstacle_stop_distance_m or named == hazards.HALT:
        action, target = "stop", ""
    elif state.battery_pct <= c.battery_dock_pct:
        action, target = "dock", ""
    elif target_place_id and state.nearest_person_m > c.person_slow_distance_m and \
            state.obstacle_distance_m > c.obstacle_slow_distance_m and not named:
        action, target = "go_to", target_place_id
    else:
        action, target = "wait", ""
    decision = Decision(action=action, speed_limit_mps=0.0, target_place_id=target,
                        reason=f"fallback: {why}"[:120], source=SOURCE_FALLBACK)
    final = safety.apply(decision, state, report, target_place_id, untrusted, screen)
    final.source = SOURCE_FALLBACK
    return final
