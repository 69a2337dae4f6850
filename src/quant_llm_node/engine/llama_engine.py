"""llama.cpp engine: loads a GGUF model and generates with timings.

Not thread-safe (neither is ``Llama``): one worker at a time calls it. Every computation (load,
prompt evaluation, decode steps, generations) runs on the process's one llama.cpp compute
thread (engine/compute_thread.py: one OpenMP team, whichever thread asks).
The prompt's longest common token prefix with the previous call stays in the
KV cache, so a static prompt prefix is evaluated once and reused.

The engine owns the model, its KV cache and the bookkeeping that keeps them in step
(``n_tokens``: the tokens of sequence 0 in the KV cache, in order). Everything else
(speculative decoding, benchmarks, tests) drives it through these public methods, never
through ``Llama`` itself:

- tokens: ``tokenize``, ``token_bytes``, ``detokenize``, ``is_eog``, ``eog_token``,
  ``byte_tokens``, ``same_vocab``, ``n_vocab``, ``n_ctx``;
- KV cache: ``cached_prefix``, ``prepare`` (prefix reuse), ``eval`` (a prompt, in n_batch chunks), ``decode``
  (one batched ``llama_decode``, logits for every row on request), ``truncate`` (roll back),
  ``n_tokens``, ``cached_tokens``, ``kv_pos_max``, ``reset_cache``, ``batch_capacity``;
- outputs: ``logits(row)`` (a cached numpy view of an output row), ``sampler(grammar, ...)``,
  ``fork_sampler`` (a draft model's sampler under the target's grammar state);
- generation: ``generate`` (greedy or sampled, jump-forward, an optional ``Drafter`` for
  speculative decoding, verified in the same loop);
- ``side_context``: a second context over the same weights (the hazard screen's).

Jump-forward (greedy under a grammar; ``jump_forward`` modes below). After each committed
token the grammar is asked which bytes it admits next (``TokenSampler.forced_bytes``: one probe
over the 256 single-byte tokens, walked while exactly one byte is possible).
- "exact" (setting false): when nothing but one forced byte and the end of generation can
  follow, that byte is committed and generation ends without evaluating the last tokens;
  step-by-step decoding could only have produced the same token and then end-of-generation,
  so not a byte changes (2 decode steps saved per decision). And forced spans are batched as
  "on" does, but only into batches of at most ``exact_rows()`` rows: the most rows for which
  this build's kernels give, bitwise, the logits of single steps (probed once per load, at the
  cached prefix's depth; 1 = none, then every step is single). The wheel built by
  scripts/setup.sh (scripts/patch_llama_cpp.py) routes 2-3 row batches through the single-row
  kernels, so there it is 3; an unpatched CPU build gives 1.
- "on" (setting true): every forced span (JSON keys and punctuation, the rest of an enum value
  once its prefix is unique) is tokenized and appended as a draft to the pending token; the
  batch is evaluated in ONE ``llama_decode`` with logits for every row, and each draft token is
  kept only if the constrained greedy choice at its row equals it (the first disagreement
  becomes the next token), so the tokenizer's view of a span can only cost speed. Caveat, as
  for speculative decoding: llama.cpp's CPU kernels round a multi-token batch differently from
  a single token (llamafile sgemm / repacked gemm vs vec_dot; measured up to ~0.5 in a logit,
  with or without flash attention and weight repacking), so a near-tie in a later free choice
  can flip: outputs are not guaranteed byte-identical to step-by-step decoding.
- "off": step by step, one ``llama_decode`` per token (the reference for tests and benches).
"""
from __future__ import annotations

import codecs
import contextlib
import ctypes
import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Protocol, Sequence

from quant_llm_node.engine import compute_thread
from quant_llm_node.engine.compute_thread import computes
from quant_llm_node.engine.gguf_file import GGUFInfo, verify_model_file
from quant_llm_node.errors import CodedError
from quant_llm_node.engine.kv_types import KV_CACHE_TYPES

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from quant_llm_node.config import EngineConfig
    from quant_llm_node.engine.sampling import TokenSampler


FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_INTERRUPTED = "interrupted"  # should_stop returned true


class EngineError(CodedError, RuntimeError):
    """The engine failed; ``code`` is a stable reason."""


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
    jump_forward: bool = False   # see jump_forward_mode: False = "exact", True = "on"
    n_parallel: int = 1          # sequences decoded together (engine/batch_decode.py); 1 = off

    @property
    def threads(self) -> int:
        return self.n_threads or os.cpu_count() or 1

    @classmethod
    def from_config(cls, engine_cfg: "EngineConfig", model_path, sha256: str = "") -> "EngineSettings":
        """The settings of one model file under the node's ``engine`` config section."""
        return cls(model_path=str(model_path), sha256=sha256, **{
            f.name: getattr(engine_cfg, f.name) for f in dataclasses.fields(cls)
            if f.name not in ("model_path", "sha256") and hasattr(engine_cfg, f.name)})


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
    backend: str = "local"         # who generated it: local (this process) or remote (a server)
    decode_calls: int = 0          # llama_decode calls after the prompt (= decode_steps when plain)
    forced_drafted: int = 0        # grammar-forced tokens evaluated in batches (jump-forward)
    forced_tokens: int = 0         # ... of which kept (the constrained greedy choice agreed)
    batch_sizes: dict = field(default_factory=dict)  # llama_decode batch size -> calls

    @property
    def decode_tps(self) -> float:
        """Tokens committed to the KV cache per second after the first token (single-token
        decode steps per second for the plain loop)."""
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


# Tokens per slice of a warm-up in the background (a model swap; a pause point between slices).
# In the foreground a prefix is evaluated in n_batch chunks. On this build a 32-token slice
# gives, bitwise, the state of one chunk (16 does not): test_engine checks it on the build.
WARM_SLICE = 32
FORCED_MAX_TOKENS = 24  # most grammar-forced tokens verified in one batch
# Most rows an "exact" batch may have: the probe stops there (from 4 rows the CPU backend's
# repacked Q4_K gemm takes over, which rounds otherwise; measured by decode_bench --rows).
EXACT_ROWS_PROBED = 3
_PROBE_TEXT = '{"action": "stop", "reason": "probe"}'

# Jump-forward modes (generate's ``jump_forward``; the setting's True/False are "on"/"exact").
JF_OFF = "off"      # step by step: one llama_decode per token (the reference)
JF_EXACT = "exact"  # only what cannot change a byte: the grammar's forced end is not evaluated
JF_ON = "on"        # grammar-forced spans verified in batches (may flip a near-tie on CPU)
JF_MODES = (JF_OFF, JF_EXACT, JF_ON)


def jump_forward_mode(value) -> str:
    """True -> "on", False -> "exact", or one of JF_MODES."""
    if isinstance(value, bool):
        return JF_ON if value else JF_EXACT
    if value not in JF_MODES:
        raise ValueError(f"jump_forward must be a bool or one of {JF_MODES}, not {value!r}")
    return value


class Drafter(Protocol):
    """A source of draft tokens for ``LlamaEngine.generate`` (speculative decoding).

    The engine verifies every draft against its own constrained greedy choice, so a drafter
    can only change speed, never the text."""

    def begin(self, prompt_tokens: list[int]) -> None:
        """The prompt was evaluated into the target's KV cache."""

    def propose(self, hist: list[int], j: int, sampler: "TokenSampler") -> list[int]:
        """Up to ``j`` tokens likely to follow ``hist`` (prompt + committed output); the
        sampler's grammar state is after ``hist``."""

    def settle(self, hist: list[int], drafted: int, accepted: int) -> None:
        """After verification: ``hist`` is the committed history again."""

    def abort(self) -> None:
        """The generation failed; forget any state."""


class _Batch:
    """A preallocated llama_batch for one sequence (seq 0)."""

    def __init__(self, capacity: int):
        import llama_cpp
        self._decode, self._free = llama_cpp.llama_decode, llama_cpp.llama_batch_free
        self.capacity = capacity
        self.batch = llama_cpp.llama_batch_init(capacity, 0, 1)
        b = self.batch
        self._tok, self._pos, self._logits = b.token, b.pos, b.logits
        for i in range(capacity):
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0

    def decode(self, ctx, tokens: Sequence[int], pos0: int, all_logits: bool) -> None:
        n = len(tokens)
        if not 0 < n <= self.capacity:
            raise EngineError("DECODE_FAILED", f"batch of {n} tokens, capacity {self.capacity}")
        tok, pos, lg = self._tok, self._pos, self._logits
        for i in range(n):
            tok[i] = tokens[i]
            pos[i] = pos0 + i
            lg[i] = all_logits
        lg[n - 1] = 1
        self.batch.n_tokens = n
        rc = self._decode(ctx, self.batch)
        if rc != 0:
            raise EngineError("DECODE_FAILED", f"llama_decode returned {rc}")

    def close(self) -> None:
        if self.batch is not None:
            self._free(self.batch)
            self.batch = None

    def __del__(self):
        self.close()


def common_prefix(cached: Sequence[int], tokens: Sequence[int], most: int) -> int:
    """How many leading ``tokens`` equal ``cached``'s, at most ``most``."""
    n = min(len(cached), most)
    common = 0
    while common < n and cached[common] == tokens[common]:
        common += 1
    return common


class LlamaEngine:
    """One GGUF model in llama.cpp, driven token by token."""

    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self.info: GGUFInfo | None = None
        self.report: EngineReport | None = None
        self._llm = None
        self._reset_handles()

    def _reset_handles(self) -> None:
        self._ctx = self._model = self._vocab = self._batch = None
        self._n_ctx = self._n_vocab = 0
        self._views: dict[int, "np.ndarray"] = {}
        self._pieces: dict[int, bytes] = {}
        self._bytes_table: Optional[list[int]] = None
        self._exact_rows: Optional[int] = None

    # ---- lifecycle -------------------------------------------------------------------------
    @computes
    def load(self, verify_checksum: bool = True, info: GGUFInfo | None = None) -> EngineReport:
        """Check the file (unless ``info`` says it was checked already, e.g. before a memory
        budget check), then load it. Raises ModelFileError or EngineError."""
        s = self.settings
        self.info = info or verify_model_file(s.model_path, s.sha256 if verify_checksum else "")
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
        # Batching: sequence 0 holds the cached prefix, sequences 1..n_parallel the running
        # requests, all in ONE unified KV buffer (shared prefix cells are not copied).
        seqs = dict(n_seq_max=s.n_parallel + 1, kv_unified=True) if s.n_parallel > 1 else {}
        # a load in the background (a model swap) lets serving calls run between its tensors
        progress = _yield_to_serving() if compute_thread.in_background() else None
        try:
            with _quiet_stderr(), _with_defaults("llama_context_default_params", **seqs), \
                    _with_defaults("llama_model_default_params", progress_callback=progress):
                self._llm = llama_cpp.Llama(**kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            raise EngineError("MODEL_LOAD_FAILED", f"llama.cpp could not load {s.model_path}: {exc}") from exc
        llm = self._llm
        self._ctx, self._model = llm.ctx, llm.model
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._n_ctx, self._n_vocab = llm.n_ctx(), llm.n_vocab()
        self._batch = _Batch(max(1, min(s.n_batch, self._n_ctx)))
        self._exact_rows = None
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
            load_ms=load_ms, n_ctx=self._n_ctx, n_threads=s.threads,
            kv_cache_type=s.kv_cache_type,
            system_info=llama_cpp.llama_print_system_info().decode("utf-8", "replace"),
        )
        return self.report

    @computes
    def close(self) -> None:
        """Free the model and its context."""
        if self._batch is not None:
            self._batch.close()
        if self._llm is not None:
            self._llm.close()
            self._llm = None
        self._reset_handles()

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    @property
    def model_id(self) -> str:
        if self.info is None:
            return ""
        return f"{os.path.basename(self.settings.model_path)}:{self.info.file_type}"

    def _require(self):
        if self._llm is None:
            raise EngineError("MODEL_UNAVAILABLE", "no model is loaded")
        return self._llm

    # ---- tokens and vocabulary -------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        """Context window of the loaded model (tokens)."""
        return self._n_ctx

    @property
    def llama(self):
        """The ``llama_cpp.Llama`` object (for a SideContext over the same weights)."""
        return self._require()

    def side_context(self, n_ctx: int, n_batch: int = 512):
        """A second context over this model's weights (engine/side_context.py)."""
        from quant_llm_node.engine.side_context import SideContext
        self._require()
        return SideContext(self, n_ctx, n_batch)

    @property
    def n_vocab(self) -> int:
        return self._n_vocab

    def chat_renderer(self) -> Optional[Callable[[list], str]]:
        """Renders messages with the model's own chat template, or None when it has none."""
        llm = self._require()
        template = (llm.metadata or {}).get("tokenizer.chat_template")
        if not template:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        eos = llm.detokenize([llm.token_eos()], special=True).decode("utf-8", "replace")
        bos = llm.detokenize([llm.token_bos()], special=True).decode("utf-8", "replace")
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        return lambda messages: formatter(messages=messages).prompt

    def tokenize(self, text: str | bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids of ``text`` (a prompt: BOS added if the model wants one, special tokens
        parsed; ``add_bos=False, special=False`` for a piece of output text)."""
        import llama_cpp
        self._require()
        data = text.encode("utf-8") if isinstance(text, str) else text
        cap = len(data) + 8
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, cap, add_bos, special)
        if n < 0:
            cap = -n
            buf = (llama_cpp.llama_token * cap)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, cap, add_bos, special)
            if n < 0:
                raise EngineError("TOKENIZE_FAILED", f"could not tokenize {len(data)} bytes")
        return buf[:n]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", errors="replace")

    def token_bytes(self, token: int) -> bytes:
        """The bytes a generated token adds to the text (special tokens add none); cached."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._piece(token, False)
            if len(self._pieces) < 1 << 18:
                self._pieces[token] = piece
        return piece

    def _piece(self, token: int, special: bool) -> bytes:
        import llama_cpp
        self._require()
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
        return buf.raw[:max(n, 0)]

    def is_eog(self, token: int) -> bool:
        """End of generation (EOS, EOT, ...)."""
        import llama_cpp
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def same_vocab(self, other: "LlamaEngine") -> bool:
        """Whether ``other`` has a vocabulary of the same size (a draft model for this one)."""
        import llama_cpp
        return (self.loaded and other.loaded and
                llama_cpp.llama_vocab_n_tokens(self._vocab) == llama_cpp.llama_vocab_n_tokens(other._vocab))

    def byte_tokens(self) -> list[int]:
        """For each byte value, a token whose text is exactly that byte (-1 if none); computed
        once per model (byte-level BPE vocabularies have all 256)."""
        if self._bytes_table is None:
            table, missing = [-1] * 256, 256
            for t in range(self._n_vocab):
                p = self._piece(t, True)
                if len(p) == 1 and table[p[0]] < 0 and not self.is_eog(t):
                    table[p[0]] = t
                    missing -= 1
                    if not missing:
                        break
            self._bytes_table = table
        return self._bytes_table

    # ---- KV cache --------------------------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        """Tokens of sequence 0 held in the KV cache."""
        return self._llm.n_tokens if self._llm is not None else 0

    def cached_tokens(self) -> list[int]:
        """The tokens held in the KV cache, in order."""
        llm = self._require()
        return llm.input_ids[:llm.n_tokens].tolist()

    def kv_pos_max(self) -> int:
        """Highest position of sequence 0 in llama.cpp's KV cache (-1 when empty): equals
        ``n_tokens - 1`` whenever the bookkeeping is in step."""
        import llama_cpp
        self._require()
        return int(llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(self._ctx), 0))

    def reset_cache(self) -> None:
        """Forget the KV cache (the next prompt is evaluated cold)."""
        llm = self._require()
        llm.reset()
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)

    def cached_prefix(self, tokens: Sequence[int]) -> int:
        """How many leading ``tokens`` sequence 0 holds in the KV cache (at most all but the
        last, which must be evaluated for logits)."""
        llm = self._require()
        return common_prefix(llm.input_ids[:llm.n_tokens], tokens, len(tokens) - 1)

    def prepare(self, tokens: Sequence[int]) -> tuple[int, list[int]]:
        """Keep the KV of the longest common prefix with ``tokens`` (at most all but the
        last, so that evaluating the rest yields logits); returns (cached, tokens to evaluate)."""
        llm = self._require()
        common = self.cached_prefix(tokens)
        if common == 0 or not llm._ctx.kv_cache_seq_rm(-1, common, -1):
            llm.reset()
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)
            common = 0
        llm.n_tokens = common
        return common, list(tokens[common:])

    @computes
    def eval(self, tokens: Sequence[int]) -> None:
        """Evaluate ``tokens`` after the cached ones, in chunks of n_batch (the prompt path);
        logits for the last one."""
        llm = self._require()
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        cap = self._batch.capacity
        for i in range(0, len(tokens), cap):
            self.decode(tokens[i:i + cap], False)

    @computes
    def decode(self, tokens: Sequence[int], all_logits: bool = False) -> None:
        """Evaluate ``tokens`` (at most n_batch) after the cached ones in ONE llama_decode;
        logits for every row when ``all_logits``, else for the last. Raises EngineError."""
        llm = self._llm
        n0 = llm.n_tokens
        self._batch.decode(self._ctx, tokens, n0, all_logits)
        n1 = n0 + len(tokens)
        llm.input_ids[n0:n1] = tokens
        llm.n_tokens = n1

    @property
    def n_seq_max(self) -> int:
        """Sequences the context holds (1 + n_parallel when batching, else 1)."""
        import llama_cpp
        return int(llama_cpp.llama_n_seq_max(self._ctx)) if self._ctx is not None else 0

    def seq_share(self, seq: int, n: int) -> None:
        """Sequence ``seq`` starts with positions [0, n) of sequence 0: the KV cells are
        shared (tagged with both sequences), nothing is evaluated or copied."""
        import llama_cpp
        self._require()
        mem = llama_cpp.llama_get_memory(self._ctx)
        llama_cpp.llama_memory_seq_rm(mem, seq, -1, -1)
        if n > 0:
            llama_cpp.llama_memory_seq_cp(mem, 0, seq, 0, n)

    def seq_clear(self, seq: int, start: int = -1) -> None:
        """Forget sequence ``seq`` from position ``start`` on (-1: all of it); cells it shares
        with sequence 0 stay for sequence 0."""
        import llama_cpp
        self._require()
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self._ctx), seq, start, -1)

    @computes
    def decode_batch(self, batch) -> None:
        """One ``llama_decode`` of a filled multi-sequence ``llama_batch`` (batch_decode.py);
        sequence 0's bookkeeping is not touched. Raises EngineError."""
        import llama_cpp
        self._require()
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if rc != 0:
            code = "KV_CACHE_FULL" if rc == 1 else "DECODE_FAILED"
            raise EngineError(code, f"llama_decode returned {rc} for a batch of {batch.n_tokens} tokens")

    @property
    def vocab(self):
        """The llama_vocab pointer (token classification by the batch decoder)."""
        return self._vocab

    def truncate(self, n: int) -> None:
        """Drop the KV positions >= ``n`` (roll back rejected draft tokens)."""
        import llama_cpp
        llm = self._require()
        if not llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self._ctx), 0, n, -1):
            raise EngineError("KV_ROLLBACK_FAILED", f"could not remove KV positions >= {n}")
        llm.n_tokens = min(n, llm.n_tokens)

    @property
    def batch_capacity(self) -> int:
        """Most tokens one ``decode`` takes."""
        return self._batch.capacity if self._batch is not None else 0

    def logits(self, row: int = -1) -> "np.ndarray":
        """Output row ``row`` of the last decode (-1: the last) as a numpy view into
        llama.cpp's buffer (valid until the next decode); views are cached per address."""
        import llama_cpp
        import numpy as np
        ptr = llama_cpp.llama_get_logits_ith(self._ctx, row)
        addr = ctypes.cast(ptr, ctypes.c_void_p).value
        if not addr:
            raise EngineError("DECODE_FAILED", f"no logits for batch row {row}")
        v = self._views.get(addr)
        if v is None:
            if len(self._views) > 256:
                self._views.clear()
            v = self._views[addr] = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))
        return v

    def sampler(self, grammar: str | None = None, temperature: float = 0.0,
                topk: int | None = None) -> "TokenSampler":
        """A TokenSampler over this context (close it after use). Raises GrammarError."""
        from quant_llm_node.engine.sampling import TokenSampler
        self._require()
        s = TokenSampler(self._model, self._ctx, self._n_vocab, grammar, temperature,
                         self.settings.seed, logits=self.logits)
        if topk is not None:
            s.topk = topk
        return s

    def fork_sampler(self, sampler: "TokenSampler") -> "TokenSampler":
        """A greedy sampler over this context whose grammar state copies ``sampler``'s (a draft
        model sampling under the target's grammar); close it after use."""
        self._require()
        return sampler.fork(self._ctx, self._n_vocab, self.logits)

    @computes
    def warm(self, prefix: str) -> float:
        """Evaluate a prompt prefix into the KV cache; in the background (a model swap) in
        slices of WARM_SLICE tokens that let waiting requests go first; returns milliseconds."""
        tokens = self.tokenize(prefix)
        t0 = time.perf_counter()
        _, rest = self.prepare(tokens + [tokens[-1]])
        rest = rest[:-1]
        step = WARM_SLICE if compute_thread.in_background() else max(1, len(rest))
        for i in range(0, len(rest), step):
            compute_thread.pause_for_serving()
            self.eval(rest[i:i + step])
        self.exact_rows()  # probed at the depth decisions decode at
        return (time.perf_counter() - t0) * 1e3

    @computes
    def exact_rows(self) -> int:
        """The most rows one ``llama_decode`` may have and still give, bitwise, the logits of
        its tokens decoded one by one (1: only single steps are exact). Probed once per load
        after the cached tokens (which it leaves as they are; the last logits are not kept),
        up to ``EXACT_ROWS_PROBED``; 1 while nothing is cached yet."""
        self._require()
        if self._exact_rows is None and self.n_tokens > 0:
            self._exact_rows = self._probe_exact_rows(EXACT_ROWS_PROBED)
        return self._exact_rows or 1

    def _probe_exact_rows(self, most: int) -> int:
        import numpy as np
        base = self.n_tokens
        if most < 2 or base + most >= self._n_ctx:
            return 1
        probe = (self.tokenize(_PROBE_TEXT, False, False) * most)[:most]
        cached = self._llm.input_ids[base:base + most].copy()
        try:
            single = []
            for t in probe:
                self.decode((t,), False)
                single.append(self.logits(-1).copy())
            self.truncate(base)
            rows = 1
            for k in range(2, most + 1):
                self.decode(probe[:k], True)
                same = all(np.array_equal(self.logits(i), single[i]) for i in range(k))
                self.truncate(base)
                if not same:
                    break
                rows = k
            return rows
        except EngineError:
            self.reset_cache()
            return 1
        finally:
            self._llm.input_ids[base:base + most] = cached  # bookkeeping beyond n_tokens as it was

    # ---- generation ------------------------------------------------------------------------
    @computes
    def generate(self, prompt: str, max_tokens: int, grammar: str | None = None,
                 temperature: float = 0.0,
                 should_stop: Callable[[str], bool] | None = None,
                 on_text: Callable[[str, int], None] | None = None,
                 min_room: int = 1, *, jump_forward: bool | str | None = None,
                 drafter: Drafter | None = None) -> GenerationResult:
        """Generate up to ``max_tokens``.

        ``should_stop(text_so_far)`` is checked after every token (cancellation, deadlines,
        stop conditions); ``on_text(text_so_far, n_tokens)`` streams partial text, once per
        token. Raises EngineError(CONTEXT_OVERFLOW) when fewer than ``min_room`` tokens fit
        in the context after the prompt. ``jump_forward`` (default: the setting; see
        ``jump_forward_mode``) skips or batches grammar-forced text; ``drafter`` proposes
        speculative drafts. Both apply to greedy decoding only (see the module docstring).
        """
        self._require()
        llm = self._llm
        t0 = time.perf_counter()
        tokens = self.tokenize(prompt)
        n_prompt = len(tokens)
        n_ctx = self._n_ctx
        max_tokens = min(max_tokens, context_room(n_prompt, n_ctx, min_room))
        sampler = self.sampler(grammar, temperature)
        greedy = sampler.greedy
        mode = jump_forward_mode(self.settings.jump_forward if jump_forward is None else jump_forward)
        forcing = bool(mode != JF_OFF and grammar and greedy)
        # forced spans in batches: "on" up to FORCED_MAX_TOKENS drafts, "exact" only as many
        # as keep a batch within the rows that round exactly like single steps
        most_drafts = FORCED_MAX_TOKENS if mode == JF_ON else (self.exact_rows() - 1 if forcing else 0)
        batch_forced = most_drafts > 0
        if forcing:
            forcing = sampler.enable_forcing(self.byte_tokens(), self.eog_token())
        if not greedy:
            drafter = None
        import llama_cpp
        vocab, is_eog = self._vocab, llama_cpp.llama_vocab_is_eog
        pieces, piece = self._pieces, self.token_bytes
        logits, sample_at = self.logits, sampler.sample_at
        decode = self.decode
        cap = self._batch.capacity - 1
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, n_out, finish = "", 0, FINISH_LENGTH
        calls = forced_drafted = forced_kept = 0
        sizes: dict[int, int] = {}
        t_first = t0
        hist: Optional[list[int]] = None
        try:
            cached, rest = self.prepare(tokens)
            self.eval(rest)
            if drafter is not None:
                drafter.begin(tokens)
                hist = list(tokens)
            t_prompt = time.perf_counter()
            pending = None
            if max_tokens > 0:
                pending = sample_at(-1, logits(-1)) if greedy else sampler.sample()
            t_first = time.perf_counter()
            while pending is not None:
                # `pending` is the choice for the next position (not in the KV cache yet).
                if is_eog(vocab, pending):
                    finish = FINISH_STOP
                    break
                n_out += 1
                b = pieces.get(pending) or piece(pending)
                text += decoder.decode(b)
                if on_text is not None:
                    on_text(text, n_out)
                if should_stop is not None and should_stop(text):
                    finish = FINISH_INTERRUPTED
                    break
                if n_out >= max_tokens:
                    break
                drafts: list[int] = []
                forced = False
                room = min(max_tokens - n_out, n_ctx - llm.n_tokens - 1, cap)
                if forcing:
                    # "exact" only needs to know whether one byte and the end are forced
                    span, ends = sampler.forced_bytes() if batch_forced else sampler.forced_bytes(2)
                    if ends and len(span) <= 1:
                        # Nothing but (one forced byte and) the end can follow: step-by-step
                        # decoding would take exactly that byte's token, then end-of-generation,
                        # whatever the logits say; skip both decodes.
                        finish = FINISH_STOP
                        if span:
                            n_out += 1
                            text += decoder.decode(span)
                            if on_text is not None:
                                on_text(text, n_out)
                            if should_stop is not None and should_stop(text):
                                finish = FINISH_INTERRUPTED
                            elif n_out >= max_tokens:
                                finish = FINISH_LENGTH
                        break
                    if batch_forced and span and room > 0:
                        drafts = self.tokenize(span, False, False)[:min(room, most_drafts)]
                        forced = bool(drafts)
                if hist is not None:
                    hist.append(pending)
                    if not forced and room > 0:
                        drafts = drafter.propose(hist, room, sampler)[:room]
                n = len(drafts)
                calls += 1
                sizes[n + 1] = sizes.get(n + 1, 0) + 1
                if not n:
                    decode((pending,), False)
                    pending = sample_at(-1, logits(-1)) if greedy else sampler.sample()
                    continue
                decode([pending, *drafts], True)
                keep = llm.n_tokens - n  # KV after pending; + each kept draft
                kept, stop = 0, False
                for row, d in enumerate(drafts):
                    y = sample_at(row, logits(row))
                    if y != d:
                        pending = y
                        break
                    kept += 1
                    if is_eog(vocab, d):
                        finish, stop = FINISH_STOP, True
                        break
                    keep += 1
                    n_out += 1
                    text += decoder.decode(pieces.get(d) or piece(d))
                    if hist is not None:
                        hist.append(d)
                    if on_text is not None:
                        on_text(text, n_out)
                    if should_stop is not None and should_stop(text):
                        finish, stop = FINISH_INTERRUPTED, True
                        break
                    if n_out >= max_tokens:
                        stop = True
                        break
                else:
                    pending = sample_at(n, logits(n))
                if keep < llm.n_tokens:
                    self.truncate(keep)
                if forced:
                    forced_drafted += n
                    forced_kept += kept
                elif drafter is not None:
                    drafter.settle(hist, n, kept)
                if stop:
                    break
            text += decoder.decode(b"", final=True)
        except BaseException:
            # KV and n_tokens may disagree after a failed decode: start the next call clean.
            if drafter is not None:
                drafter.abort()
            if self._llm is not None:
                self.reset_cache()
            raise
        finally:
            sampler.close()
        t_end = time.perf_counter()
        if n_out == 0:
            t_first = t_end
        return GenerationResult(
            text=text, prompt_tokens=n_prompt, cached_tokens=cached, completion_tokens=n_out,
            prompt_ms=(t_prompt - t0) * 1e3, first_token_ms=(t_first - t0) * 1e3,
            decode_ms=(t_end - t_first) * 1e3, total_ms=(t_end - t0) * 1e3,
            finish_reason=finish, decode_steps=llm.n_tokens - n_prompt,
            grammar_full_passes=sampler.full_grammar_passes, grammar_topk_hits=sampler.topk_hits,
            decode_calls=calls, forced_drafted=forced_drafted, forced_tokens=forced_kept,
            batch_sizes=sizes)

    def eog_token(self) -> int:
        """An end-of-generation token id (-1 if the vocabulary has none)."""
        import llama_cpp
        for t in (llama_cpp.llama_vocab_eos(self._vocab), llama_cpp.llama_vocab_eot(self._vocab)):
            if t >= 0 and self.is_eog(t):
                return int(t)
        return -1


def context_room(n_prompt: int, n_ctx: int, min_room: int = 1) -> int:
    """Tokens that fit after the prompt; EngineError(CONTEXT_OVERFLOW) below ``min_room``."""
    room = n_ctx - n_prompt
    if room < max(1, min_room):
        raise EngineError("CONTEXT_OVERFLOW",
                          f"prompt has {n_prompt} tokens, the context window {n_ctx}, and the "
                          f"answer needs room for {max(1, min_room)}")
    return room


def _yield_to_serving():
    """A llama.cpp load progress callback (called per tensor): a pause point of a load in the
    background (compute_thread.pause_for_serving)."""
    import llama_cpp

    def progress(_fraction, _user_data) -> bool:
        compute_thread.pause_for_serving()
        return True
    return llama_cpp.llama_progress_callback(progress)


@contextlib.contextmanager
def _with_defaults(getter: str, **fields):
    """``Llama`` builds its model and context parameters from llama.cpp's defaults (``getter``:
    llama_model_default_params or llama_context_default_params) and takes no n_seq_max,
    kv_unified or progress callback: set ``fields`` on those defaults while it is constructed
    (None values are left as they are)."""
    fields = {k: v for k, v in fields.items() if v is not None}
    if not fields:
        yield
        return
    import llama_cpp.llama_cpp as native
    original = getattr(native, getter)

    def defaults():
        params = original()
        for key, value in fields.items():
            setattr(params, key, value)
        return params
    setattr(native, getter, defaults)
    try:
        yield
    finally:
        setattr(native, getter, original)


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
