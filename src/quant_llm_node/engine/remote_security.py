"""What the remote engine checks before it sends a byte: the server URL's transport policy,
the bearer token's source, and the TLS trust anchors.

Policy:
- ``https`` always; plain ``http`` only to a loopback host (127.0.0.0/8, ::1, ``localhost``)
  unless the configuration allows it explicitly. The check reads the URL only: no DNS
  lookup, no connection.
- Credentials never ride in the URL (``user:pass@host`` is refused).
- The token comes from a file or from an environment variable named by the configuration;
  it is held in a :class:`Secret`, whose ``repr``/``str`` never show it, and any text that
  leaves the engine (errors, diagnostics) is passed through :meth:`Secret.redact`.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus, urlsplit

from quant_llm_node.engine.llama_engine import EngineError

log = logging.getLogger("quant_llm_node")

SCHEMES = ("http", "https")
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
REDACTED = "***"


class RemoteConfigError(EngineError):
    """The remote settings are unsafe or incomplete (raised before any traffic)."""

    def __init__(self, message: str):
        super().__init__("CONFIG_INVALID", message)


class Secret:
    """A credential that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        """The value, for the one place that builds the Authorization header."""
        return self._value

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the value replaced by ``***``: as it is, and as
        JSON, Python repr, URL and header encodings escape it."""
        if not self._value:
            return text
        for form in _escaped_forms(self._value):
            text = text.replace(form, REDACTED)
        return text

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({REDACTED if self._value else ''})"

    __str__ = __repr__

    def __reduce__(self):  # never pickled (e.g. into a subprocess or a cache) by accident
        raise TypeError("a Secret is not serialisable")


NO_SECRET = Secret("")


def _escaped_forms(value: str) -> list[str]:
    """The ways ``value`` can appear inside a message: raw, JSON-escaped, repr-escaped (str
    and bytes), percent-encoded; longest first so that no form is left half-replaced."""
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
             repr(value)[1:-1], repr(value.encode("utf-8", "backslashreplace"))[2:-1],
             quote(value, safe=""), quote_plus(value, safe="")}
    return sorted((f for f in forms if f), key=len, reverse=True)


@dataclass(frozen=True)
class ServerEndpoint:
    """A checked server address: what diagnostics may show and where requests go."""

    scheme: str
    host: str
    port: int
    path: str           # base path of the API, without a trailing slash
    loopback: bool

    @property
    def origin(self) -> str:
        """``scheme://host:port``: safe to log (no credentials, no path)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def url(self, route: str) -> str:
        return f"{self.origin}{self.path}{route}"


def is_loopback_host(host: str) -> bool:
    """True for loopback addresses and names that mean this machine; no DNS lookup."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(url: str, allow_insecure_http: bool) -> ServerEndpoint:
    """Parse ``url`` and apply the transport policy; RemoteConfigError when it is refused."""
    if not url:
        raise RemoteConfigError("remote.url is empty: set the inference server's address")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise RemoteConfigError(f"remote.url must start with https:// (or http:// to loopback), "
                                f"got scheme '{scheme}'")
    if parts.username is not None or parts.password is not None:
        raise RemoteConfigError("remote.url must not carry credentials; use remote.token_file "
                                "or remote.token_env")
    if parts.query or parts.fragment:
        raise RemoteConfigError("remote.url must not have a query or fragment")
    host = parts.hostname or ""
    if not host:
        raise RemoteConfigError("remote.url has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise RemoteConfigError(f"remote.url has an invalid port: {exc}") from exc
    loopback = is_loopback_host(host)
    if scheme == "http" and not loopback and not allow_insecure_http:
        raise RemoteConfigError(
            f"plain http to {host} is refused (prompts and token would travel unencrypted): "
            f"use https, or set remote.allow_insecure_http on a trusted network")
    return ServerEndpoint(scheme, host, port, parts.path.rstrip("/"), loopback)


def load_token(token_file: str, token_env: str) -> Secret:
    """The bearer token from ``token_file`` or the variable named ``token_env``; none if both
    are empty. A configured source that yields nothing is an error (not silently no auth)."""
    if token_file and token_env:
        raise RemoteConfigError("set remote.token_file or remote.token_env, not both")
    if token_file:
        path = Path(token_file).expanduser()
        try:
            mode = path.stat().st_mode
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise RemoteConfigError(f"remote.token_file {path} cannot be read: "
                                    f"{exc.strerror or type(exc).__name__}") from None
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            log.warning("remote.token_file %s is readable by other users (chmod 600 it)", path)
        if not value:
            raise RemoteConfigError(f"remote.token_file {path} is empty")
        _check_token(value, f"remote.token_file {path}")
        return Secret(value)
    if token_env:
        value = os.environ.get(token_env, "").strip()
        if not value:
            raise RemoteConfigError(f"remote.token_env names {token_env}, which is not set")
        _check_token(value, f"the variable {token_env}")
        return Secret(value)
    return NO_SECRET


def _check_token(value: str, source: str) -> None:
    """A bearer token is one line of visible ASCII (RFC 6750's token68 and more): more than one
    line, spaces or control characters inside are refused here, never sent as a header that
    the HTTP layer would reject with the token in its message. The message never shows it."""
    bad = next((i for i, ch in enumerate(value) if not " " < ch < "\x7f"), None)
    if bad is not None:
        what = ("more than one line" if value[bad] in "\r\n" else
                "a space" if value[bad] == " " else
                "a control or non-ASCII character")
        raise RemoteConfigError(f"{source} holds {what} (at character {bad + 1} of "
                                f"{len(value)}): a bearer token is one line of visible ASCII")


def tls_context(ca_file: str) -> ssl.SSLContext:
    """Certificate-verifying TLS context: the given CA bundle, else the system's."""
    try:
        if ca_file:
            return ssl.create_default_context(cafile=str(Path(ca_file).expanduser()))
        return ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        raise RemoteConfigError(f"remote.ca_file {ca_file} is not a readable PEM CA bundle: "
                                f"{exc}") from None
