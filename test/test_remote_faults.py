"""RemoteEngine against the faults a real server does not produce on demand: HTTP 500, a
stall past the deadline, a silent server past the read timeout, garbage instead of an event
stream, a truncated stream, a redirect. A scripted HTTP server on loopback plays them."""
from __future__ import annotations

import time

import pytest

from quant_llm_node.engine.llama_engine import FINISH_INTERRUPTED, FINISH_STOP
from quant_llm_node.engine.remote import FINISH_DEADLINE, RemoteEngine, RemoteError, RemoteErrorKind
from test_remote_support import HOSTILE_SHAPES, FaultServer, remote_cfg

TOKEN = "fault-test-token-abcdef0123456789"
QUICK_S = 1.0


def _engine(url: str, monkeypatch=None, **kw) -> RemoteEngine:
    if monkeypatch is not None:
        monkeypatch.setenv("QLN_TEST_FAULT_TOKEN", TOKEN)
        kw.setdefault("token_env", "QLN_TEST_FAULT_TOKEN")
    return RemoteEngine(remote_cfg(url, **kw))


def test_http_500_is_a_server_error_and_an_echoed_token_is_redacted(monkeypatch):
    body = '{"error": {"message": "CUDA out of memory (request had Bearer %s)"}}' % TOKEN
    with FaultServer("status", status=500, body=body) as srv:
        eng = _engine(srv.url, monkeypatch)
        with pytest.raises(RemoteError) as info:
            eng.generate("p", 8)
        eng.close()
    err = info.value
    assert err.kind is RemoteErrorKind.SERVER_ERROR and err.status == 500
    assert err.code == "MODEL_UNAVAILABLE"
    assert "CUDA out of memory" in str(err) and TOKEN not in str(err)
    assert srv.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"


def test_request_speaks_the_llama_cpp_dialect():
    with FaultServer("text", text='{"a": 1}') as srv:
        eng = _engine(srv.url)
        gen = eng.generate("the prompt", 12, 'root ::= "x"', 0.0)
        eng.close()
    body = srv.requests[0]["body"]
    assert srv.requests[0]["path"] == "/v1/completions"
    assert body["prompt"] == "the prompt" and body["stream"] is True and body["max_tokens"] == 12
    assert body["grammar"] == 'root ::= "x"' and body["cache_prompt"] is True
    assert "Authorization" not in srv.requests[0]["headers"]   # no token configured: none sent
    assert gen.text == '{"a": 1}' and gen.finish_reason == FINISH_STOP


def test_request_speaks_the_vllm_dialect():
    with FaultServer("text", text="ok") as srv:
        eng = _engine(srv.url, api="vllm", model="Qwen/Qwen2.5-7B-Instruct")
        eng.generate("p", 12, 'root ::= "x"', 0.0)
        eng.close()
    body = srv.requests[0]["body"]
    assert body["structured_outputs"] == {"grammar": 'root ::= "x"'}
    assert "grammar" not in body and body["model"] == "Qwen/Qwen2.5-7B-Instruct"


def test_garbage_text_is_returned_for_the_caller_to_reject():
    with FaultServer("text", text="Sure! Here is my answer: go left") as srv:
        eng = _engine(srv.url)
        gen = eng.generate("p", 32, 'root ::= "x"', 0.0)
        eng.close()
    assert gen.finish_reason == FINISH_STOP and gen.text.startswith("Sure!")


@pytest.mark.parametrize("mode,kind", [("not_sse", RemoteErrorKind.BAD_RESPONSE),
                                       ("bad_json", RemoteErrorKind.BAD_RESPONSE),
                                       ("truncated", RemoteErrorKind.BROKEN_STREAM)])
def test_non_stream_answers_are_bad_responses(mode, kind):
    with FaultServer(mode) as srv:
        eng = _engine(srv.url)
        with pytest.raises(RemoteError) as info:
            eng.generate("p", 8)
        eng.close()
    assert info.value.kind is kind


def test_context_error_maps_to_context_overflow():
    body = '{"error": {"message": "the request exceeds the available context size"}}'
    with FaultServer("status", status=400, body=body) as srv:
        eng = _engine(srv.url)
        with pytest.raises(RemoteError) as info:
            eng.generate("p", 8)
        eng.close()
    assert info.value.code == "CONTEXT_OVERFLOW" and info.value.kind is RemoteErrorKind.REJECTED


def test_stall_past_the_deadline_returns_at_the_deadline_not_the_read_timeout():
    with FaultServer("stall", stall_s=30) as srv:
        eng = _engine(srv.url, read_timeout_s=20.0)
        budget = 0.4
        t0 = time.perf_counter()
        gen = eng.generate("p", 64, None, 0.0, deadline_s=budget)
        took = time.perf_counter() - t0
        eng.close()
    assert gen.finish_reason == FINISH_DEADLINE and gen.text == '{"'
    assert budget <= took < budget + QUICK_S
    assert srv.disconnected_at                      # and the stream was closed


@pytest.mark.parametrize("mode", ["silent", "stall"])   # before the first token; mid-answer
def test_cancel_while_the_server_is_silent_hangs_up_at_once(mode):
    with FaultServer(mode, stall_s=30) as srv:
        eng = _engine(srv.url, read_timeout_s=20.0, poll_interval_s=0.01)
        cancel_at = time.monotonic() + 0.3
        gen = eng.generate("p", 64, None, 0.0,
                           should_stop=lambda text: time.monotonic() >= cancel_at)
        returned = time.monotonic()
        end = returned + QUICK_S
        while (not srv.disconnected_at or eng.open_streams) and time.monotonic() < end:
            time.sleep(0.005)
        assert eng.open_streams == 0, "the reader still holds the connection"
        eng.close()
    assert gen.finish_reason == FINISH_INTERRUPTED
    assert returned - cancel_at < QUICK_S / 4
    # the server saw the connection closed right away, not at the 20 s read timeout
    assert srv.disconnected_at and srv.disconnected_at[0] - cancel_at < QUICK_S / 4


def test_silent_server_hits_the_read_timeout():
    with FaultServer("silent", stall_s=30) as srv:
        eng = _engine(srv.url, read_timeout_s=0.3)
        t0 = time.perf_counter()
        with pytest.raises(RemoteError) as info:
            eng.generate("p", 8)
        took = time.perf_counter() - t0
        eng.close()
    assert info.value.kind is RemoteErrorKind.TIMEOUT and "read timeout" in str(info.value)
    assert took < 0.3 + QUICK_S


def test_redirects_are_not_followed_and_the_token_stays_home(monkeypatch):
    with FaultServer("text", text="stolen") as elsewhere:
        with FaultServer("redirect", location=elsewhere.url + "/v1/completions") as srv:
            eng = _engine(srv.url, monkeypatch)
            with pytest.raises(RemoteError) as info:
                eng.generate("p", 8)
            eng.close()
    assert info.value.kind is RemoteErrorKind.REJECTED and info.value.status == 307
    assert elsewhere.requests == []


def test_proxy_settings_in_the_environment_are_ignored(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    with FaultServer("text", text="direct") as srv:
        eng = _engine(srv.url)
        assert eng.generate("p", 8).text == "direct"
        eng.close()


# ---- the hostile shapes: each is a failure of a known kind, quickly, never a crash ----------
def _guarded(url: str, failures: int = 3, **kw):
    from quant_llm_node.config import Config
    from quant_llm_node.reasoning.task import DecisionTask
    from quant_llm_node.serving.breaker import CircuitBreaker
    from quant_llm_node.serving.remote_guard import GuardedRemote
    from quant_llm_node.serving.remote_status import RemoteMonitor
    engine = RemoteEngine(remote_cfg(url, **kw))
    breaker = CircuitBreaker(failures, 10.0)
    monitor = RemoteMonitor(breaker, mode="hybrid", server=engine.endpoint.origin, api="llama_cpp",
                            model="", window=64, warn_local_share=0.2)
    return GuardedRemote(engine, breaker, monitor, DecisionTask.from_config(Config()).schema.parse)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", sorted(m for m, kind in HOSTILE_SHAPES.items() if kind))
def test_every_hostile_shape_is_a_counted_failure_of_its_kind(mode, monkeypatch):
    monkeypatch.setenv("QLN_TEST_FAULT_TOKEN", TOKEN)
    expected = HOSTILE_SHAPES[mode]
    with FaultServer(mode, stall_s=30, status=500, body='{"error": "boom"}') as srv:
        guard = _guarded(srv.url, read_timeout_s=1.0, token_env="QLN_TEST_FAULT_TOKEN")
        t0 = time.perf_counter()
        result, error = None, None
        try:
            result = guard.attempt("p", 32, None, 0.0, None, None, 1, 2.0)
        except RemoteError as exc:
            error = exc
        took = time.perf_counter() - t0
        guard.close()
    snap = guard.monitor.snapshot()
    assert snap.errors.get(expected) == 1, (mode, snap.errors, error)
    assert took < 2.0 + QUICK_S + 1.0                       # bounded by the call's deadline
    if expected == "slow":
        assert result is not None and result.finish_reason == FINISH_DEADLINE
    else:
        assert error is not None and error.kind.value == expected
        message = str(error)
        message.encode("utf-8")                              # valid wherever it goes
        assert TOKEN not in message and len(message) < 1000


def test_a_forbidden_action_is_a_decision_the_rules_then_judge():
    with FaultServer("forbidden_action") as srv:
        guard = _guarded(srv.url)
        result = guard.attempt("p", 32, None, 0.0, None, None, 1, 5.0)
        guard.close()
    assert '"continue"' in result.text and guard.monitor.snapshot().errors == {}


def test_answers_that_are_no_decision_open_the_circuit():
    with FaultServer("unknown_place") as srv:
        guard = _guarded(srv.url, failures=3)
        for _ in range(3):
            with pytest.raises(RemoteError) as info:
                guard.attempt("p", 32, None, 0.0, None, None, 1, 5.0)
            assert info.value.kind is RemoteErrorKind.INVALID_OUTPUT
        with pytest.raises(RemoteError) as info:
            guard.attempt("p", 32, None, 0.0, None, None, 1, 5.0)
        guard.close()
    assert info.value.kind is RemoteErrorKind.CIRCUIT_OPEN and len(srv.requests) == 3


def test_the_warm_up_has_a_deadline():
    with FaultServer("empty_forever") as srv:
        eng = _engine(srv.url, read_timeout_s=1.0, connect_timeout_s=0.5)
        t0 = time.perf_counter()
        with pytest.raises(RemoteError) as info:
            eng.warm("a static prefix")
        took = time.perf_counter() - t0
        eng.close()
    assert info.value.kind is RemoteErrorKind.TIMEOUT and took < 1.5 + QUICK_S


@pytest.mark.parametrize("content, what", [("tokA\ntokB\n", "more than one line"),
                                           ("tok en", "a space"), ("tok\x07en", "control")])
def test_a_token_that_is_not_one_visible_line_is_refused_without_printing_it(tmp_path, content, what):
    from quant_llm_node.engine.remote_security import RemoteConfigError
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(RemoteConfigError) as info:
        _engine("http://127.0.0.1:9", token_file=str(path))
    assert what in str(info.value)
    for part in ("tokA", "tokB", "tok en", "tok\x07en"):
        assert part not in str(info.value)


def test_redaction_covers_escaped_forms_of_the_token():
    from quant_llm_node.engine.remote_security import Secret
    token = 'tok"en\\/+=&'
    secret = Secret(token)
    import json
    import urllib.parse
    for form in (token, json.dumps(token), repr(token), urllib.parse.quote(token, safe=""),
                 urllib.parse.quote_plus(token), repr(token.encode())):
        assert token not in secret.redact(f"x {form} y") and "***" in secret.redact(f"x {form} y")
