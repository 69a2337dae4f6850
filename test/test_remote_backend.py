"""Backend selection, the remote status snapshot and the two server dialects (no server)."""
from __future__ import annotations

import math

import pytest

from quant_llm_node.config import Config, config_from_flat
from quant_llm_node.engine.llama_engine import GenerationResult
from quant_llm_node.engine.remote import RemoteErrorKind
from quant_llm_node.engine.remote_dialect import (ChunkError, RemoteApi, parse_chunk,
                                                  request_body)
from quant_llm_node.engine.remote_security import RemoteConfigError
from quant_llm_node.serving.backends import build_backend
from quant_llm_node.serving.breaker import CircuitBreaker
from quant_llm_node.serving.hybrid import HybridGenerator
from quant_llm_node.serving.remote_guard import GuardedRemote
from quant_llm_node.serving.remote_status import AnsweredBy, HealthLevel, RemoteMonitor

TOKEN = "backend-test-token-1234567890"


class FakeLocal:
    def generate(self, *a, **kw):
        raise AssertionError("not called here")


def _cfg(**flat) -> Config:
    return config_from_flat(flat, Config())


def test_local_backend_is_the_local_generator_unchanged():
    local = FakeLocal()
    backend = build_backend(_cfg(), local, str)
    assert backend.generator is local and backend.status() is None and not backend.passes_deadline
    backend.close()


def test_remote_and_hybrid_backends(monkeypatch):
    monkeypatch.setenv("QLN_TEST_BACKEND_TOKEN", TOKEN)
    common = {"remote.url": "https://gpu-server.site:8443", "remote.token_env": "QLN_TEST_BACKEND_TOKEN"}
    remote = build_backend(_cfg(**{"engine.backend": "remote", **common}), None, str)
    assert isinstance(remote.generator, GuardedRemote) and remote.passes_deadline
    status = remote.status()
    assert status.level is HealthLevel.OK and status.reachable is None and status.mode == "remote"
    assert status.server == "https://gpu-server.site:8443"
    assert all(TOKEN not in v for v in status.key_values().values())
    remote.close()
    hybrid = build_backend(_cfg(**{"engine.backend": "hybrid", **common}), FakeLocal(), str)
    assert isinstance(hybrid.generator, HybridGenerator) and hybrid.status().mode == "hybrid"
    hybrid.close()
    with pytest.raises(RemoteConfigError):
        build_backend(_cfg(**{"engine.backend": "hybrid", **common}), None, str)


def test_unsafe_remote_settings_fail_at_assembly():
    with pytest.raises(RemoteConfigError) as info:
        build_backend(_cfg(**{"engine.backend": "remote"}), None, str)
    assert "remote.url is empty" in str(info.value)
    with pytest.raises(RemoteConfigError):
        build_backend(_cfg(**{"engine.backend": "remote", "remote.url": "http://10.1.1.1"}), None, str)


def _monitor(warn_local_share: float = 0.2) -> RemoteMonitor:
    return RemoteMonitor(CircuitBreaker(2, 10.0), mode="hybrid", server="https://s:1", api="vllm",
                         model="m", window=8, warn_local_share=warn_local_share)


def _result(total_ms: float) -> GenerationResult:
    return GenerationResult(text="{}", prompt_tokens=10, cached_tokens=0, completion_tokens=11,
                            prompt_ms=5, first_token_ms=total_ms / 4, decode_ms=total_ms * 3 / 4,
                            total_ms=total_ms, finish_reason="stop", decode_steps=10,
                            backend="remote")


def test_status_snapshot_percentiles_share_and_levels():
    m = _monitor()
    s = m.snapshot()
    assert s.level is HealthLevel.OK and math.isnan(s.local_share) and math.isnan(s.latency_p50_ms)
    for ms in (100.0, 200.0, 300.0, 400.0):
        m.record_request()
        m.record_remote_ok(_result(ms))
        m.record_answer(AnsweredBy.REMOTE)
    s = m.snapshot()
    assert s.level is HealthLevel.OK and s.latency_p50_ms == 250.0 and 300 < s.latency_p95_ms <= 400
    assert s.local_share == 0.0 and s.decode_tps_p50 > 0 and s.requests == 4
    m.record_failure(RemoteErrorKind.INVALID_OUTPUT, "no JSON object")
    m.record_answer(AnsweredBy.LOCAL)
    s = m.snapshot()
    assert s.level is HealthLevel.WARN and "invalid_output" in s.message
    assert s.local_share == pytest.approx(0.2) and s.errors == {"invalid_output": 1}
    m.record_remote_ok(_result(100.0))
    m.record_answer(AnsweredBy.REMOTE)
    m.record_failure(RemoteErrorKind.UNREACHABLE, "connection refused")
    m.breaker.record_failure()
    m.breaker.record_failure()
    s = m.snapshot()   # hybrid: the local model answers meanwhile, so WARN, not ERROR
    assert s.level is HealthLevel.WARN and "circuit open" in s.message and s.reachable is False
    kv = s.key_values()
    assert kv["breaker_state"] == "open" and kv["errors.unreachable"] == "1"
    assert kv["reachable"] == "false" and all(isinstance(v, str) for v in kv.values())


def test_local_share_above_the_limit_warns():
    m = _monitor(warn_local_share=0.5)
    for who in (AnsweredBy.LOCAL, AnsweredBy.LOCAL, AnsweredBy.REMOTE, AnsweredBy.NONE):
        m.record_answer(who)
    m.record_remote_ok(_result(50.0))   # the last call went fine
    s = m.snapshot()
    assert s.local_share == pytest.approx(2 / 3) and s.level is HealthLevel.WARN
    assert s.unanswered == 1


def test_request_bodies_per_dialect():
    llama = request_body(RemoteApi.LLAMA_CPP, "", "P", 9, "root ::= x", 0.0)
    assert llama["grammar"] == "root ::= x" and llama["cache_prompt"] is True and llama["stream"]
    vllm = request_body(RemoteApi.VLLM, "m", "P", 9, "root ::= x", 0.0)
    assert vllm["structured_outputs"] == {"grammar": "root ::= x"} and "grammar" not in vllm
    assert vllm["stream_options"] == {"include_usage": True}
    free = request_body(RemoteApi.VLLM, "m", "P", 9, None, 0.0)
    assert "structured_outputs" not in free and "grammar" not in free


def test_chunks_of_llama_server_and_vllm():
    c = parse_chunk('{"choices":[{"text":"{\\"","finish_reason":null}]}')
    assert c.text == '{"' and c.finish_reason is None and c.prompt_tokens is None
    last = parse_chunk('{"choices":[{"text":"","finish_reason":"stop"}],"timings":'
                       '{"prompt_n":12,"cache_n":400,"prompt_ms":31.5,"predicted_n":36}}')
    assert last.finish_reason == "stop" and last.prompt_tokens == 412 and last.cached_tokens == 400
    assert last.server_prompt_ms == 31.5 and last.completion_tokens == 36
    usage = parse_chunk('{"choices":[],"usage":{"prompt_tokens":420,"completion_tokens":36,'
                        '"prompt_tokens_details":{"cached_tokens":384}}}')
    assert usage.text == "" and usage.prompt_tokens == 420 and usage.cached_tokens == 384
    for bad in ("not json", "[1]", '{"object":"x"}', '{"choices":[]}',
                '{"error":{"message":"boom"}}', '{"choices":[{"text":5}]}'):
        with pytest.raises(ChunkError):
            parse_chunk(bad)


def test_server_down_is_an_error_only_where_nothing_else_answers():
    for mode, level in (("remote", HealthLevel.ERROR), ("hybrid", HealthLevel.WARN)):
        m = RemoteMonitor(CircuitBreaker(1, 10.0), mode=mode, server="https://s:1", api="llama_cpp",
                          model="", window=8, warn_local_share=0.2)
        m.record_failure(RemoteErrorKind.TIMEOUT, "connect timeout after 1.0 s")
        assert m.snapshot().level is level and "unreachable" in m.snapshot().message
        m.breaker.record_failure()
        assert m.snapshot().level is level and "circuit open" in m.snapshot().message
