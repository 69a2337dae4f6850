"""The remote engine's security policy, checked before any traffic: transport policy of the
URL, where the token comes from, and that the token never shows."""
from __future__ import annotations

import pickle
import socket

import pytest

from quant_llm_node.config import ConfigError, config_from_flat
from quant_llm_node.engine.remote import RemoteEngine
from quant_llm_node.engine.remote_security import (RemoteConfigError, check_endpoint,
                                                   is_loopback_host, load_token)
from test_remote_support import remote_cfg

TOKEN = "sec-test-token-9f8e7d6c5b4a"


@pytest.fixture
def no_traffic(monkeypatch):
    """Fails the test if anything opens a connection or resolves a name."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield calls
    assert calls == []


@pytest.mark.parametrize("url", ["http://10.20.30.40:8080", "http://gpu-server.site:8000",
                                 "http://[2001:db8::1]:8000", "http://127.0.0.1.nip.io:8000"])
def test_plain_http_to_a_non_loopback_host_is_refused_at_construction(url, no_traffic):
    with pytest.raises(RemoteConfigError) as info:
        RemoteEngine(remote_cfg(url))
    assert info.value.code == "CONFIG_INVALID" and "https" in str(info.value)


def test_explicit_allow_permits_plain_http_and_still_sends_nothing(no_traffic):
    eng = RemoteEngine(remote_cfg("http://10.20.30.40:8080", allow_insecure_http=True))
    assert eng.endpoint.origin == "http://10.20.30.40:8080" and not eng.endpoint.loopback
    eng.close()


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://127.9.9.9", "http://[::1]:8080",
                                 "http://localhost:8080", "https://gpu-server.site:8443",
                                 "https://10.20.30.40/base/"])
def test_https_anywhere_and_http_to_loopback_are_accepted(url, no_traffic):
    RemoteEngine(remote_cfg(url)).close()


@pytest.mark.parametrize("url,why", [
    ("", "empty"), ("ftp://host/x", "scheme"), ("gpu-server:8000", "scheme"),
    ("https://user:pw@gpu-server.site", "credentials"), ("https://tok@gpu-server.site", "credentials"),
    ("https://gpu-server.site/?key=abc", "query"), ("https://:8443", "no host"),
    ("https://gpu-server.site:99999", "port")])
def test_malformed_or_credential_carrying_urls_are_refused(url, why, no_traffic):
    with pytest.raises(RemoteConfigError) as info:
        check_endpoint(url, allow_insecure_http=True)
    assert why in str(info.value)
    assert "pw" not in str(info.value) or why != "credentials"


def test_loopback_detection_does_not_resolve_names(no_traffic):
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1") and is_loopback_host("LOCALHOST")
    assert not is_loopback_host("localhost.evil.example") and not is_loopback_host("10.0.0.1")


def test_base_path_is_kept():
    ep = check_endpoint("https://gpu-server.site:8443/llm/", False)
    assert ep.url("/v1/completions") == "https://gpu-server.site:8443/llm/v1/completions"


def test_token_from_file_and_from_env(tmp_path, monkeypatch):
    f = tmp_path / "token"
    f.write_text(f"  {TOKEN}\n")
    f.chmod(0o600)
    assert load_token(str(f), "").reveal() == TOKEN
    monkeypatch.setenv("QLN_TEST_SEC_TOKEN", TOKEN)
    assert load_token("", "QLN_TEST_SEC_TOKEN").reveal() == TOKEN
    assert not load_token("", "")


def test_configured_token_sources_that_yield_nothing_are_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("QLN_TEST_SEC_UNSET", raising=False)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for file, env, why in [(str(tmp_path / "missing"), "", "cannot be read"), (str(empty), "", "empty"),
                           ("", "QLN_TEST_SEC_UNSET", "not set"), (str(empty), "X", "not both")]:
        with pytest.raises(RemoteConfigError) as info:
            load_token(file, env)
        assert why in str(info.value)


def test_world_readable_token_file_is_warned_about_without_the_token(tmp_path, caplog):
    f = tmp_path / "token"
    f.write_text(TOKEN)
    f.chmod(0o644)
    with caplog.at_level("WARNING"):
        load_token(str(f), "")
    assert "readable by other users" in caplog.text and TOKEN not in caplog.text


def test_the_token_never_shows(tmp_path, monkeypatch):
    monkeypatch.setenv("QLN_TEST_SEC_TOKEN", TOKEN)
    secret = load_token("", "QLN_TEST_SEC_TOKEN")
    assert TOKEN not in repr(secret) and TOKEN not in str(secret) and TOKEN not in f"{secret}"
    assert secret.redact(f"echo Bearer {TOKEN}!") == "echo Bearer ***!"
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    cfg = remote_cfg("https://gpu-server.site", token_env="QLN_TEST_SEC_TOKEN")
    eng = RemoteEngine(cfg)
    try:
        assert TOKEN not in repr(eng) and TOKEN not in repr(cfg) and TOKEN not in eng.model_id
        assert TOKEN not in repr(vars(eng))
    finally:
        eng.close()


def test_the_token_is_never_a_setting():
    """Only a file path or a variable name can be configured (a parameter value would show up
    in ``ros2 param get``, launch files and diagnostics)."""
    from quant_llm_node.config import RemoteConfig
    import dataclasses
    names = {f.name for f in dataclasses.fields(RemoteConfig)}
    assert {"token_file", "token_env"} <= names
    assert not names & {"token", "api_key", "bearer", "password"}


def test_backend_setting_is_declared_with_choices():
    cfg = config_from_flat({"engine.backend": "hybrid", "remote.url": "https://gpu-server.site",
                            "remote.api": "vllm"})
    assert cfg.engine.backend == "hybrid" and cfg.remote.api == "vllm"
    with pytest.raises(ConfigError):
        config_from_flat({"engine.backend": "cloud"})
    with pytest.raises(ConfigError):
        config_from_flat({"remote.api": "openai"})
    with pytest.raises(ConfigError):
        config_from_flat({"remote.deadline_share": 0.0})
