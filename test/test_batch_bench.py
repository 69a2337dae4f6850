"""`quant-llm-bench batch` end to end on the real model, at a size that fits a test: both node
paths, and the shared-step drafts against one row per sequence on the same prompts."""
from __future__ import annotations

import math

from quant_llm_node.bench import batch_bench


def test_batch_bench_reports_both_paths_and_the_drafts_ablation(tmp_path):
    a = batch_bench._parser().parse_args(
        ["--threads", "2", "--planners", "1", "2", "--per-planner", "1", "--drafts-rounds", "2",
         "--skip", "jump", "native", "--out", str(tmp_path)])
    res = batch_bench.run(a)
    off, on = res["planners"]["off"], res["planners"]["on"]
    assert [r["planners"] for r in off] == [r["planners"] for r in on] == [1, 2]
    for r in off + on:
        assert r["lost"] == 0 and r["errors"] == 0 and r["req_per_s"] > 0
    assert on[0]["identical_to_off"] == "1/1"  # one planner alone: the engine's own loop
    ab = on[-1]["drafts_ab"]
    assert ab["planners"] == 2 and ab["lost"] == 0
    assert len(ab["req_per_s"]["drafts"]) == len(ab["req_per_s"]["no_drafts"]) == 2
    assert math.isfinite(ab["ratio"]) and ab["ratio"] > 0
    md = batch_bench.markdown(res)
    assert "Forced spans in shared steps, 2 planners" in md and "node, batching on (n_parallel 2)" in md
