"""Jump-forward decoding and the engine's public API, on real llama.cpp with the default model.

- the grammar probe finds exactly the text the decision grammar forces (keys, punctuation,
  the rest of a unique enum value, the end);
- "exact" mode is byte-identical to step-by-step decoding (texts, token counts, finish
  reasons, streamed partial texts) and saves decode steps: it batches forced tokens only as far
  as this build rounds a batch like single rows, which the project's patched wheel does up to
  3 rows (``LlamaEngine.exact_rows``);
- "on" mode evaluates forced spans in batches, keeps only tokens the constrained greedy choice
  agrees with, streams once per token and leaves the KV cache consistent;
- the speculative decoder uses the same loop.
"""
import os

import pytest

from quant_llm_node.config import EngineConfig
from quant_llm_node.engine.llama_engine import (
    EXACT_ROWS_PROBED, EngineSettings, LlamaEngine, jump_forward_mode)
from quant_llm_node.engine.speculative import SpeculativeDecoder
from quant_llm_node.reasoning.schema import DecisionSchema
from quant_llm_node.reasoning.task import DecisionTask, load_map
from quant_llm_node.reasoning.types import NavRequest, RobotState

THREADS = int(os.environ.get("QLN_TEST_THREADS", "1"))


@pytest.fixture(scope="module")
def engine(model_path):
    e = LlamaEngine(EngineSettings.from_config(EngineConfig(n_threads=THREADS), model_path))
    e.load(verify_checksum=False)
    yield e
    e.close()


@pytest.fixture(scope="module")
def task():
    from quant_llm_node.config import SafetyConfig
    return DecisionTask(load_map("places.yaml"), SafetyConfig())


@pytest.fixture(scope="module")
def decision(engine, task):
    builder = task.prompts(engine.chat_renderer())
    prompts = [builder.build(NavRequest("r", q, goal=g, state=s), grounded) for q, g, s, grounded in [
        ("A person stepped into the corridor 1.5 m ahead.", "", RobotState(people_distances_m=[1.5]), ""),
        ("Take me to the loading bay, the aisle is clear.", "loading bay", RobotState(speed_mps=1.0),
         "loading_bay"),
        ("Battery is at 7 percent. What now?", "", RobotState(battery_pct=7), ""),
    ]]
    return prompts, builder.static_prefix


def _run(engine, prefix, *args, **kw):
    engine.warm(prefix)  # same cache state for every run: only the static prefix cached
    return engine.generate(*args, **kw)


def _stream(engine, prefix, prompt, task, mode):
    seen = []
    r = _run(engine, prefix, prompt, task.max_tokens, task.grammar, on_text=lambda t, n: seen.append((t, n)),
             min_room=task.min_room, jump_forward=mode)
    return r, seen


def _probe(engine, grammar, text):
    s = engine.sampler(grammar)
    try:
        assert s.enable_forcing(engine.byte_tokens(), engine.eog_token())
        for t in engine.tokenize(text, add_bos=False, special=False):
            assert s.allows(t), text
            s.accept(t)
        return s.forced_bytes()
    finally:
        s.close()


def test_engine_settings_from_config_carries_every_engine_field(model_path):
    cfg = EngineConfig(n_ctx=1024, n_threads=3, n_batch=64, seed=7, kv_cache_type="q8_0",
                       flash_attn=True, use_mmap=False, jump_forward=True)
    s = EngineSettings.from_config(cfg, model_path, sha256="ab")
    assert (s.model_path, s.sha256, s.n_ctx, s.n_threads, s.n_batch, s.seed) == (
        str(model_path), "ab", 1024, 3, 64, 7)
    assert (s.kv_cache_type, s.flash_attn, s.use_mmap, s.jump_forward) == ("q8_0", True, False, True)
    assert EngineConfig().jump_forward is False and EngineSettings("m").jump_forward is False
    assert [jump_forward_mode(v) for v in (False, True, "off")] == ["exact", "on", "off"]
    with pytest.raises(ValueError):
        jump_forward_mode("fast")


def test_public_kv_api_prefix_reuse_decode_truncate(engine):
    toks = engine.tokenize("The robot drives to dock one and waits there.")
    engine.reset_cache()
    assert engine.n_tokens == 0 and engine.kv_pos_max() == -1
    cached, rest = engine.prepare(toks)
    assert cached == 0 and rest == toks
    engine.eval(rest[:-3])
    engine.decode(rest[-3:], all_logits=True)
    assert engine.n_tokens == len(toks) == engine.kv_pos_max() + 1
    assert engine.cached_tokens() == toks
    rows = [engine.logits(i).copy() for i in range(3)]
    assert rows[0].shape == (engine.n_vocab,) and not (rows[0] == rows[2]).all()
    engine.truncate(len(toks) - 2)
    assert engine.n_tokens == len(toks) - 2 == engine.kv_pos_max() + 1
    cached, rest = engine.prepare(toks)  # the common prefix is kept
    assert cached == len(toks) - 2 and rest == toks[-2:]
    assert engine.same_vocab(engine) and engine.is_eog(engine.eog_token())
    table = engine.byte_tokens()
    assert len(table) == 256 and all(engine.token_bytes(t) == bytes([b])
                                     for b, t in enumerate(table) if 32 <= b < 127)
    assert engine.detokenize(engine.tokenize("dock one", add_bos=False, special=False)) == "dock one"


def test_grammar_probe_finds_exactly_the_forced_text(engine, task):
    g = task.grammar
    assert _probe(engine, g, "") == (b'{"action": "', False)
    assert _probe(engine, g, '{"action": "s') == (b"", False)  # stop | slow_down
    assert _probe(engine, g, '{"action": "st') == (b'op", "speed": ', False)
    assert _probe(engine, g, '{"action": "stop", "speed": 0') == (b".", False)
    assert _probe(engine, g, '{"action": "stop", "speed": 2') == (b'.0, "target": "', False)
    assert _probe(engine, g, '{"action": "go_to", "speed": 0.5, "target": "load') == (
        b'ing_bay", "reason": "', False)
    assert _probe(engine, g, '{"action": "go_to", "speed": 0.5, "target": "", "reason": "ab') == (b"", False)
    assert _probe(engine, g, '{"action": "go_to", "speed": 0.5, "target": "", "reason": "ab"') == (b"}", True)
    assert _probe(engine, g, '{"action": "go_to", "speed": 0.5, "target": "", "reason": "ab"}') == (b"", True)
    long_reason = "x" * DecisionSchema(load_map("places.yaml").ids).reason_max_chars
    assert _probe(engine, g, '{"action": "wait", "speed": 0.0, "target": "", "reason": "' + long_reason) == (
        b'"}', True)


def test_exact_mode_is_byte_identical_to_step_by_step_and_saves_steps(engine, task, decision):
    prompts, prefix = decision
    for p in prompts:
        off, seen_off = _stream(engine, prefix, p, task, "off")
        ex, seen_ex = _stream(engine, prefix, p, task, "exact")
        assert (ex.text, ex.completion_tokens, ex.finish_reason) == (
            off.text, off.completion_tokens, off.finish_reason)
        assert seen_ex == seen_off  # the same partial texts, once per token
        assert off.finish_reason == "stop" and off.decode_calls == off.completion_tokens
        # forced tokens ride along in batches no larger than the exact rows
        assert max(ex.batch_sizes) <= engine.exact_rows() == EXACT_ROWS_PROBED
        assert ex.forced_tokens >= 5 and ex.decode_calls <= off.decode_calls - 5
        task.decide(ex.text, NavRequest("r", "q"))  # parses
        assert engine.kv_pos_max() == engine.n_tokens - 1


def test_on_mode_batches_forced_spans_and_streams_every_token(engine, task, decision):
    prompts, prefix = decision
    for p in prompts:
        off = _run(engine, prefix, p, task.max_tokens, task.grammar, min_room=task.min_room,
                   jump_forward="off")
        on, seen = _stream(engine, prefix, p, task, "on")
        again = _run(engine, prefix, p, task.max_tokens, task.grammar, min_room=task.min_room,
                     jump_forward="on")
        assert again.text == on.text  # deterministic
        assert on.finish_reason == "stop"
        task.decide(on.text, NavRequest("r", "q"))  # a valid decision
        assert [n for _, n in seen] == list(range(1, on.completion_tokens + 1))
        assert seen[-1][0] == on.text
        # about 20 of the ~37 tokens of a decision are forced by the grammar
        assert on.forced_tokens >= 10 and on.forced_tokens <= on.forced_drafted
        assert on.forced_tokens >= 0.8 * on.forced_drafted
        assert on.decode_calls <= off.decode_calls - 8
        assert max(on.batch_sizes) > 1
        assert engine.kv_pos_max() == engine.n_tokens - 1


def test_on_mode_keeps_the_models_own_tokens_where_it_splits_a_span_differently(engine):
    """A span the tokenizer merges one way while the model emits it another is settled by the
    verification: the output is the model's constrained greedy output either way."""
    grammar = 'root ::= "{\\"answer\\": \\"" ("yes" | "no") "\\"}"'
    render = engine.chat_renderer()
    p = render([{"role": "user", "content": 'Reply with the JSON {"answer": "yes"} and nothing else.'}])
    off = engine.generate(p, 16, grammar, jump_forward="off")
    on = engine.generate(p, 16, grammar, jump_forward="on")
    assert off.text == on.text == '{"answer": "yes"}'
    assert on.decode_calls < off.decode_calls and on.forced_tokens >= 1


def test_speculative_decoder_uses_jump_forward(engine, task, decision):
    prompts, prefix = decision
    spec = SpeculativeDecoder(engine, mode="lookup", k=4, ngram=3)
    for p in prompts[:2]:
        off = _run(engine, prefix, p, task.max_tokens, task.grammar, min_room=task.min_room,
                   jump_forward="off")
        engine.warm(prefix)
        ex = spec.generate(p, task.max_tokens, task.grammar, min_room=task.min_room, jump_forward="exact")
        engine.warm(prefix)
        on = spec.generate(p, task.max_tokens, task.grammar, min_room=task.min_room, jump_forward="on")
        task.decide(ex.text, NavRequest("r", "q"))
        task.decide(on.text, NavRequest("r", "q"))
        assert ex.target_batches <= ex.completion_tokens
        assert on.forced_tokens >= 10 and on.target_batches < off.decode_calls - 8
        assert engine.kv_pos_max() == engine.n_tokens - 1


def test_exact_mode_matches_step_by_step_at_the_limits(engine, task, decision):
    """Token limit and stop callback landing on the grammar's forced end: same finish."""
    prompts, prefix = decision
    p = prompts[0]
    full = _run(engine, prefix, p, task.max_tokens, task.grammar, jump_forward="off")
    n = full.completion_tokens
    stop_at_end = lambda text: text.endswith("}")  # noqa: E731
    for kw in ({"max_tokens": n}, {"max_tokens": n - 1}, {"max_tokens": n + 1},
               {"max_tokens": task.max_tokens, "should_stop": stop_at_end}):
        kw = dict(kw)
        m = kw.pop("max_tokens")
        a = _run(engine, prefix, p, m, task.grammar, jump_forward="off", **kw)
        b = _run(engine, prefix, p, m, task.grammar, jump_forward="exact", **kw)
        assert (b.text, b.completion_tokens, b.finish_reason) == (a.text, a.completion_tokens,
                                                                   a.finish_reason), (m, kw)
    assert _run(engine, prefix, p, n, task.grammar, jump_forward="exact").finish_reason == "length"
    assert _run(engine, prefix, p, task.max_tokens, task.grammar, should_stop=stop_at_end,
                jump_forward="exact").finish_reason == "interrupted"


def test_decode_bench_compares_the_modes_on_the_nodes_path(engine, tmp_path):
    """decode_bench builds the node's prompts from a scenarios file (requests the node would
    reject are skipped) and reports identity and steps saved per mode."""
    import yaml
    from quant_llm_node.bench import decode_bench as db
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump({"scenarios": [
        {"id": "person", "query": "A person is 1.5 m ahead.", "state": {"people_distances_m": [1.5]}},
        {"id": "bay", "query": "Go to the loading bay.", "goal": "loading bay",
         "expect_place": "loading_bay", "state": {"speed_mps": 0.5}},
        {"id": "empty", "query": "", "state": {}},
    ]}))
    ds = db.DecisionSet(engine, [path])
    assert [pid for pid, _ in ds.prompts] == ["mini:person", "mini:bay"] and ds.skipped == ["mini:empty"]
    r = db.bench_jump_forward(engine, ds)
    assert r["decisions"] == 2 and r["exact"]["identical"] == 2 and not r["exact"]["mismatches"]
    assert r["exact"]["steps_saved_per_decision"] >= 1
    assert r["on"]["steps_saved_per_decision"] >= 8 and r["on"]["forced_acceptance"] >= 0.8
    assert r["on"]["identical"] + len(r["on"]["mismatches"]) == 2


def test_decode_bench_measures_whether_batches_round_like_single_rows(engine):
    """One row is the reference itself, so it must be identical (decoding is deterministic);
    every k gets a verdict and the cache is left where it was."""
    from quant_llm_node.bench import decode_bench as db
    ds = db.DecisionSet(engine)
    r = db.batch_rows_exactness(engine, ds, ks=(1, 2, 4), prompts=2)
    n = engine.n_tokens
    assert r["1"]["identical"] and r["1"]["max_abs_logit_diff"] == 0.0
    for k in ("2", "4"):
        assert r[k]["identical"] == (r[k]["max_abs_logit_diff"] == 0.0)
    for k in ("1", "2", "4"):  # the price of a k-row decode, and of one of its rows
        assert r[k]["ms"] > 0 and abs(r[k]["ms_per_row"] * int(k) - r[k]["ms"]) < 0.05 * int(k)
    assert n == r["kv_depth"]
    assert r["suffix_prefill_tps_p50"] > 0 and r["decode_tps_p50"] > 0 and r["suffix_tokens_p50"] > 10


def test_corpus_bench_compares_every_mode_with_step_by_step(engine, task, tmp_path):
    """`quant-llm-bench jump`'s per-file run on a few public scenarios: every mode is compared
    with off, and the figures come from the runs (identical counts, fewer llama_decode calls)."""
    from pathlib import Path

    from quant_llm_node.bench import jump_bench
    from quant_llm_node.config import Config
    scenarios = Path(__file__).resolve().parent / "data" / "scenarios.yaml"
    res = jump_bench.run_file(engine, Config(), task, scenarios, ["exact", "on"], 2)
    assert res.n == 2 and set(res.modes) == {"off", "exact", "on"} and not res.held_out
    assert res.modes["off"]["identical"] == 2
    assert res.modes["exact"]["identical"] == 2                    # exact is byte-identical by design
    assert res.modes["on"]["decode_calls"] < res.modes["off"]["decode_calls"]
    md = jump_bench.markdown({"model": "m", "time": "t", "cpu": "c", "threads": 1, "loadavg_start": [0],
                              "loadavg_end": [0], "duration_s": 1.0}, [res])
    assert "| scenarios.yaml | on | 2 |" in md


def test_the_projects_build_rounds_small_batches_like_single_rows(engine, decision):
    """The wheel scripts/setup.sh builds (scripts/patch_llama_cpp.py) gives 2- and 3-row batches
    the logits of single steps, at the cached prefix's depth; the probe leaves the cache as it
    was. A fresh engine probes lazily, on its first generation with something cached."""
    _, prefix = decision
    engine.warm(prefix)
    before = (engine.n_tokens, engine.kv_pos_max(), engine.cached_tokens())
    assert engine.exact_rows() == EXACT_ROWS_PROBED
    assert (engine.n_tokens, engine.kv_pos_max(), engine.cached_tokens()) == before
    fresh = LlamaEngine(engine.settings)
    fresh.load(verify_checksum=False)
    try:
        assert fresh.exact_rows() == 1 and fresh._exact_rows is None  # nothing cached: not probed yet
        yes_no = 'root ::= "yes" | "no"'
        fresh.generate("Say yes.", 2, yes_no)
        assert fresh._exact_rows is None
        fresh.generate("Say yes.", 2, yes_no)  # the previous prompt is cached now
        assert fresh.exact_rows() == EXACT_ROWS_PROBED
    finally:
        fresh.close()
