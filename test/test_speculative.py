"""Speculative decoding gives exactly the target's greedy output and leaves the engine usable.

Real llama.cpp on the default 0.5B model (no mocks); one thread keeps it predictable on a
loaded machine. The real 1.5B target + 0.5B draft pair is marked slow.
"""
import os
from pathlib import Path

import pytest

from quant_llm_node.engine.llama_engine import EngineSettings, LlamaEngine
from quant_llm_node.engine.speculative import NgramIndex, SpeculativeDecoder, SpeculativeResult
from quant_llm_node.reasoning.prompt import PromptBuilder
from quant_llm_node.reasoning.schema import DecisionSchema
from quant_llm_node.reasoning.types import NavRequest, RobotState
from quant_llm_node.serving.service import load_map

THREADS = int(os.environ.get("QLN_TEST_THREADS", "1"))
ROOT = Path(__file__).resolve().parents[1]
TARGET_1_5B = ROOT / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


def _engine(path) -> LlamaEngine:
    e = LlamaEngine(EngineSettings(str(path), n_ctx=1024, n_threads=THREADS))
    e.load(verify_checksum=False)
    return e


def _kv_consistent(engine) -> bool:
    import llama_cpp
    llm = engine._llm
    pos_max = llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(llm.ctx), 0)
    return pos_max == llm.n_tokens - 1


@pytest.fixture(scope="module")
def engine(model_path):
    e = _engine(model_path)
    yield e
    e.close()


@pytest.fixture(scope="module")
def decision(engine):
    m = load_map("places.yaml")
    schema = DecisionSchema(m.ids)
    builder = PromptBuilder(m.places, schema, engine.chat_renderer())
    engine.warm(builder.static_prefix)
    prompts = [builder.build(NavRequest("r", q, state=s)) for q, s in [
        ("A person stepped into the corridor 1.5 m ahead.", RobotState(people_distances_m=[1.5])),
        ("Battery is at 7 percent. What now?", RobotState(battery_pct=7)),
    ]]
    return prompts, schema.gbnf()


def _chat(engine, text: str) -> str:
    return engine.chat_renderer()([{"role": "user", "content": text}])


def _same(a, b):
    assert b.text == a.text
    assert (b.completion_tokens, b.finish_reason) == (a.completion_tokens, a.finish_reason)


def test_ngram_index_proposes_what_followed_the_latest_match():
    idx = NgramIndex([1, 2, 3, 4, 5, 9, 2, 3, 7], ngram_max=2, ngram_min=1)
    for t in (8, 2, 3):
        idx.append(t)
    assert idx.propose(3) == [7, 8, 2]  # (2, 3) last seen before position 9 -> [7, 8, 2, 3]
    idx.append(42)
    assert idx.propose(2) == []  # 42 never seen before
    assert NgramIndex([5, 5, 5], 3, 1).propose(4) == [5]


def test_lookup_matches_greedy_with_and_without_grammar(engine, decision):
    prompts, grammar = decision
    spec = SpeculativeDecoder(engine, mode="lookup", k=4, ngram=3)
    drafted = accepted = 0
    for p, g, n in ((prompts[0], grammar, 40), (prompts[1], grammar, 40), (prompts[0], None, 24)):
        a = engine.generate(p, n, g)
        b = spec.generate(p, n, g)
        _same(a, b)
        assert isinstance(b, SpeculativeResult) and b.accepted <= b.drafted
        assert b.target_batches <= b.completion_tokens
        drafted, accepted = drafted + b.drafted, accepted + b.accepted
        assert _kv_consistent(engine)
    assert drafted > 0 and accepted > 0  # the JSON keys repeat the prompt's example
    spec.close()


def test_lookup_on_repetitive_text_accepts_most_and_next_generate_is_unchanged(engine):
    p = _chat(engine, "Repeat this line three times, nothing else: "
                      "the red robot drives to dock one and waits there.")
    other = _chat(engine, "Say hello.")
    ref = engine.generate(p, 48)
    ref_other = engine.generate(other, 16)
    spec = SpeculativeDecoder(engine, mode="lookup", k=5, ngram=3)
    b = spec.generate(p, 48)
    _same(ref, b)
    assert b.accepted >= 5 and b.target_batches < b.completion_tokens
    assert _kv_consistent(engine)
    # The rolled-back cache serves a plain generate: same prompt (prefix reuse), then another one.
    again = engine.generate(p, 48)
    _same(ref, again)
    assert again.cached_tokens > 0
    _same(ref_other, engine.generate(other, 16))
    spec.close()


def test_stop_and_length_limits_inside_an_accepted_run(engine):
    p = _chat(engine, "Repeat this line twice: alpha beta gamma delta epsilon zeta eta theta.")
    spec = SpeculativeDecoder(engine, mode="lookup", k=6, ngram=2)
    stop = lambda text: text.count(" ") >= 4  # noqa: E731
    a = engine.generate(p, 64, None, should_stop=stop)
    streamed = []
    b = spec.generate(p, 64, None, should_stop=stop, on_text=lambda t, n: streamed.append((t, n)))
    _same(a, b)
    assert b.finish_reason == "interrupted"
    assert [n for _, n in streamed] == list(range(1, b.completion_tokens + 1))
    assert streamed[-1][0] == b.text
    for n in (1, 2, 7):
        _same(engine.generate(p, n), spec.generate(p, n))
        assert _kv_consistent(engine)
    spec.close()


def test_draft_mode_same_model_accepts_everything(engine, model_path, decision):
    _, grammar = decision
    p = _chat(engine, "A person is 2 m ahead of the robot. Answer with a JSON decision object.")
    draft = _engine(model_path)
    try:
        spec = SpeculativeDecoder(engine, mode="draft", draft_engine=draft, k=3)
        for g in (grammar, None):
            a = engine.generate(p, 20, g)
            b = spec.generate(p, 20, g)
            _same(a, b)
            assert b.drafted > 0 and b.acceptance_rate >= 0.9
            assert _kv_consistent(engine) and _kv_consistent(draft)
        spec.close()
    finally:
        draft.close()


def test_bad_arguments(engine):
    with pytest.raises(ValueError):
        SpeculativeDecoder(engine, mode="medusa")
    with pytest.raises(ValueError):
        SpeculativeDecoder(engine, mode="draft")


@pytest.mark.slow
def test_real_pair_1_5b_target_0_5b_draft(model_path):
    if not TARGET_1_5B.is_file():
        pytest.skip("1.5B model not fetched")
    target, draft = _engine(TARGET_1_5B), _engine(model_path)
    try:
        m = load_map("places.yaml")
        schema = DecisionSchema(m.ids)
        builder = PromptBuilder(m.places, schema, target.chat_renderer())
        for e in (target, draft):
            e.warm(builder.static_prefix)
        p = builder.build(NavRequest("r", "A forklift is crossing 4 m ahead.", state=RobotState(speed_mps=1.0)))
        for mode in ("draft", "lookup"):
            spec = SpeculativeDecoder(target, mode=mode, draft_engine=draft, k=3)
            for g in (schema.gbnf(), None):
                _same(target.generate(p, 48, g), spec.generate(p, 48, g))
            spec.close()
    finally:
        target.close()
        draft.close()
