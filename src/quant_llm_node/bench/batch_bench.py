"""`quant-llm-bench batch`: the decision path's speed, each figure against a baseline of the same run.

1. Planners: 1 / 4 / 8 concurrent planners (closed loop, threads calling the ROS-free
   NavigationService, every request reaching the model) with batching off (engine.n_parallel 1:
   one request at a time) and on (n_parallel = the largest planner count), beside llama.cpp's
   own ``llama-server -np N`` (continuous batching, one unified KV buffer with each slot's
   context as long as the node's, prompt cache) serving the same prompts with the same grammar. Throughput, latency p50/p95, lost requests, and how many
   decisions are byte-identical to batching off.
2. Jump-forward at 1 planner: engine.generate with jump_forward off (step by step: the
   reference), exact (the default: the grammar's forced end is not evaluated) and on (forced
   spans batched): latency p50, decode steps, identical outputs.
3. Grammar vs free: decode time per decision with the grammar (exact) and without it.
4. Decode tok/s on the decision path (off, at the decisions' KV depth) against native
   ``llama-bench`` at the same depth.

Prompts are the node's own (DecisionTask) for the dev corpus; the frozen test split is not read.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from quant_llm_node.bench.host import cpu_model, loadavg
from quant_llm_node.serving.metrics import percentiles

PLANNERS = (1, 4, 8)
PER_PLANNER = 3
DEADLINE_MS = 600_000      # every request must reach the model
SERVER_PORT = 18431
SERVER_START_S = 300
DEFAULT_CASES = "bench/data/corpus/dev.yaml"
CTX_PER_SEQ = 320          # KV cells a decision needs beyond the shared prefix (suffix + bound)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quant-llm-bench batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="manifest name or .gguf (default: config/robot.yaml)")
    p.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0 = all cores)")
    p.add_argument("--planners", type=int, nargs="+", default=list(PLANNERS))
    p.add_argument("--per-planner", type=int, default=PER_PLANNER, help="requests per planner")
    p.add_argument("--cases", type=Path, default=None, help=f"scenario YAML ({DEFAULT_CASES})")
    p.add_argument("--drafts-rounds", type=int, default=4,
                   help="batching on, most planners: rounds with forced spans riding in shared steps "
                        "and without, interleaved (0 = skipped)")
    p.add_argument("--jf-requests", type=int, default=12, help="decisions per jump-forward mode")
    p.add_argument("--llama-server", type=Path, default=None,
                   help="llama-server binary (scripts/native_baseline.sh --build-only); none = skipped")
    p.add_argument("--llama-bench", type=Path, default=None, help="llama-bench binary; none = skipped")
    p.add_argument("--skip", nargs="+", default=[], choices=("planners", "server", "jump", "native"))
    p.add_argument("--screen", action="store_true",
                   help="keep the hazard screen of config/robot.yaml on in the node rows (default: "
                        "off, so that the node and llama-server serve the same decision path; the "
                        "screen's own cost per request is quant-llm-eval's screen_ms)")
    p.add_argument("--out", type=Path, default=Path("docs/results"))
    return p


# ---- inputs -----------------------------------------------------------------------------------
def _cases(path: Path | None) -> list[dict]:
    import yaml
    from quant_llm_node.paths import repo_root
    p = path or (repo_root() or Path.cwd()) / DEFAULT_CASES
    data = yaml.safe_load(Path(p).read_text())
    cases = data["scenarios"] if isinstance(data, dict) else data
    # the model answers each of these (no expected rejection)
    return [c for c in cases if not c.get("expect_error")]


def _config(model: str, threads: int, n_parallel: int, planners: int, screen: bool = False):
    from quant_llm_node.config import load_config
    from quant_llm_node.paths import config_dir
    cfg = load_config(config_dir() / "robot.yaml")
    if model:
        cfg.model.name = model
    cfg.engine.n_threads = threads
    cfg.engine.n_parallel = n_parallel
    cfg.engine.n_ctx = max(cfg.engine.n_ctx, 2048 + CTX_PER_SEQ * max(planners, n_parallel))
    cfg.serving.rule_forced = False           # every request reaches the model
    cfg.screen.enabled = screen               # the decision path alone, unless asked
    cfg.serving.queue_size = max(cfg.serving.queue_size, 4 * max(planners, 1))
    return cfg


# ---- 1. planners ------------------------------------------------------------------------------
def _closed_loop(ask, raws: list[dict], planners: int, per_planner: int) -> dict[str, Any]:
    """``planners`` threads, each sending ``per_planner`` requests back to back."""
    lat: list[float] = []
    out: dict[str, Any] = {}
    lock = threading.Lock()

    def planner(k: int) -> None:
        for j in range(per_planner):
            raw = dict(raws[(k * per_planner + j) % len(raws)])
            t0 = time.perf_counter()
            resp = ask(raw)
            with lock:
                lat.append((time.perf_counter() - t0) * 1e3)
                out[f"{raw['request_id']}#{k}.{j}"] = resp
    t0 = time.perf_counter()
    with ThreadPoolExecutor(planners) as pool:
        list(pool.map(planner, range(planners)))
    wall = time.perf_counter() - t0
    sent = planners * per_planner
    pct = percentiles(lat, (50, 95))
    return {"planners": planners, "sent": sent, "answered": len(out), "lost": sent - len(out),
            "wall_s": wall, "req_per_s": len(out) / wall, "p50_ms": pct["p50"], "p95_ms": pct["p95"],
            "loadavg": loadavg(), "_out": out}


def node_planners(a, cases, n_parallel: int) -> list[dict]:
    """The service (ROS-free node core) at each planner count, with ``n_parallel`` slots."""
    from quant_llm_node.bench.scenarios import raw_request
    from quant_llm_node.serving.assembly import assemble
    from quant_llm_node.serving.service import NavigationService
    from quant_llm_node.serving.model_holder import ModelHolder
    cfg = _config(a.model, a.threads, n_parallel, max(a.planners), a.screen)
    assembly = assemble(cfg, grounding=True)
    service = NavigationService(ModelHolder.of(assembly))
    service.start()
    raws = [dict(raw_request(c), deadline_ms=DEADLINE_MS) for c in cases]
    rows = []
    try:
        service.ask(dict(raws[-1], request_id="warm"), 600)
        for n in a.planners:
            r = _closed_loop(lambda raw: service.ask(raw, 900), raws, n, a.per_planner)
            answers = r.pop("_out")
            r["texts"] = {k: v.raw_text for k, v in answers.items()}
            r["errors"] = sum(1 for v in answers.values() if v.error_code)
            r["decode_tps_p50"] = percentiles([v.decode_tps for v in answers.values() if v.decode_tps], (50,))["p50"]
            r["n_parallel"] = n_parallel
            rows.append(r)
        if n_parallel > 1 and a.drafts_rounds > 0:
            rows[-1]["drafts_ab"] = _drafts_ab(service, assembly.generator.decoder, raws,
                                               max(a.planners), a.per_planner, a.drafts_rounds)
    finally:
        service.stop()
        assembly.close()
    return rows


def _drafts_ab(service, decoder, raws: list[dict], planners: int, per_planner: int,
               rounds: int) -> dict[str, Any]:
    """Throughput with the sequences' forced spans riding in shared steps (the default) and
    without (each sequence one row a step), in alternating rounds on the same prompts."""
    full = decoder.shared_drafts
    out: dict[str, list[float]] = {"drafts": [], "no_drafts": []}
    lost = 0
    try:
        for k in range(rounds):
            order = ("drafts", "no_drafts") if k % 2 == 0 else ("no_drafts", "drafts")
            shift = (k * planners * per_planner) % len(raws)
            batch = raws[shift:] + raws[:shift]
            for mode in order:
                decoder.shared_drafts = full if mode == "drafts" else 0
                r = _closed_loop(lambda raw: service.ask(raw, 900), batch, planners, per_planner)
                lost += r["lost"]
                out[mode].append(r["req_per_s"])
    finally:
        decoder.shared_drafts = full
    mean = {m: sum(v) / len(v) for m, v in out.items()}
    return {"planners": planners, "rounds": rounds, "req_per_s": out, "mean": mean, "lost": lost,
            "ratio": mean["drafts"] / mean["no_drafts"]}


def server_planners(a, cases, model_path: str, threads: int) -> list[dict]:
    """llama-server -np N (continuous batching) on the same prompts, one server per N."""
    import httpx
    from quant_llm_node.bench.scenarios import raw_request
    from quant_llm_node.bench.serve.engine import build_prompts, load_engine
    cfg = _config(a.model, threads, 1, max(a.planners))
    eng = load_engine(cfg, model_path, threads)
    try:
        prompts = build_prompts(eng, cfg, cases)
    finally:
        eng.close()
    from quant_llm_node.reasoning.task import DecisionTask
    task = DecisionTask.from_config(cfg)
    by_id = dict(prompts.items)
    raws = [dict(raw_request(c), deadline_ms=DEADLINE_MS) for c in cases]
    rows = []
    env = dict(os.environ, LD_LIBRARY_PATH=str(a.llama_server.parent))
    for n in a.planners:
        # a unified KV buffer for the slots, each slot's context as long as the node's
        n_ctx = cfg.engine.n_ctx * n
        cmd = [str(a.llama_server), "-m", model_path, "-t", str(threads), "-tb", str(threads),
               "-np", str(n), "-c", str(n_ctx), "--kv-unified", "-cb", "-b", "512", "-ub", "512",
               "--host", "127.0.0.1", "--port", str(SERVER_PORT), "--no-webui", "-fa", "off"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{SERVER_PORT}"
        try:
            _wait_server(base, proc)
            client = httpx.Client(base_url=base, timeout=900)

            def ask(raw: dict) -> Any:
                body = {"prompt": by_id[raw["request_id"]], "n_predict": task.max_tokens,
                        "grammar": task.grammar, "temperature": 0.0, "cache_prompt": True,
                        "samplers": ["top_k"], "top_k": 1}
                r = client.post("/completion", json=body)
                if r.status_code != 200:
                    return {"content": "", "error": f"HTTP {r.status_code}: {r.text[:200]}"}
                return r.json()
            ask({"request_id": raws[-1]["request_id"]})  # the prefix into the server's cache
            r = _closed_loop(ask, raws, n, a.per_planner)
            answers = r.pop("_out")
            r["texts"] = {k: v.get("content", "") for k, v in answers.items()}
            r["errors"] = sum(1 for v in answers.values() if v.get("error"))
            r["error_samples"] = [v["error"] for v in answers.values() if v.get("error")][:3]
            r["decode_tps_p50"] = percentiles([v["timings"]["predicted_per_second"] for v in answers.values()
                                               if v.get("timings")], (50,))["p50"]
            r["np"] = n
            rows.append(r)
            client.close()
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return rows


def _wait_server(base: str, proc: subprocess.Popen) -> None:
    import httpx
    end = time.monotonic() + SERVER_START_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with {proc.returncode}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("llama-server did not become healthy")


# ---- 2-4. one planner: jump-forward, grammar vs free, native ----------------------------------
def one_planner(a, cases, model_path: str, threads: int) -> dict[str, Any]:
    from quant_llm_node.bench.serve.engine import build_prompts, load_engine
    from quant_llm_node.reasoning.task import DecisionTask
    cfg = _config(a.model, threads, 1, 1)
    task = DecisionTask.from_config(cfg)
    eng = load_engine(cfg, model_path, threads)
    try:
        prompts = build_prompts(eng, cfg, cases)
        items = prompts.items[:a.jf_requests]
        eng.warm(prompts.static_prefix)
        runs: dict[str, list] = {"off": [], "exact": [], "on": [], "free": []}
        for _, p in items:  # interleaved, so that the modes share the host's noise
            for mode in ("off", "exact", "on"):
                eng.warm(prompts.static_prefix)
                runs[mode].append(eng.generate(p, task.max_tokens, task.grammar, min_room=task.min_room,
                                               jump_forward=mode))
            eng.warm(prompts.static_prefix)
            runs["free"].append(eng.generate(p, task.max_tokens, None, jump_forward="off",
                                             should_stop=_json_done))
        depth = int(sum(r.prompt_tokens for r in runs["off"]) / len(runs["off"]))
    finally:
        eng.close()
    out: dict[str, Any] = {"depth": depth, "modes": {}}
    for mode, rs in runs.items():
        total = percentiles([r.total_ms for r in rs], (50, 95))
        out["modes"][mode] = {
            "p50_ms": total["p50"], "p95_ms": total["p95"],
            "decode_ms_p50": percentiles([r.decode_ms for r in rs], (50,))["p50"],
            "tokens_p50": percentiles([r.completion_tokens for r in rs], (50,))["p50"],
            "decode_steps": sum(r.decode_steps for r in rs), "tokens": sum(r.completion_tokens for r in rs),
            "decode_calls": sum(r.decode_calls for r in rs),
            "identical_to_off": sum(r.text == o.text for r, o in zip(rs, runs["off"])),
            "n": len(rs),
            "decode_tps_p50": percentiles([r.decode_tps for r in rs if r.decode_tps], (50,))["p50"]}
    return out


def _json_done(text: str) -> bool:
    from quant_llm_node.reasoning.schema import json_object_complete
    return json_object_complete(text)


def native_decode(a, model_path: str, threads: int, depth: int) -> dict[str, Any] | None:
    if a.llama_bench is None:
        return None
    env = dict(os.environ, LD_LIBRARY_PATH=str(a.llama_bench.parent))
    cmd = [str(a.llama_bench), "-m", model_path, "-t", str(threads), "-p", "0", "-n", "32", "-r", "3",
           "-d", str(depth), "-b", "512", "-ub", "512", "-fa", "0", "-o", "json"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        return {"error": r.stderr[-400:]}
    row = json.loads(r.stdout)[0]
    return {"tg_tps": row["avg_ts"], "stddev": row.get("stddev_ts"), "depth": depth, "loadavg": loadavg()}


# ---- report -----------------------------------------------------------------------------------
def _identical(rows: list[dict], ref: list[dict]) -> None:
    for r, base in zip(rows, ref):
        same = [r["texts"].get(k) == v for k, v in base["texts"].items() if k in r["texts"]]
        r["identical_to_off"] = f"{sum(same)}/{len(same)}"


def markdown(res: dict) -> str:
    m = res["meta"]
    lines = [f"# Decision-path speed — {m['model']}", "",
             f"{m['time']} · {m['cpu']} · {m['threads']} threads · load average {m['loadavg_start']} → "
             f"{m['loadavg_end']} · {m['duration_s']:.0f} s", ""]
    if res.get("planners"):
        lines += ["## Concurrent planners (closed loop; same prompts, same grammar)", "",
                  "| path | planners | sent | lost | errors | req/s | vs batching off | p50 ms | p95 ms | decode tok/s p50 (per request) | identical to off | load |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        off = {r["planners"]: r for r in res["planners"].get("off", [])}
        for name, rows in res["planners"].items():
            for r in rows:
                base = off.get(r["planners"])
                ratio = r["req_per_s"] / base["req_per_s"] if base else float("nan")
                label = {"off": "node, batching off (n_parallel 1)",
                         "on": f"node, batching on (n_parallel {r.get('n_parallel', '')})",
                         "server": f"llama-server -np {r.get('np', '')}"}[name]
                lines.append(f"| {label} | {r['planners']} | {r['sent']} | {r['lost']} | {r.get('errors', 0)} | {r['req_per_s']:.3f} | "
                             f"{ratio:.2f}× | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r.get('decode_tps_p50', float('nan')):.1f} | "
                             f"{r.get('identical_to_off', '')} | "
                             f"{r['loadavg'][0]:.1f} |")
        lines.append("")
        ab = next((r["drafts_ab"] for r in res["planners"].get("on", []) if r.get("drafts_ab")), None)
        if ab:
            lines += [f"Forced spans in shared steps, {ab['planners']} planners, {ab['rounds']} alternating "
                      f"rounds: {ab['mean']['drafts']:.3f} req/s with them, {ab['mean']['no_drafts']:.3f} "
                      f"without ({ab['ratio']:.2f}×; rounds "
                      + ", ".join(f"{x:.3f}" for x in ab["req_per_s"]["drafts"]) + " / "
                      + ", ".join(f"{x:.3f}" for x in ab["req_per_s"]["no_drafts"])
                      + f"; {ab['lost']} lost).", ""]
    if res.get("one_planner"):
        o = res["one_planner"]["modes"]
        off = o["off"]
        lines += ["## One planner: jump-forward and the grammar (engine.generate, interleaved)", "",
                  "| mode | p50 ms | vs off | p95 ms | decode ms p50 | tokens p50 | tokens (all) | llama_decode calls (all) | identical to off |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for mode, r in o.items():
            lines.append(f"| {mode} | {r['p50_ms']:.0f} | {r['p50_ms'] / off['p50_ms']:.2f}× | {r['p95_ms']:.0f} | "
                         f"{r['decode_ms_p50']:.0f} | {r['tokens_p50']:.0f} | {r['tokens']} | {r['decode_calls']} | "
                         f"{r['identical_to_off']}/{r['n']} |")
        g = o["exact"]["decode_ms_p50"]
        lines += ["", f"Grammar (exact) vs free decoding, decode time per decision: free / grammar = "
                      f"{o['free']['decode_ms_p50'] / g:.2f}× (free decisions stop at the end of the JSON object).", ""]
    nat = res.get("native")
    if nat and "tg_tps" in nat and res.get("one_planner"):
        tps = res["one_planner"]["modes"]["off"]["decode_tps_p50"]
        lines += ["## Decode rate at the decisions' KV depth", "",
                  "| path | tok/s | vs native |", "|---|---|---|",
                  f"| engine.generate, grammar, step by step | {tps:.1f} | {tps / nat['tg_tps']:.2f}× |",
                  f"| llama-bench tg32 at depth {nat['depth']} | {nat['tg_tps']:.1f} | 1.00× |", ""]
    return "\n".join(lines)


def run(a) -> dict:
    from quant_llm_node.config import load_config
    from quant_llm_node.models.registry import resolve_model_path
    from quant_llm_node.paths import config_dir
    cfg = load_config(config_dir() / "robot.yaml")
    model = a.model or cfg.model.name
    model_path = str(resolve_model_path(model)[0])
    threads = a.threads or os.cpu_count() or 1
    a.threads = threads
    cases = _cases(a.cases)
    t0 = time.monotonic()
    res: dict[str, Any] = {"meta": {"model": model, "threads": threads, "cpu": cpu_model(),
                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "loadavg_start": loadavg(),
                                    "planners": a.planners, "per_planner": a.per_planner}}
    if "planners" not in a.skip:
        res["planners"] = {"off": node_planners(a, cases, 1), "on": node_planners(a, cases, max(a.planners))}
        if a.llama_server is not None and "server" not in a.skip:
            try:
                res["planners"]["server"] = server_planners(a, cases, model_path, threads)
            except Exception as exc:  # noqa: BLE001 — the node's figures still get reported
                res["server_error"] = repr(exc)
        for name, rows in res["planners"].items():
            if name != "off":
                _identical(rows, res["planners"]["off"])
    if "jump" not in a.skip:
        res["one_planner"] = one_planner(a, cases, model_path, threads)
        if "native" not in a.skip:
            res["native"] = native_decode(a, model_path, threads, res["one_planner"]["depth"])
    res["meta"].update(duration_s=time.monotonic() - t0, loadavg_end=loadavg())
    return res


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    res = run(a)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "batch.json").write_text(json.dumps(res, indent=1, default=str))
    md = markdown(res)
    (a.out / "batch.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
