"""The model swapper's phases through the model holder (the real load path is exercised over ROS
in test_ros_operations and test_ros_safety_envelope; here loads are scripted to fail in every
way a load can)."""
from __future__ import annotations

import copy

import pytest

from quant_llm_node.config import Config
from quant_llm_node.reasoning.task import DecisionTask
from quant_llm_node.serving.assembly import ConfigureError
from quant_llm_node.serving.model_holder import ModelHolder
from quant_llm_node.serving.model_swap import MEMORY_BUDGET_EXCEEDED, ModelSwapper, SwapPhase
from quant_llm_node.serving.pipeline import Pipeline


class Loaded:
    """What a load hands back (this test is about the swapper, not about loading)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.task = DecisionTask.from_config(cfg)
        self.model_id = f"{cfg.model.name}:Q4"
        self.memory_bytes = 1
        self.closed = False
        self.borrowed: set = set()

    def pipeline(self) -> Pipeline:
        return Pipeline(task=self.task, prompts=self.task.prompts(), model_id=self.model_id)

    def hand_over(self, successor) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def target(name: str) -> Config:
    cfg = Config()
    cfg.model.name = name
    return cfg


def swapper_with(load) -> tuple[ModelHolder, ModelSwapper, Loaded]:
    first = Loaded(target("first"))
    holder = ModelHolder.of(first)
    return holder, ModelSwapper(holder, load=load), first


@pytest.mark.timeout(60)
def test_a_swap_lands_and_frees_the_old_model():
    holder, swapper, first = swapper_with(lambda cfg, **kw: Loaded(cfg))
    assert swapper.start(target("second"))
    swapper.join(10)
    assert swapper.status.phase is SwapPhase.DONE and holder.pipeline.model_id == "second:Q4"
    assert first.closed


@pytest.mark.timeout(60)
@pytest.mark.parametrize("error", [RecursionError("deep"), ZeroDivisionError("alignment"),
                                   MemoryError(), ValueError("bad"), KeyError("x")])
def test_an_unexpected_failure_leaves_the_old_model_serving_and_says_why(error):
    def load(cfg, **kw):
        raise error
    holder, swapper, first = swapper_with(load)
    assert swapper.start(target("second"))
    swapper.join(10)
    assert not swapper.busy, "the swap thread is stuck"
    assert swapper.status.phase is SwapPhase.FAILED and type(error).__name__ in swapper.status.error
    assert holder.pipeline.model_id == "first:Q4" and not first.closed


@pytest.mark.timeout(60)
def test_a_coded_failure_keeps_its_code():
    def load(cfg, **kw):
        raise ConfigureError("MODEL_CHECKSUM_MISMATCH", "sha256 differs")
    holder, swapper, _ = swapper_with(load)
    swapper.start(target("second"))
    swapper.join(10)
    assert swapper.status.error.startswith("MODEL_CHECKSUM_MISMATCH")


@pytest.mark.timeout(60)
def test_when_both_do_not_fit_the_drain_answers_under_the_live_rules():
    calls: list = []

    def load(cfg, **kw):
        calls.append(kw)
        if kw.get("resident_bytes"):
            raise ConfigureError(MEMORY_BUDGET_EXCEEDED, "both do not fit")
        return Loaded(cfg)
    holder, swapper, first = swapper_with(load)
    stricter = copy.deepcopy(holder.cfg)
    stricter.safety.person_stop_distance_m = 3.5
    holder.apply_settings(stricter)
    swapper.start(target("second"))
    swapper.join(10)
    assert swapper.status.phase is SwapPhase.DONE and not swapper.status.both_loaded
    assert first.closed and holder.pipeline.model_id == "second:Q4"
    assert holder.pipeline.task.safety.cfg.person_stop_distance_m == 3.5
    assert len(calls) == 2 and not calls[1].get("resident_bytes")
