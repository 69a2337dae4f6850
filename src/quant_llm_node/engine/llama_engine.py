"""llama.cpp engine: loads a GGUF model and generates with timings.

Not thread-safe (neither is ``Llama``): exactly one worker thread calls it.
The prompt's longest common token prefix with the previous call stays in the
KV cache, so a static prompt prefix is evaluated once and reused.
"""
from __future__ import annotations

import codecs
import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from quant_llm_node.engine.gguf_file import GGUFInfo, verify_model_file
from quant_llm_node.engine.kv_types import KV_CACHE_TYPES


FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_INTERRUPTED = "interrupted"  # should_stop returned true


class EngineError(RuntimeError):
    """The engine failed; ``code`` is a stable reason."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class EngineSettings:
    """What the engine needs to load a model."""

    model_path: str
    sha256: str = ""
    n_ctx: int = 2048
    n_threads: int = 0
    n_batch: int = 512
    n_gpu_layers: int = 0
    seed: int = 42
    flash_attn: bool = False
    kv_cache_type: str = "f16"
    use_mmap: bool = True

    @property
    def threads(self) -> int:
        return self.n_threads or os.cpu_count() or 1


@dataclass
class GenerationResult:
    """Text and timings of one generation."""

    text: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    prompt_ms: float
    first_token_ms: float
    decode_ms: float
    total_ms: float
    finish_reason: str
    decode_steps: int = 0
    grammar_full_passes: int = 0   # steps where the grammar was applied to the whole vocabulary
    grammar_topk_hits: int = 0     # steps settled among the top candidates instead

    @property
    def decode_tps(self) -> float:
        """Single-token decode steps per second after the first token."""
        n = self.decode_steps
        return n / (self.decode_ms / 1e3) if n > 0 and self.decode_ms > 0 else 0.0


@dataclass
class EngineReport:
    """What diagnostics say about the loaded model and backend."""

    model_id: str
    gguf: dict
    gpu_offload_supported: bool
    n_gpu_layers_requested: int
    n_layers_offloaded: int
    n_layers: int
    backend: str
    load_ms: float
    n_ctx: int
    n_threads: int
    kv_cache_type: str
    system_info: str = ""
    extra: dict = field(default_factory=dict)


def gpu_offload_supported() -> bool:
    import llama_cpp
    return bool(llama_cpp.llama_supports_gpu_offload())


class LlamaEngine:
    """One GGUF model in llama.cpp, driven token by token."""

    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self.info: GGUFInfo | None = None
        self.report: EngineReport | None = None
        self._llm = None

    # ---- lifecycle -------------------------------------------------------------------------
    def load(self, verify_checksum: bool = True,
             pre_load: Callable[[GGUFInfo], None] | None = None) -> EngineReport:
        """Check the file, run ``pre_load(info)`` (e.g. a memory budget check that raises),
        then load it. Raises ModelFileError or EngineError."""
        s = self.settings
        self.info = verify_model_file(s.model_path, s.sha256 if verify_checksum else "")
        if pre_load is not None:
            pre_load(self.info)
        if s.kv_cache_type not in KV_CACHE_TYPES:
            raise EngineError("CONFIG_INVALID", f"unknown kv_cache_type {s.kv_cache_type}")
        try:
            import llama_cpp
        except ImportError as exc:
            raise EngineError("BACKEND_MISSING", f"llama-cpp-python is not installed: {exc}") from exc
        t0 = time.perf_counter()
        kwargs = dict(
            model_path=s.model_path, n_ctx=s.n_ctx, n_threads=s.threads,
            n_threads_batch=s.threads, n_batch=s.n_batch, n_ubatch=s.n_batch,
            n_gpu_layers=s.n_gpu_layers, seed=s.seed, use_mmap=s.use_mmap,
            logits_all=False, verbose=False,
            type_k=KV_CACHE_TYPES[s.kv_cache_type].ggml_type,
            type_v=KV_CACHE_TYPES[s.kv_cache_type].ggml_type,
        )
        if s.flash_attn:
            kwargs["flash_attn"] = True
        try:
            with _quiet_stderr():
                self._llm = llama_cpp.Llama(**kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            raise EngineError("MODEL_LOAD_FAILED", f"llama.cpp could not load {s.model_path}: {exc}") from exc
        load_ms = (time.perf_counter() - t0) * 1e3
        n_layers = int(self.info.arch_value("block_count", 0) or 0)
        supported = bool(llama_cpp.llama_supports_gpu_offload())
        requested = s.n_gpu_layers
        if not supported:
            offloaded = 0
        else:
            # llama.cpp offloads the repeating layers plus the output layer when all are asked.
            offloaded = n_layers + 1 if requested < 0 else min(requested, n_layers + 1)
        self.report = EngineReport(
            model_id=self.model_id, gguf=self.info.summary(), gpu_offload_supported=supported,
            n_gpu_layers_requested=requested, n_layers_offloaded=offloaded, n_layers=n_layers,
            backend="llama.cpp " + ("GPU offload" if supported and offloaded else "CPU"),
            load_ms=load_ms, n_ctx=self._llm.n_ctx(), n_threads=s.threads,
            kv_cache_type=s.kv_cache_type,
            system_info=llama_cpp.llama_print_system_info().decode("utf-8", "replace"),
        )
        return self.report

    def close(self) -> None:
        """Free the model and its context."""
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    @property
    def model_id(self) -> str:
        if self.info is None:
            return ""
        return f"{os.path.basename(self.settings.model_path)}:{self.info.file_type}"

    # ---- text ------------------------------------------------------------------------------
    def chat_renderer(self) -> Optional[Callable[[list], str]]:
        """Renders messages with the model's own chat template, or None when it has none."""
        template = (self._llm.metadata or {}).get("tokenizer.chat_template")
        if not template:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        eos = self._llm.detokenize([self._llm.token_eos()], special=True).decode("utf-8", "replace")
        bos = self._llm.detokenize([self._llm.token_bos()], special=True).decode("utf-8", "replace")
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        return lambda messages: formatter(messages=messages).prompt

    def tokenize(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def detokenize(self, tokens: list[int]) -> str:
        return self._llm.detokenize(tokens, special=False).decode("utf-8", errors="replace")

    def reset_cache(self) -> None:
        """Forget the KV cache (the next prompt is evaluated cold)."""
        self._llm.reset()
        self._llm._ctx.kv_cache_seq_rm(-1, 0, -1)

    # ---- generation ------------------------------------------------------------------------
    def _prepare(self, tokens: list[int]) -> tuple[int, list[int]]:
        """Keep the KV of the longest common prefix; returns (cached, tokens to evaluate)."""
        llm = self._llm
        n = min(llm.n_tokens, len(tokens) - 1)  # always evaluate at least one token for logits
        prev = llm.input_ids
        common = 0
        while common < n and prev[common] == tokens[common]:
            common += 1
        if common == 0 or not llm._ctx.kv_cache_seq_rm(-1, common, -1):
            llm.reset()
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            common = 0
        llm.n_tokens = common
        return common, tokens[common:]

    def warm(self, prefix: str) -> float:
        """Evaluate a prompt prefix into the KV cache; returns milliseconds spent."""
        tokens = self.tokenize(prefix)
        t0 = time.perf_counter()
        _, rest = self._prepare(tokens + [tokens[-1]])
        if len(rest) > 1:
            self._llm.eval(rest[:-1])
        return (time.perf_counter() - t0) * 1e3

    def generate(self, prompt: str, max_tokens: int, grammar: str | None = None,
                 temperature: float = 0.0,
                 should_stop: Callable[[str], bool] | None = None,
                 on_text: Callable[[str, int], None] | None = None,
                 min_room: int = 1) -> GenerationResult:
        """Generate up to ``max_tokens``.

        ``should_stop(text_so_far)`` is checked after every token (cancellation, deadlines,
        stop conditions); ``on_text(text_so_far, n_tokens)`` streams partial text.
        Raises EngineError(CONTEXT_OVERFLOW) when fewer than ``min_room`` tokens fit in the
        context after the prompt.
        """
        import llama_cpp
        from quant_llm_node.engine.sampling import TokenSampler

        if self._llm is None:
            raise EngineError("MODEL_UNAVAILABLE", "no model is loaded")
        llm = self._llm
        t0 = time.perf_counter()
        tokens = self.tokenize(prompt)
        max_tokens = min(max_tokens, context_room(len(tokens), llm.n_ctx(), min_room))
        sampler = TokenSampler(llm.model, llm.ctx, llm.n_vocab(), grammar, temperature,
                               self.settings.seed)
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, n_out, n_steps, finish = "", 0, 0, FINISH_LENGTH
        t_first = t0
        try:
            cached, rest = self._prepare(tokens)
            llm.eval(rest)
            t_prompt = time.perf_counter()
            while n_out < max_tokens:
                token = sampler.sample()
                if n_out == 0:
                    t_first = time.perf_counter()
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish = FINISH_STOP
                    break
                n_out += 1
                text += decoder.decode(llm.detokenize([token], special=False))
                if on_text is not None:
                    on_text(text, n_out)
                if should_stop is not None and should_stop(text):
                    finish = FINISH_INTERRUPTED
                    break
                if n_out < max_tokens:
                    llm.eval([token])
                    n_steps += 1
            text += decoder.decode(b"", final=True)
        finally:
            sampler.close()
        t_end = time.perf_counter()
        if n_out == 0:
            t_first = t_end
        return GenerationResult(
            text=text, prompt_tokens=len(tokens), cached_tokens=cached, completion_tokens=n_out,
            prompt_ms=(t_prompt - t0) * 1e3, first_token_ms=(t_first - t0) * 1e3,
            decode_ms=(t_end - t_first) * 1e3, total_ms=(t_end - t0) * 1e3,
            finish_reason=finish, decode_steps=n_steps, grammar_full_passes=sampler.full_grammar_passes,
            grammar_topk_hits=sampler.topk_hits)


def context_room(n_prompt: int, n_ctx: int, min_room: int = 1) -> int:
    """Tokens that fit after the prompt; EngineError(CONTEXT_OVERFLOW) below ``min_room``."""
    room = n_ctx - n_prompt
    if room < max(1, min_room):
        raise EngineError("CONTEXT_OVERFLOW",
                          f"prompt has {n_prompt} tokens, the context window {n_ctx}, and the "
                          f"answer needs room for {max(1, min_room)}")
    return room


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp prints load logs on fd 2; keep them out of the node's log."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)
