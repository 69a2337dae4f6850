"""Scenario files (format of test/data/scenarios.yaml) -> raw requests for the core or ROS."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from quant_llm_node.paths import repo_root

DEFAULT_SCENARIOS = "test/data/scenarios.yaml"


def load_scenarios(path: str | Path | None = None) -> dict[str, Any]:
    """Read a scenarios file (``places``, ``scenarios``, ``bad_inputs``)."""
    if path is None:
        root = repo_root()
        if root is None:
            raise FileNotFoundError("pass a scenarios file (no source checkout found)")
        path = root / DEFAULT_SCENARIOS
    return yaml.safe_load(Path(path).read_text())


def raw_request(case: dict[str, Any], request_id: str = "") -> dict[str, Any]:
    """The dict ``validate_request`` takes, from one scenario or bad-input entry."""
    query = case.get("query", "")
    if "query_repeat" in case:
        query = case["query_repeat"]["text"] * case["query_repeat"]["times"]
    state = dict(case.get("state") or {})
    state.setdefault("battery_pct", math.nan)
    state.setdefault("obstacle_distance_m", math.inf)
    return {"request_id": request_id or case.get("id", ""), "query": query,
            "goal": case.get("goal", ""), "context_json": case.get("context_json", ""),
            "priority": int(case.get("priority", 0)), "deadline_ms": int(case.get("deadline_ms", 0)),
            "state": state}
