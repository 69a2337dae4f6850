"""Decision schema: strict parsing of model output, and the grammar's shape."""
import json

import pytest

from quant_llm_node.reasoning.schema import DecisionParseError, DecisionSchema

SCHEMA = DecisionSchema(("dock_1", "dock_2", "packing"))


def test_valid_output_parses():
    d = SCHEMA.parse('{"action": "go_to", "speed": 0.8, "target": "packing", "reason": "clear"}')
    assert (d.action, d.speed_limit_mps, d.target_place_id, d.source) == ("go_to", 0.8, "packing", "llm")
    # text around the object (no grammar) is tolerated; a target without a destination is dropped
    d = SCHEMA.parse('Sure: {"action": "stop", "speed": 0, "target": "dock_1", "reason": "x"} ok')
    assert (d.action, d.target_place_id) == ("stop", "")


@pytest.mark.parametrize("text, message", [
    ("no json here", "no JSON object"),
    ('{"action": "stop", "speed": 0,}', "not valid JSON"),
    ('{"action": "fly", "speed": 0, "target": "", "reason": ""}', "unknown action"),
    ('{"action": "go_to", "speed": 9.5, "target": "", "reason": ""}', "outside"),
    ('{"action": "go_to", "speed": "fast", "target": "", "reason": ""}', "not a number"),
    ('{"action": "go_to", "speed": NaN, "target": "", "reason": ""}', "not a number"),
    ('{"action": "go_to", "speed": 1.0, "target": "moon_base", "reason": ""}', "not a known place"),
    ('{"action": "go_to", "speed": 1.0, "target": "", "reason": 5}', "reason is not text"),
])
def test_invalid_outputs_are_refused(text, message):
    with pytest.raises(DecisionParseError, match=message):
        SCHEMA.parse(text)


def test_grammar_lists_actions_and_places_and_bounds_reason():
    g = SCHEMA.gbnf()
    for word in ("continue", "slow_down", "dock_1", "packing"):
        assert f'\\"{word}\\"' in g
    assert "char{0,80}" in g
    schema = SCHEMA.json_schema()
    assert schema["properties"]["target"]["enum"] == ["", "dock_1", "dock_2", "packing"]
    json.loads(SCHEMA.example())


def test_longest_decision_bounds_output_and_parses():
    """max_output_chars is the longest text the grammar accepts: every action/target pair with
    a full reason fits it, and the longest one reaches it."""
    import itertools
    from quant_llm_node.reasoning.types import ACTIONS
    lengths = []
    for action, target in itertools.product(ACTIONS, ("", *SCHEMA.place_ids)):
        text = json.dumps({"action": action, "speed": 2.0, "target": target, "reason": "r" * 80})
        SCHEMA.parse(text)
        lengths.append(len(text))
    assert max(lengths) == SCHEMA.max_output_chars()



def test_constrained_argmax_topk_matches_a_full_pass():
    """Among the top k, the best allowed token (lowest id on ties) or None when it cannot be
    sure: compared with brute force on random logits, ties and allowed sets."""
    import numpy as np
    from quant_llm_node.engine.sampling import constrained_argmax_topk
    rng = np.random.default_rng(0)
    for _ in range(500):
        logits = rng.integers(-5, 5, 200).astype(np.float32)  # many ties
        allowed = set(rng.choice(200, int(rng.integers(1, 200)), replace=False).tolist())
        rejected = int(logits.argmax())
        allowed.discard(rejected)
        if not allowed:
            continue
        best = max(allowed, key=lambda t: (logits[t], -t))
        got = constrained_argmax_topk(logits, allowed.__contains__, rejected, k=16)
        assert got is None or got == best
