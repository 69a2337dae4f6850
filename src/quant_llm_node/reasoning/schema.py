"""The decision the model must produce: JSON schema, GBNF grammar and a strict parser.

The grammar fixes the key order and bounds every field (action from a fixed set, target from
the map's place ids, a short speed and a short printable-ASCII reason), so every constrained
output parses and stays short: fewer tokens is lower latency.

The output is ASCII and llama.cpp's grammar never accepts a token with an empty piece, so
every generated token adds at least one character: ``max_output_chars()`` is also a hard
bound on the tokens a constrained decision can take. Generating with at least that many
tokens means a constrained decision is never cut off half-way.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Sequence

from quant_llm_node.reasoning.types import ACTIONS, Decision, SOURCE_LLM

REASON_MAX_CHARS = 80
TARGET_ACTIONS = ("go_to", "dock", "reroute")
SPEED_MAX_MPS = 2.0


def json_object_complete(text: str) -> bool:
    """True once a top-level JSON object has been closed (stop condition without grammar)."""
    depth, in_str, esc, seen = 0, False, False, False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
            seen = True
        elif ch == "}":
            depth -= 1
            if seen and depth == 0:
                return True
    return False


class DecisionParseError(ValueError):
    """The model's text is not a valid decision."""


@dataclass(frozen=True)
class DecisionSchema:
    """Schema of the decision JSON for a given set of map places."""

    place_ids: tuple[str, ...]
    reason_max_chars: int = REASON_MAX_CHARS

    def json_schema(self) -> dict:
        return {
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": list(ACTIONS)},
                "speed": {"type": "number", "minimum": 0, "maximum": SPEED_MAX_MPS},
                "target": {"type": "string", "enum": ["", *self.place_ids]},
                "reason": {"type": "string", "maxLength": self.reason_max_chars},
            },
            "required": ["action", "speed", "target", "reason"],
            "additionalProperties": False,
        }

    def example(self) -> str:
        return json.dumps({"action": "slow_down", "speed": 0.5, "target": "",
                           "reason": "person ahead at 4 m"})

    def gbnf(self) -> str:
        """llama.cpp GBNF grammar of exactly this schema."""
        def alt(values: Sequence[str]) -> str:
            return " | ".join(json.dumps(json.dumps(v)) for v in values)

        return "\n".join([
            'root ::= "{" "\\"action\\": " action ", \\"speed\\": " speed '
            '", \\"target\\": " target ", \\"reason\\": " reason "}"',
            f"action ::= {alt(ACTIONS)}",
            'speed ::= [0-1] "." [0-9] | "2.0"',
            f"target ::= {alt(['', *self.place_ids])}",
            f'reason ::= "\\"" char{{0,{self.reason_max_chars}}} "\\""',
            'char ::= [\\x20\\x21\\x23-\\x5B\\x5D-\\x7E]',  # printable ASCII but " and \\
        ]) + "\n"

    def max_output_chars(self) -> int:
        """Length of the longest text the grammar accepts (and so a bound on its tokens)."""
        longest = json.dumps({"action": max(ACTIONS, key=len), "speed": 0.0,
                              "target": max(self.place_ids, key=len, default=""), "reason": ""})
        return len(longest) + self.reason_max_chars

    def parse(self, text: str) -> Decision:
        """Strictly parse and validate a model output into a Decision (source llm)."""
        match = re.search(r"\{.*\}", text, re.S)
        if not match:
            raise DecisionParseError("no JSON object in the model output")
        try:
            obj = json.loads(match.group())
        except json.JSONDecodeError as exc:
            raise DecisionParseError(f"model output is not valid JSON: {exc.msg}") from exc
        if not isinstance(obj, dict):
            raise DecisionParseError("model output is not a JSON object")
        action = obj.get("action")
        if action not in ACTIONS:
            raise DecisionParseError(f"unknown action {action!r}")
        speed = obj.get("speed", 0.0)
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed):
            raise DecisionParseError(f"speed is not a number: {speed!r}")
        if not 0.0 <= speed <= SPEED_MAX_MPS:
            raise DecisionParseError(f"speed {speed} outside [0, {SPEED_MAX_MPS}]")
        target = obj.get("target", "") or ""
        if not isinstance(target, str) or (target and target not in self.place_ids):
            raise DecisionParseError(f"target {target!r} is not a known place id")
        if action not in TARGET_ACTIONS:
            target = ""  # a target only means something when the robot is sent somewhere
        reason = obj.get("reason", "")
        if not isinstance(reason, str):
            raise DecisionParseError("reason is not text")
        return Decision(action=action, speed_limit_mps=float(speed), target_place_id=target,
                        reason=reason[: self.reason_max_chars], source=SOURCE_LLM)
