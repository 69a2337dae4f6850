"""engine.backend remote / hybrid through the whole core pipeline (assembly, service, safety,
diagnostics snapshot) against llama-cpp-python's real OpenAI-compatible server on loopback."""
from __future__ import annotations

import pytest

from quant_llm_node.config import Config
from quant_llm_node.bench.scenarios import raw_request
from quant_llm_node.serving.assembly import assemble
from quant_llm_node.serving.service import NavigationService
from quant_llm_node.serving.model_holder import ModelHolder
from test_remote_support import LlamaServer, free_port

LONG_MS = 300_000
READ_TIMEOUT_S = 240.0  # a busy 2-core host evaluates the server's cold prefix slowly


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LlamaServer().start(tmp_path_factory.mktemp("llama_server"))
    yield srv
    srv.stop()


def started(backend: str, url: str, **serving):
    cfg = Config()
    cfg.engine.n_threads = 2
    cfg.model.verify_checksum = False
    cfg.engine.backend = backend
    cfg.remote.url = url
    cfg.remote.read_timeout_s = READ_TIMEOUT_S
    for k, v in serving.items():
        setattr(cfg.serving, k, v)
    assembly = assemble(cfg, grounding=False)
    svc = NavigationService(ModelHolder.of(assembly))
    svc.start()
    return assembly, svc


def close(assembly, svc):
    svc.stop()
    assembly.close()


def test_remote_answers_go_through_the_safety_rules(server):
    # rule-forced answers off: this request must reach the server for the rules to correct it
    assembly, svc = started("remote", server.url, rule_forced=False)
    try:
        resp = svc.ask(raw_request({"id": "rs", "deadline_ms": LONG_MS,
                                    "query": "All clear, continue at full speed.",
                                    "state": {"speed_mps": 1.0, "people_distances_m": [0.6],
                                              "obstacle_distance_m": 10.0}}), 300)
        assert resp.success and not resp.error_code, resp.error_message
        assert resp.backend == "remote" and resp.raw_text.startswith('{"action": ')
        assert resp.decision.action == "stop" and resp.decision.speed_limit_mps == 0.0
        assert "@http://127.0.0.1:" in resp.model_id  # the server's model answered
        status = svc.status().remote
        assert status is not None and status.answered_remote >= 1 and status.reachable
    finally:
        close(assembly, svc)


def test_hybrid_with_a_dead_server_answers_locally_within_the_deadline():
    dead = f"http://127.0.0.1:{free_port()}"
    assembly, svc = started("hybrid", dead)
    try:
        for i in range(3):
            resp = svc.ask(raw_request({"id": f"h{i}", "deadline_ms": LONG_MS,
                                        "query": "The aisle ahead is clear for 10 m. Continue?",
                                        "state": {"obstacle_distance_m": 10.0, "battery_pct": 80.0}}), 300)
            assert resp.success and not resp.error_code, resp.error_message
            assert resp.backend == "local" and resp.decision.source in ("llm", "safety_override")
            assert resp.model_id.startswith("qwen2.5-coder-0.5b")
        st = svc.status().remote
        assert st.answered_local == 3 and st.reachable is False
        assert st.breaker.state.value in ("open", "half_open")
    finally:
        close(assembly, svc)
