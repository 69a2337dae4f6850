"""context_json and text fields: bad input gets INVALID_CONTEXT_JSON / INVALID_TEXT, never an
error from deep inside the parser or the worker (issue 13, finding 7)."""
import json
import math
import sys

import pytest

from quant_llm_node.config import ServingConfig
from quant_llm_node.reasoning import errors as E
from quant_llm_node.reasoning.errors import RequestError
from quant_llm_node.reasoning.validation import (MAX_CONTEXT_DEPTH, json_depth_error, parse_context,
                                                 safe_request_id, validate_request)

CFG = ServingConfig()


def raw(**kw):
    base = {"request_id": "r1", "query": "status?", "goal": "", "context_json": "",
            "priority": 0, "deadline_ms": 0, "state": {}}
    base.update(kw)
    return base


def rejected(r, cfg=CFG):
    with pytest.raises(RequestError) as info:
        validate_request(r, cfg)
    assert str(info.value)
    return info.value


def worker_text(req) -> bytes:
    """The request's free text as the worker encodes it for the tokenizer (the prompt renders the
    context with json.dumps(ensure_ascii=False)); raises UnicodeEncodeError on a lone surrogate."""
    return "\n".join([req.query, req.goal, req.state.zone,
                      json.dumps(req.context, ensure_ascii=False)]).encode("utf-8")


def nested(depth: int, inner: str = "1") -> str:
    return '{"a": ' * depth + inner + "}" * depth


@pytest.mark.parametrize("text", [
    "[" * 1500 + "]" * 1500,                          # deeper than json's recursion limit
    '{"a": ' + "[" * 1990 + "]" * 1990 + "}",
    "{" * 2000,                                       # unbalanced, still too deep first
    nested(MAX_CONTEXT_DEPTH + 1),
])
def test_deep_nesting_is_invalid_context_json(text):
    err = rejected(raw(context_json=text))
    assert err.code == E.INVALID_CONTEXT_JSON
    assert f"deeper than {MAX_CONTEXT_DEPTH}" in str(err)


def test_depth_at_the_limit_is_accepted_and_fits_the_prompt():
    req = validate_request(raw(context_json=nested(MAX_CONTEXT_DEPTH)), CFG)
    assert "a" in req.context
    assert worker_text(req)


def test_depth_scan_ignores_brackets_inside_strings():
    text = json.dumps({"note": "[[[[{{{{" * 100, "q": "\\\"[[[["})
    assert json_depth_error(text) == ""
    assert validate_request(raw(context_json=text), CFG).context["note"].startswith("[[[[")


def test_depth_scan_needs_no_recursion():
    big = ServingConfig(max_context_chars=100_000)
    text = "[" * 50_000 + "]" * 50_000
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # the scan must not recurse at all
    try:
        assert "deeper than" in json_depth_error(text)
        assert rejected(raw(context_json=text), big).code == E.INVALID_CONTEXT_JSON
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize("text", [
    '"' + '\\"' * 49_999,          # every quote escaped: one unterminated string
    '"' + '\\"' * 49_999 + "\\",  # ... ending in a lone backslash
    '{"a": "' + "x" * 99_990,        # unterminated string after an object start
])
def test_depth_scan_is_linear_on_unterminated_strings(text):
    """A scan that restarted a string at each escaped quote would take minutes on these inputs
    (no timing is asserted here: a quadratic scan shows as a test that does not finish)."""
    big = ServingConfig(max_context_chars=100_000)
    assert json_depth_error(text) == ""
    assert rejected(raw(context_json=text), big).code == E.INVALID_CONTEXT_JSON  # not valid JSON


@pytest.mark.parametrize("text, where", [
    ('{"note": "\\ud800"}', "$.note"),                  # lone high surrogate
    ('{"note": "ok \\udfff tail"}', "$.note"),          # lone low surrogate
    ('{"a": [1, {"b": "\\udc00"}]}', "$.a[1].b"),
    ('{"\\ud800": 1}', "a key of $"),
    ('{"note": "\\ude00\\ud83d"}', "$.note"),           # a pair in the wrong order is two lone ones
])
def test_escaped_lone_surrogate_is_rejected_at_validation(text, where):
    err = rejected(raw(context_json=text))
    assert err.code == E.INVALID_CONTEXT_JSON
    assert "surrogate" in str(err) and where in str(err)
    str(err).encode("utf-8")  # the message itself can travel in a ROS string


def test_the_old_failure_is_what_worker_text_detects():
    """Before the fix, this context passed validation and failed when encoded in the worker."""
    with pytest.raises(UnicodeEncodeError):
        json.dumps(json.loads('{"note": "\\ud800"}'), ensure_ascii=False).encode("utf-8")


def test_escaped_surrogate_pair_is_a_valid_character():
    req = validate_request(raw(context_json='{"note": "\\ud83d\\ude00 ok"}'), CFG)
    assert req.context["note"] == "\U0001F600 ok"
    worker_text(req)  # what the worker will do with it


@pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}'])
def test_non_json_constants_are_invalid_context_json(text):
    assert rejected(raw(context_json=text)).code == E.INVALID_CONTEXT_JSON


def test_integer_longer_than_pythons_conversion_limit_is_invalid_context_json():
    big = ServingConfig(max_context_chars=20_000)
    text = '{"n": ' + "7" * 5000 + "}"
    assert rejected(raw(context_json=text), big).code == E.INVALID_CONTEXT_JSON


@pytest.mark.parametrize("field", ["request_id", "query", "goal", "context_json"])
def test_lone_surrogate_in_any_text_field_is_invalid_text(field):
    value = "status \ud800" if field != "request_id" else "id\udfff"
    err = rejected(raw(**{field: value}))
    assert err.code == E.INVALID_TEXT and field in str(err)


def test_lone_surrogate_in_zone_is_invalid_text():
    err = rejected(raw(state={"zone": "aisle_\ud800"}))
    assert err.code == E.INVALID_TEXT and "state.zone" in str(err)


def test_every_accepted_request_encodes_to_utf8():
    """What passes validation can be encoded for the tokenizer (the worker's first step)."""
    for ctx in ['{"a": "\\u00e9\\u4e2d"}', '{"a": "\\u0000\\u001b"}', nested(5, '"x"')]:
        req = validate_request(raw(context_json=ctx, goal="dock 2", state={"zone": "aisle_3"}), CFG)
        worker_text(req)


def test_parse_context_still_requires_an_object():
    with pytest.raises(RequestError) as info:
        parse_context('["a"]', CFG)
    assert info.value.code == E.INVALID_CONTEXT_JSON


def test_rejections_of_requests_without_an_id_carry_a_generated_one():
    a, b = safe_request_id({"request_id": ""}), safe_request_id({})
    assert a and b and a != b
    assert safe_request_id({"request_id": "svc-1"}, CFG) == "svc-1"
    assert safe_request_id({"request_id": "a b"}, CFG) == ""        # invalid: not echoed
    assert safe_request_id({"request_id": "x" * 500}) == ""
    assert safe_request_id({"request_id": 5}) == ""
    assert math.isnan(validate_request(raw(), CFG).state.battery_pct)
