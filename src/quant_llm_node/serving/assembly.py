"""Configure-time assembly: config -> loaded models and the parts of the request pipeline.

One straight sequence, each step raising ConfigureError with a stable code: apply the device
profile, read the map, resolve the model (and the hazard screen's), read its GGUF header (and
checksum), check the memory budget (the screen's context, and its weights when it has a model of
its own, counted in), load the engine (and a draft model or speculative decoder), build the
prompt and warm its static prefix, open the hazard screen and warm its prefix, open the
grounder. The result owns the loaded models until ``close()``.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

from quant_llm_node.config import Config, EngineConfig, ModelConfig
from quant_llm_node.deploy import (
    BudgetVerdict, DeviceProfile, ProfileError, available_memory_bytes, check_budget,
    check_profile_memory, estimate_memory, load_profile)
from quant_llm_node.deploy.profiles import ENGINE_KEYS
from quant_llm_node.engine.gguf_file import GGUFInfo, ModelFileError, verify_model_file
from quant_llm_node.engine.llama_engine import EngineError, EngineReport, EngineSettings, LlamaEngine
from quant_llm_node.errors import CodedError
from quant_llm_node.grounding import open_place_index
from quant_llm_node.models.registry import resolve_model_path
from quant_llm_node.reasoning.prompt import PromptBuilder
from quant_llm_node.reasoning.task import DecisionTask, config_path
from quant_llm_node.serving.backends import BACKEND_LOCAL, Backend, build_backend
from quant_llm_node.serving.hazard_screen import SCREEN_BATCH, HazardScreen, screen_memory_bytes
from quant_llm_node.serving.pipeline import Generator, GroundingStatus, Pipeline, Roofline
from quant_llm_node.serving.roofline import measure_read_bandwidth_gbps

log = logging.getLogger("quant_llm_node")


class ConfigureError(CodedError, RuntimeError):
    """configure failed; ``code`` and message go to the ERROR diagnostic."""


def apply_profile(cfg: Config) -> tuple[Config, DeviceProfile | None]:
    """The profile named in ``node.device_profile`` supplies engine settings and the default
    model; a parameter set to a value other than its default wins over the profile. Raises
    ProfileError."""
    if not cfg.node.device_profile:
        return cfg, None
    profile = load_profile(cfg.node.device_profile)
    cfg = copy.deepcopy(cfg)
    if cfg.model.name == ModelConfig().name and not cfg.model.sha256:
        cfg.model.name = profile.model  # the device's default model (README: model per profile)
    defaults = EngineConfig()
    for key in ENGINE_KEYS:
        if getattr(cfg.engine, key) == getattr(defaults, key):
            setattr(cfg.engine, key, getattr(profile, key))
    if not cfg.engine.memory_bandwidth_gbps:
        cfg.engine.memory_bandwidth_gbps = profile.memory_bandwidth_gbps
    effective = profile.replace(**{k: getattr(cfg.engine, k) for k in ENGINE_KEYS})
    return cfg, effective


def check_memory(cfg: Config, profile: DeviceProfile | None, info: GGUFInfo,
                 resident_bytes: int = 0) -> BudgetVerdict:
    """Weights + KV + buffers against the profile's budget and the free memory (against free
    memory alone when no profile is set), beside ``resident_bytes`` of a model kept loaded."""
    if profile is not None:
        return check_profile_memory(info, profile, resident_bytes=resident_bytes)
    e = cfg.engine
    estimate = estimate_memory(info, n_ctx=e.n_ctx, kv_cache_type=e.kv_cache_type,
                               n_batch=e.n_batch, flash_attn=e.flash_attn)
    free = available_memory_bytes()
    return check_budget(estimate, free or estimate.total_bytes, free, resident_bytes)


@dataclass
class Assembly:
    """What configure built. Owns the loaded models (``close()`` frees them)."""

    cfg: Config
    task: DecisionTask
    engine: LlamaEngine | None = None
    generator: Generator | None = None   # the engine, a speculative decoder or a batch loop over it
    draft: LlamaEngine | None = None
    report: EngineReport | None = None
    prompts: PromptBuilder | None = None
    prefix_tokens: int = 0
    prefix_cold_ms: float = float("nan")
    grounder: object | None = None
    grounding: GroundingStatus = field(default_factory=GroundingStatus)
    roofline: Roofline | None = None
    backend: Backend | None = None         # engine.backend remote / hybrid: the server side
    screen: HazardScreen | None = None     # screen.enabled: asked before each model decision
    screen_plan: _ScreenPlan | None = None
    screen_warm_ms: float = float("nan")
    memory: dict[str, str] = field(default_factory=dict)
    memory_bytes: int = 0                  # the budget check's estimate of what it holds
    borrowed: set[str] = field(default_factory=set)  # parts taken over from the serving assembly

    @property
    def model_id(self) -> str:
        return self.report.model_id if self.report else ""

    def pipeline(self) -> Pipeline:
        """The request pipeline's view of this assembly (immutable; swapped whole)."""
        return Pipeline(task=self.task, prompts=self.prompts, generator=self.generator,
                        grounder=self.grounder, model_id=self.model_id, roofline=self.roofline,
                        backend=self.backend, screen=self.screen)

    def hand_over(self, successor: "Assembly") -> None:
        """``successor`` (put in place of this one) now owns the parts it borrowed from it."""
        for name in successor.borrowed:
            setattr(self, name, None)
        successor.borrowed.clear()

    def close(self) -> None:
        """Close the server connections; free the speculative decoder, the draft and the model
        (not the parts borrowed from the assembly serving meanwhile)."""
        if self.backend is not None:
            self.backend.close()
            self.generator, self.backend = self.backend.local, None
        if self.generator is not None and self.generator is not self.engine:
            close = getattr(self.generator, "close", None)
            if close is not None:
                close()
        if self.screen is not None and "screen" not in self.borrowed:
            self.screen.close()
        self.screen = None
        for engine in (self.draft, self.engine):
            if engine is not None:
                engine.close()
        self.engine = self.generator = self.draft = None


def assemble(cfg: Config, grounding: bool = True, warm: bool = True, resident_bytes: int = 0,
             reuse: Assembly | None = None) -> Assembly:
    """Run the configure sequence for ``cfg``; raises ConfigureError (and frees what it loaded).
    A model swap passes ``resident_bytes`` (memory of the assembly that keeps serving
    meanwhile) and ``reuse`` (the serving assembly: a hazard screen on a model of its own, the
    grounder and the bandwidth figure are taken over when their settings did not change, not
    loaded and warmed again); it runs this as background work (engine/compute_thread.py)."""
    try:
        cfg, profile = apply_profile(cfg)
    except ProfileError as exc:
        raise ConfigureError("CONFIG_INVALID", str(exc)) from exc
    try:
        task = DecisionTask.from_config(cfg)
    except (OSError, ValueError) as exc:
        raise ConfigureError("CONFIG_INVALID", f"places file: {exc}") from exc
    out = Assembly(cfg=cfg, task=task)
    try:
        _load_models(out, profile, resident_bytes, reuse)
        out.prompts = task.prompts(out.engine.chat_renderer())
        out.prefix_tokens = out.engine.count_tokens(out.prompts.static_prefix)
        if warm:
            out.prefix_cold_ms = out.engine.warm(out.prompts.static_prefix)
        out.report.extra.update(static_prefix_tokens=out.prefix_tokens,
                                static_prefix_warm_ms=round(out.prefix_cold_ms, 1))
        if cfg.screen.enabled:
            _open_screen(out, warm)
        if cfg.engine.n_parallel > 1:
            _batch_loop(out)
        if cfg.engine.backend != BACKEND_LOCAL:
            _open_backend(out, warm)
    except BaseException:
        out.close()
        raise
    bandwidth = cfg.engine.memory_bandwidth_gbps or (
        reuse.roofline.bandwidth_gbps if reuse is not None and reuse.roofline is not None
        else measure_read_bandwidth_gbps(out.engine.settings.threads))
    out.roofline = Roofline(out.engine.info.tensor_bytes, bandwidth)
    out.grounding = GroundingStatus(enabled=cfg.grounding.enabled and grounding)
    if out.grounding.enabled:
        if reuse is not None and reuse.grounding.ready and reuse.cfg.grounding == cfg.grounding:
            out.grounder, out.grounding = reuse.grounder, copy.copy(reuse.grounding)
        else:
            _open_grounder(out)
    return out


def _load_models(out: Assembly, profile: DeviceProfile | None, resident_bytes: int,
                 reuse: Assembly | None = None) -> None:
    c = out.cfg
    try:
        path, manifest_sha = resolve_model_path(c.model.name)
    except KeyError as exc:
        raise ConfigureError("MODEL_UNKNOWN", str(exc).strip("'\"")) from exc
    settings = EngineSettings.from_config(c.engine, path, c.model.sha256 or manifest_sha)
    try:
        info = verify_model_file(settings.model_path,
                                 settings.sha256 if c.model.verify_checksum else "")
        screen_bytes = _plan_screen(out, path, info, reuse)
        verdict = check_memory(c, profile, info, resident_bytes + screen_bytes)
        out.memory = verdict.key_values()
        out.memory["memory_screen_mb"] = f"{screen_bytes / 2**20:.0f}"
        out.memory_bytes = verdict.estimate.total_bytes + (out.screen_plan.bytes if out.screen_plan else 0)
        if not verdict.ok:
            raise ConfigureError("MEMORY_BUDGET_EXCEEDED", verdict.message)
        out.engine = LlamaEngine(settings)
        out.report = out.engine.load(info=info)
    except (ModelFileError, EngineError) as exc:
        raise ConfigureError(exc.code, str(exc)) from exc
    out.report.extra.update(out.memory)
    out.generator = out.engine
    if c.engine.speculative != "off":
        if c.engine.n_parallel > 1:
            raise ConfigureError("CONFIG_INVALID", "engine.speculative needs engine.n_parallel 1 "
                                                   "(batched requests are decoded step by step)")
        out.generator = _speculative(out)


@dataclass
class _ScreenPlan:
    """The screen's model: None = the decision model's weights (shared)."""

    settings: EngineSettings | None = None
    info: GGUFInfo | None = None
    reuse: HazardScreen | None = None   # the serving assembly's screen, same model and settings
    bytes: int = 0                      # what the screen holds (KV, buffers, own weights)


def _plan_screen(out: Assembly, decision_path, decision_info: GGUFInfo,
                 reuse: Assembly | None = None) -> int:
    """Resolve and check the screen's model (screen.enabled); returns the bytes the screen adds
    (raises ConfigureError). A screen on a model of its own that ``reuse`` already runs with the
    same settings is taken over (it adds nothing)."""
    c = out.cfg
    if not c.screen.enabled:
        return 0
    plan = _ScreenPlan()
    if c.screen.model and c.screen.model != c.model.name:
        try:
            path, sha = resolve_model_path(c.screen.model)
        except KeyError as exc:
            raise ConfigureError("MODEL_UNKNOWN", f"screen model: {str(exc).strip(chr(39) + chr(34))}") from exc
        if str(path) != str(decision_path):
            # its own context is never used (the screen has a side context): keep it tiny
            engine_cfg = copy.deepcopy(c.engine)
            engine_cfg.n_ctx, engine_cfg.n_batch, engine_cfg.n_parallel = 256, SCREEN_BATCH, 1
            plan.settings = EngineSettings.from_config(engine_cfg, path, sha)
            running = reuse.screen if reuse is not None else None
            if running is not None and running.owns_engine and running.engine.settings == plan.settings:
                plan.reuse = running
                plan.bytes = screen_memory_bytes(running.engine.info, shared=False)
                out.screen_plan = plan
                return 0  # already counted in the serving assembly's resident bytes
            try:
                plan.info = verify_model_file(plan.settings.model_path,
                                              plan.settings.sha256 if c.model.verify_checksum else "")
            except ModelFileError as exc:
                raise ConfigureError(exc.code, f"screen model: {exc}") from exc
    out.screen_plan = plan
    plan.bytes = screen_memory_bytes(plan.info or decision_info, shared=plan.info is None)
    return plan.bytes


def _open_screen(out: Assembly, warm: bool) -> None:
    """The hazard screen over the decision model's weights or its own model; its static prefix
    (instructions and examples) is evaluated now."""
    plan = out.screen_plan or _ScreenPlan()
    if plan.reuse is not None:
        out.screen, out.screen_warm_ms = plan.reuse, 0.0
        out.borrowed.add("screen")
        out.report.extra.update(screen_model=out.screen.model_id,
                                screen_prefix_tokens=out.screen.prefix_tokens, screen_warm_ms=0.0)
        return
    engine, owns = out.engine, False
    try:
        if plan.settings is not None:
            engine, owns = LlamaEngine(plan.settings), True
            engine.load(info=plan.info)
        out.screen = HazardScreen(engine, out.cfg.screen.margin, owns_engine=owns,
                                  clear_margin=out.cfg.screen.clear_margin)
    except EngineError as exc:
        if owns:
            engine.close()
        raise ConfigureError(exc.code, f"screen model: {exc}") from exc
    if warm:
        out.screen_warm_ms = out.screen.warm()
    out.report.extra.update(screen_model=out.screen.model_id,
                            screen_prefix_tokens=out.screen.prefix_tokens,
                            screen_warm_ms=round(out.screen_warm_ms, 1))


def _batch_loop(out: Assembly) -> None:
    """engine.n_parallel > 1: the batch loop becomes the engine's one owner (after the warm-up,
    which ran on this thread before the loop existed)."""
    from quant_llm_node.serving.batch_loop import BatchLoop
    try:
        out.generator = BatchLoop(out.engine, out.cfg.engine.n_parallel, out.cfg.engine.jump_forward)
    except EngineError as exc:
        raise ConfigureError(exc.code, f"batching: {exc}") from exc


def _open_backend(out: Assembly, warm: bool) -> None:
    """engine.backend remote / hybrid: the server engine behind its breaker (and, for hybrid,
    the local generator as fallback). The server's prefix cache is warmed when it answers; a
    server that is down at configure does not fail it (the breaker and diagnostics say so)."""
    try:
        out.backend = build_backend(out.cfg, out.generator, out.task.schema.parse)
    except EngineError as exc:
        raise ConfigureError(exc.code, f"remote backend: {exc}") from exc
    out.generator = out.backend.generator
    if warm:
        try:
            out.backend.remote.warm(out.prompts.static_prefix)
        except EngineError as exc:
            log.warning("remote backend: static prefix not warmed on the server: %s", exc)


def _speculative(out: Assembly):
    """A SpeculativeDecoder over the target (prompt lookup, or a draft model)."""
    from quant_llm_node.engine.speculative import SpeculativeDecoder
    c = out.cfg
    if c.engine.speculative == "draft":
        if not c.model.draft_name:
            raise ConfigureError("CONFIG_INVALID", "engine.speculative is draft but model.draft_name is empty")
        try:
            out.draft = LlamaEngine(EngineSettings.from_config(c.engine, *resolve_model_path(c.model.draft_name)))
            out.draft.load(verify_checksum=c.model.verify_checksum)
        except KeyError as exc:
            raise ConfigureError("MODEL_UNKNOWN", f"draft model: {exc}") from exc
        except (ModelFileError, EngineError) as exc:
            raise ConfigureError(exc.code, f"draft model: {exc}") from exc
    try:
        return SpeculativeDecoder(out.engine, c.engine.speculative, out.draft, k=c.engine.draft_tokens)
    except ValueError as exc:
        raise ConfigureError("CONFIG_INVALID", f"speculative decoding: {exc}") from exc


def _open_grounder(out: Assembly) -> None:
    """The INT8 ONNX Runtime embedder over the map's places; optional: the node still serves."""
    try:
        out.grounder = open_place_index(out.task.places.places,
                                        config_path(out.cfg.grounding.settings_file))
    except Exception as exc:  # noqa: BLE001 — any failure leaves grounding off, said in diagnostics
        out.grounding.ready, out.grounding.error = False, str(exc)
        log.error("grounding unavailable: %s", exc)
        return
    info = out.grounder.embedder.info()
    out.grounding.ready = True
    out.grounding.providers = ",".join(info.get("providers", []))
    out.grounding.provider_fallbacks = ",".join(info.get("fallbacks", []))
