"""The navigation service without ROS: intake and scheduling.

Intake validates a request (error codes), answers at once a request whose final action the
safety rules fix whatever the model says, and queues the rest. A halt the state already decides
is never withheld: it is answered at intake for a request with a goal too, when the queue is
full, and while a model swap is under way. The scheduler's workers run the request path
(serving/stages.py) on the pipeline the model holder has in place (serving/model_holder.py).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

from quant_llm_node.config import Config
from quant_llm_node.engine import compute_thread
from quant_llm_node.reasoning import errors as E
from quant_llm_node.reasoning.errors import RequestError
from quant_llm_node.reasoning.forced import forced_decision
from quant_llm_node.reasoning.types import HALTING_ACTIONS, Decision, Latency, NavRequest, NavResponse
from quant_llm_node.reasoning.validation import safe_request_id, validate_request
from quant_llm_node.serving import stages
from quant_llm_node.serving.metrics import ServingMetrics
from quant_llm_node.serving.model_holder import ModelHolder
from quant_llm_node.serving.pipeline import Pipeline
from quant_llm_node.serving.scheduler import Job, LateReason, Scheduler
from quant_llm_node.serving.turn import Turn

if TYPE_CHECKING:
    from quant_llm_node.serving.remote_status import RemoteStatus

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


class NavigationService:
    """Intake and the scheduler whose workers run the request path (one worker, or
    engine.n_parallel whose requests the batch loop decodes together)."""

    def __init__(self, holder: ModelHolder):
        self.holder = holder
        cfg = holder.cfg
        self.metrics = ServingMetrics(cfg.serving.latency_window)
        self.scheduler = Scheduler(self._handle, self._late, cfg.serving.queue_size,
                                   cfg.serving.safety_priority, on_event=self.metrics.count,
                                   slots=cfg.engine.n_parallel)

    @classmethod
    def over(cls, cfg: Config, pipeline: Pipeline) -> "NavigationService":
        """A service over a pipeline built by hand (tools, tests)."""
        return cls(ModelHolder(cfg, pipeline))

    @property
    def cfg(self) -> Config:
        """The settings in force."""
        return self.holder.cfg

    @property
    def pipeline(self) -> Pipeline:
        return self.holder.pipeline

    @property
    def model_id(self) -> str:
        return self.holder.pipeline.model_id

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> int:
        """Refuse new work; queued requests get SHUTTING_DOWN. Returns how many."""
        return self.scheduler.stop(lambda job: self._reject(
            job.request.request_id, E.SHUTTING_DOWN, "the node is deactivating; request not served"))

    def apply_settings(self, cfg: Config) -> None:
        """Live settings (safety rules, serving limits, generation) for the next request."""
        self.holder.apply_settings(cfg)
        self.scheduler.configure(cfg.serving.queue_size, cfg.serving.safety_priority)

    def status(self) -> ServiceStatus:
        snap = self.metrics.snapshot()
        cfg, p = self.holder.snapshot()
        return ServiceStatus(metrics=snap, queue_depth=self.scheduler.depth(),
                             queue_capacity=cfg.serving.queue_size,
                             accepting=self.scheduler.accepting, model_id=p.model_id,
                             roofline=p.roofline.values(snap["decode_tps_p50"]) if p.roofline else {},
                             remote=p.backend.status() if p.backend is not None else None,
                             running=self.scheduler.running(), slots=self.scheduler.slots)

    # ---- intake ----------------------------------------------------------------------------
    def submit(self, raw: dict, on_done: Callable[[NavResponse], None],
               on_partial: Callable[[str, int], None] | None = None) -> Job | None:
        """Validate and queue; answers at once (on_done) when the request is rejected or its
        final action is fixed by the rules."""
        t0 = time.monotonic()
        cfg, p = self.holder.snapshot()  # one consistent set of limits and rules for intake
        try:
            request = validate_request(raw, cfg.serving, p.task.zones)
        except RequestError as exc:
            self._answer_now(on_done, self._reject(safe_request_id(raw, cfg.serving), exc.code, str(exc)))
            return None
        accepting = self.scheduler.accepting
        forced = self._forced(request, p) if accepting else None
        if forced is not None and cfg.serving.rule_forced:
            # the model has no say: answer now, the worker stays free (nor has the hazard screen:
            # it only turns moving actions into halts, and the one moving answer the rules force,
            # dock on a flat battery, it leaves alone)
            self._answer_now(on_done, self._forced_response(request, forced, t0))
            return None
        job = Job(request, on_done=self._counted(on_done), on_partial=on_partial, submitted=t0)
        if self.scheduler.submit(job):
            return job
        if forced is not None and forced.action in HALTING_ACTIONS:
            # a full queue never withholds a halt the rules already decided
            job.finish(self._forced_response(request, forced, t0))
        elif accepting:
            job.finish(self._reject(request.request_id, E.OVERLOADED,
                                    f"queue full ({cfg.serving.queue_size} waiting); retry later"))
        else:
            job.finish(self._reject(request.request_id, E.NODE_INACTIVE, "the node is not active"))
        return None

    @staticmethod
    def _forced(request: NavRequest, p: Pipeline) -> Decision | None:
        """The decision the rules fix whatever the model says, when intake may give it: any for
        a request without a goal; for one with a goal, a halt (a goal cannot change it)."""
        forced = forced_decision(p.task.safety, request, None if request.goal else "")
        if forced is None or (request.goal and forced.action not in HALTING_ACTIONS):
            return None
        return forced

    def _forced_response(self, request: NavRequest, decision: Decision, t0: float) -> NavResponse:
        return NavResponse(request_id=request.request_id, success=True, decision=decision,
                           latency=Latency(total_ms=(time.monotonic() - t0) * 1e3),
                           model_id=self.model_id)

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

    def _counted(self, on_done):
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
        decision = self.holder.pipeline.task.fallback(req, "", why.value)
        total = (time.monotonic() - job.submitted) * 1e3
        return NavResponse(request_id=req.request_id, success=True, error_code=_LATE_CODES[why],
                           error_message=msg, decision=decision, model_id=self.model_id,
                           latency=Latency(total_ms=total, queue_ms=total))

    # ---- the worker ------------------------------------------------------------------------
    def _handle(self, job: Job) -> NavResponse:
        """Runs on an inference worker thread: the request path on the pipeline in place."""
        # the turn holds the compute thread against background work (a model swap's slices)
        with self.holder.turns.request(), compute_thread.hold():
            cfg, p = self.holder.snapshot()  # one consistent set of parts per request
            turn = Turn(job.request, p, cfg, submitted=job.submitted, job=job,
                        stopping=lambda: not self.scheduler.accepting)
            turn.latency.queue_ms = turn.elapsed_ms()
            response = stages.run(turn)
        gen = turn.generation
        if gen is not None and hasattr(gen, "drafted"):
            self.metrics.count("spec_drafted", gen.drafted)
            self.metrics.count("spec_accepted", gen.accepted)
        return response
