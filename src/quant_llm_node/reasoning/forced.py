"""Rule-forced answers: when the safety rules fix the final action whatever the model says.

The final action depends only on the model's action, the state, the report and the grounded
goal (never on the model's speed, target or reason; see reasoning/safety.py), so applying the
rules to each of the grammar's actions tells whether the model has any say. When every action
ends in the same final one, that decision is given at once, without the model: source
``safety_override``, the rules that forced it, and a reason made from them.
"""
from __future__ import annotations

from typing import Optional

from quant_llm_node.reasoning.injection import untrusted_text
from quant_llm_node.reasoning.safety import SafetyLayer
from quant_llm_node.reasoning.schema import REASON_MAX_CHARS, SPEED_MAX_MPS
from quant_llm_node.reasoning.types import ACTIONS, SOURCE_LLM, SOURCE_SAFETY, Decision, NavRequest

PROBE_ACTION = "continue"  # the action whose correction names the rules that force the answer
_SPEED_RULES_PREFIXES = ("max_speed", "zone_speed", "person_speed", "obstacle_speed", "halt_means")


def forced_decision(safety: SafetyLayer, request: NavRequest,
                    grounded: Optional[str] = "") -> Optional[Decision]:
    """The final decision when no model output could change its action, else None.

    ``grounded``: the planner's grounded goal ("" = none). Every action the grammar allows is
    put through the rules at the highest speed it allows (the speed cap then applies as it would
    to the model's answer)."""
    if not safety.cfg.enabled:
        return None
    sit = safety.situation(request.state, request.query, grounded, untrusted_text(request))
    finals = {a: safety.apply_in(Decision(a, SPEED_MAX_MPS, "", "", SOURCE_LLM), sit) for a in ACTIONS}
    actions = {d.action for d in finals.values()}
    if len(actions) != 1:
        return None
    (action,) = actions
    out = finals[action]  # the model agreeing with the rules: speed and target as they leave it
    why = [r for r in finals[PROBE_ACTION].rules_fired if not r.startswith(_SPEED_RULES_PREFIXES)]
    rules = list(dict.fromkeys(why + out.rules_fired))
    reason = ("rules: " + ", ".join(why or rules))[:REASON_MAX_CHARS]
    return Decision(action=action, speed_limit_mps=out.speed_limit_mps,
                    target_place_id=out.target_place_id, reason=reason, source=SOURCE_SAFETY,
                    rules_fired=rules)
