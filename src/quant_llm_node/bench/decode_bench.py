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

from quant_llm_node.engine.llama_engine import EngineSettings, LlamaEngine

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = ROOT / "test" / "data" / "scenarios.yaml"
LONG_PROMPT_USER = ("Write a detailed numbered list of 100 safety rules for a warehouse robot. "
                    "Give each rule one full sentence.")


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


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
            a = engine.generate(p, max_tokens, None)
            b = engine.generate(p, max_tokens, grammar)
            c = lean.generate(p, max_tokens, None)
            d = lean.generate(p, max_tokens, grammar)
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


def bench_spec(target: LlamaEngine, mode: str, draft: LlamaEngine | None, k: int, ngram: int,
               reps: int, max_tokens: int = 96) -> dict:
    from quant_llm_node.engine.speculative import SpeculativeDecoder

    prompts, grammar, prefix = decision_prompts(target)
    target.warm(prefix)
    if draft is not None:
        draft.warm(prefix)
    spec = SpeculativeDecoder(target, mode=mode, draft_engine=draft, k=k, ngram=ngram)
    res: dict = {"mode": mode, "k": k, "ngram": ngram, "target": target.model_id,
                 "draft": draft.model_id if draft else None, "loadavg_start": loadavg()}
    for gname, g in (("free", None), ("grammar", grammar)):
        plain, sp, mism = [], [], []
        for _ in range(reps):
            for pid, p in prompts:
                a = target.generate(p, max_tokens, g)
                b = spec.generate(p, max_tokens, g)
                if a.text != b.text:
                    mism.append(pid)
                plain.append(a), sp.append(b)
        # End-to-end generation time after the prompt (first token + decode), same token counts.
        t_plain = sum(r.total_ms - r.prompt_ms for r in plain)
        t_spec = sum(r.total_ms - r.prompt_ms for r in sp)
        drafted = sum(r.drafted for r in sp)
        accepted = sum(r.accepted for r in sp)
        res[gname] = {
            "plain_tps": round(_tps(plain), 2), "spec_tps": round(_tps(sp), 2),
            "speedup_gen_time": round(t_plain / t_spec, 3) if t_spec else None,
            "acceptance": round(accepted / drafted, 3) if drafted else 0.0,
            "drafted": drafted, "accepted": accepted,
            "tokens": sum(r.completion_tokens for r in sp),
            "target_batches": sum(r.target_batches for r in sp),
            "draft_ms": round(sum(r.draft_ms for r in sp), 1),
            "mismatched_prompts": sorted(set(mism)), "identical": not mism,
            "loadavg": loadavg(),
        }
    spec.close()
    return res


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
    ap.add_argument("--spec", choices=["lookup", "draft"], help="also bench speculative decoding")
    ap.add_argument("--draft-model", help="draft GGUF for --spec draft")
    ap.add_argument("-k", type=int, default=4)
    ap.add_argument("--ngram", type=int, default=3)
    ap.add_argument("--skip-engine", action="store_true", help="only the --spec part")
    ap.add_argument("--json-out")
    a = ap.parse_args(argv)

    native = json.loads(Path(a.native_json).read_text()) if a.native_json else None
    eng = load_engine(a.model, a.threads, a.n_ctx)
    result: dict = {"argv": sys.argv[1:], "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if not a.skip_engine:
        result["engine"] = bench_engine(eng, a.tokens, a.reps, native)
    if a.profile:
        result["profile"] = profile_engine(eng, a.tokens)
    if a.spec:
        draft = load_engine(a.draft_model, a.threads, a.n_ctx) if a.spec == "draft" else None
        result["spec"] = bench_spec(eng, a.spec, draft, a.k, a.ngram, a.reps)
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
