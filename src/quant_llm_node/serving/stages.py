"""The request path after intake, top to bottom: one function per stage, each a plain function
of the request's Turn.

    run(turn):  ground(turn) ▶ screen(turn) ▶ generate(turn) ▶ finish(turn)

- ``ground``: the planner's goal as a map place. A goal that names no single place does not end
  the request: it is decided without a goal (so it can go nowhere), and ``finish`` returns the
  goal's code beside a halt, or as the rejection when the decision would move.
- ``screen``: the hazard screen's verdict (a larger model's "is this unsafe?").
- ``generate``: the model's text, under the decision grammar, streamed through the rules.
- ``finish``: the one decide-or-fallback policy: parse the text, let the grounded goal choose
  the target and the safety rules have the last word; without a usable text, the fallback.

A stage that ends the request early raises ``Answer`` with its response. The service runs
``run`` on an inference worker; the evaluation and the replay call the same functions.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Optional

from quant_llm_node.engine.llama_engine import EngineError
from quant_llm_node.grounding.index import GroundingStatus as Found
from quant_llm_node.reasoning import errors as E, injection
from quant_llm_node.reasoning.forced import forced_decision
from quant_llm_node.reasoning.schema import DecisionParseError, json_object_complete
from quant_llm_node.reasoning.screen import ScreenVerdict
from quant_llm_node.reasoning.types import HALTING_ACTIONS, Decision, NavResponse
from quant_llm_node.serving.scheduler import Preempted
from quant_llm_node.serving.turn import GoalError, Turn

log = logging.getLogger("quant_llm_node")

RULE_GOAL_NOT_GROUNDED = "goal_not_grounded_halt"  # reroute toward a goal that is no place: stop


class Answer(Exception):
    """Ends a request's path early with this response (a rejection or a fallback)."""

    def __init__(self, response: NavResponse):
        super().__init__(response.error_code)
        self.response = response


def run(turn: Turn) -> NavResponse:
    """The whole path for one request."""
    try:
        ground(turn)
        screen(turn)
        generate(turn)
    except Answer as answer:
        return answer.response
    return finish(turn)


def ground(turn: Turn) -> None:
    """The goal as a map place (``turn.grounding``); a goal that names no single place sets
    ``turn.goal_error`` and the request goes on without a goal."""
    goal, grounder = turn.request.goal, turn.parts.grounder
    if not goal or grounder is None:
        return
    g0 = time.perf_counter()
    # a goal that carries instructions to the robot grounds by its lead clause only
    result = grounder.ground(goal, lead_only=bool(injection.scan(goal)))
    turn.latency.grounding_ms = (time.perf_counter() - g0) * 1e3
    turn.grounding = result
    if result.status is Found.OK:
        return
    if result.status in (Found.UNKNOWN, Found.EMPTY):
        turn.goal_error = GoalError(E.UNKNOWN_PLACE, f"goal '{goal}' matches no map place")
    else:
        cands = ", ".join(c[0] for c in result.candidates[:3])
        turn.goal_error = GoalError(E.AMBIGUOUS_PLACE, f"goal '{goal}' is ambiguous between: {cands}")


def screen(turn: Turn) -> None:
    """The hazard screen's verdict (``turn.screen``; None without a screen, or when the rules
    halt the robot whatever the model and the screen say). A screen that fails flags the
    request: an unchecked request is not let through as clear."""
    p, cfg = turn.parts, turn.settings
    if p.screen is None or p.generator is None:
        return
    if cfg.serving.rule_forced:  # (off, e.g. in evaluations: every request screened)
        forced = forced_decision(p.task.safety, turn.request, turn.grounded)
        if forced is not None and forced.action in HALTING_ACTIONS:
            return  # a flag adds nothing to a halt, no clear way is confirmed past one
    s0 = time.perf_counter()
    try:
        verdict = p.screen.check(turn.request, cfg.screen.margin, cfg.screen.clear_margin)
    except EngineError as exc:
        log.error("hazard screen failed, request treated as flagged: %s", exc)
        verdict = ScreenVerdict(math.inf, True)
    turn.latency.screen_ms = (time.perf_counter() - s0) * 1e3
    turn.screen = verdict


def generate(turn: Turn) -> None:
    """The model's text (``turn.generation``); raises Answer when there is none to decide on
    (a fallback), or when the request was cancelled; Preempted when a safety-critical request
    took its slot."""
    p, task = turn.parts, turn.parts.task
    if p.generator is None:
        raise Answer(finish(turn, E.MODEL_UNAVAILABLE, "no model loaded"))
    prompt = p.prompts.build(turn.request, turn.grounded)

    def should_stop(text: str) -> bool:
        if turn.cancelled or turn.preempted or turn.remaining_s() <= 0:
            return True
        return task.grammar is None and json_object_complete(text)

    timing = {"deadline_s": turn.remaining_s()} if p.deadline_aware else {}
    try:
        gen = p.generator.generate(prompt, task.max_tokens, task.grammar, task.temperature,
                                   should_stop, _checked_stream(turn), min_room=task.min_room,
                                   **timing)
    except EngineError as exc:
        code = E.CONTEXT_OVERFLOW if exc.code == E.CONTEXT_OVERFLOW else E.MODEL_UNAVAILABLE
        raise Answer(finish(turn, code, str(exc)))
    if turn.preempted and not turn.cancelled:
        raise Preempted()
    turn.generation = gen
    lat = turn.latency
    lat.prompt_ms, lat.first_token_ms, lat.decode_ms = gen.prompt_ms, gen.first_token_ms, gen.decode_ms
    if turn.cancelled:
        if turn.stopping():
            raise Answer(reject(turn, E.SHUTTING_DOWN, "the node is deactivating; generation stopped"))
        raise Answer(reject(turn, E.CANCELLED, "request cancelled"))
    if turn.remaining_s() <= 0:
        raise Answer(finish(turn, E.DEADLINE_EXCEEDED,
                            f"no model answer within the {turn.request.deadline_ms} ms deadline"))


def finish(turn: Turn, code: str = "", why: str = "") -> NavResponse:
    """The decision and the response: the model's text decided under the rules, or, with
    ``code`` set (no usable text) or a text that does not parse, the fallback marked with its
    code. A goal that did not ground: its code beside a halt, else the rejection."""
    p, req, gen = turn.parts, turn.request, turn.generation
    decision: Optional[Decision] = None
    if not code:
        try:
            decision = p.task.decide(gen.text, req, turn.grounded, turn.screen)
        except DecisionParseError as exc:
            code, why = E.MODEL_OUTPUT_INVALID, str(exc)
    if decision is None:
        decision = p.task.fallback(req, turn.grounded, why, turn.screen)
    turn.latency.total_ms = turn.elapsed_ms()
    resp = NavResponse(
        request_id=req.request_id, success=True, error_code=code, error_message=why if code else "",
        decision=decision, raw_text=gen.text if gen else "", latency=turn.latency,
        prompt_tokens=gen.prompt_tokens if gen else 0,
        completion_tokens=gen.completion_tokens if gen else 0,
        model_id=p.model_id_for(gen.backend) if gen and not code else p.model_id,
        backend=gen.backend if gen else "", grounding=turn.grounding, screen=turn.screen,
        decode_tps=gen.decode_tps if gen and not code else 0.0)
    if turn.goal_error is not None:
        return _goal_error_answer(turn, resp)
    return resp


def _goal_error_answer(turn: Turn, resp: NavResponse) -> NavResponse:
    """A request whose goal named no place: a halt goes out with the goal's code beside it (a
    hazard is never hidden by a bad goal); a decision that would move becomes the rejection."""
    err, d = turn.goal_error, resp.decision
    if d.action == "reroute":  # around a hazard toward a goal that is no place: halt
        d.action, d.target_place_id, d.speed_limit_mps = "stop", "", 0.0
        d.rules_fired.append(RULE_GOAL_NOT_GROUNDED)
    if d.action in HALTING_ACTIONS:
        resp.error_message = err.message + (f"; {resp.error_message}" if resp.error_code else "")
        resp.error_code = err.code
        return resp
    return reject(turn, err.code, err.message)


def reject(turn: Turn, code: str, message: str) -> NavResponse:
    """A rejection (success false) that keeps what the turn learned of the goal."""
    resp = NavResponse.rejected(turn.request.request_id, code, message, turn.parts.model_id)
    resp.grounding = turn.grounding
    resp.latency.total_ms = turn.elapsed_ms()
    return resp


def _checked_stream(turn: Turn):
    """The engine's text callback for a streaming job: partial text plus, once the action is
    decoded, its safety-checked view (computed once: later tokens cannot change it; the screen's
    verdict is known before the first token)."""
    job = turn.job
    if job is None or job.on_partial is None:
        return None
    task, req, grounded, verdict = turn.parts.task, turn.request, turn.grounded, turn.screen
    view, last = None, ""

    def on_text(text: str, n_tokens: int) -> None:
        nonlocal view, last
        if not text.startswith(last):  # the text started over (hybrid: the local model answers)
            view = None
        last = text
        if view is None:
            view = task.stream_view(text, req, grounded, verdict)
        job.on_partial(view, text, n_tokens)
    return on_text
