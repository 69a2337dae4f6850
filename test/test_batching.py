"""Continuous batching (engine.n_parallel > 1) on real llama.cpp with the default model.

- a request decoded alone through the batch loop is byte-identical to the engine's own
  step-by-step loop, and shares the cached static prefix instead of evaluating it again;
- concurrent requests are decoded as sequences of one llama_decode batch and give the same
  decisions (a near tie may flip under multi-row kernels, so most, not all, must match); the
  grammar's forced spans ride along in the shared steps, so a decision takes fewer steps than
  tokens;
- per sequence: a stop (cancel, preemption, deadline) ends only that sequence; a request that
  does not fit the context fails alone; requests wait for KV cells instead of overflowing;
- closing the loop answers every caller (no hang);
- the service with n_parallel slots serves concurrent requests, each answered once.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from quant_llm_node.config import EngineConfig, SafetyConfig
from quant_llm_node.engine.llama_engine import FINISH_INTERRUPTED, EngineError, EngineSettings, LlamaEngine
from quant_llm_node.reasoning.task import DecisionTask, load_map
from quant_llm_node.reasoning.types import NavRequest, RobotState
from quant_llm_node.serving.batch_loop import BatchLoop

THREADS = int(os.environ.get("QLN_TEST_THREADS", "1"))
N_PARALLEL = 4

REQUESTS = [
    ("A person stepped into the corridor 1.5 m ahead.", "", RobotState(people_distances_m=[1.5]), ""),
    ("Take me to the loading bay, the aisle is clear.", "loading bay", RobotState(speed_mps=1.0), "loading_bay"),
    ("Battery is at 7 percent. What now?", "", RobotState(battery_pct=7), ""),
    ("Long clear corridor ahead, nobody around.", "", RobotState(speed_mps=0.8), ""),
]


def _load(model_path, n_parallel: int, n_ctx: int) -> LlamaEngine:
    e = LlamaEngine(EngineSettings.from_config(
        EngineConfig(n_threads=THREADS, n_ctx=n_ctx, n_parallel=n_parallel), model_path))
    e.load(verify_checksum=False)
    return e


@pytest.fixture(scope="module")
def task():
    return DecisionTask(load_map("places.yaml"), SafetyConfig())


@pytest.fixture(scope="module")
def setup(model_path, task):
    """One engine with 4 sequences; references from its own step-by-step loop, then the loop."""
    engine = _load(model_path, N_PARALLEL, 4096)
    builder = task.prompts(engine.chat_renderer())
    prompts = [builder.build(NavRequest(f"r{i}", q, goal=g, state=s), grounded)
               for i, (q, g, s, grounded) in enumerate(REQUESTS)]
    refs = []
    for p in prompts:
        engine.warm(builder.static_prefix)
        refs.append(engine.generate(p, task.max_tokens, task.grammar, min_room=task.min_room))
    engine.warm(builder.static_prefix)
    prefix = engine.count_tokens(builder.static_prefix)
    loop = BatchLoop(engine, N_PARALLEL)
    yield engine, loop, prompts, refs, prefix
    loop.close()
    engine.close()


def _gen(loop, task, prompt, **kw):
    return loop.generate(prompt, task.max_tokens, task.grammar, min_room=task.min_room, **kw)


def test_context_holds_the_sequences(setup):
    engine = setup[0]
    assert engine.n_seq_max == N_PARALLEL + 1


def test_alone_in_the_loop_is_identical_and_shares_the_prefix(setup, task):
    _, loop, prompts, refs, prefix = setup
    for p, ref in zip(prompts, refs):
        seen = []
        r = _gen(loop, task, p, on_text=lambda t, n: seen.append((t, n)))
        assert (r.text, r.completion_tokens, r.finish_reason) == (ref.text, ref.completion_tokens, ref.finish_reason)
        assert r.cached_tokens == prefix  # the static prefix was shared, not evaluated again
        assert r.prompt_tokens == ref.prompt_tokens
        assert r.batch_sizes == {1: r.decode_steps}
        assert seen[-1] == (r.text, r.completion_tokens)
        assert [n for _, n in seen] == list(range(1, r.completion_tokens + 1))
        task.schema.parse(r.text)


def test_concurrent_requests_share_one_batch(setup, task):
    _, loop, prompts, refs, prefix = setup
    with ThreadPoolExecutor(len(prompts)) as pool:
        results = list(pool.map(lambda p: _gen(loop, task, p), prompts))
    for r in results:
        task.schema.parse(r.text)
        assert r.cached_tokens == prefix
    assert max(max(r.batch_sizes) for r in results) >= 2  # decoded together, not one by one
    # the grammar's forced spans rode along in the shared steps, checked row by row
    assert sum(r.forced_drafted for r in results) > 0
    assert all(r.forced_tokens <= r.forced_drafted for r in results)
    assert any(r.decode_calls < r.completion_tokens for r in results)
    same = sum(r.text == ref.text for r, ref in zip(results, refs))
    # broken KV sharing or positions would change nearly every text; a near tie may flip one
    assert same >= len(prompts) - 1, [(r.text, ref.text) for r, ref in zip(results, refs)]


def test_shared_steps_without_drafts_decode_one_row_per_sequence(setup, task):
    """The benchmarks' baseline (``shared_drafts = 0``): the same decisions, more decode calls,
    and forced tokens drafted only while a sequence is alone in a step."""
    _, loop, prompts, refs, _ = setup
    decoder = loop.decoder
    full = decoder.shared_drafts
    assert full > 0
    decoder.shared_drafts = 0
    try:
        with ThreadPoolExecutor(len(prompts)) as pool:
            results = list(pool.map(lambda p: _gen(loop, task, p), prompts))
    finally:
        decoder.shared_drafts = full
    for r in results:
        task.schema.parse(r.text)
    alone = loop.engine.exact_rows() - 1
    for r in results:  # at most `alone` drafts in each step the sequence had to itself
        assert r.forced_drafted <= alone * r.batch_sizes.get(1, 0)
    same = sum(r.text == ref.text for r, ref in zip(results, refs))
    assert same >= len(prompts) - 1


def test_a_stop_ends_only_its_own_sequence(setup, task):
    _, loop, prompts, refs, _ = setup
    stop_after = 3
    checks = []

    def stop_third(text: str) -> bool:  # e.g. a cancel arriving during the third token
        if text:  # "" while it waits for a slot
            checks.append(text)
        return len(checks) >= stop_after

    def run(i):
        if i == 0:
            return _gen(loop, task, prompts[0], should_stop=stop_third)
        return _gen(loop, task, prompts[i])

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(run, range(3)))
    assert results[0].finish_reason == FINISH_INTERRUPTED
    assert results[0].completion_tokens == stop_after
    for r, ref in zip(results[1:], refs[1:3]):
        assert r.finish_reason == ref.finish_reason
        task.schema.parse(r.text)


def test_a_request_stopped_while_waiting_needs_no_slot(setup, task):
    _, loop, prompts, _, _ = setup
    r = _gen(loop, task, prompts[0], should_stop=lambda text: True)
    assert r.finish_reason == FINISH_INTERRUPTED and r.completion_tokens == 0


def test_a_prompt_too_long_fails_alone(setup, task):
    engine, loop, prompts, refs, _ = setup
    huge = prompts[1] + " word" * engine.n_ctx

    def run(p):
        try:
            return _gen(loop, task, p)
        except EngineError as exc:
            return exc
    with ThreadPoolExecutor(2) as pool:
        bad, good = pool.map(run, [huge, prompts[1]])
    assert isinstance(bad, EngineError) and bad.code == "CONTEXT_OVERFLOW"
    task.schema.parse(good.text)


def test_requests_wait_for_kv_cells_instead_of_overflowing(model_path, task):
    """n_ctx 2048 holds the ~1270-token prefix and two decisions' reservations: four requests
    are served two by two, all answered."""
    engine = _load(model_path, N_PARALLEL, 2048)
    builder = task.prompts(engine.chat_renderer())
    engine.warm(builder.static_prefix)
    loop = BatchLoop(engine, N_PARALLEL)
    try:
        prompts = [builder.build(NavRequest(f"k{i}", q, goal=g, state=s), grounded)
                   for i, (q, g, s, grounded) in enumerate(REQUESTS)]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda p: _gen(loop, task, p), prompts))
        for r in results:
            task.schema.parse(r.text)
        widest = max(max(r.batch_sizes) for r in results)
        assert 1 <= widest < N_PARALLEL  # cells, not slots, bounded the batch
    finally:
        loop.close()
        engine.close()


def test_close_answers_every_caller(model_path, task):
    engine = _load(model_path, 2, 4096)
    builder = task.prompts(engine.chat_renderer())
    loop = BatchLoop(engine, 2)
    started = threading.Event()
    out = []

    def run():
        try:
            out.append(_gen(loop, task, builder.build(NavRequest("c", "Status?"), ""),
                            on_text=lambda t, n: started.set()))
        except EngineError as exc:
            out.append(exc)
    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    started.wait(120)
    loop.close()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    assert len(out) == 3
    assert any(isinstance(o, EngineError) and o.code == "MODEL_UNAVAILABLE" for o in out)
    with pytest.raises(EngineError):
        _gen(loop, task, "x")
    engine.close()


def test_service_serves_concurrent_requests_in_slots(model_path):
    """The real pipeline with engine.n_parallel 3: concurrent requests run in three slots of
    one batch, each answered once by the model."""
    from quant_llm_node.config import load_config
    from quant_llm_node.paths import config_dir
    from quant_llm_node.serving.assembly import assemble
    from quant_llm_node.serving.service import NavigationService
    from quant_llm_node.serving.model_holder import ModelHolder

    cfg = load_config(config_dir() / "robot.yaml")
    cfg.model.name, cfg.model.verify_checksum = str(model_path), False
    cfg.engine.n_parallel, cfg.engine.n_ctx, cfg.engine.n_threads = 3, 4096, THREADS
    cfg.serving.rule_forced = False
    assembly = assemble(cfg, grounding=False)
    service = NavigationService(ModelHolder.of(assembly))
    service.start()
    try:
        assert service.scheduler.slots == 3 and service.status().slots == 3
        # a deadline no host misses: the test is about slots, not speed (a slow host took > 15 s)
        raws = [{"request_id": f"s{i}", "query": q, "state": {"speed_mps": s.speed_mps}, "deadline_ms": 600_000}
                for i, (q, _, s, _) in enumerate([REQUESTS[0], REQUESTS[3]] * 2 + [REQUESTS[3]])]
        with ThreadPoolExecutor(len(raws)) as pool:
            answers = list(pool.map(lambda raw: service.ask(raw, 600), raws))
        assert sorted(a.request_id for a in answers) == sorted(r["request_id"] for r in raws)
        for a in answers:
            assert a.success and not a.error_code, (a.error_code, a.error_message)
            assert a.decision.source in ("llm", "safety_override")
            assert a.completion_tokens > 0
        assert service.metrics.snapshot()["window"] == len(raws)  # each recorded once
    finally:
        service.stop()
        assembly.close()
