"""The model holder: one owner of the serving pipeline and the live settings; a pipeline put in
place later takes the settings in force when it lands (no model loaded)."""
from __future__ import annotations

import copy

from quant_llm_node.config import Config
from quant_llm_node.reasoning.task import DecisionTask
from quant_llm_node.reasoning.types import NavRequest, RobotState
from quant_llm_node.serving.model_holder import ModelHolder, carry_live
from quant_llm_node.serving.pipeline import Pipeline


class _Assembly:
    """Stands in for a loaded assembly (this test is about the holder, not about loading)."""

    def __init__(self, cfg: Config, model_id: str):
        self.cfg = cfg
        self.task = DecisionTask.from_config(cfg)
        self.model_id = model_id
        self.closed = False

    def pipeline(self) -> Pipeline:
        return Pipeline(task=self.task, prompts=self.task.prompts(), model_id=self.model_id)

    def close(self) -> None:
        self.closed = True


def stricter(cfg: Config) -> Config:
    out = copy.deepcopy(cfg)
    out.safety.person_stop_distance_m = 3.5
    return out


def test_live_settings_rebuild_the_rules_and_the_prompt_facts():
    holder = ModelHolder.of(_Assembly(Config(), "a:Q4"))
    holder.apply_settings(stricter(holder.cfg))
    cfg, p = holder.snapshot()
    assert cfg.safety.person_stop_distance_m == 3.5 and p.task.safety.cfg.person_stop_distance_m == 3.5
    req = NavRequest("r", "ok", state=RobotState(people_distances_m=[3.2]))
    assert "person within stop distance (3.5 m): yes" in p.prompts.build(req)
    assert p.prompts.static_prefix == _Assembly(Config(), "a:Q4").pipeline().prompts.static_prefix


def test_a_swap_lands_with_the_settings_in_force_not_those_it_loaded_with():
    first = _Assembly(Config(), "a:Q4")
    holder = ModelHolder.of(first)
    loaded_with = copy.deepcopy(holder.cfg)  # the swap's configuration, taken when it started
    loaded_with.model.name = "b"
    holder.apply_settings(stricter(holder.cfg))  # set while the new model loads
    second = _Assembly(loaded_with, "b:Q4")
    old = holder.install(second)
    assert old is first and holder.assembly is second
    cfg, p = holder.snapshot()
    assert p.model_id == "b:Q4" and cfg.model.name == "b"
    assert p.task.safety.cfg.person_stop_distance_m == 3.5 and cfg.safety.person_stop_distance_m == 3.5


def test_the_drain_pipeline_keeps_the_live_rules():
    first = _Assembly(Config(), "a:Q4")
    holder = ModelHolder.of(first)
    holder.apply_settings(stricter(holder.cfg))
    holder.install(None, first.pipeline().without_model())
    _, p = holder.snapshot()
    assert p.generator is None and p.task.safety.cfg.person_stop_distance_m == 3.5
    assert holder.assembly is first


def test_carry_live_takes_live_settings_only():
    live, target = Config(), Config()
    live.safety.max_speed_mps, live.engine.n_ctx = 0.5, 4096
    target.model.name = "other"
    out = carry_live(live, target)
    assert out.safety.max_speed_mps == 0.5 and out.engine.n_ctx == 2048 and out.model.name == "other"
