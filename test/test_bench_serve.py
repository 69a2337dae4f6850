"""`quant-llm-bench serve` end to end with tiny counts: the node in its own process, planners
over real Fast DDS, then the engine in-process. Checks the report, not the speed."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.ros

CLIENTS, PER_CLIENT = 2, 3
SHORT_DEADLINE_MS = 1500   # short: some answers are deadline fallbacks, all must be accounted for
RUN_TIMEOUT_S = 600        # a loaded 2-core host is slow; about 1 min when idle


@pytest.fixture(scope="module")
def report(tmp_path_factory, model_path):
    out = tmp_path_factory.mktemp("serve")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    args = [sys.executable, "-m", "quant_llm_node.cli.bench", "serve", "--quick", "--model", str(model_path),
            "--threads", "2", "--clients", str(CLIENTS), "--per-client", str(PER_CLIENT),
            "--deadline-ms", str(SHORT_DEADLINE_MS), "--overhead-requests", "3",
            "--transport-requests", "5", "--ttft-samples", "1", "--decode-requests", "1", "--no-spec",
            "--forced-requests", "3",
            "--namespace", f"serve_test_{os.getpid()}", "--out", str(out)]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "serve.md").read_text().startswith("# Serving benchmark")
    return json.loads((out / "serve.json").read_text())


def _finite_non_negative(d: dict) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in d.values())


def test_overhead_numbers_are_finite_and_non_negative(report):
    o = report["overhead"]
    assert o["answered"] == 3 and o["lost"] == 0
    assert _finite_non_negative(o["overhead_ms"]), o["overhead_ms"]
    assert _finite_non_negative(o["node_total_ms"])
    t = o["transport"]
    assert t["lost"] == 0 and t["error_codes"] == {"EMPTY_QUERY": 5}
    assert _finite_non_negative(t["round_trip_ms"]), t


def test_load_reconciles(report):
    (s,) = report["load"]
    assert s["clients"] == CLIENTS and s["sent"] == CLIENTS * PER_CLIENT
    assert s["sent"] == s["answered"] + s["rejected"] and s["lost"] == 0
    assert s["reconciled"] and s["reconciliation_ok"]
    assert s["llm_decisions"] + s["fallbacks"] == s["answered"]
    assert s["fallbacks"] >= s["deadline_misses"]


def test_ttft_and_decode_report_the_cache_states(report):
    tt = report["ttft"]
    assert tt["cold"]["cached_tokens_mean"] == 0
    assert tt["cached"]["cached_tokens_mean"] >= tt["prefix_tokens"] - 1
    assert tt["evicted"]["cached_tokens_mean"] < tt["prefix_tokens"] / 2
    assert 0 < tt["cached_over_cold"] and math.isfinite(tt["cached_over_cold"])
    d = report["decode"]
    assert d["node"]["tokens_per_s"] > 0 and d["engine"]["tokens_per_s"] > 0
    assert "speculative" not in d


def test_rule_forced_requests_are_answered_without_the_model(report):
    fo = report["forced"]
    for side in ("idle", "busy"):
        s = fo[side]
        assert s["requests"] == s["answered"] == s["without_model"] == 3, (side, s)
        assert _finite_non_negative(s["node_total_ms"]) and _finite_non_negative(s["round_trip_ms"])
