"""The fleet's decision requests: dev-corpus scenarios that reach the model.

Only the dev split is read (bench/data/corpus/dev.yaml); the frozen test split never is.
Dropped: cases that must be rejected (expect_error) and cases the safety rules answer without
the model (serving.rule_forced), so that every request is a real decision for a backend.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from quant_llm_node.bench.scenarios import load_scenarios, raw_request
from quant_llm_node.paths import repo_root

DEV_CORPUS = "bench/data/corpus/dev.yaml"
FROZEN_SPLITS = ("test.yaml", "test_fresh.yaml")  # held-out corpus splits: scored, never benchmarked


def default_corpus() -> Path:
    root = repo_root()
    if root is None:
        raise FileNotFoundError("pass --scenarios (no source checkout found)")
    return root / DEV_CORPUS


def _rule_forced(task, case: dict[str, Any], serving) -> bool:
    """True when the node would answer this case at once from its safety rules."""
    from quant_llm_node.reasoning.errors import RequestError
    from quant_llm_node.reasoning.forced import forced_decision
    from quant_llm_node.reasoning.validation import validate_request
    if case.get("goal"):
        return False
    try:
        request = validate_request(raw_request(case), serving)
    except RequestError:
        return True  # rejected before the model: not a decision either
    return forced_decision(task.safety, request) is not None


def model_cases(path: Path | None = None) -> list[dict[str, Any]]:
    """The scenarios of ``path`` (default: the dev corpus) that reach the model."""
    from quant_llm_node.config import load_config
    from quant_llm_node.paths import config_dir
    from quant_llm_node.reasoning.task import DecisionTask
    path = Path(path) if path else default_corpus()
    if path.name in FROZEN_SPLITS and path.parent.name == "corpus":
        raise ValueError("the frozen held-out splits are not for benchmarks: use the dev split")
    cfg = load_config(config_dir() / "robot.yaml")
    task = DecisionTask.from_config(cfg)
    cases = [c for c in load_scenarios(path)["scenarios"] if not c.get("expect_error")]
    return [c for c in cases if not _rule_forced(task, c, cfg.serving)]
