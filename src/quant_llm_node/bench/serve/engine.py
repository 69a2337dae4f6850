"""The in-process side of the serving benchmark: LlamaEngine on the node's own prompts.

- TTFT with an empty KV cache (cold), with the static prefix cached (what the node does after
  its warm-up at configure), and after an unrelated prompt evicted the prefix;
- decode tok/s of the engine alone on the decision prompts (the node's baseline);
- speculative decoding vs plain greedy, when ``quant_llm_node.engine.speculative`` exists.
"""
from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

from quant_llm_node.bench.scenarios import raw_request
from quant_llm_node.config import Config
from quant_llm_node.engine.llama_engine import EngineSettings, GenerationResult, LlamaEngine
from quant_llm_node.serving.metrics import percentiles

SPEC_MODULE = "quant_llm_node.engine.speculative"
SPEC_K = 4
SPEC_NGRAM = 3
TTFT_TOKENS = 1  # the first token is all a TTFT sample needs
UNRELATED = [{"role": "system", "content": "You are a helpful assistant."},
             {"role": "user", "content": "Summarise the history of the printing press in one paragraph."}]


@dataclass
class Prompts:
    """The node's prompts for the scenarios, its grammar and its static prefix."""

    items: list[tuple[str, str]]
    grammar: str | None
    static_prefix: str
    unrelated: str


def load_engine(cfg: Config, model_path: str, threads: int) -> LlamaEngine:
    """The engine with the node's settings (checksum skipped: the node verified it)."""
    settings = EngineSettings.from_config(cfg.engine, model_path)
    settings.n_threads = threads
    eng = LlamaEngine(settings)
    eng.load(verify_checksum=False)
    return eng


def build_prompts(engine: LlamaEngine, cfg: Config, cases: list[dict]) -> Prompts:
    """Prompts as NavigationService builds them (goal grounded to the expected place)."""
    from quant_llm_node.reasoning.prompt import plain_renderer
    from quant_llm_node.reasoning.task import DecisionTask
    from quant_llm_node.reasoning.validation import validate_request

    task = DecisionTask.from_config(cfg)
    render = engine.chat_renderer() or plain_renderer
    builder = task.prompts(render)
    items = []
    for case in cases:
        req = validate_request(raw_request(case), cfg.serving)
        grounded = case.get("expect_place", "") if case.get("goal") else ""
        items.append((case.get("id", ""), builder.build(req, grounded)))
    return Prompts(items, task.grammar, builder.static_prefix, render(UNRELATED))


def clear_kv(engine: LlamaEngine) -> None:
    """Empty the KV cache: the next generate() finds no common prefix and starts from zero."""
    engine.reset_cache()


def _ttft(engine: LlamaEngine, prompt: str, grammar: str | None) -> GenerationResult:
    return engine.generate(prompt, TTFT_TOKENS, grammar)


def ttft(engine: LlamaEngine, prompts: Prompts, samples: int) -> dict[str, Any]:
    """Cold / cached-prefix / evicted TTFT, interleaved per prompt so they share the noise."""
    runs: dict[str, list[GenerationResult]] = {"cold": [], "cached": [], "evicted": []}
    for i in range(samples):
        _, p = prompts.items[i % len(prompts.items)]
        clear_kv(engine)
        runs["cold"].append(_ttft(engine, p, prompts.grammar))
        engine.warm(prompts.static_prefix)
        runs["cached"].append(_ttft(engine, p, prompts.grammar))
        engine.generate(prompts.unrelated, TTFT_TOKENS)
        runs["evicted"].append(_ttft(engine, p, prompts.grammar))
    out: dict[str, Any] = {"samples": samples, "prefix_tokens": engine.count_tokens(prompts.static_prefix)}
    for name, rs in runs.items():
        out[name] = {"first_token_ms": percentiles(r.first_token_ms for r in rs),
                     "cached_tokens_mean": sum(r.cached_tokens for r in rs) / len(rs),
                     "prompt_tokens_mean": sum(r.prompt_tokens for r in rs) / len(rs)}
    cold = out["cold"]["first_token_ms"]["p50"]
    out["cached_over_cold"] = out["cached"]["first_token_ms"]["p50"] / cold if cold else float("nan")
    out["evicted_over_cold"] = out["evicted"]["first_token_ms"]["p50"] / cold if cold else float("nan")
    return out


def tps(results: list) -> dict[str, float]:
    """Aggregate decode rates: completion tokens / decode time, and decode steps / decode time."""
    ms = sum(r.decode_ms for r in results)
    toks = sum(r.completion_tokens for r in results)
    steps = sum(r.decode_steps for r in results)
    return {"tokens_per_s": toks / ms * 1e3 if ms > 0 else 0.0,
            "steps_per_s": steps / ms * 1e3 if ms > 0 else 0.0,
            "mean_tokens": toks / len(results) if results else 0.0}


def decode(engine: LlamaEngine, prompts: Prompts, cfg: Config, n: int) -> dict[str, Any]:
    """The engine alone on the decision prompts, prefix warmed as in the node."""
    engine.warm(prompts.static_prefix)
    rs = [engine.generate(p, cfg.engine.max_tokens, prompts.grammar, cfg.engine.temperature)
          for _, p in (prompts.items * n)[:n]]
    return {"requests": len(rs), **tps(rs)}


def speculative(engine: LlamaEngine, prompts: Prompts, cfg: Config, n: int,
                draft: LlamaEngine | None = None) -> dict[str, Any]:
    """Speculative vs plain greedy on the same prompts; skipped when the module is absent."""
    try:
        spec_mod = importlib.import_module(SPEC_MODULE)
    except ImportError as exc:
        return {"skipped": f"{SPEC_MODULE} not available ({exc})"}
    mode = "draft" if draft is not None else "lookup"
    dec = spec_mod.SpeculativeDecoder(engine, mode=mode, draft_engine=draft, k=SPEC_K, ngram=SPEC_NGRAM)
    plain, spec, same = [], [], True
    try:
        engine.warm(prompts.static_prefix)
        for _, p in (prompts.items * n)[:n]:
            a = engine.generate(p, cfg.engine.max_tokens, prompts.grammar)
            b = dec.generate(p, cfg.engine.max_tokens, prompts.grammar)
            same &= a.text == b.text
            plain.append(a), spec.append(b)
    finally:
        dec.close()
    gen_ms = lambda rs: sum(r.total_ms - r.prompt_ms for r in rs)  # noqa: E731
    drafted = sum(getattr(r, "drafted", 0) for r in spec)
    accepted = sum(getattr(r, "accepted", 0) for r in spec)
    return {"mode": mode, "k": SPEC_K, "requests": len(spec), "plain": tps(plain), "spec": tps(spec),
            "speedup": gen_ms(plain) / gen_ms(spec) if gen_ms(spec) else float("nan"),
            "acceptance": accepted / drafted if drafted else 0.0, "identical": same}


def on_worker_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on a worker thread, as the node's scheduler calls the engine, and return its
    result (or raise its exception).

    llama.cpp's CPU backend uses OpenMP (libgomp): every calling thread gets its own team, and
    libgomp spins less once it manages more threads than there are CPUs, which cost the node
    ~40% of its decode rate when it loaded on one thread and generated on another. The engine
    now runs every computation on one compute thread (engine/compute_thread.py) whichever
    thread asks, so this path and a direct call measure the same thing.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    t = threading.Thread(target=target, name="serve-bench-engine")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def default_threads(threads: int) -> int:
    return threads or os.cpu_count() or 1
