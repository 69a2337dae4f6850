"""Why a remote call failed: the kinds (keys of the error counters), the error the remote
engine raises, and the mapping from httpx's exceptions and HTTP statuses to them.

Every message is built from the server's origin and what went wrong, never from request
headers, and passes through the token's redaction.
"""
from __future__ import annotations

import enum
import ssl
from typing import TYPE_CHECKING

import httpx
import httpx_sse

from quant_llm_node.engine.llama_engine import EngineError
from quant_llm_node.engine.remote_dialect import clean_text
from quant_llm_node.engine.remote_security import Secret

if TYPE_CHECKING:
    from quant_llm_node.config import RemoteConfig

ERROR_BODY_CHARS = 300           # how much of an error response goes into the message


class RemoteErrorKind(str, enum.Enum):
    """Why a remote call failed (the key of the error counters)."""

    UNREACHABLE = "unreachable"      # connect refused / no route / DNS
    TLS = "tls"                      # certificate not trusted, handshake failed
    TIMEOUT = "timeout"              # connect or read timeout
    AUTH = "auth"                    # 401 / 403: wrong or missing token
    SERVER_ERROR = "server_error"    # 5xx
    REJECTED = "rejected"            # other 4xx (bad request, unknown model, context)
    BROKEN_STREAM = "broken_stream"  # connection lost mid-answer, or ended without a finish
    BAD_RESPONSE = "bad_response"    # not an SSE completions stream
    CIRCUIT_OPEN = "circuit_open"    # skipped: the breaker says the server is down
    SLOW = "slow"                    # the answer did not finish within its share of the deadline
    INVALID_OUTPUT = "invalid_output"  # the text did not parse as a decision (hybrid)


class RemoteError(EngineError):
    """A remote call failed; ``kind`` says how. ``code`` is MODEL_UNAVAILABLE (or
    CONTEXT_OVERFLOW when the server says the prompt does not fit)."""

    def __init__(self, kind: RemoteErrorKind, message: str, code: str = "MODEL_UNAVAILABLE",
                 status: int = 0):
        super().__init__(code, message)
        self.kind = kind
        self.status = status


def status_error(response: httpx.Response, origin: str, token: Secret) -> RemoteError:
    """The error for a non-200 answer (the start of its body, redacted, in the message)."""
    status = response.status_code
    head = b""
    try:
        for block in response.iter_bytes():  # only the start of a body of any size
            head += block
            if len(head) >= 4 * ERROR_BODY_CHARS:
                break
    except httpx.HTTPError:
        pass
    detail = clean_text(head.decode("utf-8", "replace"), ERROR_BODY_CHARS)
    if status in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
        kind = RemoteErrorKind.AUTH
        detail = "the server refused the bearer token" + ("" if token else " (none configured)")
    elif status >= httpx.codes.INTERNAL_SERVER_ERROR:
        kind = RemoteErrorKind.SERVER_ERROR
    else:
        kind = RemoteErrorKind.REJECTED
    overflow = kind is RemoteErrorKind.REJECTED and "context" in detail.lower()
    return RemoteError(kind, token.redact(f"{origin} answered HTTP {status}: {detail}"),
                       code="CONTEXT_OVERFLOW" if overflow else "MODEL_UNAVAILABLE", status=status)


def as_remote_error(exc: BaseException, origin: str, token: Secret,
                    timeouts: "RemoteConfig") -> RemoteError:
    """Map what the stream reader raised to a RemoteError; ``timeouts`` is the remote
    config (for the message). The message is redacted, cleaned and bounded."""
    if isinstance(exc, RemoteError):
        return exc
    if isinstance(exc, httpx_sse.SSEError):
        kind, what = RemoteErrorKind.BAD_RESPONSE, f"not an event stream ({exc})"
    elif isinstance(exc, httpx.TimeoutException):
        phase = "connect" if isinstance(exc, httpx.ConnectTimeout) else "read"
        limit = timeouts.connect_timeout_s if phase == "connect" else timeouts.read_timeout_s
        kind, what = RemoteErrorKind.TIMEOUT, f"{phase} timeout after {limit} s"
    elif isinstance(exc, httpx.ConnectError):
        if _caused_by(exc, ssl.SSLError):
            kind, what = RemoteErrorKind.TLS, f"TLS handshake failed ({_root(exc)})"
        else:
            kind, what = RemoteErrorKind.UNREACHABLE, f"cannot connect ({_root(exc)})"
    elif isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError,
                          httpx.CloseError)):
        kind, what = RemoteErrorKind.BROKEN_STREAM, f"connection lost mid-answer ({_root(exc)})"
    elif isinstance(exc, httpx.HTTPError):
        kind, what = RemoteErrorKind.BAD_RESPONSE, f"{type(exc).__name__}: {exc}"
    else:
        # not a transport failure: whatever the server's answer did to the client, it is that
        # server's failure to answer (logged in full, with its traceback, by the guard)
        kind, what = RemoteErrorKind.BAD_RESPONSE, f"unreadable answer ({type(exc).__name__}: {exc})"
    return RemoteError(kind, token.redact(clean_text(f"{origin}: {what}", 2 * ERROR_BODY_CHARS)))


def _caused_by(exc: BaseException, kind: type) -> bool:
    """Whether ``exc`` or anything in its cause/context chain is a ``kind``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _root(exc: BaseException) -> str:
    """The innermost cause's message (e.g. 'Connection refused'), short."""
    seen = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    return text[:ERROR_BODY_CHARS]
