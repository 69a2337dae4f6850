"""The navigation-reasoning service without ROS: validate, ground, schedule, prompt,
generate, parse, apply safety, fall back — and account for every request.

The ROS layer only converts messages to the raw dicts taken here and back.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from quant_llm_node.config import Config
from quant_llm_node.engine.gguf_file import ModelFileError
from quant_llm_node.engine.llama_engine import EngineError, EngineReport, EngineSettings, LlamaEngine
from quant_llm_node.models.registry import resolve_model_path
from quant_llm_node.paths import config_dir
from quant_llm_node.reasoning import errors as E
from quant_llm_node.reasoning.errors import RequestError
from quant_llm_node.reasoning.fallback import fallback_decision
from quant_llm_node.grounding.places import Place, load_places
from quant_llm_node.reasoning.prompt import PromptBuilder, plain_renderer
from quant_llm_node.reasoning.safety import DockSites, SafetyLayer
from quant_llm_node.reasoning.schema import DecisionParseError, DecisionSchema
from quant_llm_node.reasoning.types import Latency, NavResponse
from quant_llm_node.reasoning.validation import safe_request_id, validate_request
from quant_llm_node.serving.metrics import ServingMetrics
from quant_llm_node.serving.roofline import efficiency, measure_read_bandwidth_gbps, roofline_tps
from quant_llm_node.serving.scheduler import Job, Preempted, Scheduler

log = logging.getLogger("quant_llm_node")

RULE_GOAL_TARGET = "target_from_grounded_goal"


class Grounder(Protocol):
    """Maps a free-text goal to a place id (see quant_llm_node.grounding)."""

    def ground(self, text: str) -> Any: ...


class ConfigureError(RuntimeError):
    """configure failed; ``code`` and message go to the ERROR diagnostic."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class MapPlaces:
    """Places of the map: prompt entries, dock sites."""

    places: tuple[Place, ...]
    docks: DockSites

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.places)


def config_path(name: str) -> Path:
    """A config file name relative to config/, or an absolute path."""
    p = Path(name).expanduser()
    return p if p.is_absolute() else config_dir() / p


def load_map(path: str | Path) -> MapPlaces:
    """Read config/places.yaml: places for the prompt and the docks for the safety layer."""
    places = tuple(load_places(config_path(str(path))))
    docks = [p for p in places if p.kind == "dock"]
    near: dict[str, str] = {}
    for dock in docks:
        for zone in (dock.id, *dock.near):
            near.setdefault(zone, dock.id)
    return MapPlaces(places, DockSites(tuple(d.id for d in docks), near))


def json_object_complete(text: str) -> bool:
    """True once a top-level JSON object has been closed (stop condition without grammar)."""
    depth, in_str, esc, seen = 0, False, False, False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
            seen = True
        elif ch == "}":
            depth -= 1
            if seen and depth == 0:
                return True
    return False


class NavigationService:
    """Owns the engine (through the scheduler's single worker) and answers requests."""

    def __init__(self, cfg: Config,
                 grounder_factory: Optional[Callable[[Config, MapPlaces], Grounder]] = None,
                 memory_check: Optional[Callable[[Any], Any]] = None):
        self.cfg = cfg
        self._memory_check = memory_check
        self.memory: dict[str, str] = {}
        self.metrics = ServingMetrics(cfg.serving.latency_window)
        self.engine: LlamaEngine | None = None
        self.generator = None  # the engine, or a SpeculativeDecoder over it
        self._draft: LlamaEngine | None = None
        self.report: EngineReport | None = None
        self.places = load_map(cfg.grounding.places_file)
        self.schema = DecisionSchema(self.places.ids)
        self.safety = SafetyLayer(cfg.safety, self.places.docks)
        self.prompts: PromptBuilder | None = None
        self.grounder: Grounder | None = None
        self._grounder_factory = grounder_factory
        self.grounding_status: dict[str, Any] = {"enabled": cfg.grounding.enabled}
        self.prefix_ms = {"cold": float("nan")}
        self.scheduler = Scheduler(self._handle, self._late, cfg.serving.queue_size,
                                   cfg.serving.safety_priority, on_event=self.metrics.count)
        self._grammar = self.schema.gbnf() if cfg.engine.use_grammar else None
        # a constrained decision is never cut off half-way: the grammar bounds its tokens
        self.max_tokens = (max(cfg.engine.max_tokens, self.schema.max_output_chars())
                           if self._grammar else cfg.engine.max_tokens)

    # ---- lifecycle -------------------------------------------------------------------------
    def configure(self) -> EngineReport:
        """Verify and load the model, build the prompt, warm the static prefix."""
        c = self.cfg
        try:
            path, manifest_sha = resolve_model_path(c.model.name)
        except KeyError as exc:
            raise ConfigureError("MODEL_UNKNOWN", str(exc).strip("'\"")) from exc
        engine = LlamaEngine(self._engine_settings(path, c.model.sha256 or manifest_sha))
        try:
            self.report = engine.load(verify_checksum=c.model.verify_checksum,
                                      pre_load=self._check_memory)
        except (ModelFileError, EngineError) as exc:
            raise ConfigureError(exc.code, str(exc)) from exc
        self.report.extra.update(self.memory)
        self.engine = engine
        self.generator = self._speculative(engine) if c.engine.speculative != "off" else engine
        self.bandwidth_gbps = c.engine.memory_bandwidth_gbps or measure_read_bandwidth_gbps()
        self.prompts = PromptBuilder(self.places.places, self.schema,
                                     engine.chat_renderer() or plain_renderer)
        self.prefix_ms["cold"] = engine.warm(self.prompts.static_prefix)
        self.prefix_ms["prefix_tokens"] = engine.count_tokens(self.prompts.static_prefix)
        if c.grounding.enabled and self._grounder_factory is not None:
            try:
                self.grounder = self._grounder_factory(c, self.places)
                self.grounding_status.update(ready=True)
                embedder = getattr(self.grounder, "embedder", None)
                if embedder is not None and hasattr(embedder, "info"):
                    info = embedder.info()
                    self.grounding_status["providers"] = ",".join(info.get("providers", []))
                    self.grounding_status["provider_fallbacks"] = ",".join(info.get("fallbacks", []))
            except Exception as exc:  # grounding is optional: the node still serves
                self.grounder = None
                self.grounding_status.update(ready=False, error=str(exc))
                log.error("grounding unavailable: %s", exc)
        return self.report

    def _engine_settings(self, path, sha256: str) -> EngineSettings:
        """The engine section of the config for one model file (target or draft)."""
        e = self.cfg.engine
        return EngineSettings(
            model_path=str(path), sha256=sha256, n_ctx=e.n_ctx, n_threads=e.n_threads,
            n_batch=e.n_batch, n_gpu_layers=e.n_gpu_layers, seed=e.seed, flash_attn=e.flash_attn,
            kv_cache_type=e.kv_cache_type, use_mmap=e.use_mmap)

    def _speculative(self, engine: LlamaEngine):
        """A SpeculativeDecoder over the target (prompt lookup, or a draft model)."""
        from quant_llm_node.engine.speculative import SpeculativeDecoder
        c = self.cfg
        draft = None
        if c.engine.speculative == "draft":
            if not c.model.draft_name:
                raise ConfigureError("CONFIG_INVALID", "engine.speculative is draft but model.draft_name is empty")
            draft = LlamaEngine(self._engine_settings(*resolve_model_path(c.model.draft_name)))
            try:
                draft.load(verify_checksum=c.model.verify_checksum)
            except (ModelFileError, EngineError) as exc:
                raise ConfigureError(exc.code, f"draft model: {exc}") from exc
        self._draft = draft
        try:
            return SpeculativeDecoder(engine, c.engine.speculative, draft, k=c.engine.draft_tokens)
        except ValueError as exc:
            raise ConfigureError("CONFIG_INVALID", f"speculative decoding: {exc}") from exc

    def _check_memory(self, info) -> None:
        """Refuse to load a model that would not fit (instead of meeting the OOM killer)."""
        if self._memory_check is None:
            return
        verdict = self._memory_check(info)
        self.memory = verdict.key_values()
        if not verdict.ok:
            raise ConfigureError("MEMORY_BUDGET_EXCEEDED", verdict.message)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> int:
        """Refuse new work; queued requests get SHUTTING_DOWN. Returns how many."""
        return self.scheduler.stop(lambda job: self._reject(
            job.request.request_id, E.SHUTTING_DOWN, "the node is deactivating; request not served"))

    def cleanup(self) -> None:
        if self.generator is not self.engine and self.generator is not None:
            self.generator.close()
        for engine in (self._draft, self.engine):
            if engine is not None:
                engine.close()
        self.engine = self.generator = self._draft = None

    def roofline(self, snap: dict) -> dict:
        """Decode roofline for the loaded model and the achieved efficiency."""
        if self.engine is None or self.engine.info is None:
            return {}
        per_token = self.engine.info.tensor_bytes
        tps = snap["decode_tps_p50"]
        return {"memory_bandwidth_gbps": self.bandwidth_gbps,
                "roofline_decode_tps": roofline_tps(per_token, self.bandwidth_gbps),
                "roofline_efficiency": efficiency(tps, per_token, self.bandwidth_gbps)}

    @property
    def model_id(self) -> str:
        return self.report.model_id if self.report else ""

    # ---- requests --------------------------------------------------------------------------
    def submit(self, raw: dict, on_done: Callable[[NavResponse], None],
               on_partial: Callable[[str, int], None] | None = None) -> Job | None:
        """Validate and queue; answers at once (on_done) when the request is rejected."""
        t0 = time.monotonic()
        try:
            request = validate_request(raw, self.cfg.serving)
        except RequestError as exc:
            self._answer_now(on_done, self._reject(safe_request_id(raw, self.cfg.serving), exc.code, str(exc)))
            return None
        job = Job(request, on_done=self._recorder(on_done), on_partial=on_partial, submitted=t0)
        if not self.scheduler.accepting:
            job.finish(self._reject(request.request_id, E.NODE_INACTIVE, "the node is not active"))
            return None
        if not self.scheduler.submit(job):
            code = E.OVERLOADED if self.scheduler.accepting else E.NODE_INACTIVE
            msg = (f"queue full ({self.cfg.serving.queue_size} waiting); retry later"
                   if code == E.OVERLOADED else "the node is not active")
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

    def _late(self, job: Job, why: str) -> NavResponse:
        """Fallback decision for a job that could not get the model's answer in time."""
        req = job.request
        if why == "shutting_down":
            return self._reject(req.request_id, E.SHUTTING_DOWN, "the node is deactivating")
        code = E.DEADLINE_EXCEEDED if why in ("deadline", "evicted") else E.INTERNAL_ERROR
        decision = fallback_decision(req.state, "", self.safety, why)
        total = (time.monotonic() - job.submitted) * 1e3
        msg = {"deadline": f"no model answer within the {req.deadline_ms} ms deadline",
               "evicted": "queue full with safety-critical work; answered by fallback"}.get(why, why)
        return NavResponse(request_id=req.request_id, success=True, error_code=code,
                           error_message=msg, decision=decision, model_id=self.model_id,
                           latency=Latency(total_ms=total, queue_ms=total))

    def _handle(self, job: Job) -> NavResponse:
        """Runs on the inference worker thread."""
        req = job.request
        t_start = time.monotonic()
        lat = Latency(queue_ms=(t_start - job.submitted) * 1e3)
        grounded, grounding_info = "", {}
        if req.goal:
            if self.grounder is not None:
                g0 = time.perf_counter()
                result = self.grounder.ground(req.goal)
                lat.grounding_ms = (time.perf_counter() - g0) * 1e3
                grounding_info = _grounding_dict(result)
                status = grounding_info.get("status")
                if status == "ok":
                    grounded = grounding_info["place_id"]
                elif status in ("unknown", "empty"):
                    return self._finish_reject(job, E.UNKNOWN_PLACE,
                                               f"goal '{req.goal}' matches no map place", grounding_info)
                else:
                    cands = ", ".join(c[0] for c in grounding_info.get("candidates", [])[:3])
                    return self._finish_reject(job, E.AMBIGUOUS_PLACE,
                                               f"goal '{req.goal}' is ambiguous between: {cands}",
                                               grounding_info)
        if self.engine is None:
            return self._fallback(job, lat, E.MODEL_UNAVAILABLE, "no model loaded", grounded, grounding_info)
        prompt = self.prompts.build(req, grounded)
        grammar = self._grammar

        def should_stop(text: str) -> bool:
            if job.cancel.is_set() or job.preempt.is_set() or job.remaining_s() <= 0:
                return True
            return grammar is None and json_object_complete(text)

        try:
            gen = self.generator.generate(prompt, self.max_tokens, grammar,
                                       self.cfg.engine.temperature, should_stop, job.on_partial,
                                       min_room=self.max_tokens if grammar else 1)
        except EngineError as exc:
            code = E.CONTEXT_OVERFLOW if exc.code == "CONTEXT_OVERFLOW" else E.MODEL_UNAVAILABLE
            return self._fallback(job, lat, code, str(exc), grounded, grounding_info)
        if job.preempt.is_set() and not job.cancel.is_set():
            raise Preempted()
        lat.prompt_ms, lat.first_token_ms, lat.decode_ms = gen.prompt_ms, gen.first_token_ms, gen.decode_ms
        if hasattr(gen, "drafted"):
            self.metrics.count("spec_drafted", gen.drafted)
            self.metrics.count("spec_accepted", gen.accepted)
        if job.cancel.is_set():
            if not self.scheduler.accepting:
                return self._finish_reject(job, E.SHUTTING_DOWN,
                                           "the node is deactivating; generation stopped", grounding_info)
            return self._finish_reject(job, E.CANCELLED, "request cancelled", grounding_info)
        if job.remaining_s() <= 0:
            return self._fallback(job, lat, E.DEADLINE_EXCEEDED,
                                  f"no model answer within the {req.deadline_ms} ms deadline",
                                  grounded, grounding_info, gen)
        try:
            decision = self.schema.parse(gen.text)
        except DecisionParseError as exc:
            return self._fallback(job, lat, E.MODEL_OUTPUT_INVALID, str(exc), grounded, grounding_info, gen)
        if grounded and decision.target_place_id != grounded and (
                decision.action in ("go_to", "reroute") or
                (decision.action == "dock" and grounded in self.places.docks.dock_ids)):
            # the planner's goal, grounded deterministically, wins over the model's choice
            decision.target_place_id = grounded
            decision.rules_fired.append(RULE_GOAL_TARGET)
        final = self.safety.apply(decision, req.state)
        lat.total_ms = (time.monotonic() - job.submitted) * 1e3
        resp = NavResponse(request_id=req.request_id, success=True, decision=final, raw_text=gen.text,
                           latency=lat, prompt_tokens=gen.prompt_tokens,
                           completion_tokens=gen.completion_tokens, model_id=self.model_id,
                           grounding=grounding_info, decode_tps=gen.decode_tps)
        return resp

    def _finish_reject(self, job: Job, code: str, message: str, grounding: dict) -> NavResponse:
        resp = self._reject(job.request.request_id, code, message)
        resp.grounding = grounding
        resp.latency.total_ms = (time.monotonic() - job.submitted) * 1e3
        return resp

    def _fallback(self, job: Job, lat: Latency, code: str, why: str, grounded: str,
                  grounding: dict, gen=None) -> NavResponse:
        req = job.request
        decision = fallback_decision(req.state, grounded, self.safety, why)
        lat.total_ms = (time.monotonic() - job.submitted) * 1e3
        return NavResponse(request_id=req.request_id, success=True, error_code=code, error_message=why,
                           decision=decision, raw_text=gen.text if gen else "", latency=lat,
                           prompt_tokens=gen.prompt_tokens if gen else 0,
                           completion_tokens=gen.completion_tokens if gen else 0,
                           model_id=self.model_id, grounding=grounding)


def _grounding_dict(result: Any) -> dict:
    if isinstance(result, dict):
        return result
    d = dict(getattr(result, "__dict__", {}))
    d["candidates"] = [tuple(c) for c in d.get("candidates", [])]
    return d
