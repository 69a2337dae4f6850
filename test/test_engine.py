"""Real llama.cpp generation on the default model (no mocks)."""
import json

import pytest

from quant_llm_node.config import EngineConfig
from quant_llm_node.engine.llama_engine import EngineError, EngineSettings, LlamaEngine
from quant_llm_node.reasoning.prompt import PromptBuilder
from quant_llm_node.reasoning.schema import DecisionSchema
from quant_llm_node.reasoning.types import ACTIONS, NavRequest, RobotState
from quant_llm_node.reasoning.task import load_map


@pytest.fixture(scope="module")
def engine(model_path):
    e = LlamaEngine(EngineSettings.from_config(EngineConfig(n_ctx=1024, n_threads=2), model_path))
    report = e.load(verify_checksum=False)
    assert report.n_layers == 24 and report.backend.startswith("llama.cpp")
    yield e
    e.close()


@pytest.fixture(scope="module")
def prompts(engine):
    m = load_map("places.yaml")
    schema = DecisionSchema(m.ids)
    return PromptBuilder(m.places, schema, engine.chat_renderer()), schema


def test_grammar_output_always_parses_and_prefix_is_reused(engine, prompts):
    builder, schema = prompts
    engine.warm(builder.static_prefix)
    prefix_tokens = engine.count_tokens(builder.static_prefix)
    for query, state in [
        ("A person stepped into the corridor 1.5 m ahead.", RobotState(people_distances_m=[1.5])),
        ("Battery is at 7 percent. What now?", RobotState(battery_pct=7)),
    ]:
        res = engine.generate(builder.build(NavRequest("r", query, state=state)), 64, schema.gbnf())
        decision = schema.parse(res.text)
        assert decision.action in ACTIONS
        assert json.loads(res.text)["action"] == decision.action
        assert res.finish_reason == "stop"
        assert res.cached_tokens >= prefix_tokens - 1  # only the dynamic suffix was evaluated
        assert 0 < res.first_token_ms <= res.total_ms and res.decode_tps > 0
        assert res.prompt_tokens > res.cached_tokens


def test_greedy_is_deterministic(engine, prompts):
    builder, schema = prompts
    p = builder.build(NavRequest("r", "Sensors report a wet floor patch ahead."))
    a = engine.generate(p, 48, schema.gbnf()).text
    engine.generate(builder.build(NavRequest("r", "Other text to move the cache.")), 8, schema.gbnf())
    assert engine.generate(p, 48, schema.gbnf()).text == a


def test_stop_callback_interrupts_and_engine_stays_usable(engine, prompts):
    builder, schema = prompts
    p = builder.build(NavRequest("r", "Describe the aisle."))
    res = engine.generate(p, 64, None, should_stop=lambda text: len(text) >= 5)
    assert res.finish_reason == "interrupted" and res.completion_tokens <= 5
    streamed = []
    full = engine.generate(p, 16, schema.gbnf(), on_text=lambda t, n: streamed.append((t, n)))
    assert streamed and streamed[-1][0] == full.text and streamed[-1][1] == full.completion_tokens


def test_context_overflow_is_an_engine_error(engine):
    with pytest.raises(EngineError) as info:
        engine.generate("obstacle ahead " * 2000, 8)
    assert info.value.code == "CONTEXT_OVERFLOW"


def test_a_prompt_without_room_for_the_answer_is_a_context_overflow(engine):
    """min_room: a prompt that fits but leaves less room than the answer needs is refused
    before any decoding, rather than cut off at the end of the context."""
    prompt = "obstacle ahead " * 300
    n_prompt = engine.count_tokens(prompt)
    room = engine.n_ctx - n_prompt
    assert 1 < room < 500
    assert engine.generate(prompt, 2, min_room=room).completion_tokens >= 1
    with pytest.raises(EngineError) as info:
        engine.generate(prompt, 2, min_room=room + 1)
    assert info.value.code == "CONTEXT_OVERFLOW" and f"room for {room + 1}" in str(info.value)


def test_bad_grammar_is_refused(engine):
    from quant_llm_node.engine.sampling import GrammarError
    with pytest.raises(GrammarError):
        engine.generate("hi", 4, "root ::= (")


def test_grammar_reason_accepts_printable_ascii_only(engine, prompts):
    """Inside the reason string the grammar takes printable ASCII and refuses other text, so
    each generated token adds at least one character (the schema's token bound holds)."""
    _, schema = prompts
    sampler = engine.sampler(schema.gbnf())
    try:
        for tok in engine.tokenize('{"action": "stop", "speed": 0.0, "target": "", "reason": "',
                                   add_bos=False, special=False):
            assert sampler.allows(tok)
            sampler.accept(tok)
        one = lambda text: engine.tokenize(text, add_bos=False, special=False)[0]
        assert sampler.allows(one("person"))
        for text in ("\u00e9t\u00e9", "\u2192", "\n", "\\n"):
            assert not sampler.allows(one(text)), text
    finally:
        sampler.close()


@pytest.mark.parametrize("prompt, grammar, in_top", [
    ("Is the aisle clear? Answer:", 'root ::= "yes" | "no"', True),
    ("Describe the aisle.", 'root ::= [0-9] [0-9] [0-9]', False),  # digits rarely among the top
])
def test_top_candidates_settle_grammar_rejections_like_a_full_pass(engine, monkeypatch, prompt,
                                                                   grammar, in_top):
    """When the grammar rejects the argmax, the best allowed token among the top candidates is
    the one a full-vocabulary grammar pass picks: same text, fewer full passes; when no top
    candidate is allowed, the full pass runs."""
    from quant_llm_node.engine import sampling
    fast = engine.generate(prompt, 8, grammar)
    monkeypatch.setattr(sampling, "TOPK_FALLBACK", 0)
    full = engine.generate(prompt, 8, grammar)
    assert fast.text == full.text
    assert full.grammar_topk_hits == 0 and full.grammar_full_passes >= 1
    if in_top:
        assert fast.grammar_topk_hits >= 1 and fast.grammar_full_passes < full.grammar_full_passes
    else:  # the rejection was settled one way or the other, with the same result
        assert fast.grammar_topk_hits + fast.grammar_full_passes >= 1


def test_a_warm_up_in_the_background_leaves_the_same_state_as_one_in_the_foreground(engine, prompts):
    """A model swap warms its prefix in WARM_SLICE-token slices (pause points between them);
    configure warms it in n_batch chunks. On this build both give the same bits: the next
    logits are identical, so decisions after a swap are those after a fresh configure."""
    import numpy as np

    from quant_llm_node.engine import compute_thread
    builder, _ = prompts
    prefix = builder.static_prefix
    suffix = engine.tokenize(" The aisle is clear.", add_bos=False, special=False)

    def logits_after_warm(background: bool):
        engine.reset_cache()
        if background:
            with compute_thread.background():
                compute_thread.run(engine.warm, prefix)
        else:
            engine.warm(prefix)
        engine.eval(suffix)
        return engine.logits(-1).copy()
    assert np.array_equal(logits_after_warm(False), logits_after_warm(True))
