"""Remote engine: the same generator contract as LlamaEngine, answered by an
OpenAI-compatible inference server (llama.cpp's server, llama-cpp-python's server, vLLM).

One request per ``generate`` call: ``POST URL/v1/completions`` with ``stream: true`` and the
decision grammar in the server's dialect (remote_dialect.py), read with httpx and httpx-sse
(no hand-written HTTP or SSE parsing) on a reader thread (remote_stream.py), so that cancel,
preemption and deadlines are noticed even while the server is silent: ``should_stop`` is
called after every token and between short waits, and a True closes the stream.

Failures raise :class:`RemoteError` (an EngineError with a ``kind``); a stream that runs past
the call's ``deadline_s`` returns what it had with finish reason ``deadline``. The engine has
no breaker and no counters: serving/remote_guard.py adds those. Thread-safe: the HTTP client
is, and a call keeps its state on its own stack.

Nothing here logs, returns or raises the bearer token: it lives in a Secret, and every error
text that leaves the engine is redacted.
"""
from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Callable, Optional

import httpx
import httpx_sse

from quant_llm_node.config import RemoteConfig
from quant_llm_node.engine.llama_engine import (FINISH_INTERRUPTED, FINISH_LENGTH, FINISH_STOP,
                                                GenerationResult)
from quant_llm_node.engine.remote_errors import (RemoteError, RemoteErrorKind, as_remote_error,
                                                 status_error)
from quant_llm_node.engine.remote_dialect import (COMPLETIONS_ROUTE, Chunk, ChunkError, RemoteApi,
                                                  parse_chunk, request_body)
from quant_llm_node.engine.remote_security import (Secret, ServerEndpoint, check_endpoint,
                                                   load_token, tls_context)
from quant_llm_node.engine.remote_stream import StreamEnd, StreamReader

FINISH_DEADLINE = "deadline"     # the call's own deadline_s ran out (the server was too slow)
BACKEND_REMOTE = "remote"
DONE_SENTINEL = "[DONE]"
CONNECTION_EVENTS = ("connection.connect_tcp.complete", "connection.start_tls.complete")
WARM_TOKENS = 1                  # warm(): one token is enough to make the server keep the prefix
# What a server may send, at most: one SSE line, one whole answer stream, and the text of an
# answer per token asked for (a decision is a few hundred characters). Past any of them the
# answer is a BAD_RESPONSE, never a long wait or a big allocation.
MAX_LINE_CHARS = 64 * 1024
MAX_STREAM_CHARS = 4 * 1024 * 1024
MAX_TEXT_CHARS_PER_TOKEN = 64
NO_DEADLINE_CAP_S = 120.0        # a call given no deadline still ends (the service always gives one)

__all__ = ["BACKEND_REMOTE", "FINISH_DEADLINE", "RemoteEngine", "RemoteError", "RemoteErrorKind"]


class RemoteEngine:
    """Generates through an inference server; construct it from the ``remote`` settings.

    The constructor applies the security policy (remote_security.py) and sends nothing: a
    refused URL, an unreadable token source or CA file raises RemoteConfigError
    (code CONFIG_INVALID) here, before any traffic.
    """

    def __init__(self, cfg: RemoteConfig, transport: Optional[httpx.BaseTransport] = None):
        """``transport``: an httpx transport to use instead of the network's (tests, proxies
        that the operator sets up explicitly); environment proxies are never used."""
        self.cfg = cfg
        self.api = RemoteApi(cfg.api)
        self.endpoint: ServerEndpoint = check_endpoint(cfg.url, cfg.allow_insecure_http)
        self._token: Secret = load_token(cfg.token_file, cfg.token_env)
        # plain http (loopback, or explicitly allowed) never uses the context; https always verifies
        verify: ssl.SSLContext | bool = tls_context(cfg.ca_file) if self.endpoint.scheme == "https" else True
        # one connection per request (no keep-alive): each request owns its socket, so a cancel
        # can hang up at any phase, and a restarted server never meets a stale pooled socket;
        # a TCP (+TLS) handshake on the site network is small beside a decision
        self._client = httpx.Client(
            verify=verify, follow_redirects=False, trust_env=False, transport=transport,
            limits=httpx.Limits(max_keepalive_connections=0),
            timeout=httpx.Timeout(connect=cfg.connect_timeout_s, read=cfg.read_timeout_s,
                                  write=cfg.read_timeout_s, pool=cfg.connect_timeout_s))
        self._readers: list[StreamReader] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RemoteEngine({self.endpoint.origin}, api={self.api.value})"

    def redact(self, text: str) -> str:
        """``text`` without the bearer token in any escaped form."""
        return self._token.redact(text)

    # ---- lifecycle -------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """What answers, for responses and diagnostics: ``model@origin`` (no credentials)."""
        return f"{self.cfg.model or 'server-default'}@{self.endpoint.origin}"

    @property
    def open_streams(self) -> int:
        """Reader threads still holding a connection (abandoned ones included)."""
        with self._lock:
            self._readers = [r for r in self._readers if r.alive]
            return len(self._readers)

    def close(self) -> None:
        """Stop every stream and close the connection pool."""
        with self._lock:
            for reader in self._readers:
                reader.abandon()
        self._client.close()

    def warm(self, prefix: str) -> float:
        """Send the static prefix once so the server keeps its KV (llama.cpp ``cache_prompt``,
        vLLM prefix caching); returns milliseconds. Bounded by the connect and read timeouts
        together: a server that keeps the connection open without finishing is a TIMEOUT.
        Failures raise RemoteError."""
        t0 = time.perf_counter()
        budget = self.cfg.connect_timeout_s + self.cfg.read_timeout_s
        result = self.generate(prefix, WARM_TOKENS, deadline_s=budget)
        if result.finish_reason == FINISH_DEADLINE:
            raise RemoteError(RemoteErrorKind.TIMEOUT, f"{self.endpoint.origin}: the warm-up did "
                                                       f"not finish within {budget:.1f} s")
        return (time.perf_counter() - t0) * 1e3

    # ---- generation ------------------------------------------------------------------------
    def generate(self, prompt: str, max_tokens: int, grammar: str | None = None,
                 temperature: float = 0.0,
                 should_stop: Callable[[str], bool] | None = None,
                 on_text: Callable[[str, int], None] | None = None,
                 min_room: int = 1, deadline_s: float | None = None) -> GenerationResult:
        """Stream one completion (contract of LlamaEngine.generate).

        ``deadline_s``: seconds this call may take; past it the stream is closed and the
        partial result returned with finish reason ``deadline``. ``min_room`` is the server's
        to enforce (it answers 400 when the prompt leaves no room: CONTEXT_OVERFLOW).
        Timings are the client's view of the stream: ``first_token_ms`` is the server's TTFT
        as the robot sees it (network included), ``decode_ms`` the rest; ``prompt_ms`` is the
        server's own prompt time where it reports one (llama-server ``timings``), else the
        TTFT. Token counts come from the server's usage when sent, else one per chunk.
        Raises RemoteError.
        """
        t0 = time.perf_counter()
        t_end_budget = t0 + (deadline_s if deadline_s is not None else NO_DEADLINE_CAP_S)
        max_text = max(1, max_tokens) * MAX_TEXT_CHARS_PER_TOKEN
        body = request_body(self.api, self.cfg.model, prompt, max_tokens, grammar, temperature)
        reader: StreamReader[Chunk] = StreamReader(lambda emit, rd: self._read(body, emit, rd))
        with self._lock:
            self._readers = [r for r in self._readers if r.alive] + [reader]
        reader.start()
        text, n_out, finish = "", 0, None
        t_first: float | None = None
        usage = Chunk()
        try:
            while True:
                wait = min(self.cfg.poll_interval_s, t_end_budget - time.perf_counter())
                item = reader.next(wait)
                if item is None:  # nothing yet: the server is thinking, or silent
                    if finish is not None:
                        break  # the answer is complete; a late usage trailer is not waited for
                    if should_stop is not None and should_stop(text):
                        finish = FINISH_INTERRUPTED
                        break
                    if time.perf_counter() >= t_end_budget:
                        finish = FINISH_DEADLINE
                        break
                    continue
                if isinstance(item, StreamEnd):
                    if item.error is not None and finish is None:
                        raise as_remote_error(item.error, self.endpoint.origin, self._token, self.cfg)
                    if finish is None:
                        raise RemoteError(RemoteErrorKind.BROKEN_STREAM,
                                          f"{self.endpoint.origin} ended the stream without a "
                                          f"finish reason after {n_out} tokens")
                    break
                usage = _merge_usage(usage, item)
                if item.text:
                    n_out += 1
                    if t_first is None:
                        t_first = time.perf_counter()
                    text += item.text
                    if len(text) > max_text:
                        raise RemoteError(RemoteErrorKind.BAD_RESPONSE,
                                          f"{self.endpoint.origin} sent more than {max_text} "
                                          f"characters for {max_tokens} tokens")
                    if on_text is not None:
                        on_text(text, n_out)
                    if should_stop is not None and should_stop(text):
                        finish = FINISH_INTERRUPTED
                        break
                if item.finish_reason is not None:
                    finish = FINISH_LENGTH if item.finish_reason == FINISH_LENGTH else FINISH_STOP
                if time.perf_counter() >= t_end_budget and finish is None:
                    finish = FINISH_DEADLINE
                    break
        finally:
            reader.abandon()  # a finished reader has already let go; an unfinished one closes
        t_end = time.perf_counter()
        t_first = t_first if t_first is not None else t_end
        completion = usage.completion_tokens if usage.completion_tokens is not None else n_out
        return GenerationResult(
            text=text, prompt_tokens=usage.prompt_tokens or 0,
            cached_tokens=usage.cached_tokens or 0, completion_tokens=max(completion, n_out),
            prompt_ms=usage.server_prompt_ms if usage.server_prompt_ms is not None else (t_first - t0) * 1e3,
            first_token_ms=(t_first - t0) * 1e3, decode_ms=(t_end - t_first) * 1e3,
            total_ms=(t_end - t0) * 1e3, finish_reason=finish, decode_steps=max(n_out - 1, 0),
            backend=BACKEND_REMOTE)

    # ---- the reader thread ---------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token.reveal()}"
        return headers

    def _read(self, body: dict, emit: Callable[[Chunk], None], reader: StreamReader) -> None:
        """One streamed request; runs on the reader thread. Raises httpx errors or RemoteError."""
        url = self.endpoint.url(COMPLETIONS_ROUTE)

        def on_connection(event: str, info: dict) -> None:
            # httpcore's documented ``trace`` request extension: the stream of this request's
            # own connection as soon as it exists (TCP, then TLS), so that even a server that
            # never answers can be hung up on
            if event in CONNECTION_EVENTS and info.get("return_value") is not None:
                stream = info["return_value"]
                reader.set_interrupt(lambda: _shut_down(stream))

        try:
            with self._client.stream("POST", url, json=body, headers=self._headers(),
                                     extensions={"trace": on_connection}) as response:
                if response.status_code != httpx.codes.OK:
                    raise status_error(response, self.endpoint.origin, self._token)
                for sse in httpx_sse.EventSource(_Bounded(response)).iter_sse():
                    if reader.stopped.is_set() or sse.data.strip() == DONE_SENTINEL:
                        return
                    if not sse.data:
                        continue  # keep-alive comment or empty event
                    try:
                        emit(parse_chunk(sse.data))
                    except ChunkError as exc:
                        raise RemoteError(RemoteErrorKind.BAD_RESPONSE, self._token.redact(
                            f"{self.endpoint.origin}: {exc}")) from None
        except _TooLong as exc:
            raise RemoteError(RemoteErrorKind.BAD_RESPONSE,
                              f"{self.endpoint.origin}: {exc}") from None
        finally:
            reader.set_interrupt(None)


class _TooLong(Exception):
    """The server sent more than a limit allows."""


class _Bounded:
    """The response as httpx_sse's EventSource reads it (``headers``, ``iter_text``), cut off
    with _TooLong past MAX_LINE_CHARS in one line or MAX_STREAM_CHARS in all."""

    def __init__(self, response: httpx.Response):
        self._response = response
        self.headers = response.headers

    def iter_text(self):
        total = line = 0
        for text in self._response.iter_text():
            total += len(text)
            if total > MAX_STREAM_CHARS:
                raise _TooLong(f"the answer stream is longer than {MAX_STREAM_CHARS} characters")
            end = max(text.rfind("\n"), text.rfind("\r"))
            line = line + len(text) if end < 0 else len(text) - end - 1
            if line > MAX_LINE_CHARS:
                raise _TooLong(f"a stream line is longer than {MAX_LINE_CHARS} characters")
            yield text


def _shut_down(stream) -> None:
    """Break a connection off from another thread: shutdown(2) wakes the reader blocked in
    recv and sends the server a FIN now (close(2) would do neither while the read is in
    progress). The raw socket call, also under TLS: the reader is being abandoned, so no TLS
    close_notify is owed."""
    sock = stream.get_extra_info("socket")
    if sock is not None:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _merge_usage(acc: Chunk, item: Chunk) -> Chunk:
    """Keep the last value the server reported for each usage/timing field."""
    def pick(new, old):
        return new if new is not None else old
    return Chunk(prompt_tokens=pick(item.prompt_tokens, acc.prompt_tokens),
                 completion_tokens=pick(item.completion_tokens, acc.completion_tokens),
                 cached_tokens=pick(item.cached_tokens, acc.cached_tokens),
                 server_prompt_ms=pick(item.server_prompt_ms, acc.server_prompt_ms))
