"""RemoteEngine against a real OpenAI-compatible server on loopback: llama-cpp-python's own
``python -m llama_cpp.server`` serving the default model (started once per module), plus a
dedicated server per destructive case (killed mid-stream, TLS + token)."""
from __future__ import annotations

import time

import pytest

from quant_llm_node.engine.llama_engine import FINISH_INTERRUPTED, FINISH_STOP
from quant_llm_node.engine.remote import (BACKEND_REMOTE, FINISH_DEADLINE, RemoteEngine,
                                          RemoteError, RemoteErrorKind)
from quant_llm_node.reasoning.types import SOURCE_SAFETY
from test_remote_support import (SHORT_PROMPT, LlamaServer, free_port, load_local_engine, make_pki,
                                 make_task, remote_cfg)

TOKEN = "s3cr3t-token-for-the-test-only-0123456789"
STOP_AFTER_CHARS = 10
QUICK_S = 1.0          # "at once": well under a read timeout


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LlamaServer().start(tmp_path_factory.mktemp("llama_server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def task():
    engine = load_local_engine()   # only its chat template is used here
    yield make_task(engine)
    engine.close()


@pytest.fixture(scope="module")
def engine(server):
    eng = RemoteEngine(remote_cfg(server.url, read_timeout_s=30.0))
    yield eng
    eng.close()


def test_grammar_constrained_remote_decision_parses_and_safety_has_the_last_word(engine, task):
    prompt, req = task.prompt("The corridor ahead looks clear. Should I keep going?",
                              speed_mps=1.0, people_distances_m=[1.0], zone="aisle_3")
    partial = []
    gen = engine.generate(prompt, task.task.max_tokens, task.task.grammar, 0.0,
                          on_text=lambda text, n: partial.append((text, n)))
    assert gen.backend == BACKEND_REMOTE and gen.finish_reason == FINISH_STOP
    task.task.schema.parse(gen.text)                      # parses under the decision schema
    assert partial and partial[-1][0] == gen.text          # streamed token by token
    assert gen.completion_tokens == len(partial) > 1
    assert 0 < gen.first_token_ms <= gen.total_ms and gen.decode_tps > 0
    final = task.task.decide(gen.text, req)
    # a person 1 m ahead is inside the stop distance: whatever the server said, the robot stops
    assert final.action == "stop" and final.speed_limit_mps == 0.0
    assert final.source == SOURCE_SAFETY or gen.text.find('"stop"') >= 0


def test_should_stop_closes_the_stream_at_once(engine, task, server):
    prompt, _ = task.prompt("Where should I go to charge?")
    t0 = time.perf_counter()
    gen = engine.generate(prompt, task.task.max_tokens, task.task.grammar, 0.0,
                          should_stop=lambda text: len(text) > STOP_AFTER_CHARS)
    assert gen.finish_reason == FINISH_INTERRUPTED and len(gen.text) > STOP_AFTER_CHARS
    assert time.perf_counter() - t0 < 30
    end = time.monotonic() + QUICK_S
    while engine.open_streams and time.monotonic() < end:
        time.sleep(0.01)
    assert engine.open_streams == 0, "the reader still holds the connection"
    # the server noticed the disconnect and is free again: a new request is answered
    again = engine.generate(prompt, 4, None, 0.0)
    assert again.completion_tokens >= 1


def test_deadline_cuts_the_stream_and_returns_what_it_had(engine, task):
    prompt, _ = task.prompt("Is the loading bay free?")
    budget_s = 0.3
    t0 = time.perf_counter()
    gen = engine.generate(prompt, task.task.max_tokens, task.task.grammar, 0.0, deadline_s=budget_s)
    took = time.perf_counter() - t0
    assert gen.finish_reason == FINISH_DEADLINE
    assert took < budget_s + QUICK_S


def test_context_overflow_is_reported_as_such(engine):
    with pytest.raises(RemoteError) as info:
        engine.generate("word " * 5000, 8)
    assert info.value.kind in (RemoteErrorKind.REJECTED, RemoteErrorKind.SERVER_ERROR,
                               RemoteErrorKind.BROKEN_STREAM)


def test_server_killed_mid_stream(tmp_path):
    srv = LlamaServer().start(tmp_path)
    eng = RemoteEngine(remote_cfg(srv.url, read_timeout_s=30.0))
    killed_at = []

    def kill_after_two(text, n):
        if n == 2 and not killed_at:
            srv.kill()
            killed_at.append(time.perf_counter())

    try:
        with pytest.raises(RemoteError) as info:
            eng.generate(SHORT_PROMPT, 48, None, 0.0, on_text=kill_after_two)
        assert killed_at, "the server was not killed mid-stream"
        assert info.value.kind is RemoteErrorKind.BROKEN_STREAM
        assert time.perf_counter() - killed_at[0] < QUICK_S  # noticed at once, not at a timeout
        with pytest.raises(RemoteError) as again:
            eng.generate(SHORT_PROMPT, 4)
        assert again.value.kind is RemoteErrorKind.UNREACHABLE
    finally:
        eng.close()
        srv.stop()


@pytest.fixture(scope="module")
def secure_server(tmp_path_factory):
    """TLS with a CA made here, and a bearer token."""
    d = tmp_path_factory.mktemp("tls")
    pki = make_pki(d)
    srv = LlamaServer(api_key=TOKEN, certfile=pki.cert_file, keyfile=pki.key_file)
    srv.start(d)
    yield srv, pki, d
    srv.stop()


def test_tls_with_a_self_signed_ca_and_the_right_token(secure_server, monkeypatch):
    srv, pki, d = secure_server
    token_file = d / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    assert srv.url.startswith("https://")
    eng = RemoteEngine(remote_cfg(srv.url, ca_file=pki.ca_file, token_file=str(token_file),
                                  read_timeout_s=30.0))
    try:
        gen = eng.generate(SHORT_PROMPT, 8, 'root ::= "one" (" two")*', 0.0)
        assert gen.finish_reason in ("stop", "length") and gen.text.startswith("one")
        assert TOKEN not in repr(eng) and TOKEN not in eng.model_id
    finally:
        eng.close()
    monkeypatch.setenv("QLN_TEST_REMOTE_TOKEN", TOKEN)
    eng = RemoteEngine(remote_cfg(srv.url, ca_file=pki.ca_file, token_env="QLN_TEST_REMOTE_TOKEN"))
    try:
        assert eng.generate(SHORT_PROMPT, 2).completion_tokens >= 1
    finally:
        eng.close()


def test_wrong_token_is_401_and_never_shown(secure_server, monkeypatch, caplog):
    srv, pki, _ = secure_server
    wrong = "wrong-" + TOKEN[::-1]
    monkeypatch.setenv("QLN_TEST_REMOTE_TOKEN", wrong)
    eng = RemoteEngine(remote_cfg(srv.url, ca_file=pki.ca_file, token_env="QLN_TEST_REMOTE_TOKEN"))
    try:
        with caplog.at_level("DEBUG"):
            with pytest.raises(RemoteError) as info:
                eng.generate("hello", 2)
        assert info.value.kind is RemoteErrorKind.AUTH and info.value.status == 401
        shown = str(info.value) + repr(info.value) + caplog.text + repr(eng)
        assert wrong not in shown and TOKEN not in shown
    finally:
        eng.close()
    eng = RemoteEngine(remote_cfg(srv.url, ca_file=pki.ca_file))  # no token at all
    try:
        with pytest.raises(RemoteError) as info:
            eng.generate("hello", 2)
        assert info.value.kind is RemoteErrorKind.AUTH
    finally:
        eng.close()


def test_tls_refuses_a_server_the_ca_did_not_sign(secure_server, monkeypatch):
    srv, pki, _ = secure_server
    monkeypatch.setenv("QLN_TEST_REMOTE_TOKEN", TOKEN)
    for ca in (pki.other_ca_file, ""):                  # an unrelated CA; the system CAs
        eng = RemoteEngine(remote_cfg(srv.url, ca_file=ca, token_env="QLN_TEST_REMOTE_TOKEN"))
        try:
            with pytest.raises(RemoteError) as info:
                eng.generate("hello", 2)
            assert info.value.kind is RemoteErrorKind.TLS
            assert TOKEN not in str(info.value)
        finally:
            eng.close()


def test_plain_http_to_a_tls_server_fails_cleanly(secure_server):
    srv, _, _ = secure_server
    eng = RemoteEngine(remote_cfg(f"http://127.0.0.1:{srv.port}"))
    try:
        with pytest.raises(RemoteError) as info:
            eng.generate("hello", 2)
        assert info.value.kind in (RemoteErrorKind.BROKEN_STREAM, RemoteErrorKind.BAD_RESPONSE,
                                   RemoteErrorKind.SERVER_ERROR, RemoteErrorKind.REJECTED)
    finally:
        eng.close()


def test_nothing_listening_is_unreachable_fast():
    eng = RemoteEngine(remote_cfg(f"http://127.0.0.1:{free_port()}"))
    try:
        t0 = time.perf_counter()
        with pytest.raises(RemoteError) as info:
            eng.generate("hello", 2)
        assert info.value.kind is RemoteErrorKind.UNREACHABLE
        assert info.value.code == "MODEL_UNAVAILABLE"
        assert time.perf_counter() - t0 < QUICK_S
    finally:
        eng.close()
