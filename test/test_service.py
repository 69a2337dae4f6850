"""The request pipeline (NavigationService._handle and intake) without a model.

A scripted generator stands in for llama.cpp: these tests are about what the service does with
the text, the grounding and the errors (the real-model paths are in test_reasoning_model.py and
the ROS tests). The task, prompts, schema and safety rules are the real ones.
"""
from __future__ import annotations

import dataclasses

import threading
import time

import pytest

from quant_llm_node.config import Config
from quant_llm_node.engine.llama_engine import EngineError, GenerationResult
from quant_llm_node.grounding.index import GroundingResult, GroundingStatus
from quant_llm_node.reasoning.task import RULE_GOAL_TARGET, DecisionTask
from quant_llm_node.serving.pipeline import Pipeline
from quant_llm_node.serving.service import NavigationService

LONG_MS = 60_000


class ScriptedGenerator:
    """Returns fixed text; optionally streams it, raises, or waits for should_stop."""

    def __init__(self, text: str = "", error: Exception | None = None, block: bool = False):
        self.text, self.error, self.block = text, error, block
        self.prompts: list[str] = []
        self.started = threading.Event()

    def generate(self, prompt, max_tokens, grammar=None, temperature=0.0, should_stop=None,
                 on_text=None, min_room=1):
        self.prompts.append(prompt)
        self.started.set()
        if self.error is not None:
            raise self.error
        out = ""
        for ch in self.text:
            out += ch
            if on_text is not None:
                on_text(out, len(out))
            if should_stop is not None and should_stop(out):
                break
        while self.block and not should_stop(out):
            time.sleep(0.005)
        n = len(out)
        return GenerationResult(text=out, prompt_tokens=len(prompt), cached_tokens=0,
                                completion_tokens=n, prompt_ms=1.0, first_token_ms=2.0,
                                decode_ms=3.0, total_ms=5.0, finish_reason="stop", decode_steps=n)


class FixedGrounder:
    def __init__(self, result: GroundingResult):
        self.result = result

    def ground(self, text, lead_only=False):
        return self.result


def decision_text(action="continue", speed=1.0, target="", reason="clear"):
    return (f'{{"action": "{action}", "speed": {speed:.1f}, "target": "{target}", '
            f'"reason": "{reason}"}}')


def make_service(generator=None, grounder=None, use_grammar=True, queue_size=8, rule_forced=True):
    cfg = Config()
    cfg.engine.use_grammar = use_grammar
    cfg.serving.queue_size = queue_size
    cfg.serving.rule_forced = rule_forced  # off where a test needs the model asked anyway
    task = DecisionTask.from_config(cfg)
    svc = NavigationService.over(cfg, Pipeline(task=task, prompts=task.prompts(), generator=generator,
                                          grounder=grounder, model_id="scripted:Q4"))
    svc.start()
    return svc


@pytest.fixture
def stop_after():
    services = []
    yield services.append
    for s in services:
        s.stop()


def raw(query="Is the way clear?", goal="", deadline_ms=LONG_MS, **state):
    st = {"battery_pct": 80.0, "obstacle_distance_m": 20.0}
    st.update(state)
    return {"request_id": "r1", "query": query, "goal": goal, "state": st, "deadline_ms": deadline_ms}


def test_model_decision_passes_through_the_safety_rules(stop_after):
    svc = make_service(ScriptedGenerator(decision_text("continue", 1.2)), rule_forced=False)
    stop_after(svc)
    clear = svc.ask(raw(), 10)
    assert clear.success and not clear.error_code
    assert clear.decision.action == "continue" and clear.decision.source == "llm"
    assert clear.model_id == "scripted:Q4" and clear.completion_tokens == len(clear.raw_text)
    near = svc.ask(raw(people_distances_m=[0.5], speed_mps=1.0), 10)
    assert near.decision.action == "stop" and near.decision.source == "safety_override"
    assert near.decision.speed_limit_mps == 0.0 and "person_within_stop_distance" in near.decision.rules_fired


def test_grounded_goal_sets_the_target_and_reaches_the_prompt(stop_after):
    gen = ScriptedGenerator(decision_text("go_to", 0.8, "aisle_3"))
    ok = GroundingResult(GroundingStatus.OK, "packing", 1.0, 1.0, [("packing", 1.0)], "lexical")
    svc = make_service(gen, FixedGrounder(ok))
    stop_after(svc)
    resp = svc.ask(raw(goal="the packing tables"), 10)
    assert resp.decision.action == "go_to" and resp.decision.target_place_id == "packing"
    assert RULE_GOAL_TARGET in resp.decision.rules_fired
    assert resp.grounding is ok and "place packing" in gen.prompts[-1]


@pytest.mark.parametrize("status,code", [(GroundingStatus.UNKNOWN, "UNKNOWN_PLACE"),
                                         (GroundingStatus.EMPTY, "UNKNOWN_PLACE"),
                                         (GroundingStatus.AMBIGUOUS, "AMBIGUOUS_PLACE")])
def test_goal_that_names_no_single_place_is_decided_without_it(stop_after, status, code):
    """The request is decided as if it had no goal (it can go nowhere): a decision that would
    move becomes the goal's rejection, a halt goes out with the goal's code beside it."""
    gen = ScriptedGenerator(decision_text("go_to", 1.0, "dock_1"))
    result = GroundingResult(status, None, 0.5, 0.0, [("dock_1", 0.5), ("dock_2", 0.5)], "lexical")
    svc = make_service(gen, FixedGrounder(result))
    stop_after(svc)
    resp = svc.ask(raw(goal="a dock"), 10)
    assert not resp.success and resp.error_code == code and resp.grounding is result
    assert "Goal: none." in gen.prompts[-1] and resp.model_id == "scripted:Q4"
    if code == "AMBIGUOUS_PLACE":
        assert "dock_1, dock_2" in resp.error_message


@pytest.mark.parametrize("status,code", [(GroundingStatus.UNKNOWN, "UNKNOWN_PLACE"),
                                         (GroundingStatus.AMBIGUOUS, "AMBIGUOUS_PLACE")])
def test_a_goal_that_does_not_ground_never_hides_a_hazard(stop_after, status, code):
    gen = ScriptedGenerator(decision_text("go_to", 1.0, "dock_1"))
    result = GroundingResult(status, None, 0.5, 0.0, [("dock_1", 0.5), ("dock_2", 0.5)], "lexical")
    svc = make_service(gen, FixedGrounder(result), rule_forced=False)
    stop_after(svc)
    spill = svc.ask(raw("Oil is leaking across the whole aisle ahead.", goal="the moon base"), 10)
    assert spill.success and spill.error_code == code
    assert spill.decision.action == "stop" and spill.decision.target_place_id == ""
    assert "text_hazard_stop" in spill.decision.rules_fired
    # the model's reroute around the hazard has no goal to head for: a halt
    svc.holder.replace_pipeline(dataclasses.replace(
        svc.pipeline, generator=ScriptedGenerator(decision_text("reroute", 0.5, "dock_1"))))
    around = svc.ask(raw("Oil is leaking across the whole aisle ahead.", goal="the moon base"), 10)
    assert around.success and around.error_code == code and around.decision.action == "stop"


@pytest.mark.parametrize("error,code", [
    (EngineError("CONTEXT_OVERFLOW", "no room"), "CONTEXT_OVERFLOW"),
    (EngineError("MODEL_LOAD_FAILED", "gone"), "MODEL_UNAVAILABLE")])
def test_engine_errors_become_marked_fallbacks(stop_after, error, code):
    svc = make_service(ScriptedGenerator(error=error), rule_forced=False)
    stop_after(svc)
    resp = svc.ask(raw(people_distances_m=[0.4]), 10)
    assert resp.success and resp.error_code == code and resp.decision.source == "fallback"
    assert resp.decision.action == "stop"


def test_no_model_is_a_marked_fallback(stop_after):
    svc = make_service(None)
    stop_after(svc)
    resp = svc.ask(raw(), 10)
    assert resp.success and resp.error_code == "MODEL_UNAVAILABLE" and resp.decision.source == "fallback"


def test_unparseable_text_without_grammar_is_model_output_invalid(stop_after):
    svc = make_service(ScriptedGenerator("I think you should keep going"), use_grammar=False)
    stop_after(svc)
    resp = svc.ask(raw(), 10)
    assert resp.success and resp.error_code == "MODEL_OUTPUT_INVALID"
    assert resp.decision.source == "fallback" and resp.raw_text.startswith("I think")


def test_without_grammar_generation_stops_at_the_end_of_the_object(stop_after):
    svc = make_service(ScriptedGenerator(decision_text("wait", 0.0) + " and more text"), use_grammar=False)
    stop_after(svc)
    resp = svc.ask(raw(), 10)
    assert resp.raw_text.endswith("}") and resp.decision.action == "wait"


def test_generator_bug_is_answered_as_internal_error_fallback(stop_after):
    svc = make_service(ScriptedGenerator(error=ZeroDivisionError("bug")))
    stop_after(svc)
    resp = svc.ask(raw(), 10)
    assert resp.success and resp.error_code == "INTERNAL_ERROR" and resp.decision.source == "fallback"
    assert "ZeroDivisionError" in resp.error_message
    assert svc.ask(raw(), 10).error_code == "INTERNAL_ERROR"  # the worker survived


def test_cancel_while_generating_answers_cancelled(stop_after):
    gen = ScriptedGenerator(decision_text(), block=True)
    svc = make_service(gen)
    stop_after(svc)
    box, done = [], threading.Event()
    job = svc.submit(raw(), lambda r: (box.append(r), done.set()))
    assert gen.started.wait(5)
    job.cancel.set()
    assert done.wait(5)
    assert not box[0].success and box[0].error_code == "CANCELLED"


def test_deadline_during_generation_is_a_deadline_fallback(stop_after):
    svc = make_service(ScriptedGenerator(decision_text(), block=True), rule_forced=False)
    stop_after(svc)
    resp = svc.ask(raw(deadline_ms=150, people_distances_m=[0.3]), 10)
    assert resp.success and resp.error_code == "DEADLINE_EXCEEDED"
    assert resp.decision.source == "fallback" and resp.decision.action == "stop"
    assert svc.status().metrics["counters"].get("deadline_miss") == 1


def test_partial_text_is_streamed(stop_after):
    svc = make_service(ScriptedGenerator(decision_text()))
    stop_after(svc)
    seen, done = [], threading.Event()
    svc.submit(raw(), lambda r: done.set(), on_partial=lambda view, text, n: seen.append((view, text, n)))
    assert done.wait(5)
    assert seen and seen[-1][1] == decision_text() and [n for _, _, n in seen] == list(range(1, len(seen) + 1))
    # no checked view before the action is decoded, the checked action after it
    assert seen[0][0] is None and seen[-1][0].action == "continue"


def test_invalid_and_overflowing_requests_are_answered_at_once(stop_after):
    gen = ScriptedGenerator(decision_text(), block=True)
    svc = make_service(gen, queue_size=1)
    stop_after(svc)
    bad = svc.ask({"request_id": "b1", "query": ""}, 5)
    assert not bad.success and bad.error_code == "EMPTY_QUERY" and bad.request_id == "b1"
    answers = []
    first = svc.submit(raw(), answers.append)   # runs (blocks in the generator)
    assert gen.started.wait(5)
    svc.submit(raw(), answers.append)           # waits in the queue
    svc.submit(raw(), answers.append)           # no room: OVERLOADED at once
    assert [a.error_code for a in answers] == ["OVERLOADED"]
    first.cancel.set()
    status = svc.status()
    assert status.queue_capacity == 1 and status.accepting and status.model_id == "scripted:Q4"


def test_stopped_service_answers_node_inactive_with_the_request_id():
    svc = make_service(ScriptedGenerator(decision_text()))
    svc.stop()
    resp = svc.ask(raw(), 5)
    assert not resp.success and resp.error_code == "NODE_INACTIVE"
    assert resp.request_id == "r1" and resp.model_id == "scripted:Q4"


def test_streamed_view_is_the_checked_action_not_the_models(stop_after):
    svc = make_service(ScriptedGenerator(decision_text("continue", 1.5)), rule_forced=False)
    stop_after(svc)
    seen, done = [], threading.Event()
    box = []
    svc.submit(raw(people_distances_m=[0.5], speed_mps=1.0), lambda r: (box.append(r), done.set()),
               on_partial=lambda view, text, n: seen.append(view))
    assert done.wait(5)
    views = [v for v in seen if v is not None]
    assert views and all(v.action == box[0].decision.action == "stop" for v in views)
    assert all(v.source == "safety_override" and v.model_action == "continue" for v in views)


@pytest.mark.parametrize("rule_forced", [True, False])
def test_a_full_queue_never_withholds_a_halt_the_rules_decide(stop_after, rule_forced):
    """A person inside the stop distance with a goal set: the stop is answered at intake, with
    the queue full, whether rule-forced answers are on or not (off: only when the queue is full)."""
    gen = ScriptedGenerator(decision_text(), block=True)
    ok = GroundingResult(GroundingStatus.OK, "packing", 1.0, 1.0, [("packing", 1.0)], "lexical")
    svc = make_service(gen, FixedGrounder(ok), queue_size=1, rule_forced=rule_forced)
    stop_after(svc)
    answers: list = []
    svc.submit(raw(deadline_ms=5000), answers.append)      # runs (blocks)
    assert gen.started.wait(5)
    svc.submit(raw(deadline_ms=5000), answers.append)      # queued: the queue is full now
    svc.submit(raw(deadline_ms=5000), answers.append)
    assert [a.error_code for a in answers] == ["OVERLOADED"]
    halt = svc.ask(raw("Heading to packing.", goal="the packing tables", speed_mps=0.8,
                       people_distances_m=[0.5]), 1)
    assert halt.success and halt.decision.action == "stop" and not halt.error_code
    assert "person_within_stop_distance" in halt.decision.rules_fired
    assert halt.completion_tokens == 0  # answered while the worker is still blocked
