"""Reasoning evaluation: run scenarios through the core and score the decisions.

Scores per configuration: valid-output rate (the model's own text parsed as a decision),
acceptable-decision rate, forbidden actions, grounding top-1, target top-1, latency p50/p95,
and decision sources.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from quant_llm_node.bench.scenarios import raw_request
from quant_llm_node.config import Config
from quant_llm_node.reasoning import errors as E
from quant_llm_node.reasoning.types import NavResponse
from quant_llm_node.serving.metrics import percentiles

ANSWER_TIMEOUT_S = 600.0


@dataclass
class Variant:
    """One evaluated configuration."""

    model: str
    grammar: bool
    safety: bool

    @property
    def label(self) -> str:
        return f"{self.model} grammar={'on' if self.grammar else 'off'} safety={'on' if self.safety else 'off'}"

    def apply(self, cfg: Config) -> Config:
        cfg = copy.deepcopy(cfg)
        cfg.model.name = self.model
        cfg.engine.use_grammar = self.grammar
        cfg.safety.enabled = self.safety
        return cfg


@dataclass
class CaseResult:
    id: str
    action: str
    target: str
    source: str
    valid_output: bool
    acceptable: bool
    forbidden: bool
    grounded: str | None
    grounding_ok: bool | None
    target_ok: bool | None
    total_ms: float
    error_code: str
    raw_text: str


@dataclass
class EvalSummary:
    variant: dict
    cases: list[CaseResult] = field(default_factory=list)
    configure_s: float = 0.0

    def scores(self) -> dict[str, Any]:
        n = len(self.cases)
        g = [c.grounding_ok for c in self.cases if c.grounding_ok is not None]
        t = [c.target_ok for c in self.cases if c.target_ok is not None]
        lat = percentiles([c.total_ms for c in self.cases], (50, 95))
        sources: dict[str, int] = {}
        for c in self.cases:
            sources[c.source or "none"] = sources.get(c.source or "none", 0) + 1
        return {
            "scenarios": n,
            "valid_output_rate": sum(c.valid_output for c in self.cases) / n if n else 0.0,
            "acceptable_rate": sum(c.acceptable for c in self.cases) / n if n else 0.0,
            "forbidden": sum(c.forbidden for c in self.cases),
            "grounding_top1": (sum(g) / len(g)) if g else None,
            "grounding_cases": len(g),
            "target_top1": (sum(t) / len(t)) if t else None,
            "latency_p50_ms": lat["p50"], "latency_p95_ms": lat["p95"],
            "sources": sources,
        }


def score_case(case: dict, resp: NavResponse) -> CaseResult:
    """Score one scenario's response against its acceptable / forbidden / expect_place."""
    d = resp.decision
    grounded = resp.grounding.get("place_id") if resp.grounding else None
    expect = case.get("expect_place")
    grounding_ok = (grounded == expect) if (expect and case.get("goal")) else None
    target_ok = (d.target_place_id == expect) if expect and d.action in ("go_to", "dock", "reroute") \
        else (False if expect and d.action in ("go_to", "dock") else None)
    return CaseResult(
        id=case["id"], action=d.action, target=d.target_place_id, source=d.source,
        valid_output=resp.success and resp.error_code != E.MODEL_OUTPUT_INVALID and bool(resp.raw_text),
        acceptable=d.action in case.get("acceptable", []),
        forbidden=d.action in case.get("forbidden", []),
        grounded=grounded, grounding_ok=grounding_ok, target_ok=target_ok,
        total_ms=resp.latency.total_ms, error_code=resp.error_code, raw_text=resp.raw_text)


def evaluate(ask: Callable[[dict], NavResponse], scenarios: list[dict], variant: Variant,
             progress: Callable[[str], None] = print) -> EvalSummary:
    """Run every scenario through ``ask`` (core service or ROS client) and score it."""
    summary = EvalSummary(variant=variant.__dict__)
    for i, case in enumerate(scenarios, 1):
        t0 = time.monotonic()
        resp = ask(raw_request(case))
        res = score_case(case, resp)
        summary.cases.append(res)
        mark = "ok " if res.acceptable and not res.forbidden else ("BAD" if res.forbidden else "-- ")
        progress(f"  [{i:2d}/{len(scenarios)}] {mark} {case['id']:24s} {res.action:9s} "
                 f"{res.target or '-':12s} {res.source:15s} {time.monotonic() - t0:6.1f} s")
    return summary


def core_asker(cfg: Config):
    """A started NavigationService for ``cfg`` and its blocking ``ask``; call stop() after."""
    from quant_llm_node.serving.components import grounder_factory
    from quant_llm_node.serving.service import NavigationService
    service = NavigationService(cfg, grounder_factory)
    service.configure()
    service.start()
    return service, (lambda raw: service.ask(raw, ANSWER_TIMEOUT_S))
