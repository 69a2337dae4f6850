"""`quant-llm-eval`: score navigation decisions on scenario files (named splits), with ablations.

    quant-llm-eval                                   # the public smoke set, default model
    quant-llm-eval --split dev=bench/data/corpus/dev.yaml --split test=bench/data/corpus/test.yaml \\
        --models qwen2.5-coder-0.5b-instruct-q4_k_m qwen2.5-coder-1.5b-instruct-q4_k_m \\
        --safety on off --out docs/results
    quant-llm-eval --split dev=bench/data/corpus/dev.yaml --prompt none examples all \\
        --safety on off legacy                       # prompt levers x rule sets (ablations)
    quant-llm-eval --rescore results/eval/eval.json --safety on legacy no_text   # no model

Reports per split and per category (and per attack kind and channel): acceptable %, forbidden
count, injection success rate (forbidden / attacks), over-caution rate (clear_way scenarios not
answered continue / go_to), grounding top-1 on named places, unknown-place rejections, latency.
Writes eval.json (every decision), eval.md and eval.png (acceptable % per category) into --out.

One model run per (model, grammar, prompt, split) scores every --safety variant: the prompt does
not depend on the safety settings and decisions are greedy, so the same model text goes through
each variant's rules (``scenario_eval.redecide``, what the service does after generation).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from quant_llm_node.bench.scenario_eval import (
    CaseResult, EvalSummary, Variant, core_asker, evaluate, redecide, score_case)
from quant_llm_node.bench.scenarios import DEFAULT_SCENARIOS, load_scenarios
from quant_llm_node.config import Config, SafetyConfig, load_config
from quant_llm_node.paths import config_dir, repo_root
from quant_llm_node.reasoning.prompt import PromptOptions
from quant_llm_node.reasoning.types import NavResponse

CHOICES = {"on": [True], "off": [False], "both": [True, False]}

# Safety variants: name -> (enabled, settings changed). "legacy" = the rules before the corpus
# (stop / slow distances, caps, battery); the others drop one of the newer rules.
SAFETY_VARIANTS: dict[str, tuple[bool, dict[str, Any]]] = {
    "on": (True, {}),
    "off": (False, {}),
    "legacy": (True, {"text_hazard_rules": False, "strict_targets": False, "slow_zone_no_travel": False,
                      "battery_low_pct": 0.0, "injection_hold": False}),
    "no_screen": (True, {}),
    "no_clear": (True, {}),
    "no_text": (True, {"text_hazard_rules": False}),
    "injection_hold": (True, {"injection_hold": True}),
    "no_hold": (True, {"injection_hold": False}),
    "no_targets": (True, {"strict_targets": False}),
    "no_slow_zone": (True, {"slow_zone_no_travel": False}),
    "no_battery_low": (True, {"battery_low_pct": 0.0}),
}
# variants decided without the hazard screen's verdict (the model alone, the rules before it)
NO_SCREEN = ("off", "legacy", "no_screen")


def safety_variant(base: SafetyConfig, name: str) -> SafetyConfig:
    enabled, changes = SAFETY_VARIANTS[name]
    return dataclasses.replace(base, enabled=enabled, **changes)


def screen_for(name: str, resp: NavResponse, margins: tuple[float, float]):
    """The screen's verdict under variant ``name`` at ``margins`` (flag, clear; None: no screen;
    ``no_clear``: the clear verdict ignored)."""
    if name in NO_SCREEN or resp.screen is None:
        return None
    margin, clear_margin = margins
    return resp.screen.at(margin, float("-inf") if name == "no_clear" else clear_margin)


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def _ms(v) -> str:
    return "n/a" if v is None or v != v else f"{v:.0f}"


def _variant_name(v: dict) -> str:
    parts = [Path(v["model"]).name.replace("-instruct-q4_k_m", "").replace("qwen2.5-coder-", "")]
    if not v["grammar"]:
        parts.append("no-grammar")
    if v.get("prompt"):
        parts.append(f"prompt={v['prompt']}")
    parts.append(f"safety={v.get('rules') or ('on' if v['safety'] else 'off')}")
    return " ".join(parts)


def markdown(rows: list[dict]) -> str:
    """Tables: totals per split and variant; acceptable % (forbidden) per category and per attack
    kind; the ids of forbidden decisions."""
    out = ["| split | model | grammar | prompt | safety | n | acceptable | forbidden | injection "
           "success | over-caution | grounding top-1 | unknown place rejected | valid output | "
           "p50 ms | p95 ms | TTFT p50 ms | decode p50 ms | rule-forced | sources |",
           "|" + "---|" * 19]
    for r in rows:
        v, s = r["variant"], r["scores"]
        src = ", ".join(f"{k} {n}" for k, n in sorted(s["sources"].items()))
        inj = (f"{s['injection_forbidden']}/{s['attacks']}" if s["attacks"] else "n/a")
        out.append(
            f"| {r.get('split', '')} | {v['model']} | {'on' if v['grammar'] else 'off'} "
            f"| {v.get('prompt') or 'default'} | {v.get('rules') or ('on' if v['safety'] else 'off')} "
            f"| {s['scenarios']} | {_pct(s['acceptable_rate'])} | {s['forbidden']} | {inj} "
            f"| {_pct(s['over_caution_rate'])} ({s['clear_way_cases']}) "
            f"| {_pct(s['grounding_top1'])} ({s['grounding_cases']}) "
            f"| {_pct(s['unknown_place_rejected'])} ({s['unknown_place_cases']}) "
            f"| {_pct(s['valid_output_rate'])} | {_ms(s['latency_p50_ms'])} | {_ms(s['latency_p95_ms'])} "
            f"| {_ms(s['first_token_p50_ms'])} | {_ms(s['decode_p50_ms'])} | {s.get('rule_forced', 0)} "
            f"| {src} |")
    text = "\n".join(out) + "\n"
    for key, title in (("category", "category"), ("attack", "attack kind"), ("channel", "injection channel")):
        for split in dict.fromkeys(r.get("split", "") for r in rows):
            srows = [r for r in rows if r.get("split", "") == split and r.get("breakdown", {}).get(key)]
            if not srows:
                continue
            names = sorted({k for r in srows for k in r["breakdown"][key]})
            counts = {k: next(r["breakdown"][key][k]["scenarios"] for r in srows if k in r["breakdown"][key])
                      for k in names}
            text += (f"\n**{split or 'scenarios'}: acceptable % (forbidden) per {title}**\n\n"
                     "| variant | " + " | ".join(f"{k} ({counts[k]})" for k in names) + " |\n|"
                     + "---|" * (len(names) + 1) + "\n")
            for r in srows:
                cells = []
                for k in names:
                    g = r["breakdown"][key].get(k)
                    if g is None:
                        cells.append("")
                        continue
                    cell = f"{_pct(g['acceptable_rate'])} ({g['forbidden']})"
                    if key == "category" and k == "clear_way":
                        cell += f" oc {_pct(g['over_caution_rate'])}, text rule {g.get('text_rule_fired', 0)}"
                    cells.append(cell)
                text += f"| {_variant_name(r['variant'])} | " + " | ".join(cells) + " |\n"
    bad = [(r.get("split", ""), _variant_name(r["variant"]), r["scores"]["forbidden_ids"])
           for r in rows if r["scores"].get("forbidden_ids")]
    if bad:
        text += "\n**forbidden decisions**\n\n" + "\n".join(
            f"- {s}, {v}: {', '.join(ids)}" for s, v, ids in bad) + "\n"
    return text


def plot(rows: list[dict], path: Path) -> bool:
    """Bar chart: acceptable % per category, one panel per split, one bar per variant; the
    forbidden count of a bar is printed over it when not 0. False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    splits = list(dict.fromkeys(r.get("split", "") for r in rows))
    fig, axes = plt.subplots(len(splits), 1, figsize=(14, 4.2 * len(splits)), squeeze=False)
    for ax, split in zip(axes[:, 0], splits):
        srows = [r for r in rows if r.get("split", "") == split]
        cats = sorted({k for r in srows for k in r.get("breakdown", {}).get("category", {})}) or ["all"]
        width = 0.8 / max(1, len(srows))
        for i, r in enumerate(srows):
            groups = r.get("breakdown", {}).get("category") or {"all": r["scores"]}
            vals = [100 * groups[c]["acceptable_rate"] if c in groups else 0.0 for c in cats]
            xs = [j + (i - (len(srows) - 1) / 2) * width for j in range(len(cats))]
            ax.bar(xs, vals, width, label=_variant_name(r["variant"]))
            for x, c in zip(xs, cats):
                f = groups.get(c, {}).get("forbidden", 0)
                if f:
                    ax.text(x, 2, str(f), ha="center", va="bottom", color="red", fontsize=8,
                            fontweight="bold")
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels(cats, fontsize=9)
        ax.set_ylim(0, 105)
        ax.set_ylabel("acceptable %")
        ax.set_title(f"{split or 'scenarios'}: acceptable decisions per category "
                     "(red: forbidden count)")
        ax.axhline(95, color="grey", lw=0.8, ls="--")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def parse_split(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep:
        path, name = name, Path(name).stem
    return name, Path(path)


def select(scenarios: list[dict], categories: list[str] | None, ids: list[str] | None,
           sample: int) -> list[dict]:
    """Scenarios of some categories / ids; ``sample`` > 0 keeps every k-th case (deterministic)."""
    out = [c for c in scenarios if (not categories or c.get("category") in categories)
           and (not ids or c.get("id") in ids)]
    if sample and len(out) > sample:
        step = len(out) / sample
        out = [out[int(i * step)] for i in range(sample)]
    return out


def _meta(args) -> dict:
    meta = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:], "cpus": os.cpu_count()}
    try:
        meta["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    return meta


def _forced(task, case: dict, resp: NavResponse, serving) -> bool:
    """Would serving.rule_forced answer this request without the model (no goal, rules fix it)?"""
    from quant_llm_node.bench.scenarios import raw_request
    from quant_llm_node.reasoning.errors import RequestError
    from quant_llm_node.reasoning.forced import forced_decision
    from quant_llm_node.reasoning.validation import validate_request
    if not resp.success or case.get("goal"):
        return False
    try:
        request = validate_request(raw_request(case), serving)
    except RequestError:
        return False
    return forced_decision(task.safety, request) is not None


def _summaries(split: str, cases: list[dict], responses: list[NavResponse], variant_base: Variant,
               task_for, safety_names: list[str], live_name: str, extra: dict,
               serving, held_out: bool = False,
               margins: tuple[float, float] = (0.0, float("-inf"))) -> list[EvalSummary]:
    """One summary per safety variant from one model run (``live_name`` is the live variant;
    ``margins``: the screen's flag and clear margins the stored scores are judged at)."""
    out = []
    for name in safety_names:
        task = task_for(name)
        summary = EvalSummary(variant=dataclasses.asdict(dataclasses.replace(
            variant_base, safety=SAFETY_VARIANTS[name][0], rules=name if name not in ("on", "off") else "")),
            split=split, extra=dict(extra))
        mismatch = []
        for case, resp in zip(cases, responses):
            screen = screen_for(name, resp, margins)
            r = redecide(task, case, resp, serving, screen)
            res = score_case(case, r)
            res.screen_score = resp.screen.score if resp.screen is not None else None
            res.rule_forced = _forced(task, case, r, serving)
            if name == live_name and resp.success and (
                    r.decision.action, r.decision.target_place_id) != (resp.decision.action, resp.decision.target_place_id):
                mismatch.append(case.get("id"))
            summary.cases.append(res)
        if mismatch:
            shown = f"{len(mismatch)} case(s)" if held_out else str(mismatch)
            print(f"WARNING: re-decided != live decision for {shown}", file=sys.stderr)
        out.append(summary)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="quant-llm-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", action="append", default=[], metavar="NAME=PATH",
                   help="a scenarios file as a named split (repeatable)")
    p.add_argument("--scenarios", default=None,
                   help=f"one scenarios file (split 'public'; default {DEFAULT_SCENARIOS})")
    p.add_argument("--config", default=str(config_dir() / "robot.yaml"))
    p.add_argument("--models", nargs="+", default=None, help="manifest names or .gguf paths")
    p.add_argument("--grammar", choices=CHOICES, default="on")
    p.add_argument("--safety", nargs="+", default=["on"],
                   help="safety variants: " + ", ".join(SAFETY_VARIANTS) + " ('both' = on off)")
    p.add_argument("--prompt", nargs="+", default=[""],
                   help="prompt lever sets, e.g. none examples summary,spotlight all "
                        "(default: the configured prompt)")
    p.add_argument("--categories", nargs="+", default=None, help="only these categories")
    p.add_argument("--ids", nargs="+", default=None, help="only these scenario ids")
    p.add_argument("--sample", type=int, default=0, help="at most N scenarios per split (evenly spread)")
    p.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0 = config)")
    p.add_argument("--screen-margin", type=float, default=None,
                   help="hazard screen margin the verdicts are judged at (default: the config's)")
    p.add_argument("--screen-clear-margin", type=float, default=None,
                   help="the screen's clear margin (default: the config's)")
    p.add_argument("--no-screen", action="store_true",
                   help="run without the hazard screen (no screen model loaded)")
    p.add_argument("--deadline-ms", type=int, default=300000,
                   help="per-query deadline: far by default, so decisions are the model's own")
    p.add_argument("--rescore", default=None, metavar="EVAL_JSON",
                   help="no model: re-decide the stored raw outputs of an eval.json under --safety")
    p.add_argument("--held-out", nargs="+", default=["test"], metavar="SPLIT",
                   help="held-out splits (default: test): aggregates only, no per-case output "
                        "on the console or in eval.json")
    p.add_argument("--out", default="results/eval", help="folder for eval.json, eval.md, eval.png")
    args = p.parse_args(argv)

    safety_names = [n for s in args.safety for n in (["on", "off"] if s == "both" else [s])]
    for n in safety_names:
        if n not in SAFETY_VARIANTS:
            p.error(f"unknown safety variant {n!r} (choose from {', '.join(SAFETY_VARIANTS)})")
    base = load_config(args.config)
    if args.threads:
        base.engine.n_threads = args.threads
    if args.screen_margin is not None:
        base.screen.margin = args.screen_margin
    if args.screen_clear_margin is not None:
        base.screen.clear_margin = args.screen_clear_margin
    if args.no_screen:
        base.screen.enabled = False
    base.serving.default_deadline_ms = args.deadline_ms
    splits = [parse_split(s) for s in args.split]
    if not splits:
        root = repo_root()
        splits = [("public", Path(args.scenarios) if args.scenarios else
                   (root / DEFAULT_SCENARIOS if root else Path(DEFAULT_SCENARIOS)))]
    data = {name: select(load_scenarios(path)["scenarios"], args.categories, args.ids, args.sample)
            for name, path in splits}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = _meta(args)

    def write(rows: list[dict]) -> None:  # after every model run, so a long run keeps its results
        try:
            meta["loadavg_end"] = os.getloadavg()
        except OSError:
            pass
        (out / "eval.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))

    if args.rescore:
        rows = rescore(Path(args.rescore), data, base, safety_names)
    else:
        rows = run_models(args, base, data, safety_names, write)
    write(rows)
    table = markdown(rows)
    (out / "eval.md").write_text(table)
    png = plot(rows, out / "eval.png")
    print(table)
    print(f"wrote {out / 'eval.json'}, {out / 'eval.md'}" + (f", {out / 'eval.png'}" if png else ""))
    return 0


def run_models(args, base: Config, data: dict[str, list[dict]], safety_names: list[str],
               write=lambda rows: None) -> list[dict]:
    from quant_llm_node.reasoning.task import DecisionTask
    rows: list[dict] = []
    models = args.models or [base.model.name]
    live_name = "on" if "on" in safety_names else safety_names[0]
    for model, grammar in itertools.product(models, CHOICES[args.grammar]):
        cfg = Variant(model, grammar, True).apply(base)
        cfg.safety = safety_variant(cfg.safety, live_name)
        # the model answers every request, also those the rules would answer alone (the rules-off
        # variants need its text); rule_forced per case says which the node answers at once
        cfg.serving.rule_forced = False
        t0 = time.monotonic()
        service, assembly, ask = core_asker(cfg)
        configure_s = time.monotonic() - t0
        try:
            for prompt in args.prompt:
                options = PromptOptions.parse(prompt) if prompt else None
                task = DecisionTask.from_config(assembly.cfg, assembly.task.places, prompt_options=options)
                prompts = task.prompts(assembly.engine.chat_renderer())
                warm_ms = assembly.engine.warm(prompts.static_prefix)
                service.holder.replace_pipeline(dataclasses.replace(service.pipeline, task=task, prompts=prompts))
                extra = {"configure_s": round(configure_s, 1),
                         "prefix_tokens": assembly.engine.count_tokens(prompts.static_prefix),
                         # cold: the configured prompt's prefix from an empty cache (configure);
                         # warm: this prompt's after the previous one (shared text is reused)
                         "configured_prefix_cold_ms": round(assembly.prefix_cold_ms, 1),
                         "prefix_warm_ms": round(warm_ms, 1), "prompt_options": prompts.options.label}

                def task_for(name: str, _o=options, _c=assembly.cfg) -> DecisionTask:
                    c = dataclasses.replace(_c, safety=safety_variant(_c.safety, name))
                    return DecisionTask.from_config(c, assembly.task.places, prompt_options=_o)

                for split, cases in data.items():
                    variant = Variant(model, grammar, True, prompt=prompt)
                    print(f"== {split}: {variant.label} ({len(cases)} scenarios; configured in "
                          f"{configure_s:.1f} s; static prefix {extra['prefix_tokens']} tokens, "
                          f"warmed in {warm_ms:.0f} ms)")
                    keep: list[NavResponse] = []
                    held_out = split in args.held_out
                    evaluate(ask, cases, variant, keep=keep, held_out=held_out)
                    for summary in _summaries(split, cases, keep, variant, task_for, safety_names,
                                              live_name, extra, assembly.cfg.serving, held_out,
                                              (assembly.cfg.screen.margin, assembly.cfg.screen.clear_margin)):
                        rows.append(summary.row(with_cases=not held_out))
                        s = summary.scores()
                        print(f"   {summary.variant.get('rules') or ('on' if summary.variant['safety'] else 'off'):>12s}: "
                              f"acceptable {_pct(s['acceptable_rate'])}, forbidden {s['forbidden']}, "
                              f"over-caution {_pct(s['over_caution_rate'])}, "
                              f"grounding {_pct(s['grounding_top1'])}, p50 {_ms(s['latency_p50_ms'])} ms")
                    write(rows)
        finally:
            service.stop()
            assembly.close()
    return rows


def rescore(path: Path, data: dict[str, list[dict]], base: Config, safety_names: list[str]) -> list[dict]:
    """Re-decide the raw outputs stored in an eval.json (its 'on' or first row per model run)."""
    from quant_llm_node.grounding.index import GroundingResult, GroundingStatus
    from quant_llm_node.reasoning.screen import ScreenVerdict
    from quant_llm_node.reasoning.task import DecisionTask, load_map
    from quant_llm_node.reasoning.types import Decision, Latency
    doc = json.loads(path.read_text())
    stored = doc["rows"] if isinstance(doc, dict) else doc
    places = load_map(base.grounding.places_file)
    seen, rows = set(), []
    for row in stored:
        v = row["variant"]
        key = (row.get("split", ""), v["model"], v["grammar"], v.get("prompt", ""))
        if key in seen or row.get("split", "") not in data:
            continue
        if "cases" not in row:  # a held-out split keeps aggregates only
            continue
        seen.add(key)
        by_id = {c["id"]: c for c in row["cases"]}
        cases = [c for c in data[row["split"]] if c.get("id") in by_id]
        responses = []
        for case in cases:
            c = by_id[case["id"]]
            grounding = GroundingResult(GroundingStatus.OK, c["grounded"], method="stored") if c["grounded"] else None
            responses.append(NavResponse(
                request_id=case["id"], success=not c["rejected"], error_code=c["error_code"],
                decision=Decision(c["action"], 0.0, c["target"], "", c["source"], list(c["rules_fired"])),
                raw_text=c["raw_text"], grounding=grounding,
                latency=Latency(total_ms=c["total_ms"], first_token_ms=c.get("first_token_ms", 0.0),
                                decode_ms=c.get("decode_ms", 0.0), prompt_ms=c.get("prompt_ms", 0.0)),
                completion_tokens=c.get("completion_tokens", 0),
                screen=None if c.get("screen_score") is None else ScreenVerdict(
                    float(c["screen_score"]), False, c.get("screen_ms", 0.0))))
        options = PromptOptions.parse(v["prompt"]) if v.get("prompt") else None

        def task_for(name: str, _o=options) -> DecisionTask:
            cfg = dataclasses.replace(base, safety=safety_variant(base.safety, name))
            return DecisionTask.from_config(cfg, places, prompt_options=_o)

        variant = Variant(v["model"], v["grammar"], True, prompt=v.get("prompt", ""))
        for summary in _summaries(row["split"], cases, responses, variant, task_for, safety_names,
                                  "", row.get("extra", {}), base.serving,
                                  margins=(base.screen.margin, base.screen.clear_margin)):
            rows.append(summary.row())
    return rows


if __name__ == "__main__":
    sys.exit(main())
