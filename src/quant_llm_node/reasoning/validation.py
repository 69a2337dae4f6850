"""Request validation: nothing reaches the model unchecked."""
from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any

from quant_llm_node.config import ServingConfig
from quant_llm_node.reasoning import errors as E
from quant_llm_node.reasoning.errors import RequestError
from quant_llm_node.reasoning.types import NavRequest, RobotState

# C0/C1 control characters except tab and newline, plus lone surrogates.
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:\-]*$")
_MAX_BATTERY_PCT = 100.0
_MAX_SPEED_MPS = 20.0
_MAX_DISTANCE_M = 1.0e4

# JSON-format limit of context_json: objects and arrays nested at most this deep. It keeps
# json.loads (recursive in CPython, RecursionError near depth 1000) and the prompt's json.dumps
# far from the interpreter's recursion limit; planner context is a few flat keys.
MAX_CONTEXT_DEPTH = 32
# A JSON string token, or one bracket: what the depth scan looks at (strings may hold brackets).
# An unterminated string runs to the end of the text (optionally ending in a lone backslash), so
# every '"' starts a token that matches without backtracking: the scan stays linear in the text.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean_text(name: str, value: Any, max_chars: int, required: bool = False) -> str:
    """Validate one free-text field; returns it stripped."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(E.INVALID_TEXT, f"{name} is not valid UTF-8 ({exc.reason})") from exc
    if not isinstance(value, str):
        raise RequestError(E.INVALID_TEXT, f"{name} must be text")
    if len(value) > max_chars:
        code = E.QUERY_TOO_LONG if name == "query" else (
            E.INVALID_GOAL if name == "goal" else E.INVALID_TEXT)
        raise RequestError(code, f"{name} has {len(value)} characters, at most {max_chars} accepted")
    bad = _BAD_CHARS.search(value)
    if bad:
        raise RequestError(E.INVALID_TEXT, f"{name} contains a control or invalid character "
                                           f"(U+{ord(bad.group()):04X}) at index {bad.start()}")
    value = value.strip()
    if required and not value:
        raise RequestError(E.EMPTY_QUERY, f"{name} is empty")
    return value


def _number(name: str, value: Any, lo: float, hi: float, allow_nan: bool, allow_inf: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError) as exc:
        raise RequestError(E.INVALID_STATE, f"state.{name} is not a number: {value!r}") from exc
    if math.isnan(x):
        if allow_nan:
            return x
        raise RequestError(E.INVALID_STATE, f"state.{name} is NaN")
    if math.isinf(x):
        if allow_inf and x > 0:
            return x
        raise RequestError(E.INVALID_STATE, f"state.{name} is infinite")
    if not lo <= x <= hi:
        raise RequestError(E.INVALID_STATE, f"state.{name} = {x} is outside [{lo}, {hi}]")
    return x


def validate_state(raw: dict[str, Any], cfg: ServingConfig) -> RobotState:
    """Check ranges; NaN means unknown for battery, obstacle distance means none when NaN/inf."""
    people = raw.get("people_distances_m") or []
    if len(people) > cfg.max_people:
        raise RequestError(E.INVALID_STATE, f"state.people_distances_m has {len(people)} entries, "
                                            f"at most {cfg.max_people} accepted")
    obstacle = _number("obstacle_distance_m", raw.get("obstacle_distance_m", math.inf),
                       0.0, _MAX_DISTANCE_M, allow_nan=True, allow_inf=True)
    return RobotState(
        x=_number("pose.x", raw.get("x", 0.0), -_MAX_DISTANCE_M, _MAX_DISTANCE_M, False),
        y=_number("pose.y", raw.get("y", 0.0), -_MAX_DISTANCE_M, _MAX_DISTANCE_M, False),
        theta=_number("pose.theta", raw.get("theta", 0.0), -2 * math.pi, 2 * math.pi, False),
        speed_mps=_number("speed_mps", raw.get("speed_mps", 0.0), 0.0, _MAX_SPEED_MPS, False),
        battery_pct=_number("battery_pct", raw.get("battery_pct", math.nan), 0.0,
                            _MAX_BATTERY_PCT, allow_nan=True),
        obstacle_distance_m=math.inf if math.isnan(obstacle) else obstacle,
        people_distances_m=[_number(f"people_distances_m[{i}]", d, 0.0, _MAX_DISTANCE_M, False)
                            for i, d in enumerate(people)],
        zone=clean_text("state.zone", raw.get("zone", ""), cfg.max_goal_chars),
    )


def json_depth_error(text: str, limit: int = MAX_CONTEXT_DEPTH) -> str:
    """Without recursion: "" when no object/array in ``text`` nests deeper than ``limit``,
    else a message saying where. Brackets inside JSON strings do not count."""
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        tok = m.group()
        if tok == "[" or tok == "{":
            depth += 1
            if depth > limit:
                return f"nested deeper than {limit} levels at position {m.start()}"
        elif tok == "]" or tok == "}":
            depth -= 1
    return ""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _check_strings(value: Any) -> None:
    """Every key and string in a parsed JSON value is valid Unicode (no lone surrogate, which
    an escape such as "\\ud800" decodes to and which cannot be encoded to UTF-8 later).
    Iterative: the value is at most MAX_CONTEXT_DEPTH deep, but no recursion is needed."""
    stack: list[tuple[Any, str]] = [(value, "$")]
    while stack:
        v, path = stack.pop()
        if isinstance(v, dict):
            for k, item in v.items():
                bad = _SURROGATE.search(k)
                if bad:
                    raise RequestError(E.INVALID_CONTEXT_JSON,
                                       f"context_json has a lone surrogate (U+{ord(bad.group()):04X}) "
                                       f"in a key of {path}")
                stack.append((item, f"{path}.{k}" if len(path) < 200 else path))
        elif isinstance(v, list):
            stack.extend((item, f"{path}[{i}]" if len(path) < 200 else path)
                         for i, item in enumerate(v))
        elif isinstance(v, str):
            bad = _SURROGATE.search(v)
            if bad:
                raise RequestError(E.INVALID_CONTEXT_JSON,
                                   f"context_json has a lone surrogate (U+{ord(bad.group()):04X}) "
                                   f"in the string at {path}")


def parse_context(text: str, cfg: ServingConfig) -> dict[str, Any]:
    """Optional context JSON: must be a JSON object (RFC 8259: no NaN/Infinity), nested at most
    MAX_CONTEXT_DEPTH deep, with valid Unicode strings, when present."""
    text = clean_text("context_json", text, cfg.max_context_chars)
    if not text:
        return {}
    too_deep = json_depth_error(text)
    if too_deep:
        raise RequestError(E.INVALID_CONTEXT_JSON, f"context_json is {too_deep}")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise RequestError(E.INVALID_CONTEXT_JSON,
                           f"context_json is not valid JSON: {exc.msg} at position {exc.pos}") from exc
    except (ValueError, RecursionError) as exc:
        # NaN/Infinity, an integer longer than Python's int conversion limit (4300 digits), or
        # recursion deeper than the scan above admits: bad input all the same, never an internal error
        raise RequestError(E.INVALID_CONTEXT_JSON, f"context_json is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise RequestError(E.INVALID_CONTEXT_JSON, "context_json must be a JSON object")
    _check_strings(value)
    return value


def validate_request(raw: dict[str, Any], cfg: ServingConfig) -> NavRequest:
    """Raw fields (from a ROS message or a dict) -> NavRequest, or RequestError."""
    request_id = clean_text("request_id", raw.get("request_id", ""), cfg.max_request_id_chars)
    if not _REQUEST_ID.match(request_id):
        raise RequestError(E.INVALID_REQUEST_ID,
                           "request_id may hold only letters, digits and _ . : -")
    deadline = raw.get("deadline_ms", 0)
    if isinstance(deadline, bool) or not isinstance(deadline, int) or deadline < 0:
        raise RequestError(E.INVALID_DEADLINE, "deadline_ms must be a non-negative integer")
    if deadline > cfg.max_deadline_ms:
        raise RequestError(E.INVALID_DEADLINE,
                           f"deadline_ms {deadline} is above the maximum {cfg.max_deadline_ms}")
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 255:
        raise RequestError(E.INVALID_PRIORITY, "priority must be an integer 0..255")
    return NavRequest(
        request_id=request_id or new_request_id(),
        query=clean_text("query", raw.get("query", ""), cfg.max_query_chars, required=True),
        goal=clean_text("goal", raw.get("goal", ""), cfg.max_goal_chars),
        state=validate_state(raw.get("state") or {}, cfg),
        context=parse_context(raw.get("context_json", ""), cfg),
        priority=priority,
        deadline_ms=deadline or cfg.default_deadline_ms,
    )


def new_request_id() -> str:
    """The id given to a request that came without one."""
    return uuid.uuid4().hex[:12]


def safe_request_id(raw: dict[str, Any], cfg: ServingConfig | None = None) -> str:
    """The request id to echo in an error response, even when the request is invalid: the
    client's id when it is valid, a generated one when the client sent none (as for an accepted
    request), "" when the client's id is itself invalid. ``cfg`` None: the default limits (a
    node that is not configured yet)."""
    rid = raw.get("request_id", "")
    max_chars = (cfg or ServingConfig()).max_request_id_chars
    if isinstance(rid, str) and not rid.strip():
        return new_request_id()
    if isinstance(rid, str) and len(rid) <= max_chars and _REQUEST_ID.match(rid):
        return rid
    return ""
