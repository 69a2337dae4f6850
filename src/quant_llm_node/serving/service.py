"""The navigation-reasoning request pipeline without ROS: validate, schedule, ground, prompt,
generate, decide (parse + goal target + safety), fall back — and account for every request.

The service is handed a ready ``Pipeline`` (serving/assembly.py builds it at configure); the ROS
layer only converts messages to the raw dicts taken here and back.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

from quant_llm_node.config import Config
from quant_llm_node.engine.llama_engine import EngineError, GenerationResult
from quant_llm_node.grounding.index import GroundingResult, GroundingStatus as Found
from quant_llm_node.reasoning import errors as E, injection
from quant_llm_node.reasoning.errors import RequestError
from quant_llm_node.reasoning.forced import forced_decision
from quant_llm_node.reasoning.schema import DecisionParseError, json_object_complete
from quant_llm_node.reasoning.screen import ScreenVerdict
from quant_llm_node.reasoning.task import DecisionTask
from quant_llm_node.reasoning.types import HALTING_ACTIONS, Latency, NavRequest, NavResponse
from quant_llm_node.reasoning.validation import safe_request_id, validate_request
from quant_llm_node.serving.metrics import ServingMetrics
from quant_llm_node.serving.pipeline import Pipeline
from quant_llm_node.serving.scheduler import Job, LateReason, Preempted, Scheduler
from quant_llm_node.serving.turns import Turns

if TYPE_CHECKING:
    from quant_llm_node.serving.remote_status import RemoteStatus

log = logging.getLogger("quant_llm_node")

_LATE_CODES = {LateReason.DEADLINE: E.DEADLINE_EXCEEDED, LateReason.EVICTED: E.DEADLINE_EXCEEDED,
               LateReason.INTERNAL: E.INTERNAL_ERROR}


@dataclass
class ServiceStatus:
    """One consistent snapshot of the service for diagnostics."""

    metrics: dict
    queue_depth: int
    queue_capacity: int
    accepting: bool
    model_id: str
    roofline: dict = field(default_factory=dict)
    remote: Optional["RemoteStatus"] = None  # engine.backend remote / hybrid
    running: int = 0                          # requests being served now
    slots: int = 1                            # at most this many at once (engine.n_parallel)


class _Answer(Exception):
    """Ends a request's pipeline early with this response (reject or fallback)."""

    def __init__(self, response: NavResponse):
        super().__init__(response.error_code)
        self.response = response


class NavigationService:
    """Owns the request pipeline and the scheduler whose workers run the generator (one, or
    engine.n_parallel whose requests the batch loop decodes together)."""

    def __init__(self, cfg: Config, pipeline: Pipeline):
        self.cfg = cfg
        self._pipeline = pipeline
        self._turns = Turns()  # requests in flight on the pipeline; a swap waits for them
        self.metrics = ServingMetrics(cfg.serving.latency_window)
        # one slot per sequence the batch loop decodes together (1: the engine alone)
        self.scheduler = Scheduler(self._handle, self._late, cfg.serving.queue_size,
                                   cfg.serving.safety_priority, on_event=self.metrics.count,
                                   slots=cfg.engine.n_parallel)

    @property
    def pipeline(self) -> Pipeline:
        return self._pipeline

    @property
    def model_id(self) -> str:
        return self._pipeline.model_id

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> int:
        """Refuse new work; queued requests get SHUTTING_DOWN. Returns how many."""
        return self.scheduler.stop(lambda job: self._reject(
            job.request.request_id, E.SHUTTING_DOWN, "the node is deactivating; request not served"))

    def apply_settings(self, cfg: Config) -> None:
        """Live settings (safety rules, serving limits, generation) for the next request: the
        task and the limits are replaced whole, never half-changed under a request."""
        old = self._pipeline.task
        task = DecisionTask(old.places, cfg.safety, cfg.engine.use_grammar, cfg.engine.max_tokens,
                            cfg.engine.temperature)
        self.scheduler.configure(cfg.serving.queue_size, cfg.serving.safety_priority)
        self.cfg = cfg
        self._pipeline = self._pipeline.with_task(task)

    def swap(self, pipeline: Pipeline, cfg: Config | None = None) -> Pipeline:
        """Put another pipeline (a new model) in place between two requests; returns the old
        one, which no request uses any more once this returns."""
        with self._turns.exclusive():
            old, self._pipeline = self._pipeline, pipeline
            if cfg is not None:
                self.cfg = cfg
        return old

    def status(self) -> ServiceStatus:
        snap = self.metrics.snapshot()
        p = self._pipeline
        return ServiceStatus(metrics=snap, queue_depth=self.scheduler.depth(),
                             queue_capacity=self.cfg.serving.queue_size,
                             accepting=self.scheduler.accepting, model_id=p.model_id,
                             roofline=p.roofline.values(snap["decode_tps_p50"]) if p.roofline else {},
                             remote=p.backend.status() if p.backend is not None else None,
                             running=self.scheduler.running(), slots=self.scheduler.slots)

    # ---- intake ----------------------------------------------------------------------------
    def submit(self, raw: dict, on_done: Callable[[NavResponse], None],
               on_partial: Callable[[str, int], None] | None = None) -> Job | None:
        """Validate and queue; answers at once (on_done) when the request is rejected."""
        t0 = time.monotonic()
        limits = self.cfg.serving  # one consistent set of limits for this request
        try:
            request = validate_request(raw, limits)
        except RequestError as exc:
            self._answer_now(on_done, self._reject(safe_request_id(raw, limits), exc.code, str(exc)))
            return None
        if limits.rule_forced and not request.goal and self.scheduler.accepting:
            decision = forced_decision(self._pipeline.task.safety, request)
            if decision is not None:  # the model has no say: answer now, the worker stays free
                # (nor has the hazard screen: it only turns moving actions into halts, and the
                # one moving answer the rules force, dock on a flat battery, it leaves alone)
                total = (time.monotonic() - t0) * 1e3
                self._answer_now(on_done, NavResponse(
                    request_id=request.request_id, success=True, decision=decision,
                    latency=Latency(total_ms=total), model_id=self.model_id))
                return None
        job = Job(request, on_done=self._recorder(on_done), on_partial=on_partial, submitted=t0)
        if not self.scheduler.submit(job):
            if self.scheduler.accepting:
                code, msg = E.OVERLOADED, f"queue full ({limits.queue_size} waiting); retry later"
            else:
                code, msg = E.NODE_INACTIVE, "the node is not active"
            job.finish(self._reject(request.request_id, code, msg))
            return None
        return job

    def ask(self, raw: dict, timeout_s: float | None = None) -> NavResponse:
        """Blocking convenience for tools and benchmarks: submit and wait for the answer."""
        box: list[NavResponse] = []
        done = threading.Event()
        self.submit(raw, lambda r: (box.append(r), done.set()))
        if not done.wait(timeout_s):
            raise TimeoutError(f"no answer within {timeout_s} s")
        return box[0]

    def _answer_now(self, on_done, response: NavResponse) -> None:
        self.metrics.record(response)
        on_done(response)

    def _recorder(self, on_done):
        def done(response: NavResponse) -> None:
            self.metrics.record(response)
            on_done(response)
        return done

    def _reject(self, request_id: str, code: str, message: str) -> NavResponse:
        return NavResponse.rejected(request_id, code, message, self.model_id)

    def _late(self, job: Job, why: LateReason, detail: str = "") -> NavResponse:
        """Fallback decision for a job that could not get the model's answer in time."""
        req = job.request
        if why is LateReason.SHUTTING_DOWN:
            return self._reject(req.request_id, E.SHUTTING_DOWN, "the node is deactivating")
        msg = {LateReason.DEADLINE: f"no model answer within the {req.deadline_ms} ms deadline",
               LateReason.EVICTED: "queue full with safety-critical work; answered by fallback"
               }.get(why, detail)
        decision = self._pipeline.task.fallback(req, "", why.value)
        total = (time.monotonic() - job.submitted) * 1e3
        return NavResponse(request_id=req.request_id, success=True, error_code=_LATE_CODES[why],
                           error_message=msg, decision=decision, model_id=self.model_id,
                           latency=Latency(total_ms=total, queue_ms=total))

    # ---- the worker's pipeline -------------------------------------------------------------
    def _handle(self, job: Job) -> NavResponse:
        """Runs on an inference worker thread: ground, generate, decide."""
        with self._turns.request():
            return self._run(job, self._pipeline)  # one consistent set of parts per request

    def _run(self, job: Job, p: Pipeline) -> NavResponse:
        lat = Latency(queue_ms=(time.monotonic() - job.submitted) * 1e3)
        try:
            grounding = self._ground(job, p, lat)
            grounded = grounding.place_id if grounding is not None and grounding.place_id else ""
            screen = self._screen(job, p, lat, grounded)
            gen = self._generate(job, p, lat, grounded, grounding, screen)
            try:
                decision = p.task.decide(gen.text, job.request, grounded, screen)
            except DecisionParseError as exc:
                raise _Answer(self._fallback(job, p, lat, E.MODEL_OUTPUT_INVALID, str(exc),
                                             grounded, grounding, gen, screen))
        except _Answer as answer:
            return answer.response
        lat.total_ms = (time.monotonic() - job.submitted) * 1e3
        return NavResponse(request_id=job.request.request_id, success=True, decision=decision,
                           raw_text=gen.text, latency=lat, prompt_tokens=gen.prompt_tokens,
                           completion_tokens=gen.completion_tokens,
                           model_id=p.model_id_for(gen.backend), backend=gen.backend,
                           grounding=grounding, screen=screen, decode_tps=gen.decode_tps)

    def _screen(self, job: Job, p: Pipeline, lat: Latency, grounded: str) -> ScreenVerdict | None:
        """The hazard screen's verdict on the request (None without a screen, or when the rules
        halt the robot whatever the model and the screen say). A screen that fails flags the
        request: an unchecked request is not let through as clear."""
        if p.screen is None or p.generator is None:
            return None
        if self.cfg.serving.rule_forced:  # (off, e.g. in evaluations: every request screened)
            forced = forced_decision(p.task.safety, job.request, grounded)
            if forced is not None and forced.action in HALTING_ACTIONS:
                return None  # a flag adds nothing to a halt, no clear way is confirmed past one
        s0 = time.perf_counter()
        try:
            verdict = p.screen.check(job.request, self.cfg.screen.margin, self.cfg.screen.clear_margin)
        except EngineError as exc:
            log.error("hazard screen failed, request treated as flagged: %s", exc)
            verdict = ScreenVerdict(math.inf, True)
        lat.screen_ms = (time.perf_counter() - s0) * 1e3
        return verdict

    def _ground(self, job: Job, p: Pipeline, lat: Latency) -> GroundingResult | None:
        """The goal as a map place; raises _Answer for a goal that names no single place."""
        goal = job.request.goal
        if not goal or p.grounder is None:
            return None
        g0 = time.perf_counter()
        # a goal that carries instructions to the robot grounds by its lead clause only
        result = p.grounder.ground(goal, lead_only=bool(injection.scan(goal)))
        lat.grounding_ms = (time.perf_counter() - g0) * 1e3
        if result.status is Found.OK:
            return result
        if result.status in (Found.UNKNOWN, Found.EMPTY):
            code, msg = E.UNKNOWN_PLACE, f"goal '{goal}' matches no map place"
        else:
            cands = ", ".join(c[0] for c in result.candidates[:3])
            code, msg = E.AMBIGUOUS_PLACE, f"goal '{goal}' is ambiguous between: {cands}"
        raise _Answer(self._finish_reject(job, code, msg, result))

    def _generate(self, job: Job, p: Pipeline, lat: Latency, grounded: str,
                  grounding: GroundingResult | None, screen: ScreenVerdict | None) -> GenerationResult:
        """The model's text for the request; raises _Answer when there is none to decide on."""
        if p.generator is None:
            raise _Answer(self._fallback(job, p, lat, E.MODEL_UNAVAILABLE, "no model loaded",
                                         grounded, grounding, screen=screen))
        task = p.task
        prompt = p.prompts.build(job.request, grounded)

        def should_stop(text: str) -> bool:
            if job.cancel.is_set() or job.preempt.is_set() or job.remaining_s() <= 0:
                return True
            return task.grammar is None and json_object_complete(text)

        timing = {"deadline_s": job.remaining_s()} if p.deadline_aware else {}
        try:
            gen = p.generator.generate(prompt, task.max_tokens, task.grammar, task.temperature,
                                       should_stop, _checked_stream(job, task, grounded, screen),
                                       min_room=task.min_room, **timing)
        except EngineError as exc:
            code = E.CONTEXT_OVERFLOW if exc.code == E.CONTEXT_OVERFLOW else E.MODEL_UNAVAILABLE
            raise _Answer(self._fallback(job, p, lat, code, str(exc), grounded, grounding,
                                         screen=screen))
        if job.preempt.is_set() and not job.cancel.is_set():
            raise Preempted()
        lat.prompt_ms, lat.first_token_ms, lat.decode_ms = gen.prompt_ms, gen.first_token_ms, gen.decode_ms
        if hasattr(gen, "drafted"):
            self.metrics.count("spec_drafted", gen.drafted)
            self.metrics.count("spec_accepted", gen.accepted)
        if job.cancel.is_set():
            if not self.scheduler.accepting:
                raise _Answer(self._finish_reject(job, E.SHUTTING_DOWN,
                                                  "the node is deactivating; generation stopped", grounding))
            raise _Answer(self._finish_reject(job, E.CANCELLED, "request cancelled", grounding))
        if job.remaining_s() <= 0:
            raise _Answer(self._fallback(job, p, lat, E.DEADLINE_EXCEEDED,
                                         f"no model answer within the {job.request.deadline_ms} ms deadline",
                                         grounded, grounding, gen, screen))
        return gen

    def _finish_reject(self, job: Job, code: str, message: str,
                       grounding: GroundingResult | None) -> NavResponse:
        resp = self._reject(job.request.request_id, code, message)
        resp.grounding = grounding
        resp.latency.total_ms = (time.monotonic() - job.submitted) * 1e3
        return resp

    def _fallback(self, job: Job, p: Pipeline, lat: Latency, code: str, why: str, grounded: str,
                  grounding: GroundingResult | None, gen: GenerationResult | None = None,
                  screen: ScreenVerdict | None = None) -> NavResponse:
        req: NavRequest = job.request
        decision = p.task.fallback(req, grounded, why, screen)
        lat.total_ms = (time.monotonic() - job.submitted) * 1e3
        return NavResponse(request_id=req.request_id, success=True, error_code=code, error_message=why,
                           decision=decision, raw_text=gen.text if gen else "", latency=lat,
                           prompt_tokens=gen.prompt_tokens if gen else 0,
                           completion_tokens=gen.completion_tokens if gen else 0,
                           model_id=p.model_id, backend=gen.backend if gen else "",
                           grounding=grounding, screen=screen)


def _checked_stream(job: Job, task: DecisionTask, grounded: str, screen: ScreenVerdict | None):
    """The engine's text callback for a streaming job: partial text plus, once the action is
    decoded, its safety-checked view (computed once: later tokens cannot change it; the screen's
    verdict is known before the first token)."""
    if job.on_partial is None:
        return None
    view, last = None, ""

    def on_text(text: str, n_tokens: int) -> None:
        nonlocal view, last
        if not text.startswith(last):  # the text started over (hybrid: the local model answers)
            view = None
        last = text
        if view is None:
            view = task.stream_view(text, job.request, grounded, screen)
        job.on_partial(view, text, n_tokens)
    return on_text
