"""Hybrid backend with the real local LlamaEngine: the server first within a share of the
deadline, the local model when the server is dead, stalls, talks nonsense or is killed
half-way; every request answered within its deadline, none lost."""
from __future__ import annotations

import math
import time

import pytest

from quant_llm_node.config import Config
from quant_llm_node.engine.llama_engine import FINISH_INTERRUPTED
from quant_llm_node.serving.backends import build_backend
from quant_llm_node.serving.breaker import BreakerState
from quant_llm_node.serving.hybrid import HybridGenerator
from quant_llm_node.serving.remote_status import HealthLevel
from test_remote_support import FaultServer, LlamaServer, free_port, load_local_engine, make_task

DEADLINE_S = 60.0      # generous: a loaded 2-core host decodes slowly; the share is what is tested


@pytest.fixture(scope="module")
def local():
    engine = load_local_engine()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def task(local):
    t = make_task(local)
    local.warm(t.prompts.static_prefix)   # as the service does at configure
    return t


def hybrid(url: str, local, task, **remote) -> HybridGenerator:
    flat = {"engine.backend": "hybrid", "remote.url": url, **{f"remote.{k}": v for k, v in remote.items()}}
    from quant_llm_node.config import config_from_flat
    backend = build_backend(config_from_flat(flat, Config()), local, task.task.schema.parse)
    assert isinstance(backend.generator, HybridGenerator) and backend.passes_deadline
    return backend.generator


def ask(gen: HybridGenerator, task, query: str, deadline_s: float = DEADLINE_S, on_text=None,
        **state):
    """What the service does: a should_stop that enforces the deadline, and deadline_s."""
    prompt, req = task.prompt(query, **state)
    t0 = time.monotonic()
    result = gen.generate(prompt, task.task.max_tokens, task.task.grammar, 0.0,
                          should_stop=lambda text: time.monotonic() - t0 >= deadline_s,
                          on_text=on_text, min_room=task.task.min_room, deadline_s=deadline_s)
    took = time.monotonic() - t0
    assert result.finish_reason != FINISH_INTERRUPTED and took < deadline_s, \
        f"not answered within the {deadline_s} s deadline ({took:.1f} s)"
    return result, task.task.decide(result.text, req), took


def test_dead_server_is_answered_locally_within_the_deadline(local, task):
    gen = hybrid(f"http://127.0.0.1:{free_port()}", local, task, breaker_failures=1,
                 breaker_cooldown_s=600.0)
    for i in range(2):
        result, decision, took = ask(gen, task, "A forklift is crossing 4 m ahead.",
                                     speed_mps=1.0, obstacle_distance_m=4.0)
        assert result.backend == "local" and decision.action
    status = gen.monitor.snapshot()
    assert status.errors == {"unreachable": 1, "circuit_open": 1}   # the second skipped the server
    # the robot still answers (locally): degraded, not failed
    assert status.breaker.state is BreakerState.OPEN and status.level is HealthLevel.WARN
    assert "circuit open" in status.message
    assert status.answered_local == 2 and status.local_share == 1.0
    assert math.isnan(status.latency_p50_ms)
    gen.close()


def test_stalling_server_gets_its_share_then_the_local_model_answers(local, task):
    share = 0.05
    with FaultServer("stall", stall_s=DEADLINE_S) as srv:
        gen = hybrid(srv.url, local, task, deadline_share=share, read_timeout_s=DEADLINE_S)
        result, decision, took = ask(gen, task, "Is the loading bay free?")
        gen.close()
    assert result.backend == "local"
    assert result.total_ms >= share * DEADLINE_S * 1e3       # the remote try is in the total
    assert gen.monitor.snapshot().errors == {"slow": 1}


def test_nonsense_from_the_server_is_replaced_by_the_local_answer(local, task):
    with FaultServer("text", text="Sure! I think you should go left.") as srv:
        gen = hybrid(srv.url, local, task)
        result, decision, _ = ask(gen, task, "Which way to the dock?")
        gen.close()
    assert result.backend == "local"
    task.task.schema.parse(result.text)
    status = gen.monitor.snapshot()
    assert status.errors == {"invalid_output": 1} and status.answered_local == 1
    assert status.level is HealthLevel.WARN


def test_server_killed_half_way_loses_nothing(local, task, tmp_path):
    server = LlamaServer().start(tmp_path)
    gen = hybrid(server.url, local, task, breaker_failures=1, breaker_cooldown_s=600.0,
                 read_timeout_s=DEADLINE_S)
    gen.remote.warm(task.prompts.static_prefix)   # the server keeps the static prefix's KV
    killed = []

    texts = []

    def kill_mid_answer(text, n):   # the server streams first: its second token triggers this
        texts.append((text, n))
        if n == 2 and not killed:
            server.kill()
            killed.append(time.monotonic())

    queries = ["A person stepped into the corridor 1.5 m ahead.", "Battery is at 8 percent.",
               "A pallet blocks the aisle."]
    answered = []
    try:
        for i, query in enumerate(queries):
            result, decision, took = ask(gen, task, query, on_text=kill_mid_answer if i == 1 else None,
                                         speed_mps=1.0, people_distances_m=[1.5] if i == 0 else [])
            answered.append((result.backend, decision.action, round(took, 2)))
        assert killed, "the server was not killed mid-answer"
        # the server's tokens (2, or a few more already on the way), the restart mark, then the
        # local answer from its first token
        counts = [n for _, n in texts]
        restart = counts.index(0)
        assert counts[:restart] == list(range(1, restart + 1)) and restart >= 2
        assert texts[restart][0] == "" and counts[restart + 1] == 1
        assert [b for b, _, _ in answered] == ["remote", "local", "local"], answered
        assert answered[0][1] == "stop"      # safety: a person 1.5 m ahead at 1 m/s
        status = gen.monitor.snapshot()
        assert status.answered_remote == 1 and status.answered_local == 2
        assert status.errors == {"broken_stream": 1, "circuit_open": 1}
        assert status.local_share == pytest.approx(2 / 3) and status.latency_p50_ms > 0
        assert status.level is HealthLevel.WARN and "circuit open" in status.message
    finally:
        gen.close()
        server.stop()
