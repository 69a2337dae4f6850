"""Request validation: nothing reaches the model unchecked."""
from __future__ import annotations

import json
import math
import re
import unicodedata
import uuid
from typing import Any, Optional

from quant_llm_node.config import ServingConfig
from quant_llm_node.reasoning import errors as E
from quant_llm_node.reasoning.errors import RequestError
from quant_llm_node.reasoning.types import NavRequest, RobotState

# C0/C1 control characters except tab and newline, lone surrogates, and the bidirectional
# embedding, override and isolate controls (they make a text read differently than it is stored).
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
_DECODED_BAD = re.compile(r"[\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:\-]*$")
# a zone id: what the map's place ids look like (the prompt shows it as it is)
_ZONE_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
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


_TOO_LONG_CODES = {"query": E.QUERY_TOO_LONG, "goal": E.INVALID_GOAL, "request_id": E.INVALID_REQUEST_ID}


def drop_format_chars(text: str) -> str:
    """``text`` without Unicode format characters (category Cf: zero-width spaces and joiners,
    soft hyphens, word joiners, BOMs), which hide words from the lexicon, the injection
    detector and the screen ("sp\u200bill") while looking the same."""
    if text.isascii():
        return text
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def clean_text(name: str, value: Any, max_chars: int, required: bool = False) -> str:
    """Validate one free-text field; returns it without format characters, stripped."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(E.INVALID_TEXT, f"{name} is not valid UTF-8 ({exc.reason})") from exc
    if not isinstance(value, str):
        raise RequestError(E.INVALID_TEXT, f"{name} must be text")
    if len(value) > max_chars:
        raise RequestError(_TOO_LONG_CODES.get(name, E.INVALID_TEXT),
                           f"{name} has {len(value)} characters, at most {max_chars} accepted")
    bad = _BAD_CHARS.search(value)
    if bad:
        raise RequestError(E.INVALID_TEXT, f"{name} contains a control or invalid character "
                                           f"(U+{ord(bad.group()):04X}) at index {bad.start()}")
    value = drop_format_chars(value).strip()
    if required and not value:
        raise RequestError(E.EMPTY_QUERY, f"{name} is empty (or only invisible characters)")
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


def validate_zone(raw: Any, zones: Optional[frozenset[str]], cfg: ServingConfig) -> str:
    """The state's zone: empty (unknown), or a zone the map knows (``zones``; None or empty: a
    plain identifier). Anything else never reaches the prompt or the rules."""
    zone = clean_text("state.zone", raw, cfg.max_goal_chars)
    if not zone:
        return ""
    if zones:
        if zone not in zones:
            raise RequestError(E.INVALID_STATE, f"state.zone {zone[:64]!r} is not a zone of the map "
                                                f"(known: {', '.join(sorted(zones))})")
    elif not _ZONE_ID.match(zone):
        raise RequestError(E.INVALID_STATE, "state.zone must be a zone id (letters, digits, _ . -)")
    return zone


def validate_state(raw: dict[str, Any], cfg: ServingConfig,
                   zones: Optional[frozenset[str]] = None) -> RobotState:
    """Check ranges; NaN means unknown for battery, obstacle distance means none when NaN/inf;
    the zone must be one the map knows (``zones``)."""
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
        zone=validate_zone(raw.get("zone", ""), zones, cfg),
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


class _DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique, also once format characters are dropped (two copies
    of a key can show the rules one value and the model another)."""
    out = dict(pairs)
    if len(out) != len(pairs) or len({drop_format_chars(k) for k in out}) != len(out):
        seen: set[str] = set()
        for key, _ in pairs:
            if drop_format_chars(key) in seen:
                raise _DuplicateKey(key)
            seen.add(drop_format_chars(key))
    return out


def _clean_value(value: Any, path: str = "$") -> Any:
    """A parsed JSON value whose keys and strings are clean text: no lone surrogate (an escape
    such as "\\ud800" decodes to one, and it cannot be encoded to UTF-8 later), no
    bidirectional control an escape decodes to (escaped C0 controls are kept: the prompt shows
    the context as JSON, which escapes them again), and format characters dropped. Recursive
    within MAX_CONTEXT_DEPTH (checked before parsing)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            _check_string(key, f"a key of {path}")
            key = drop_format_chars(key)
            out[key] = _clean_value(item, f"{path}.{key}" if len(path) < 200 else path)
        return out
    if isinstance(value, list):
        return [_clean_value(item, f"{path}[{i}]" if len(path) < 200 else path)
                for i, item in enumerate(value)]
    if isinstance(value, str):
        _check_string(value, f"the string at {path}")
        return drop_format_chars(value)
    return value


def _check_string(text: str, where: str) -> None:
    bad = _DECODED_BAD.search(text)
    if bad:
        what = "lone surrogate" if "\ud800" <= bad.group() <= "\udfff" else "bidirectional control"
        raise RequestError(E.INVALID_CONTEXT_JSON, f"context_json has a {what} "
                                                   f"(U+{ord(bad.group()):04X}) in {where}")


def parse_context(text: str, cfg: ServingConfig) -> dict[str, Any]:
    """Optional context JSON: must be a JSON object (RFC 8259: no NaN/Infinity), nested at most
    MAX_CONTEXT_DEPTH deep, with unique keys and valid Unicode strings, when present; format
    characters are dropped from its keys and strings."""
    text = clean_text("context_json", text, cfg.max_context_chars)
    if not text:
        return {}
    too_deep = json_depth_error(text)
    if too_deep:
        raise RequestError(E.INVALID_CONTEXT_JSON, f"context_json is {too_deep}")
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_object)
    except _DuplicateKey as exc:
        raise RequestError(E.INVALID_CONTEXT_JSON,
                           f"context_json has the key {str(exc)[:64]!r} more than once") from None
    except json.JSONDecodeError as exc:
        raise RequestError(E.INVALID_CONTEXT_JSON,
                           f"context_json is not valid JSON: {exc.msg} at position {exc.pos}") from exc
    except (ValueError, RecursionError) as exc:
        # NaN/Infinity, an integer longer than Python's int conversion limit (4300 digits), or
        # recursion deeper than the scan above admits: bad input all the same, never an internal error
        raise RequestError(E.INVALID_CONTEXT_JSON, f"context_json is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise RequestError(E.INVALID_CONTEXT_JSON, "context_json must be a JSON object")
    return _clean_value(value)


def validate_request(raw: dict[str, Any], cfg: ServingConfig,
                     zones: Optional[frozenset[str]] = None) -> NavRequest:
    """Raw fields (from a ROS message or a dict) -> NavRequest, or RequestError. ``zones``: the
    zone ids of the map (None: any plain identifier)."""
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
        state=validate_state(raw.get("state") or {}, cfg, zones),
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
