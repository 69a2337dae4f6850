"""Helpers of the remote-backend tests (no tests here): a real llama-cpp-python server on
loopback, a self-signed CA, a scripted fault server, and the decision prompt.

Everything listens on 127.0.0.1 and is reached only there.
"""
from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
LOOPBACK = "127.0.0.1"
SERVER_START_S = 120.0        # loading the 0.5B model takes seconds; a loaded host, more
SERVER_THREADS = 2
SHUTDOWN_POLL_S = 0.02        # how often the fault server's loop looks for shutdown
# a short chat-formatted prompt for the cases that are about transport, not decisions
SHORT_PROMPT = ("<|im_start|>user\nCount from one to twenty in words.<|im_end|>\n"
                "<|im_start|>assistant\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout_s: float, proc: Optional[subprocess.Popen] = None) -> None:
    """Until something accepts on 127.0.0.1:port (llama_cpp.server binds after the load)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {LOOPBACK}:{port} after {timeout_s} s")


@dataclass
class LlamaServer:
    """``python -m llama_cpp.server`` serving the default model on loopback."""

    port: int = field(default_factory=free_port)
    api_key: str = ""
    certfile: str = ""
    keyfile: str = ""
    proc: Optional[subprocess.Popen] = None
    log_path: Optional[Path] = None

    @property
    def url(self) -> str:
        return f"{'https' if self.certfile else 'http'}://{LOOPBACK}:{self.port}"

    def start(self, log_dir: Path) -> "LlamaServer":
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(MODEL),
               "--host", LOOPBACK, "--port", str(self.port), "--n_threads", str(SERVER_THREADS),
               "--n_ctx", "2048", "--seed", "42", "--verbose", "false"]
        if self.certfile:
            cmd += ["--ssl_certfile", self.certfile, "--ssl_keyfile", self.keyfile]
        env = {k: v for k, v in os.environ.items() if k != "API_KEY"}
        if self.api_key:
            env["API_KEY"] = self.api_key  # pydantic-settings reads it: not on the command line
        self.log_path = log_dir / f"llama_server_{self.port}.log"
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     cwd=str(ROOT))
        log.close()
        try:
            wait_port(self.port, SERVER_START_S, self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"llama_cpp.server did not start: {self.log_tail()}")
        return self

    def log_tail(self, n: int = 2000) -> str:
        return self.log_path.read_text()[-n:] if self.log_path and self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the server dies mid-whatever, as a crashed or powered-off host would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass(frozen=True)
class Pki:
    ca_file: str
    cert_file: str
    key_file: str
    other_ca_file: str     # a CA that did not sign the server certificate


def make_pki(directory: Path) -> Pki:
    """A self-signed CA, a server certificate for 127.0.0.1/localhost signed by it, and an
    unrelated CA (for the 'untrusted' case)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def ca(cn: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                             crl_sign=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        return key, cert

    ca_key, ca_cert = ca("quant_llm_node test CA")
    _, other_cert = ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = {n: directory / f"{n}.pem" for n in ("ca", "cert", "key", "other_ca")}
    paths["ca"].write_bytes(ca_cert.public_bytes(pem))
    paths["other_ca"].write_bytes(other_cert.public_bytes(pem))
    paths["cert"].write_bytes(cert.public_bytes(pem))
    paths["key"].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    os.chmod(paths["key"], 0o600)
    return Pki(str(paths["ca"]), str(paths["cert"]), str(paths["key"]), str(paths["other_ca"]))


# ---- a scripted server for the faults a real server will not produce on demand --------------
def sse_chunk(text: str = "", finish: Optional[str] = None) -> bytes:
    doc = {"object": "text_completion", "choices": [{"index": 0, "text": text,
                                                     "finish_reason": finish}]}
    return f"data: {json.dumps(doc)}\n\n".encode()


DECISION = '{"action": "continue", "speed": 1.0, "target": "", "reason": "way clear"}'
# The hostile shapes: mode -> the kind of failure the node must count for it ("" = not a
# failure: a well-formed answer that the safety rules must still have the last word over).
HOSTILE_SHAPES = {
    "surrogate_text": "bad_response", "surrogate_error": "bad_response",
    "nan_usage": "bad_response", "inf_usage": "bad_response", "huge_int": "bad_response",
    "bad_json": "bad_response", "not_sse": "bad_response", "long_line": "bad_response",
    "huge_text": "bad_response", "mid_json": "broken_stream", "truncated": "broken_stream",
    "endless": "slow", "empty_forever": "slow", "late_first_byte": "timeout",
    "status": "server_error", "redirect": "rejected", "unknown_place": "invalid_output",
    "forbidden_action": "",
}


def _escaped(text: str) -> str:
    """``text`` as the inside of a JSON string literal."""
    return json.dumps(text)[1:-1]


class FaultServer:
    """A tiny HTTP server on loopback whose answer to POST /v1/completions is ``mode``:

    - ``stall``: 200 and SSE headers, one token, then silence for ``stall_s``
    - ``silent``: accepts and reads the request, never answers (for ``stall_s``)
    - ``status``: HTTP ``status`` with ``body``
    - ``not_sse``: 200 with a JSON body instead of an event stream
    - ``bad_json``: an event stream whose data is not JSON
    - ``text``: a well-formed stream of ``text`` (one event per word), finish stop, [DONE]
    - ``truncated``: two tokens, then the connection closes without a finish
    - ``redirect``: 307 to ``location``
    and the hostile shapes (HOSTILE_SHAPES):
    - ``surrogate_text`` / ``surrogate_error``: a lone surrogate in the decision's reason, or in
      an in-band error message
    - ``nan_usage`` / ``inf_usage`` / ``huge_int``: NaN, Infinity, a 5000-digit integer as a
      usage count, beside a valid decision
    - ``mid_json``: the socket closed in the middle of an event's JSON
    - ``endless``: tokens forever; ``empty_forever``: keep-alive comments forever
    - ``late_first_byte``: the first byte only after ``stall_s`` (30 s)
    - ``long_line``: a 50 MB line; ``huge_text``: text far past any answer's length
    - ``unknown_place``: a decision going to a place no map has; ``forbidden_action``: a
      well-formed decision to drive on at full speed
    ``mode`` can be changed between requests. It records each request's headers and body, and
    (stall, silent) when the client hung up.
    """

    def __init__(self, mode: str = "text", *, status: int = 500, body: str = "",
                 text: str = "hello world", stall_s: float = 30.0, location: str = ""):
        self.mode, self.status, self.body, self.text = mode, status, body, text
        self.stall_s, self.location = stall_s, location
        self.requests: list[dict] = []
        self.disconnected_at: list[float] = []    # monotonic times the client hung up
        self._release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                outer.requests.append({"headers": dict(self.headers), "path": self.path,
                                       "body": json.loads(body or b"{}")})
                getattr(outer, f"_serve_{outer.mode}")(self)

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(SHUTDOWN_POLL_S,),
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __enter__(self) -> "FaultServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    # -- modes ---------------------------------------------------------------------------
    @staticmethod
    def _sse_headers(h) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

    @staticmethod
    def _chunk(h, data: bytes) -> None:
        h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        h.wfile.flush()

    def _serve_stall(self, h) -> None:
        self._sse_headers(h)
        self._chunk(h, sse_chunk("{\""))
        self._watch_disconnect(h)

    def _watch_disconnect(self, h) -> None:
        """Stay silent for ``stall_s``, noting when the client hangs up (its FIN)."""
        end = time.monotonic() + self.stall_s
        h.connection.settimeout(SHUTDOWN_POLL_S)
        while time.monotonic() < end and not self._release.is_set():
            try:
                if h.connection.recv(1) == b"":
                    self.disconnected_at.append(time.monotonic())
                    return
            except socket.timeout:
                continue
            except OSError:
                self.disconnected_at.append(time.monotonic())
                return

    def _serve_silent(self, h) -> None:
        self._watch_disconnect(h)

    def _serve_status(self, h) -> None:
        data = self.body.encode()
        h.send_response(self.status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _serve_not_sse(self, h) -> None:
        data = json.dumps({"choices": [{"text": self.text, "finish_reason": "stop"}]}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _serve_bad_json(self, h) -> None:
        self._sse_headers(h)
        self._chunk(h, b"data: this is not json\n\n")
        self._chunk(h, b"")

    def _serve_text(self, h) -> None:
        self._sse_headers(h)
        words = self.text.split(" ")
        for i, word in enumerate(words):
            self._chunk(h, sse_chunk(word + (" " if i < len(words) - 1 else "")))
        self._chunk(h, sse_chunk("", "stop"))
        self._chunk(h, b"data: [DONE]\n\n")
        self._chunk(h, b"")

    def _serve_truncated(self, h) -> None:
        self._sse_headers(h)
        self._chunk(h, sse_chunk("{\""))
        self._chunk(h, sse_chunk("action"))
        h.close_connection = True
        h.wfile.flush()
        h.connection.shutdown(socket.SHUT_RDWR)

    def _serve_redirect(self, h) -> None:
        h.send_response(307)
        h.send_header("Location", self.location or "http://127.0.0.1:9/v1/completions")
        h.send_header("Content-Length", "0")
        h.end_headers()

    # -- hostile shapes ------------------------------------------------------------------
    def _events(self, h, *payloads: str, done: bool = True) -> None:
        self._sse_headers(h)
        for payload in payloads:
            self._chunk(h, f"data: {payload}\n\n".encode())
        if done:
            self._chunk(h, b"data: [DONE]\n\n")
        self._chunk(h, b"")

    @staticmethod
    def _choice(text: str, finish: Optional[str] = "stop", usage: str = "") -> str:
        fin = json.dumps(finish)
        tail = f', "usage": {usage}' if usage else ""
        return f'{{"choices": [{{"index": 0, "text": "{text}", "finish_reason": {fin}}}]{tail}}}'

    def _serve_surrogate_text(self, h) -> None:
        bad = _escaped(DECISION).replace("way clear", "\\ud800")  # an escape: a lone surrogate
        self._events(h, self._choice(bad))

    def _serve_surrogate_error(self, h) -> None:
        self._events(h, '{"error": {"message": "\\ud800 model crashed", "code": 500}}')

    def _serve_nan_usage(self, h) -> None:
        self._events(h, self._choice(_escaped(DECISION), usage='{"completion_tokens": NaN}'))

    def _serve_inf_usage(self, h) -> None:
        self._events(h, self._choice(_escaped(DECISION), usage='{"prompt_tokens": Infinity}'))

    def _serve_huge_int(self, h) -> None:
        self._events(h, self._choice(_escaped(DECISION), usage='{"completion_tokens": 9' + "9" * 4999 + "}"))

    def _serve_mid_json(self, h) -> None:
        self._sse_headers(h)
        self._chunk(h, b'data: {"choices": [{"index": 0, "te')
        h.close_connection = True
        h.wfile.flush()
        h.connection.shutdown(socket.SHUT_RDWR)

    def _forever(self, h, data: bytes, period_s: float = 0.05) -> None:
        """Send ``data`` every ``period_s`` until the client hangs up (or the server stops)."""
        self._sse_headers(h)
        while not self._release.is_set():
            try:
                self._chunk(h, data)
            except OSError:
                self.disconnected_at.append(time.monotonic())
                return
            time.sleep(period_s)

    def _serve_endless(self, h) -> None:
        self._forever(h, f"data: {self._choice(' ', None)}\n\n".encode())

    def _serve_empty_forever(self, h) -> None:
        self._forever(h, b": keep-alive\n\n")

    def _serve_late_first_byte(self, h) -> None:
        self._watch_disconnect(h)

    def _serve_long_line(self, h) -> None:
        self._sse_headers(h)
        try:
            self._chunk(h, b"data: {\"choices\": [{\"text\": \"")
            block = b"x" * (1 << 20)
            for _ in range(50):  # 50 MB without a newline
                self._chunk(h, block)
        except OSError:
            self.disconnected_at.append(time.monotonic())

    def _serve_huge_text(self, h) -> None:
        self._forever(h, f"data: {self._choice('x' * 4000, None)}\n\n".encode(), period_s=0.001)

    def _serve_unknown_place(self, h) -> None:
        text = DECISION.replace('"continue"', '"go_to"').replace('"target": ""', '"target": "moon_base"')
        self._events(h, self._choice(_escaped(text)))

    def _serve_forbidden_action(self, h) -> None:
        self._events(h, self._choice(_escaped(DECISION.replace("1.0", "1.5"))))


# ---- the decision task and its prompt --------------------------------------------------------
@dataclass
class Task:
    """The project's decision pipeline with the default model's chat template."""

    task: object
    prompts: object

    def prompt(self, query: str, **state) -> tuple[str, object]:
        from quant_llm_node.reasoning.types import NavRequest, RobotState
        req = NavRequest(request_id="t", query=query, state=RobotState(**state))
        return self.prompts.build(req, ""), req


def make_task(local_engine) -> Task:
    from quant_llm_node.config import Config
    from quant_llm_node.reasoning.task import DecisionTask
    task = DecisionTask.from_config(Config())
    return Task(task, task.prompts(local_engine.chat_renderer()))


def load_local_engine(threads: int = SERVER_THREADS):
    """The real local LlamaEngine on the default model."""
    from quant_llm_node.engine.llama_engine import EngineSettings, LlamaEngine
    if not MODEL.is_file():
        pytest.fail(f"default model missing at {MODEL}: run scripts/setup.sh")
    engine = LlamaEngine(EngineSettings(model_path=str(MODEL), n_threads=threads))
    engine.load(verify_checksum=False)
    return engine


def remote_cfg(url: str, **kw):
    from quant_llm_node.config import RemoteConfig
    return RemoteConfig(url=url, **kw)
