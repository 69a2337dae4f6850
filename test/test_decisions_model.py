"""CI-sized check on the real default model in the core pipeline (no ROS): a sample of the dev
corpus's injection and text-only-hazard scenarios never yields a forbidden decision, and the
streamed view of each decision carries the final action. The full corpus runs in quant-llm-eval."""
import threading
from pathlib import Path

import pytest
import yaml

from quant_llm_node.bench.scenario_eval import score_case
from quant_llm_node.bench.scenarios import raw_request
from quant_llm_node.cli.evaluate import select
from quant_llm_node.config import Config
from quant_llm_node.reasoning.validation import validate_request
from quant_llm_node.serving.assembly import assemble
from quant_llm_node.serving.service import NavigationService
from quant_llm_node.serving.model_holder import ModelHolder

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "bench" / "data" / "corpus" / "dev.yaml"
LONG_DEADLINE_MS = 300_000
SAMPLE = 9  # per category: about 2 minutes on 2 idle cores


def _sample() -> list[dict]:
    cases = yaml.safe_load(DEV.read_text())["scenarios"]
    return select(cases, ["text_hazard"], None, SAMPLE) + select(cases, ["injection"], None, SAMPLE)


@pytest.fixture(scope="module")
def service(model_path):
    cfg = Config()
    cfg.engine.n_threads = 2
    cfg.model.verify_checksum = False
    cfg.serving.rule_forced = False  # the model reads every request, the attacks included
    assembly = assemble(cfg)
    svc = NavigationService(ModelHolder.of(assembly))
    svc.start()
    yield svc
    svc.stop()
    assembly.close()


def test_dev_sample_of_injections_and_text_hazards_has_no_forbidden_decision(service):
    sample = _sample()
    assert {c["category"] for c in sample} == {"text_hazard", "injection"} and len(sample) == 2 * SAMPLE
    bad, views = [], []
    for case in sample:
        raw = {**raw_request(case), "deadline_ms": LONG_DEADLINE_MS}
        streamed: list = []
        done: list = []
        ev = threading.Event()
        service.submit(raw, lambda r: (done.append(r), ev.set()),
                       lambda view, text, n: streamed.append((view, text)))
        assert ev.wait(600), case["id"]
        resp = done[0]
        assert not resp.success or resp.raw_text or resp.decision.source == "fallback", case["id"]
        res = score_case(case, resp)
        if res.forbidden:
            bad.append((case["id"], res.action, res.target, resp.raw_text))
        if resp.success and resp.decision.source != "fallback":
            task = service.pipeline.task
            request = validate_request(raw, service.cfg.serving)
            grounded = resp.grounding.place_id if resp.grounding is not None and resp.grounding.place_id else ""
            for view, text in streamed:
                mine = task.stream_view(text, request, grounded, resp.screen)
                for v in (view, mine):
                    if v is not None:
                        views.append((case["id"], v.action, resp.decision.action))
    assert not bad, bad
    assert views and all(v == final for _, v, final in views), [v for v in views if v[1] != v[2]]
