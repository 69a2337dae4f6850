"""Typed, validated node configuration loaded from YAML (config/robot.yaml).

Every setting is a dataclass field with a description and limits; the ROS layer
declares one parameter per field (``section.field``) from the same metadata, so
the YAML file, the ROS parameters and the core share one definition.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterator

import yaml

from quant_llm_node.engine.kv_types import KV_CACHE_TYPES

NODE_NAME = "quant_llm_node"


class ConfigError(ValueError):
    """A setting is unknown, of the wrong type or out of range."""


class ApplyMode(str, Enum):
    """When a changed setting takes effect on a running node."""

    LIVE = "live"      # at once, atomically, for the next request
    SWAP = "swap"      # a model swap: the new model loads in the background, then replaces the old
    RELOAD = "reload"  # at the next configure (refused while the node is configured)
    FIXED = "fixed"    # read at start only (read-only parameter)


class Safer(str, Enum):
    """Which way a safety-relevant setting becomes stricter. Once the node has started, a change
    may only go this way; loosening is a launch-time decision."""

    HIGHER = "higher"  # larger values are stricter (distances, reaction time, battery levels)
    LOWER = "lower"    # smaller values are stricter (speed caps, flag margins)
    ON = "on"          # true is stricter (rule toggles, checks)
    OFF = "off"        # false is stricter (permissions)


_SAFER_TEXT = {Safer.HIGHER: "larger is stricter", Safer.LOWER: "smaller is stricter",
               Safer.ON: "true is stricter", Safer.OFF: "false is stricter"}


def setting(default: Any, description: str, *, lo: float | None = None, hi: float | None = None,
            choices: tuple | None = None, mode: ApplyMode = ApplyMode.RELOAD,
            safer: Safer | None = None) -> Any:
    """A config field with the metadata that validation, ROS descriptors and the safety envelope
    use: its range or choices, when a change applies (``mode``) and, for a safety-relevant
    setting, which way is stricter (``safer``)."""
    meta = {"description": description, "lo": lo, "hi": hi, "choices": choices, "mode": mode,
            "safer": safer}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


LIVE, SWAP, FIXED = ApplyMode.LIVE, ApplyMode.SWAP, ApplyMode.FIXED


@dataclass
class ModelConfig:
    name: str = setting("qwen2.5-coder-0.5b-instruct-q4_k_m",
                        "manifest name (models/manifest.yaml) or path to a .gguf file", mode=SWAP)
    sha256: str = setting("", "expected sha256 of the model file; empty = the manifest's value "
                              "for manifest names, no check for paths", mode=SWAP)
    verify_checksum: bool = setting(True, "checksum the file at configure (the only guard "
                                          "against corrupted weights, which still load)",
                                    mode=FIXED, safer=Safer.ON)
    draft_name: str = setting("", "draft model (same tokenizer) for engine.speculative: draft")
    allow_unlisted: bool = setting(False, "let a running node swap in a .gguf path that neither the "
                                          "manifest nor model.sha256 vouches for (a launch-time "
                                          "permission; false: only known files are swapped in live)",
                                   mode=FIXED, safer=Safer.OFF)


@dataclass
class EngineConfig:
    n_ctx: int = setting(2048, "context window in tokens", lo=256, hi=131072)
    n_threads: int = setting(0, "CPU threads for decoding; 0 = number of cores", lo=0, hi=256)
    n_batch: int = setting(512, "prompt evaluation batch size", lo=8, hi=8192)
    n_gpu_layers: int = setting(0, "layers offloaded to the GPU; -1 = all", lo=-1, hi=10000)
    seed: int = setting(42, "sampling seed", lo=0, hi=2**31 - 1)
    flash_attn: bool = setting(False, "use flash attention (CUDA builds)")
    kv_cache_type: str = setting("f16", "KV cache element type", choices=tuple(KV_CACHE_TYPES))
    max_tokens: int = setting(
        96, "maximum tokens generated per answer without the grammar; with it, never fewer than "
            "the grammar's longest decision, so a constrained answer is never cut off", lo=1, hi=4096,
        mode=LIVE)
    temperature: float = setting(0.0, "sampling temperature; 0 = greedy (deterministic)",
                                 lo=0.0, hi=2.0, mode=LIVE)
    use_grammar: bool = setting(True, "constrain decoding to the decision JSON schema", mode=LIVE)
    use_mmap: bool = setting(True, "memory-map the model file")
    speculative: str = setting("off", "speculative decoding: off, lookup (prompt n-grams) or "
                                      "draft (model.draft_name)", choices=("off", "lookup", "draft"))
    draft_tokens: int = setting(4, "tokens proposed per speculative step", lo=1, hi=16)
    jump_forward: bool = setting(
        False, "jump-forward decoding under the grammar (greedy only): true evaluates the text "
               "the grammar forces (JSON keys, punctuation, the rest of a unique action or place "
               "id) in one batched llama_decode instead of one step per token, about 20 of a "
               "decision's ~29 decode steps saved; not guaranteed byte-identical to step-by-step "
               "decoding on CPU, where batched kernels round differently and a near-tie can flip "
               "(1 of 12 public scenarios changed its target here). false (exact) changes no "
               "byte: it skips the grammar's forced end, and batches forced tokens only into "
               "batches of at most LlamaEngine.exact_rows() rows, which round exactly like single "
               "steps (3 with the wheel scripts/setup.sh builds; probed at load, 1 elsewhere)")
    n_parallel: int = setting(
        1, "requests decoded together as sequences of one llama_decode batch, sharing the "
           "cached static prefix (continuous batching); 1 = one request at a time. The KV cache "
           "is shared: n_ctx must hold the static prefix plus, per sequence, its prompt suffix "
           "and token bound (about 300 tokens for a decision)", lo=1, hi=64)
    memory_bandwidth_gbps: float = setting(0.0, "memory bandwidth for the decode roofline; "
                                                "0 = the device profile's, else measured", lo=0.0,
                                           hi=10000.0)
    backend: str = setting("local", "who generates decisions: local (this process's model), remote "
                                    "(the inference server in the remote section) or hybrid (the "
                                    "server first, the local model when it fails or is slow)",
                           choices=("local", "remote", "hybrid"), mode=FIXED)


@dataclass
class ServingConfig:
    queue_size: int = setting(16, "queued requests before new ones are rejected OVERLOADED",
                              lo=1, hi=10000, mode=LIVE)
    default_deadline_ms: int = setting(15000, "deadline for requests that set none", lo=1,
                                       hi=3_600_000, mode=LIVE)
    max_deadline_ms: int = setting(600_000, "longest deadline accepted", lo=1, hi=86_400_000,
                                   mode=LIVE)
    safety_priority: int = setting(200, "priority at or above which a request is "
                                        "safety-critical (served first, may preempt)",
                                   lo=0, hi=255, mode=LIVE)
    max_query_chars: int = setting(2000, "longest query text accepted", lo=1, hi=100_000, mode=LIVE)
    max_goal_chars: int = setting(200, "longest goal text accepted", lo=1, hi=10_000, mode=LIVE)
    max_context_chars: int = setting(4000, "longest context_json accepted", lo=0, hi=100_000,
                                     mode=LIVE)
    max_request_id_chars: int = setting(128, "longest request id accepted", lo=1, hi=1024,
                                        mode=LIVE)
    max_people: int = setting(64, "most people distances accepted", lo=0, hi=10_000, mode=LIVE)
    latency_window: int = setting(512, "recent requests kept for latency percentiles",
                                  lo=8, hi=100_000)
    rule_forced: bool = setting(True, "answer at once, without the model, a request whose final "
                                      "action the safety rules fix whatever the model says (e.g. "
                                      "a person inside the stop distance); requests with a goal "
                                      "still go through grounding and the worker, which then "
                                      "skips the hazard screen when the rules halt anyway",
                              mode=LIVE)


@dataclass
class SafetyConfig:
    enabled: bool = setting(True, "apply the safety rules (they have the last word)",
                            mode=FIXED, safer=Safer.ON)
    person_stop_distance_m: float = setting(2.0, "a person closer than this forces stop",
                                            lo=0.0, hi=50.0, mode=LIVE, safer=Safer.HIGHER)
    person_reaction_time_s: float = setting(1.2, "reaction and braking time: the person stop "
                                                 "distance grows by speed x this", lo=0.0, hi=10.0,
                                            mode=LIVE, safer=Safer.HIGHER)
    person_slow_distance_m: float = setting(5.0, "a person closer than this caps speed",
                                            lo=0.0, hi=100.0, mode=LIVE, safer=Safer.HIGHER)
    person_slow_speed_mps: float = setting(0.3, "speed cap near people", lo=0.0, hi=5.0,
                                           mode=LIVE, safer=Safer.LOWER)
    obstacle_stop_distance_m: float = setting(1.0, "an obstacle closer than this forces stop",
                                              lo=0.0, hi=50.0, mode=LIVE, safer=Safer.HIGHER)
    obstacle_slow_distance_m: float = setting(3.0, "an obstacle closer than this caps speed",
                                              lo=0.0, hi=100.0, mode=LIVE, safer=Safer.HIGHER)
    obstacle_slow_speed_mps: float = setting(0.5, "speed cap near obstacles", lo=0.0, hi=5.0,
                                             mode=LIVE, safer=Safer.LOWER)
    battery_dock_pct: float = setting(10.0, "battery at or below this forces docking",
                                      lo=0.0, hi=100.0, mode=LIVE, safer=Safer.HIGHER)
    max_speed_mps: float = setting(1.5, "speed limit anywhere", lo=0.0, hi=10.0,
                                   mode=LIVE, safer=Safer.LOWER)
    zone_speed_limits: list = setting(["aisle_3:0.8", "packing:0.5", "elevator:0.3",
                                       "loading_bay:1.0"],
                                      "per-zone speed limits as 'zone_id:mps' strings",
                                      mode=LIVE, safer=Safer.LOWER)
    text_hazard_rules: bool = setting(True, "a hazard named in the report text (person down, fallen "
                                            "goods, spill, fire or smoke, closing door, something "
                                            "coming toward the robot, blocked way, stop order) "
                                            "halts the robot (reroute allowed) even when the state "
                                            "shows nothing; a wet floor slows it",
                                      mode=FIXED, safer=Safer.ON)
    strict_targets: bool = setting(True, "only the planner's grounded goal can be a go_to / reroute "
                                         "target (go_to without a goal becomes continue); dock only "
                                         "at a dock, when the battery or a dock goal justifies it",
                                   mode=FIXED, safer=Safer.ON)
    battery_low_pct: float = setting(20.0, "low battery (above battery_dock_pct): with no planner "
                                           "goal, continue becomes dock; with strict_targets, the "
                                           "model may choose dock only at or below this level or "
                                           "for a dock goal (0 = off)", lo=0.0, hi=100.0,
                                     mode=LIVE, safer=Safer.HIGHER)
    injection_hold: bool = setting(True, "a report, goal or context carrying instructions to the "
                                         "robot (rule overrides, dictated actions or speeds, role "
                                         "play, chat-template tokens, claimed goal changes) stops it "
                                         "(a low battery still docks, at the dock the rules choose): "
                                         "the model read that text, so its answer is not trusted, "
                                         "and a hazard the text plays down may be real (off: the "
                                         "other rules keep targets and speeds out of the text's "
                                         "reach, but not a hazard nobody detected)",
                                   mode=FIXED, safer=Safer.ON)
    slow_zone_no_travel: bool = setting(True, "a person inside person_slow_distance_m turns "
                                              "continue, go_to and dock into slow_down; an obstacle "
                                              "inside obstacle_slow_distance_m turns continue into "
                                              "slow_down and go_to into reroute toward the goal",
                                        mode=FIXED, safer=Safer.ON)

    def person_stop_distance(self, speed_mps: float) -> float:
        """Separation at which a person forces a stop: the configured distance plus what the
        robot covers at ``speed_mps`` before it has reacted and braked."""
        return self.person_stop_distance_m + speed_mps * self.person_reaction_time_s


@dataclass
class ScreenConfig:
    """The hazard screen (reasoning/screen.py): a language model asked, before each decision,
    whether the request describes a physical hazard; a flagged request halts the robot."""

    enabled: bool = setting(True, "ask the screen model about every request the model decides on; "
                                  "a flagged one halts the robot (reroute allowed), like a hazard "
                                  "named in the report", mode=FIXED, safer=Safer.ON)
    model: str = setting("qwen2.5-coder-1.5b-instruct-q4_k_m",
                         "screen model: manifest name or .gguf path; empty or the decision model's "
                         "name = a second context over the decision model's weights (no second "
                         "copy of the weights)")
    margin: float = setting(0.75, "logit margin of 'unsafe' over 'safe' above which a request is "
                                 "flagged (lower = more cautious); calibrated on the dev corpus "
                                 "for the default screen model", lo=-20.0, hi=20.0,
                            mode=LIVE, safer=Safer.LOWER)
    clear_margin: float = setting(-1.0, "below this margin the screen is confident the way is "
                                        "clear: with nothing near in the state, no hazard named, no "
                                        "instructions in the request and the battery above "
                                        "safety.battery_low_pct, the decision model's halt or "
                                        "slow_down becomes continue (go_to toward the planner's "
                                        "goal); -20 = never", lo=-20.0, hi=20.0,
                                  mode=LIVE, safer=Safer.LOWER)


@dataclass
class GroundingConfig:
    enabled: bool = setting(True, "ground free-text goals to map places with the embedder")
    places_file: str = setting("places.yaml", "map places (relative to config/ or absolute)")
    settings_file: str = setting("grounding.yaml", "embedder and threshold settings")


@dataclass
class RemoteConfig:
    """The inference server used by engine.backend remote and hybrid (llama.cpp or vLLM). The
    remote link is fixed at launch: no parameter of it is settable on a started node, in any
    lifecycle state."""

    url: str = setting("", "server base URL, e.g. https://gpu-server.site:8443 (the engine posts "
                           "to URL/v1/completions); credentials in the URL are refused", mode=FIXED)
    api: str = setting("llama_cpp", "server dialect: llama_cpp (llama.cpp server or "
                                    "llama-cpp-python server: grammar, cache_prompt) or vllm "
                                    "(structured_outputs.grammar)", choices=("llama_cpp", "vllm"),
                       mode=FIXED)
    model: str = setting("", "model name sent with each request (vLLM: the served model name; "
                             "llama.cpp servers ignore it)", mode=FIXED)
    ca_file: str = setting("", "PEM file of the CA that signs the server's TLS certificate; "
                               "empty = the system CAs", mode=FIXED)
    token_file: str = setting("", "file holding the bearer token (the token itself is never a "
                                  "parameter); empty = token_env or no token", mode=FIXED)
    token_env: str = setting("", "name of the environment variable holding the bearer token; "
                                 "empty = token_file or no token", mode=FIXED)
    allow_insecure_http: bool = setting(False, "allow plain http to a host that is not loopback "
                                               "(prompts and token travel unencrypted)",
                                        mode=FIXED, safer=Safer.OFF)
    connect_timeout_s: float = setting(1.0, "TCP and TLS connect timeout", lo=0.01, hi=60.0,
                                       mode=FIXED)
    read_timeout_s: float = setting(5.0, "longest wait for the next bytes of an answer, the "
                                         "first token included", lo=0.05, hi=600.0,
                                    mode=FIXED)
    poll_interval_s: float = setting(0.02, "how often a waiting stream checks cancel, preemption "
                                           "and the deadline", lo=0.001, hi=1.0,
                                     mode=FIXED)
    deadline_share: float = setting(0.5, "hybrid: share of the request's remaining deadline the "
                                         "server gets before the local model answers", lo=0.05,
                                    hi=1.0,
                                    mode=FIXED)
    breaker_failures: int = setting(3, "consecutive remote failures that open the circuit (then "
                                       "requests skip the server at once)", lo=1, hi=1000,
                                    mode=FIXED)
    breaker_cooldown_s: float = setting(10.0, "seconds an open circuit waits before one probe "
                                              "request", lo=0.1, hi=3600.0,
                                        mode=FIXED)
    stats_window: int = setting(256, "recent remote requests kept for latency percentiles and "
                                     "the local share", lo=8, hi=100_000,
                                mode=FIXED)
    warn_local_share: float = setting(0.2, "remote diagnostic WARNs when more than this share of "
                                           "recent requests was answered locally", lo=0.0, hi=1.0,
                                      mode=FIXED)


@dataclass
class NodeConfig:
    autostart: bool = setting(True, "take the node to active by itself after start", mode=FIXED)
    device_profile: str = setting("", "device profile (config/profiles/NAME.yaml) whose "
                                      "engine settings and memory budget apply; empty = none")
    diagnostics_period_s: float = setting(1.0, "diagnostics publishing period", lo=0.05, hi=60.0,
                                          mode=LIVE)
    hardware_id: str = setting("", "hardware_id in diagnostics; empty = host name")


@dataclass
class Config:
    """The whole node configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    screen: ScreenConfig = field(default_factory=ScreenConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    remote: RemoteConfig = field(default_factory=RemoteConfig)

    def flat(self) -> dict[str, Any]:
        """``{"section.field": value}`` for every setting."""
        return {name: getattr(getattr(self, sec), f.name) for name, sec, f in iter_settings()}


def iter_settings() -> Iterator[tuple[str, str, dataclasses.Field]]:
    """(``section.field``, section, field) for every setting, in declaration order."""
    for sec in dataclasses.fields(Config):
        for f in dataclasses.fields(sec.default_factory()):
            yield f"{sec.name}.{f.name}", sec.name, f


def _meta(name: str) -> dict:
    for full, _, f in iter_settings():
        if full == name:
            return f.metadata
    raise ConfigError(f"unknown setting '{name}'")


def apply_mode(name: str) -> ApplyMode:
    """How a change of setting ``name`` (``section.field``) is applied on a running node."""
    return _meta(name)["mode"]


def safer_direction(name: str) -> Safer | None:
    """Which way setting ``name`` is stricter (None: no safety direction)."""
    return _meta(name)["safer"]


def direction_text(safer: Safer) -> str:
    return _SAFER_TEXT[safer]


def loosens(name: str, old: Any, new: Any) -> bool:
    """Whether changing setting ``name`` from ``old`` to ``new`` loosens it. For the per-zone speed
    limits: a zone dropped, or a zone's limit raised."""
    safer = safer_direction(name)
    if safer is None or old == new:
        return False
    if name == "safety.zone_speed_limits":
        before, after = parse_zone_limits(old), parse_zone_limits(new)
        return any(zone not in after or after[zone] > limit for zone, limit in before.items())
    if safer is Safer.HIGHER:
        return new < old
    if safer is Safer.LOWER:
        return new > old
    if safer is Safer.ON:
        return bool(old) and not new
    return not old and bool(new)


def loosened(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Settings (``section.field``) whose value in ``after`` is looser than in ``before``."""
    return [name for name, value in after.items()
            if name in before and loosens(name, before[name], value)]


def _coerce(name: str, f: dataclasses.Field, value: Any) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    kind = type(default)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true/false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{name}: must be finite, got {value!r}")
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
    elif kind is list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        value = list(value)
    meta = f.metadata
    if meta.get("lo") is not None and value < meta["lo"]:
        raise ConfigError(f"{name}: {value} is below the minimum {meta['lo']}")
    if meta.get("hi") is not None and value > meta["hi"]:
        raise ConfigError(f"{name}: {value} is above the maximum {meta['hi']}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(meta['choices'])}")
    return value


def config_from_flat(values: dict[str, Any], base: Config | None = None) -> Config:
    """Apply ``{"section.field": value}`` over ``base`` (defaults), validating each."""
    cfg = copy.deepcopy(base) if base else Config()
    known = {name: (sec, f) for name, sec, f in iter_settings()}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"unknown setting '{name}'")
        sec, f = known[name]
        setattr(getattr(cfg, sec), f.name, _coerce(name, f, value))
    _check_consistency(cfg)
    return cfg


def _check_consistency(cfg: Config) -> None:
    s = cfg.safety
    if s.person_slow_distance_m < s.person_stop_distance_m:
        raise ConfigError("safety.person_slow_distance_m must be >= person_stop_distance_m")
    if s.obstacle_slow_distance_m < s.obstacle_stop_distance_m:
        raise ConfigError("safety.obstacle_slow_distance_m must be >= obstacle_stop_distance_m")
    parse_zone_limits(s.zone_speed_limits)
    if cfg.screen.clear_margin >= cfg.screen.margin:
        raise ConfigError("screen.clear_margin must stay below screen.margin")
    if cfg.serving.default_deadline_ms > cfg.serving.max_deadline_ms:
        raise ConfigError("serving.default_deadline_ms must be <= serving.max_deadline_ms")


def parse_zone_limits(items: list[str]) -> dict[str, float]:
    """``["aisle_3:0.8"]`` -> ``{"aisle_3": 0.8}``."""
    out = {}
    for item in items:
        zone, sep, speed = item.partition(":")
        try:
            value = float(speed)
        except ValueError:
            value = float("nan")
        if not sep or not zone.strip() or not math.isfinite(value) or value < 0:
            raise ConfigError(f"safety.zone_speed_limits: '{item}' is not 'zone_id:speed_mps'")
        out[zone.strip()] = value
    return out


def _flatten(prefix: str, node: Any, out: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), value, out)
    else:
        out[prefix] = node


def params_section(doc: Any, node_name: str = NODE_NAME) -> dict[str, Any]:
    """The node's ``ros__parameters`` from a ROS params file (or a plain mapping)."""
    if not isinstance(doc, dict):
        raise ConfigError("the configuration file must hold a mapping")
    for key, value in doc.items():
        if isinstance(value, dict) and "ros__parameters" in value and (
                key == "/**" or key.rsplit("/", 1)[-1] == node_name):
            return value["ros__parameters"]
    return doc


def load_config(path: str | Path, node_name: str = NODE_NAME) -> Config:
    """Load a ROS params file (``node: ros__parameters: …``) or a plain YAML mapping."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    flat: dict[str, Any] = {}
    _flatten("", params_section(doc or {}, node_name), flat)
    return config_from_flat(flat)
