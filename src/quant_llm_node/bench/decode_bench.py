"""Decode-speed bench of LlamaEngine's token loop (and of speculative decoding).

    python -m quant_llm_node.bench.decode_bench --model PATH [--threads N] [--tokens N]
        [--native-json FILE] [--reps N] [--profile] [--spec lookup|draft --draft-model PATH -k K]
        [--json-out FILE]

Measures, on the decision prompts (PromptBuilder over test/data/scenarios.yaml):
- decode tok/s through LlamaEngine.generate, unconstrained and under DecisionSchema.gbnf(); their
  ratio (target >= 0.9);
- a long unconstrained run of --tokens tokens (like llama-bench tg) through LlamaEngine and
  through the lean loop (engine.speculative with k=0), vs native llama-bench tg from
  ``scripts/native_baseline.sh`` (--native-json; target >= 0.97);
- with --spec: speculative decoding vs plain greedy of the same target, acceptance rate,
  and whether every greedy output is identical.
The load average is recorded with every figure: timings on a loaded machine are not comparable.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from quant_llm_node.bench.host import loadavg
from quant_llm_node.engine.llama_engine import EngineSettings, LlamaEngine

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = ROOT / "test" / "data" / "scenarios.yaml"
LONG_PROMPT_USER = ("Write a detailed numbered list of 100 safety rules for a warehouse robot. "
                    "Give each rule one full sentence.")


def load_engine(path: str, threads: int, n_ctx: int = 2048) -> LlamaEngine:
    eng = LlamaEngine(EngineSettings(model_path=str(path), n_ctx=n_ctx, n_threads=threads))
    eng.load(verify_checksum=False)
    return eng


def decision_prompts(engine: LlamaEngine, scenarios_file: Path = SCENARIOS) -> tuple[list[tuple[str, str]], str, str]:
    """(id, prompt) per scenario, the decision grammar and the static prefix, as the service builds them."""
    import yaml
    from quant_llm_node.reasoning.prompt import PromptBuilder, plain_renderer
    from quant_llm_node.reasoning.schema import DecisionSchema
    from quant_llm_node.reasoning.types import NavRequest, RobotState
    from quant_llm_node.serving.service import load_map

    places = load_map("places.yaml")
    schema = DecisionSchema(places.ids)
    builder = PromptBuilder(places.places, schema, engine.chat_renderer() or plain_renderer)
    data = yaml.safe_load(Path(scenarios_file).read_text())
    out = []
    for sc in data["scenarios"]:
        st = dict(sc.get("state") or {})
        state = RobotState(**{k: (math.nan if v is None else v) for k, v in st.items()
                              if k in RobotState.__dataclass_fields__})
        req = NavRequest(request_id=sc["id"], query=sc["query"], goal=sc.get("goal", ""), state=state)
        grounded = sc.get("expect_place", "") if sc.get("goal") else ""
        out.append((sc["id"], builder.build(req, grounded)))
    return out, schema.gbnf(), builder.static_prefix


def long_prompt(engine: LlamaEngine) -> str:
    render = engine.chat_renderer()
    msgs = [{"role": "user", "content": LONG_PROMPT_USER}]
    return render(msgs) if render else LONG_PROMPT_USER + "\n\n1."


def _tps(results) -> float:
    """Aggregate decode tok/s: steps / time, over runs (after the first token)."""
    steps = sum(r.decode_steps for r in results)
    ms = sum(r.decode_ms for r in results)
    return steps / (ms / 1e3) if ms > 0 else 0.0


def run_prompts(gen: Callable, prompts, grammar, max_tokens: int):
    return [gen(p, max_tokens, grammar) for _, p in prompts]


def bench_engine(engine: LlamaEngine, tokens: int, reps: int, native: dict | None,
                 max_tokens: int = 96) -> dict:
    from quant_llm_node.engine.speculative import SpeculativeDecoder

    prompts, grammar, prefix = decision_prompts(engine)
    engine.warm(prefix)
    lean = SpeculativeDecoder(engine, mode="lookup", k=0)
    out: dict = {"model": engine.model_id, "threads": engine.settings.threads,
                 "n_vocab": engine._llm.n_vocab(), "loadavg_start": loadavg()}
    # Decision task: unconstrained vs grammar, interleaved per rep to share the noise.
    free, gram, free_lean, gram_lean = [], [], [], []
    same = True
    for _ in range(reps):
        for _, p in prompts:
            runs = []
            for gen, g in ((engine.generate, None), (engine.generate, grammar),
                           (lean.generate, None), (lean.generate, grammar)):
                engine.warm(prefix)  # same cache state before each run (see bench_spec)
                runs.append(gen(p, max_tokens, g))
            a, b, c, d = runs
            same &= a.text == c.text and b.text == d.text
            free.append(a), gram.append(b), free_lean.append(c), gram_lean.append(d)
    tf, tg = _tps(free), _tps(gram)
    tfl, tgl = _tps(free_lean), _tps(gram_lean)
    out["decision"] = {
        "prompts": len(prompts), "reps": reps,
        "engine_free_tps": round(tf, 2), "engine_grammar_tps": round(tg, 2),
        "grammar_ratio": round(tg / tf, 3) if tf else None,
        "lean_free_tps": round(tfl, 2), "lean_grammar_tps": round(tgl, 2),
        "lean_grammar_ratio": round(tgl / tfl, 3) if tfl else None,
        "grammar_full_passes_per_run": round(statistics.mean(r.grammar_full_passes for r in gram), 2),
        "lean_full_passes_per_run": round(statistics.mean(r.grammar_full_passes for r in gram_lean), 2),
        "lean_topk_hits_per_run": round(statistics.mean(r.grammar_topk_hits for r in gram_lean), 2),
        # Sampling of the first token (a full grammar pass lands here when the argmax is rejected).
        "first_token_sample_ms_free": round(statistics.mean(r.first_token_ms - r.prompt_ms for r in free), 2),
        "first_token_sample_ms_grammar": round(statistics.mean(r.first_token_ms - r.prompt_ms for r in gram), 2),
        "first_token_sample_ms_grammar_lean": round(
            statistics.mean(r.first_token_ms - r.prompt_ms for r in gram_lean), 2),
        "mean_tokens_free": round(statistics.mean(r.completion_tokens for r in free), 1),
        "mean_tokens_grammar": round(statistics.mean(r.completion_tokens for r in gram), 1),
        "lean_outputs_identical": same,
        "loadavg": loadavg(),
    }
    # Long unconstrained decode (the llama-bench tg analogue).
    lp = long_prompt(engine)
    eng_runs, lean_runs = [], []
    for _ in range(reps):
        eng_runs.append(engine.generate(lp, tokens, None))
        lean_runs.append(lean.generate(lp, tokens, None))
    te, tl = _tps(eng_runs), _tps(lean_runs)
    out["long"] = {"tokens": tokens, "reps": reps,
                   "steps": [r.decode_steps for r in eng_runs],
                   "engine_tps": round(te, 2), "lean_tps": round(tl, 2),
                   "lean_over_engine": round(tl / te, 3) if te else None, "loadavg": loadavg()}
    if native:
        ntg = float(native["tg_tps"])
        out["native"] = {"tg_tps": round(ntg, 2), "pp_tps": round(float(native.get("pp_tps", 0)), 2),
                         "loadavg": native.get("loadavg"),
                         "engine_over_native": round(te / ntg, 3), "lean_over_native": round(tl / ntg, 3)}
    lean.close()
    return out


def batch_costs(engine: LlamaEngine, prompt: str, max_batch: int, reps: int = 5) -> dict[int, float]:
    """Best-of-reps ms of one target llama_decode of b tokens (all logits) after ``prompt``."""
    import llama_cpp
    from quant_llm_node.engine import speculative as spec_mod

    llm = engine._llm
    toks = engine.tokenize(prompt)
    _, rest = engine._prepare(toks)
    llm.eval(rest)
    n0 = llm.n_tokens
    mem = llama_cpp.llama_get_memory(llm.ctx)
    b = spec_mod._Batch(max_batch)
    out = {}
    for size in range(1, max_batch + 1):
        def one():
            b.decode(llm.ctx, toks[-size:], n0, True)
            llama_cpp.llama_memory_seq_rm(mem, 0, n0, -1)
        out[size] = round(_best_us(one, reps) / 1e3, 2)
    b.close()
    return out


def bench_spec(target: LlamaEngine, mode: str, draft: LlamaEngine | None, k: int, ngram: int,
               reps: int, max_tokens: int = 96, min_draft: int = 1) -> dict:
    from quant_llm_node.engine.speculative import SpeculativeDecoder

    prompts, grammar, prefix = decision_prompts(target)
    target.warm(prefix)
    if draft is not None:
        draft.warm(prefix)
    spec = SpeculativeDecoder(target, mode=mode, draft_engine=draft, k=k, ngram=ngram,
                              min_draft=min_draft)
    res: dict = {"mode": mode, "k": k, "ngram": ngram, "min_draft": min_draft, "target": target.model_id,
                 "draft": draft.model_id if draft else None, "loadavg_start": loadavg()}
    # Best-of-N costs for a load-robust estimate: target batch of b tokens, draft single token.
    cost = batch_costs(target, prompts[0][1], k + 1)
    dcost = batch_costs(draft, prompts[0][1], 1)[1] if draft is not None else 0.0
    res["target_batch_ms"] = cost
    res["draft_token_ms"] = dcost
    for gname, g in (("free", None), ("grammar", grammar)):
        plain, sp, mism = [], [], []
        for _ in range(reps):
            for pid, p in prompts:
                # Same cache state (static prefix only) before each run: the prompt suffix is then
                # evaluated in the same batch both times (batch shape changes the float rounding).
                target.warm(prefix)
                a = target.generate(p, max_tokens, g)
                target.warm(prefix)
                b = spec.generate(p, max_tokens, g)
                if a.text != b.text:
                    mism.append(pid)
                plain.append(a), sp.append(b)
        # End-to-end generation time after the prompt (first token + decode), same token counts.
        t_plain = sum(r.total_ms - r.prompt_ms for r in plain)
        t_spec = sum(r.total_ms - r.prompt_ms for r in sp)
        drafted = sum(r.drafted for r in sp)
        accepted = sum(r.accepted for r in sp)
        hist: dict[int, int] = {}
        for r in sp:
            for size, c in r.batch_sizes.items():
                hist[size] = hist.get(size, 0) + c
        # Cost model: plain = one 1-token decode per committed token; spec = its batches + drafts.
        committed = sum(r.decode_steps for r in sp)
        model_plain = committed * cost[1]
        model_spec = sum(c * cost[size] for size, c in hist.items()) + sum(
            (size - 1) * c for size, c in hist.items()) * dcost
        res[gname] = {
            "plain_tps": round(_tps(plain), 2), "spec_tps": round(_tps(sp), 2),
            "speedup_gen_time": round(t_plain / t_spec, 3) if t_spec else None,
            "acceptance": round(accepted / drafted, 3) if drafted else 0.0,
            "drafted": drafted, "accepted": accepted,
            "tokens": sum(r.completion_tokens for r in sp),
            "target_batches": sum(r.target_batches for r in sp),
            "batch_size_hist": dict(sorted(hist.items())),
            "model_speedup": round(model_plain / model_spec, 3) if model_spec else None,
            "draft_ms": round(sum(r.draft_ms for r in sp), 1),
            "mismatched_prompts": sorted(set(mism)), "identical": not mism,
            "loadavg": loadavg(),
        }
    spec.close()
    return res


def _best_us(fn, reps: int = 300) -> float:
    """Best-of-reps time of fn() in microseconds (robust to a loaded machine)."""
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e6


def python_overhead(engine: LlamaEngine, decode_reps: int = 12) -> dict:
    """Per-token cost of each part of LlamaEngine's loop without the decode itself, best-of-N.

    ``llama_decode`` is timed separately (single token, best of ``decode_reps``); the
    predicted loop/native ratio is decode / (decode + python work). Being best-of-N, these
    figures hold on a loaded machine where end-to-end tok/s do not.
    """
    import codecs

    import llama_cpp
    from quant_llm_node.engine import speculative as spec_mod
    from quant_llm_node.engine.sampling import TokenSampler

    llm = engine._llm
    toks = engine.tokenize(long_prompt(engine))
    engine._prepare(toks)
    llm.eval(toks[llm.n_tokens:])
    n0 = llm.n_tokens
    tok = int(toks[-1])
    res: dict = {"n_vocab": llm.n_vocab()}
    sampler = TokenSampler(llm.model, llm.ctx, llm.n_vocab(), None, 0.0, 0)
    res["sample_us"] = _best_us(sampler.sample)
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    res["as_array_us"] = _best_us(lambda: np.ctypeslib.as_array(
        llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)))
    view = np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))
    res["argmax_us"] = _best_us(view.argmax)
    sampler.close()
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    res["detokenize_us"] = _best_us(lambda: dec.decode(llm.detokenize([tok], special=False)))
    res["seq_rm_us"] = _best_us(lambda: llm._ctx.kv_cache_seq_rm(-1, n0 + 1, -1))

    # eval([tok]) and the lean batch path with llama_decode replaced by a no-op.
    import llama_cpp.llama_cpp as llama_cpp_lib  # what llama_cpp._internals calls
    real_decode = llama_cpp.llama_decode
    try:
        llama_cpp.llama_decode = llama_cpp_lib.llama_decode = lambda ctx, batch: 0

        def one_eval():
            llm.n_tokens = n0
            llm.eval([tok])
        res["eval_python_us"] = _best_us(one_eval)
        b = spec_mod._Batch(1)
        res["lean_batch_python_us"] = _best_us(lambda: b.decode(llm.ctx, [tok], n0, True))
        b.close()
    finally:
        llama_cpp.llama_decode = llama_cpp_lib.llama_decode = real_decode
    llm.n_tokens = n0
    llm._ctx.kv_cache_seq_rm(-1, n0, -1)
    # The decode itself (what llama-bench tg times), via a preallocated batch.
    b = spec_mod._Batch(1)

    def one_decode():
        b.decode(llm.ctx, [tok], n0, False)
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(llm.ctx), 0, n0, -1)
    res["decode_us"] = _best_us(one_decode, decode_reps)
    b.close()
    res.update(grammar_costs(engine))
    engine_py = res["eval_python_us"] + res["sample_us"] + res["detokenize_us"]
    lean_py = res["lean_batch_python_us"] + res["argmax_us"] + res["detokenize_us"]
    res["engine_python_us_per_token"] = engine_py
    res["lean_python_us_per_token"] = lean_py
    res["predicted_engine_over_native"] = res["decode_us"] / (res["decode_us"] + engine_py)
    res["predicted_lean_over_native"] = res["decode_us"] / (res["decode_us"] + lean_py)
    res["loadavg"] = loadavg()
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()}


def grammar_costs(engine: LlamaEngine, reps: int = 30) -> dict:
    """Best-of-N cost of the decision grammar: the lazy single-token check and a full pass over
    the vocabulary, at the grammar's root and inside the free-text reason string."""
    import llama_cpp
    from quant_llm_node.engine.sampling import TokenSampler
    from quant_llm_node.serving.service import load_map
    from quant_llm_node.reasoning.schema import DecisionSchema

    llm = engine._llm
    gbnf = DecisionSchema(load_map("places.yaml").ids).gbnf()
    prefix = '{"action": "stop", "speed": 0.0, "target": "", "reason": "'
    ptoks = llm.tokenize(prefix.encode(), add_bos=False, special=False)
    out = {}
    for where, toks in (("root", []), ("reason", ptoks)):
        s = TokenSampler(llm.model, llm.ctx, llm.n_vocab(), gbnf, 0.0, 0)
        for t in toks:
            llama_cpp.llama_sampler_accept(s._chain, t)
        tok = int(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                        shape=(llm.n_vocab(),)).argmax())
        out[f"grammar_check_us_{where}"] = _best_us(lambda: s._grammar_allows(tok), 200)
        # A full pass = what llama_sampler_sample does, without accepting (clone the chain).
        def full():
            c = llama_cpp.llama_sampler_clone(s._chain)
            llama_cpp.llama_sampler_sample(c, llm.ctx, -1)
            llama_cpp.llama_sampler_free(c)
        out[f"grammar_full_pass_us_{where}"] = _best_us(full, reps)
        s.close()
    return out


def profile_engine(engine: LlamaEngine, tokens: int) -> str:
    import cProfile
    import io
    import pstats

    lp = long_prompt(engine)
    engine.generate(lp, 4, None)
    pr = cProfile.Profile()
    pr.enable()
    engine.generate(lp, tokens, None)
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(18)
    return buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quant_llm_node.bench.decode_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--tokens", type=int, default=64, help="tokens of the long unconstrained run")
    ap.add_argument("--native-json", help="output of scripts/native_baseline.sh for the same model/threads")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--profile", action="store_true", help="cProfile one long run of LlamaEngine.generate")
    ap.add_argument("--overhead-only", action="store_true",
                    help="only the best-of-N per-token Python overhead breakdown (fast, load-robust)")
    ap.add_argument("--spec", choices=["lookup", "draft"], help="also bench speculative decoding")
    ap.add_argument("--draft-model", help="draft GGUF for --spec draft")
    ap.add_argument("-k", type=int, default=4)
    ap.add_argument("--ngram", type=int, default=3)
    ap.add_argument("--min-draft", type=int, default=1, help="lookup: drop shorter drafts")
    ap.add_argument("--skip-engine", action="store_true", help="only the --spec part")
    ap.add_argument("--json-out")
    a = ap.parse_args(argv)

    native = json.loads(Path(a.native_json).read_text()) if a.native_json else None
    eng = load_engine(a.model, a.threads, a.n_ctx)
    result: dict = {"argv": sys.argv[1:], "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    result["overhead"] = python_overhead(eng)
    if native and "overhead" in result:
        ntg = float(native["tg_tps"])
        result["overhead"]["native_tg_us"] = round(1e6 / ntg, 1)
    if not a.skip_engine and not a.overhead_only:
        result["engine"] = bench_engine(eng, a.tokens, a.reps, native)
    if a.profile and not a.overhead_only:
        result["profile"] = profile_engine(eng, a.tokens)
    if a.spec and not a.overhead_only:
        draft = load_engine(a.draft_model, a.threads, a.n_ctx) if a.spec == "draft" else None
        result["spec"] = bench_spec(eng, a.spec, draft, a.k, a.ngram, a.reps, min_draft=a.min_draft)
        if draft is not None:
            draft.close()
    eng.close()
    prof = result.pop("profile", None)
    text = json.dumps(result, indent=1)
    print(text)
    if prof:
        print(prof, file=sys.stderr)
    if a.json_out:
        Path(a.json_out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
