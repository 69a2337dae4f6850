"""Decode-speed bench of the decision path: ``LlamaEngine.generate`` exactly as the node calls it.

    python -m quant_llm_node.bench.decode_bench --model PATH [--threads N] [--reps N]
        [--scenarios FILE ...] [--jump-forward] [--rows] [--native-json FILE] [--profile]
        [--spec lookup|draft --draft-model PATH -k K] [--json-out FILE]

Every figure comes from one run and is compared with a baseline of the same run:
- ``overhead``: best-of-N cost of each per-token piece of the engine loop (sampling, grammar
  check, piece lookup, incremental UTF-8 decode, the forced-text probe, the batch fill) and of a
  bare single-token ``llama_decode`` at the decision depth (what llama-bench ``tg -d`` times);
- ``decision``: the node's path: the prompts of ``DecisionTask`` (PromptBuilder over the
  scenarios, static prefix cached), its grammar, ``max_tokens`` and ``min_room``, the service's
  ``should_stop`` (cancel, preempt, deadline) and a streaming ``on_text``; decode tok/s
  unconstrained vs under the grammar, against the bare decode loop at the same depth;
- ``jump_forward`` (--jump-forward): every scenario of every ``--scenarios`` file decoded with
  jump-forward "off" (step by step), "exact" and "on" from the same cache state: whether the
  texts are byte-identical to "off", the ``llama_decode`` calls saved per decision and the
  generation time ratio (with --spec, also through the speculative decoder);
- ``batch_rows`` (--rows): whether this build's kernels are batch-invariant: the logits of k
  tokens evaluated in one ``llama_decode`` against the same tokens decoded one by one from the
  same cache state (then a few single steps after, which read the batch's KV). Jump-forward
  "on", speculative decoding and batching are byte-identical to step by step only where they
  are; on the x86 wheel (llamafile sgemm) no k >= 2 is;
- ``roofline``: the host bandwidth probe (serving.roofline, engine thread count) against what
  the bare decode loop reads per second (tok/s x tensor bytes): the probe must bound it;
- ``long``: a long unconstrained run (the llama-bench ``tg`` analogue) vs the bare loop and,
  with --native-json (``scripts/native_baseline.sh``), vs native llama-bench;
- ``spec`` (--spec): speculative decoding vs plain greedy of the same target.
The load average is recorded with every section: timings on a loaded machine are not comparable.
"""
from __future__ import annotations

import argparse
import codecs
import json
import math
import os
import statistics
import sys
import threading
import time
from pathlib import Path

from quant_llm_node.bench.host import loadavg
from quant_llm_node.config import EngineConfig
from quant_llm_node.engine.llama_engine import EngineSettings, GenerationResult, LlamaEngine

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = ROOT / "test" / "data" / "scenarios.yaml"
NODE_CONFIG = ROOT / "config" / "robot.yaml"
LONG_PROMPT_USER = ("Write a detailed numbered list of 100 safety rules for a warehouse robot. "
                    "Give each rule one full sentence.")


def load_engine(path: str, threads: int, n_ctx: int = 2048, **engine_cfg) -> LlamaEngine:
    cfg = EngineConfig(n_ctx=n_ctx, n_threads=threads, **engine_cfg)
    eng = LlamaEngine(EngineSettings.from_config(cfg, path))
    eng.load(verify_checksum=False)
    return eng


class DecisionSet:
    """The node's decision task over scenario files: prompts, grammar, token bounds."""

    def __init__(self, engine: LlamaEngine, scenario_files=(SCENARIOS,)):
        from quant_llm_node.bench.scenarios import load_scenarios, raw_request
        from quant_llm_node.config import Config, load_config
        from quant_llm_node.errors import CodedError
        from quant_llm_node.reasoning.task import DecisionTask
        from quant_llm_node.reasoning.validation import validate_request

        cfg = load_config(NODE_CONFIG) if NODE_CONFIG.is_file() else Config()  # the node's own
        self.task = DecisionTask.from_config(cfg)
        builder = self.task.prompts(engine.chat_renderer())
        self.static_prefix = builder.static_prefix
        self.grammar = self.task.grammar
        self.max_tokens, self.min_room = self.task.max_tokens, self.task.min_room
        self.prompts: list[tuple[str, str]] = []  # (file stem:id, prompt)
        self.skipped: list[str] = []
        limits = cfg.serving
        for f in scenario_files:
            stem = Path(f).stem
            for sc in load_scenarios(f).get("scenarios", []):
                try:
                    req = validate_request(raw_request(sc), limits)
                except (CodedError, ValueError):  # rejected before the model: not a decision
                    self.skipped.append(f"{stem}:{sc.get('id')}")
                    continue
                # the grounder's answer, taken from the file (no embedder in this bench)
                grounded = sc.get("expect_place", "") if sc.get("goal") else ""
                self.prompts.append((f"{stem}:{sc['id']}", builder.build(req, grounded)))


def decision_prompts(engine: LlamaEngine, scenarios_file: Path = SCENARIOS) -> tuple[list[tuple[str, str]], str, str]:
    """(id, prompt) per scenario, the decision grammar and the static prefix, as the service builds them."""
    d = DecisionSet(engine, (scenarios_file,))
    return d.prompts, d.grammar, d.static_prefix


def node_callbacks(task, deadline_s: float = 600.0, stream: bool = True):
    """``should_stop`` as the service builds it (cancel, preempt, deadline (long here, so that a
    loaded machine cuts no decision short); JSON completion
    without the grammar) and an ``on_text`` that keeps the latest partial text, as a streaming
    client's feedback does (None when ``stream`` is false: the service call path)."""
    from quant_llm_node.reasoning.schema import json_object_complete

    cancel, preempt = threading.Event(), threading.Event()
    deadline = time.monotonic() + deadline_s

    def should_stop(text: str) -> bool:
        if cancel.is_set() or preempt.is_set() or deadline - time.monotonic() <= 0:
            return True
        return task.grammar is None and json_object_complete(text)

    latest: list = [None, 0]

    def on_text(text: str, n: int) -> None:
        latest[0], latest[1] = text, n

    return should_stop, (on_text if stream else None)


def long_prompt(engine: LlamaEngine) -> str:
    render = engine.chat_renderer()
    msgs = [{"role": "user", "content": LONG_PROMPT_USER}]
    return render(msgs) if render else LONG_PROMPT_USER + "\n\n1."


def _tps(results) -> float:
    """Aggregate decode tok/s: steps / time, over runs (after the first token)."""
    steps = sum(r.decode_steps for r in results)
    ms = sum(r.decode_ms for r in results)
    return steps / (ms / 1e3) if ms > 0 else 0.0


def _gen_ms(r: GenerationResult) -> float:
    """Generation time after the prompt: first token + decode."""
    return r.total_ms - r.prompt_ms


def _best_us(fn, reps: int = 300) -> float:
    """Best-of-reps time of fn() in microseconds (robust to a loaded machine)."""
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e6


def bare_decode_tps(engine: LlamaEngine, prompt: str, steps: int = 24) -> float:
    """Single-token llama_decode + argmax, nothing else, after ``prompt`` (the KV depth of a
    decision): the in-process analogue of llama-bench ``tg`` at that depth."""
    toks = engine.tokenize(prompt)
    _, rest = engine.prepare(toks)
    engine.eval(rest)
    t = int(engine.logits(-1).argmax())
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.decode((t,), False)
        t = int(engine.logits(-1).argmax())
    dt = time.perf_counter() - t0
    engine.truncate(len(toks))
    return steps / dt


def python_overhead(engine: LlamaEngine, ds: DecisionSet, decode_reps: int = 12) -> dict:
    """Per-token cost of each part of the engine loop besides the decode itself, best-of-N,
    and the single-token decode at the decision depth. Being best-of-N, these figures hold on
    a loaded machine where end-to-end tok/s do not."""
    engine.warm(ds.static_prefix)
    toks = engine.tokenize(ds.prompts[0][1])
    _, rest = engine.prepare(toks)
    engine.eval(rest)
    n0 = engine.n_tokens
    tok = int(toks[-1])
    res: dict = {"n_vocab": engine.n_vocab, "kv_depth": n0}
    free = engine.sampler(None)
    view = engine.logits(-1)
    res["logits_view_us"] = _best_us(lambda: engine.logits(-1))
    res["argmax_us"] = _best_us(view.argmax)
    res["sample_free_us"] = _best_us(lambda: free.sample_at(-1, engine.logits(-1)))
    free.close()
    g = engine.sampler(ds.grammar)
    g.enable_forcing(engine.byte_tokens(), engine.eog_token())
    first = engine.tokenize('{"', add_bos=False, special=False)[0]
    res["grammar_check_us"] = _best_us(lambda: g.allows(first))
    res["forced_probe_root_us"] = _best_us(lambda: g.forced_bytes(), 100)   # '{"action": "'
    res["forced_probe_exact_root_us"] = _best_us(lambda: g.forced_bytes(2), 100)  # "exact" mode
    for t in engine.tokenize('{"action": "stop", "speed": 0.0, "target": "", "reason": "',
                             add_bos=False, special=False):
        g.accept(t)
    res["forced_probe_free_us"] = _best_us(lambda: g.forced_bytes(), 100)   # inside the reason
    g.close()
    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    res["piece_and_utf8_us"] = _best_us(lambda: dec.decode(engine.token_bytes(tok)))
    res["tokenize_span_us"] = _best_us(
        lambda: engine.tokenize('", "speed": ', add_bos=False, special=False))

    def one_decode():
        engine.decode((tok,), False)
        engine.truncate(n0)
    res["decode_us"] = _best_us(one_decode, decode_reps)
    res["loadavg"] = loadavg()
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in res.items()}


def batch_rows_exactness(engine: LlamaEngine, ds: DecisionSet, ks=(1, 2, 3, 4, 8, 16), after: int = 4,
                         prompts: int = 8, reps: int = 5) -> dict:
    """Per batch size k: are the logits of a k-row ``llama_decode`` (and of ``after`` single steps
    that follow it) bit-identical to decoding the same tokens one by one? Max |difference| if not,
    and what the k-row decode costs (median of ``reps``, ms), the price of a draft row.
    Also the suffix prefill and single-token decode rates over ``prompts`` decision prompts (what
    a batch-invariant build would cost)."""
    import numpy as np
    engine.warm(ds.static_prefix)
    # what a batch-invariant build costs: the prompt suffix's prefill and single-token decode
    pp, tg, suffix = [], [], []
    for _, prompt in ds.prompts[:prompts]:
        _, rest = engine.prepare(engine.tokenize(prompt))
        t0 = time.perf_counter()
        engine.eval(rest)
        pp.append(len(rest) / (time.perf_counter() - t0))
        suffix.append(len(rest))
        tg.append(bare_decode_tps(engine, prompt, 16))  # the prompt is cached now: decode only
    toks = engine.tokenize(ds.prompts[0][1])
    cont = engine.tokenize('{"action": "stop", "speed": 0.0, "target": "", "reason": "person close ahead"}',
                           add_bos=False, special=False)
    ks = [k for k in ks if 0 < k and k + after <= len(cont)]
    _, rest = engine.prepare(toks)
    engine.eval(rest)
    n0 = engine.n_tokens
    ref = []
    for t in cont[:max(ks) + after]:
        engine.decode((t,), False)
        ref.append(engine.logits(-1).copy())
    out: dict = {"kv_depth": n0, "suffix_tokens_p50": statistics.median(suffix),
                 "suffix_prefill_tps_p50": round(statistics.median(pp), 1),
                 "decode_tps_p50": round(statistics.median(tg), 1)}
    for k in ks:
        engine.truncate(n0)
        engine.decode(cont[:k], True)
        rows = [engine.logits(i).copy() for i in range(k)]
        for t in cont[k:k + after]:
            engine.decode((t,), False)
            rows.append(engine.logits(-1).copy())
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(rows, ref))
        times = []
        for _ in range(reps):
            engine.truncate(n0)
            t0 = time.perf_counter()
            engine.decode(cont[:k], True)
            times.append((time.perf_counter() - t0) * 1e3)
        ms = statistics.median(times)
        out[str(k)] = {"identical": diff == 0.0, "max_abs_logit_diff": round(diff, 4),
                       "ms": round(ms, 2), "ms_per_row": round(ms / k, 2)}
    engine.truncate(n0)
    out["loadavg"] = loadavg()
    return out


def bench_decision(engine: LlamaEngine, ds: DecisionSet, reps: int, stream: bool = True) -> dict:
    """The node's decision path: free vs grammar, against the bare decode loop, same cache state."""
    free, gram, bare = [], [], []
    for _ in range(reps):
        for _, p in ds.prompts:
            for g, out in ((None, free), (ds.grammar, gram)):
                engine.warm(ds.static_prefix)  # same cache state before each run
                stop, on_text = node_callbacks(ds.task, stream=stream)
                out.append(engine.generate(p, ds.max_tokens, g, 0.0, stop, on_text,
                                           min_room=ds.min_room if g else 1, jump_forward="off"))
            engine.warm(ds.static_prefix)
            bare.append(bare_decode_tps(engine, p))
    tf, tg, tb = _tps(free), _tps(gram), statistics.median(bare)
    return {
        "prompts": len(ds.prompts), "reps": reps, "on_text": stream,
        "engine_free_tps": round(tf, 2), "engine_grammar_tps": round(tg, 2),
        "bare_decode_tps": round(tb, 2),
        "grammar_over_free": round(tg / tf, 3) if tf else None,
        "grammar_over_bare": round(tg / tb, 3) if tb else None,
        "free_over_bare": round(tf / tb, 3) if tb else None,
        "grammar_full_passes_per_run": round(statistics.mean(r.grammar_full_passes for r in gram), 2),
        "grammar_topk_hits_per_run": round(statistics.mean(r.grammar_topk_hits for r in gram), 2),
        "mean_tokens_free": round(statistics.mean(r.completion_tokens for r in free), 1),
        "mean_tokens_grammar": round(statistics.mean(r.completion_tokens for r in gram), 1),
        "loadavg": loadavg(),
    }


def bench_jump_forward(engine: LlamaEngine, ds: DecisionSet, stream: bool = True,
                       modes=("off", "exact", "on"), gen=None) -> dict:
    """Every decision under each jump-forward mode, from the same cache state (static prefix
    only), interleaved per scenario: byte-identical to "off" (step by step)?, llama_decode
    calls per decision and generation time (first token + decode), each as a ratio to "off".
    ``gen`` (default ``engine.generate``) takes ``jump_forward=`` (a SpeculativeDecoder does)."""
    gen = gen or engine.generate
    runs: dict[str, list[GenerationResult]] = {m: [] for m in modes}
    mism: dict[str, list] = {m: [] for m in modes}
    ref = modes[0]
    for pid, p in ds.prompts:
        for m in modes:
            engine.warm(ds.static_prefix)
            stop, on_text = node_callbacks(ds.task, stream=stream)
            runs[m].append(gen(p, ds.max_tokens, ds.grammar, 0.0, stop, on_text,
                               min_room=ds.min_room, jump_forward=m))
        a = runs[ref][-1]
        for m in modes[1:]:
            b = runs[m][-1]
            if (a.text, a.completion_tokens, a.finish_reason) != (b.text, b.completion_tokens,
                                                                   b.finish_reason):
                mism[m].append({"id": pid, ref: a.text, m: b.text,
                                "same_decision": _fields(a.text) == _fields(b.text)})
    n = len(ds.prompts)
    base = runs[ref]
    t_ref = sum(_gen_ms(r) for r in base)
    calls_ref = sum(r.decode_calls for r in base)
    out: dict = {"decisions": n, "on_text": stream, "reference": ref,
                 "mean_tokens": round(statistics.mean(r.completion_tokens for r in base), 2) if n else 0}
    for m in modes:
        rs = runs[m]
        t = sum(_gen_ms(r) for r in rs)
        row = {
            "decode_calls_per_decision": round(sum(r.decode_calls for r in rs) / max(1, n), 2),
            "steps_saved_per_decision": round((calls_ref - sum(r.decode_calls for r in rs)) / max(1, n), 2),
            "gen_ms_p50": round(statistics.median(_gen_ms(r) for r in rs), 1) if n else None,
            "total_ms_p50": round(statistics.median(r.total_ms for r in rs), 1) if n else None,
            "gen_time_over_ref": round(t / t_ref, 3) if t_ref else None,
            "p50_gen_over_ref": (round(statistics.median(_gen_ms(r) for r in rs) /
                                       statistics.median(_gen_ms(r) for r in base), 3) if n else None),
        }
        if m != ref:
            row.update({
                "identical": n - len(mism[m]),
                "same_decision_fields": n - sum(1 for x in mism[m] if not x["same_decision"]),
                "mismatches": mism[m],
            })
        if any(r.forced_drafted for r in rs):
            row["forced_tokens_per_decision"] = round(sum(r.forced_tokens for r in rs) / max(1, n), 2)
            row["forced_acceptance"] = round(sum(r.forced_tokens for r in rs) /
                                             max(1, sum(r.forced_drafted for r in rs)), 3)
            row["batch_size_hist"] = _merge_hist(r.batch_sizes for r in rs)
        out[m] = row
    out["loadavg"] = loadavg()
    return out


def _fields(text: str):
    """(action, speed, target) of a decision text, or the text when it does not parse."""
    try:
        d = json.loads(text)
        return d.get("action"), d.get("speed"), d.get("target")
    except (ValueError, AttributeError):
        return text


def _merge_hist(hists) -> dict:
    out: dict[int, int] = {}
    for h in hists:
        for size, c in h.items():
            out[size] = out.get(size, 0) + c
    return dict(sorted(out.items()))


def bench_roofline(engine: LlamaEngine, ds: DecisionSet, reps: int = 3) -> dict:
    """Cross-check of the host roofline: the bare decode loop's tok/s x tensor bytes (what
    llama.cpp reads per second) against serving.roofline's probe at the engine's thread
    count, measured back to back (and the probe once more after, for the noise)."""
    from quant_llm_node.serving.roofline import measure_read_bandwidth_gbps, raw_efficiency

    threads = engine.settings.threads
    d: dict = {}
    before = measure_read_bandwidth_gbps(threads, details=d)
    tps = []
    for _ in range(reps):
        engine.warm(ds.static_prefix)
        tps.append(bare_decode_tps(engine, ds.prompts[0][1]))
    after = measure_read_bandwidth_gbps(threads)
    probe, best = max(before, after), max(tps)
    nbytes = engine.info.tensor_bytes
    return {"probe_kernel": d.get("kernel"), "probe_threads": threads,
            "probe_gbps_before": round(before, 2), "probe_gbps_after": round(after, 2),
            "bare_decode_tps_best": round(best, 2), "tensor_bytes": nbytes,
            "llama_read_gbps": round(best * nbytes / 1e9, 2),
            "llama_over_probe": round(raw_efficiency(best, nbytes, probe), 3),
            "bound_holds": best * nbytes / 1e9 <= probe, "loadavg": loadavg()}


def bench_long(engine: LlamaEngine, tokens: int, reps: int, native: dict | None) -> dict:
    """Long unconstrained decode (the llama-bench tg analogue) vs the bare loop (and native)."""
    lp = long_prompt(engine)
    runs, bare = [], []
    for _ in range(reps):
        engine.reset_cache()
        runs.append(engine.generate(lp, tokens, None))
        engine.reset_cache()
        bare.append(bare_decode_tps(engine, lp, tokens))
    te, tb = _tps(runs), statistics.median(bare)
    out = {"tokens": tokens, "reps": reps, "steps": [r.decode_steps for r in runs],
           "engine_tps": round(te, 2), "bare_decode_tps": round(tb, 2),
           "engine_over_bare": round(te / tb, 3) if tb else None, "loadavg": loadavg()}
    if native:
        ntg = float(native["tg_tps"])
        out["native"] = {"tg_tps": round(ntg, 2), "pp_tps": round(float(native.get("pp_tps", 0)), 2),
                         "loadavg": native.get("loadavg"), "engine_over_native": round(te / ntg, 3),
                         "bare_over_native": round(tb / ntg, 3)}
    return out


def batch_costs(engine: LlamaEngine, prompt: str, max_batch: int, reps: int = 5) -> dict[int, float]:
    """Best-of-reps ms of one llama_decode of b tokens (all logits) after ``prompt``."""
    toks = engine.tokenize(prompt)
    _, rest = engine.prepare(toks)
    engine.eval(rest)
    n0 = engine.n_tokens
    out = {}
    for size in range(1, max_batch + 1):
        def one():
            engine.decode(toks[-size:], True)
            engine.truncate(n0)
        out[size] = round(_best_us(one, reps) / 1e3, 2)
    return out


def bench_spec(target: LlamaEngine, mode: str, draft: LlamaEngine | None, k: int, ngram: int,
               reps: int, min_draft: int = 1, jump_forward: bool | str = "off") -> dict:
    from quant_llm_node.engine.speculative import SpeculativeDecoder

    ds = DecisionSet(target)
    prompts, grammar, prefix = ds.prompts, ds.grammar, ds.static_prefix
    target.warm(prefix)
    if draft is not None:
        draft.warm(prefix)
    spec = SpeculativeDecoder(target, mode=mode, draft_engine=draft, k=k, ngram=ngram,
                              min_draft=min_draft)
    res: dict = {"mode": mode, "k": k, "ngram": ngram, "min_draft": min_draft, "target": target.model_id,
                 "draft": draft.model_id if draft else None, "jump_forward": jump_forward,
                 "loadavg_start": loadavg()}
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
                a = target.generate(p, ds.max_tokens, g, jump_forward="off")
                target.warm(prefix)
                b = spec.generate(p, ds.max_tokens, g, jump_forward=jump_forward)
                if a.text != b.text:
                    mism.append(pid)
                plain.append(a), sp.append(b)
        t_plain = sum(_gen_ms(r) for r in plain)
        t_spec = sum(_gen_ms(r) for r in sp)
        drafted = sum(r.drafted for r in sp)
        accepted = sum(r.accepted for r in sp)
        hist = _merge_hist(r.batch_sizes for r in sp)
        # Cost model: plain = one 1-token decode per committed token; spec = its batches + drafts.
        committed = sum(r.decode_steps for r in sp)
        model_plain = committed * cost[1]
        model_spec = sum(c * cost.get(size, cost[max(cost)] * size / max(cost))
                         for size, c in hist.items()) + drafted * dcost
        res[gname] = {
            "plain_tps": round(_tps(plain), 2), "spec_tps": round(_tps(sp), 2),
            "speedup_gen_time": round(t_plain / t_spec, 3) if t_spec else None,
            "acceptance": round(accepted / drafted, 3) if drafted else 0.0,
            "drafted": drafted, "accepted": accepted,
            "forced_tokens": sum(r.forced_tokens for r in sp),
            "tokens": sum(r.completion_tokens for r in sp),
            "target_batches": sum(r.target_batches for r in sp),
            "batch_size_hist": hist,
            "model_speedup": round(model_plain / model_spec, 3) if model_spec else None,
            "draft_ms": round(sum(r.draft_ms for r in sp), 1),
            "mismatched_prompts": sorted(set(mism)), "identical": not mism,
            "loadavg": loadavg(),
        }
    spec.close()
    return res


def profile_decisions(engine: LlamaEngine, ds: DecisionSet, jump_forward, n: int = 6) -> str:
    """cProfile of the node's decision path over the first ``n`` scenarios."""
    import cProfile
    import io
    import pstats

    pr = cProfile.Profile()
    for _, p in ds.prompts[:n]:
        engine.warm(ds.static_prefix)
        stop, on_text = node_callbacks(ds.task)
        pr.enable()
        engine.generate(p, ds.max_tokens, ds.grammar, 0.0, stop, on_text, min_room=ds.min_room,
                        jump_forward=jump_forward)
        pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(20)
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
    ap.add_argument("--scenarios", nargs="*", default=[str(SCENARIOS)],
                    help="scenario files for the decision prompts (first) and --jump-forward (all)")
    ap.add_argument("--jump-forward", action="store_true",
                    help="compare jump-forward off/on on every scenario of every --scenarios file")
    ap.add_argument("--rows", action="store_true",
                    help="batch invariance: k-row llama_decode logits against one-by-one decoding")
    ap.add_argument("--no-stream", action="store_true", help="on_text=None (the service call path)")
    ap.add_argument("--profile", action="store_true", help="cProfile the decision path (off and on)")
    ap.add_argument("--overhead-only", action="store_true",
                    help="only the best-of-N per-token overhead breakdown (fast, load-robust)")
    ap.add_argument("--skip-engine", action="store_true", help="skip the decision and long sections")
    ap.add_argument("--spec", choices=["lookup", "draft"], help="also bench speculative decoding")
    ap.add_argument("--draft-model", help="draft GGUF for --spec draft")
    ap.add_argument("-k", type=int, default=4)
    ap.add_argument("--ngram", type=int, default=3)
    ap.add_argument("--min-draft", type=int, default=1, help="lookup: drop shorter drafts")
    ap.add_argument("--json-out")
    a = ap.parse_args(argv)

    native = json.loads(Path(a.native_json).read_text()) if a.native_json else None
    eng = load_engine(a.model, a.threads, a.n_ctx)
    files = [f for f in a.scenarios if Path(f).is_file()]
    ds = DecisionSet(eng, files[:1] or [SCENARIOS])
    result: dict = {"argv": sys.argv[1:], "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "model": eng.model_id, "threads": eng.settings.threads}
    result["overhead"] = python_overhead(eng, ds)
    if native:
        result["overhead"]["native_tg_us"] = round(1e6 / float(native["tg_tps"]), 1)
    stream = not a.no_stream
    if a.rows:
        result["batch_rows"] = batch_rows_exactness(eng, ds)
    if not a.overhead_only:
        result["roofline"] = bench_roofline(eng, ds)
    if not a.overhead_only and not a.skip_engine:
        result["decision"] = bench_decision(eng, ds, a.reps, stream)
        result["long"] = bench_long(eng, a.tokens, a.reps, native)
    if a.jump_forward and not a.overhead_only:
        result["jump_forward"] = {Path(f).stem: bench_jump_forward(eng, DecisionSet(eng, [f]), stream)
                                  for f in files}
    profiles = []
    if a.profile and not a.overhead_only:
        for jf in ("off", "exact", "on"):
            profiles.append(f"--- jump_forward={jf}\n" + profile_decisions(eng, ds, jf))
    if a.spec and not a.overhead_only:
        draft = load_engine(a.draft_model, a.threads, a.n_ctx) if a.spec == "draft" else None
        result["spec"] = bench_spec(eng, a.spec, draft, a.k, a.ngram, a.reps, min_draft=a.min_draft)
        if a.jump_forward:
            from quant_llm_node.engine.speculative import SpeculativeDecoder
            spec = SpeculativeDecoder(eng, mode=a.spec, draft_engine=draft, k=a.k, ngram=a.ngram,
                                      min_draft=a.min_draft)
            result["spec_jump_forward"] = bench_jump_forward(eng, ds, stream, gen=spec.generate)
        if draft is not None:
            draft.close()
    eng.close()
    text = json.dumps(result, indent=1)
    print(text)
    for prof in profiles:
        print(prof, file=sys.stderr)
    if a.json_out:
        Path(a.json_out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
