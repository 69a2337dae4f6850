"""The two server dialects of ``/v1/completions``: how the grammar is sent, and what a
streamed chunk says.

Both servers take the OpenAI completions body (the prompt arrives already rendered with the
model's chat template, so the raw completions endpoint is the natural fit):

- ``llama_cpp`` (llama.cpp's ``llama-server`` and llama-cpp-python's ``llama_cpp.server``):
  GBNF as ``grammar``, ``cache_prompt: true`` so the slot keeps the static prefix's KV.
  llama-server adds ``timings`` (prompt_n, prompt_ms, cache_n, predicted_n) to the final chunk.
- ``vllm``: GBNF as ``structured_outputs: {grammar: …}`` (the ``guided_*`` fields went away in
  v0.12.0); automatic prefix caching keeps the static prefix cheap without a flag; the final
  chunk carries ``usage`` when ``stream_options.include_usage`` is set.
"""
from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Optional

COMPLETIONS_ROUTE = "/v1/completions"
# what a decision's text never holds: lone surrogates, C0/C1 controls other than tab and newline
_INVALID_TEXT = re.compile(r"[\ud800-\udfff\x00-\x08\x0b-\x1f\x7f-\x9f]")


class RemoteApi(str, enum.Enum):
    """Which server dialect to speak (``remote.api``)."""

    LLAMA_CPP = "llama_cpp"
    VLLM = "vllm"


class ChunkError(ValueError):
    """A streamed event that is not a completion chunk."""


@dataclass(frozen=True)
class Chunk:
    """What one streamed event says; the usage and timing fields only when the server sends
    them (usually in the last chunk)."""

    text: str = ""
    finish_reason: Optional[str] = None
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    cached_tokens: Optional[int] = None
    server_prompt_ms: Optional[float] = None


def request_body(api: RemoteApi, model: str, prompt: str, max_tokens: int,
                 grammar: Optional[str], temperature: float) -> dict[str, Any]:
    """The streamed completions request in ``api``'s dialect."""
    body: dict[str, Any] = {
        "model": model, "prompt": prompt, "max_tokens": max_tokens,
        "temperature": temperature, "stream": True,
        "stream_options": {"include_usage": True},
    }
    if api is RemoteApi.LLAMA_CPP:
        body["cache_prompt"] = True
        if grammar:
            body["grammar"] = grammar
    elif grammar:
        body["structured_outputs"] = {"grammar": grammar}
    return body


MAX_COUNT = 1 << 31            # a token count or duration beyond this is not a real one
MESSAGE_CHARS = 300            # how much of a server's error message is kept


def _int(value: Any) -> Optional[int]:
    """A usage count: a finite, non-negative number within MAX_COUNT; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not (isinstance(value, int) or math.isfinite(value)) or not 0 <= value < MAX_COUNT:
        return None
    return int(value)


def _ms(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and 0 <= value < MAX_COUNT else None


def _reject_constant(name: str) -> Any:
    raise ChunkError(f"stream event has {name}, which is not JSON")


def clean_text(text: str, limit: int = MESSAGE_CHARS) -> str:
    """A server's text for a message: at most ``limit`` characters, control characters and lone
    surrogates written as escapes (so it is valid wherever it goes)."""
    text = text[:limit]
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)


def parse_chunk(data: str) -> Chunk:
    """One SSE ``data`` payload (JSON) of a completions stream; ChunkError when it is not one:
    not JSON, NaN or Infinity anywhere, a number too long to read, text that is not valid
    Unicode. An in-band ``{"error": …}`` payload raises ChunkError with the server's message
    (cleaned and cut short). Usage counts that are not plausible numbers are ignored."""
    try:
        doc = json.loads(data, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ChunkError(f"stream event is not JSON ({exc.msg})") from None
    except ChunkError:
        raise
    except (ValueError, RecursionError) as exc:  # an integer past Python's digit limit, deep nesting
        raise ChunkError(f"stream event is not readable JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict):
        raise ChunkError("stream event is not a JSON object")
    if "error" in doc:
        err = doc["error"]
        msg = err.get("message") if isinstance(err, dict) else err
        raise ChunkError(f"server error in stream: {clean_text(str(msg))}")
    choices = doc.get("choices")
    if not isinstance(choices, list):
        raise ChunkError("stream event has no choices")
    text, finish = "", None
    if choices:
        choice = choices[0]
        if not isinstance(choice, dict):
            raise ChunkError("stream choice is not an object")
        text = choice.get("text") or ""
        if not isinstance(text, str):
            raise ChunkError("stream choice text is not a string")
        if _INVALID_TEXT.search(text):
            raise ChunkError("stream choice text has a lone surrogate or a control character")
        finish = choice.get("finish_reason")
    elif "usage" not in doc:  # an empty choices list is only valid in the usage chunk
        raise ChunkError("stream event has empty choices and no usage")
    usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else {}
    timings = doc.get("timings") if isinstance(doc.get("timings"), dict) else {}
    prompt_tokens = _int(usage.get("prompt_tokens"))
    cached = _int(timings.get("cache_n"))
    if prompt_tokens is None and _int(timings.get("prompt_n")) is not None:
        prompt_tokens = _int(timings.get("prompt_n")) + (cached or 0)
    if cached is None:
        details = usage.get("prompt_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else None
    return Chunk(
        text=text, finish_reason=finish if isinstance(finish, str) else None,
        prompt_tokens=prompt_tokens,
        completion_tokens=_int(usage.get("completion_tokens", timings.get("predicted_n"))),
        cached_tokens=cached, server_prompt_ms=_ms(timings.get("prompt_ms")))
