"""Device profiles: per-board engine settings and memory limits (config/profiles/*.yaml).

A profile says how to run llama.cpp on one kind of machine (layers offloaded,
context, threads, KV cache type) and what the robot can spare for this node
(``memory_budget_mb``). Every key is required and checked; a bad file raises
:class:`ProfileError` naming the file and the key.
"""
from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from quant_llm_node.engine.kv_types import KV_CACHE_TYPES

PACKAGE = "quant_llm_node"
PROFILES_SUBDIR = "profiles"
PROFILE_SUFFIXES = (".yaml", ".yml")
ALL_LAYERS = -1
# Profile keys that are also engine settings of the node (quant_llm_node.config.EngineConfig).
ENGINE_KEYS = ("n_gpu_layers", "n_ctx", "n_threads", "n_batch", "kv_cache_type", "flash_attn",
               "n_parallel")
MIB = 1 << 20
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ProfileError(ValueError):
    """A device profile is missing, unknown, or has a bad key or value."""


@dataclass(frozen=True)
class DeviceProfile:
    """Engine settings and memory limits for one kind of device."""

    name: str
    model: str                 # the default model on this device (model.name left at its default)
    n_gpu_layers: int
    n_ctx: int
    n_threads: int
    n_batch: int
    kv_cache_type: str
    flash_attn: bool
    n_parallel: int
    memory_bandwidth_gbps: float
    memory_budget_mb: int
    runtime_overhead_mb: int
    onnx_providers: tuple[str, ...]
    unified_memory: bool
    source: str = dataclasses.field(default="", compare=False)

    @property
    def memory_budget_bytes(self) -> int:
        return self.memory_budget_mb * MIB


    def to_dict(self) -> dict[str, Any]:
        """The YAML keys and values (``source`` left out)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "source"}
        out["onnx_providers"] = list(self.onnx_providers)
        return out

    def replace(self, **changes: Any) -> "DeviceProfile":
        """A validated copy with some keys changed (e.g. ROS parameter overrides)."""
        data = self.to_dict()
        unknown = sorted(set(changes) - set(data))
        if unknown:
            raise ProfileError(f"profile '{self.name}': unknown key(s) {unknown}")
        data.update(changes)
        return profile_from_dict(data, origin=f"{self.source or self.name} (with overrides)")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_providers(v: Any) -> str | None:
    if not isinstance(v, (list, tuple)) or not v:
        return "must be a non-empty list of ONNX Runtime provider names"
    bad = [p for p in v if not isinstance(p, str) or not p.endswith("ExecutionProvider")]
    if bad:
        return f"has entries that are not provider names: {bad!r}"
    return None


# key -> (type description, type check, value check returning an error or None)
_FIELDS: dict[str, tuple[str, Any, Any]] = {
    "name": ("a string", lambda v: isinstance(v, str),
             lambda v: None if _NAME_RE.match(v) else "must be a non-empty word (letters, digits, _ . -)"),
    "model": ("a string", lambda v: isinstance(v, str),
              lambda v: None if v.strip() else "must name a model (models/manifest.yaml or a path)"),
    "n_gpu_layers": ("an integer", _is_int,
                     lambda v: None if v >= ALL_LAYERS else f"must be >= {ALL_LAYERS} (-1 = all layers)"),
    "n_ctx": ("an integer", _is_int, lambda v: None if v > 0 else "must be > 0"),
    "n_threads": ("an integer", _is_int, lambda v: None if v > 0 else "must be > 0"),
    "n_batch": ("an integer", _is_int, lambda v: None if v > 0 else "must be > 0"),
    "kv_cache_type": ("a string", lambda v: isinstance(v, str),
                      lambda v: None if v in KV_CACHE_TYPES else f"must be one of {list(KV_CACHE_TYPES)}"),
    "flash_attn": ("a boolean", lambda v: isinstance(v, bool), lambda v: None),
    "n_parallel": ("an integer", _is_int, lambda v: None if 1 <= v <= 64 else "must be 1..64"),
    "memory_bandwidth_gbps": ("a number", _is_number,
                              lambda v: None if v > 0 else "must be > 0 (GB/s)"),
    "memory_budget_mb": ("an integer", _is_int, lambda v: None if v > 0 else "must be > 0"),
    "runtime_overhead_mb": ("an integer", _is_int, lambda v: None if v >= 0 else "must be >= 0"),
    "onnx_providers": ("a list", lambda v: isinstance(v, (list, tuple)), _check_providers),
    "unified_memory": ("a boolean", lambda v: isinstance(v, bool), lambda v: None),
}


def profile_from_dict(data: Any, origin: str = "<dict>") -> DeviceProfile:
    """Validate a mapping of profile keys; raises :class:`ProfileError`."""
    if not isinstance(data, dict):
        raise ProfileError(f"{origin}: a profile must be a mapping of keys, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in _FIELDS)
    if unknown:
        raise ProfileError(f"{origin}: unknown key(s) {unknown}; known keys: {sorted(_FIELDS)}")
    missing = [k for k in _FIELDS if k not in data]
    if missing:
        raise ProfileError(f"{origin}: missing key(s) {missing}")
    for key, (kind, type_ok, value_check) in _FIELDS.items():
        value = data[key]
        if not type_ok(value):
            raise ProfileError(f"{origin}: '{key}' must be {kind}, got {value!r} "
                               f"({type(value).__name__})")
        problem = value_check(value)
        if problem:
            raise ProfileError(f"{origin}: '{key}' {problem}, got {value!r}")
    if data["kv_cache_type"] != "f16" and not data["flash_attn"]:
        raise ProfileError(
            f"{origin}: kv_cache_type {data['kv_cache_type']} needs flash_attn: true "
            "(llama.cpp refuses a quantized V cache without flash attention)")
    values = dict(data)
    values["onnx_providers"] = tuple(data["onnx_providers"])
    values["memory_bandwidth_gbps"] = float(data["memory_bandwidth_gbps"])
    return DeviceProfile(source=origin, **values)


def _candidate_dirs(config_dir: str | Path | None) -> list[Path]:
    if config_dir is not None:
        base = Path(config_dir).expanduser()
        return [base / PROFILES_SUBDIR, base]
    dirs: list[Path] = []
    try:  # env override, source checkout, or colcon share/ (one rule for the whole project)
        from quant_llm_node.paths import config_dir as project_config_dir
        dirs.append(project_config_dir() / PROFILES_SUBDIR)
    except (ImportError, FileNotFoundError):
        pass
    here = Path(__file__).resolve()
    for parent in here.parents:  # checkout (config/ beside src/) or an install prefix
        dirs.append(parent / "config" / PROFILES_SUBDIR)
        dirs.append(parent / "share" / PACKAGE / "config" / PROFILES_SUBDIR)
    dirs.append(Path(sys.prefix) / "share" / PACKAGE / "config" / PROFILES_SUBDIR)
    return dirs


def profiles_dir(config_dir: str | Path | None = None) -> Path:
    """The folder holding the shipped profiles; ``config_dir`` wins when given."""
    tried = []
    for d in _candidate_dirs(config_dir):
        if d.is_dir() and any(d.glob("*.yaml")):
            return d
        tried.append(str(d))
    raise ProfileError(f"no device profile folder found (looked in: {', '.join(tried[:6])}"
                       f"{' …' if len(tried) > 6 else ''}); pass config_dir or set QLN_CONFIG_DIR")


def list_profiles(config_dir: str | Path | None = None) -> list[str]:
    """Names of the profiles available (file stems)."""
    d = profiles_dir(config_dir)
    return sorted(p.stem for p in d.iterdir() if p.suffix in PROFILE_SUFFIXES)


def _looks_like_path(name_or_path: str | Path) -> bool:
    text = str(name_or_path)
    return isinstance(name_or_path, Path) or "/" in text or text.endswith(PROFILE_SUFFIXES)


def load_profile(name_or_path: str | Path, config_dir: str | Path | None = None) -> DeviceProfile:
    """Load a profile by name (``orin_nx_16gb``) or by path to a YAML file."""
    if not str(name_or_path).strip():
        raise ProfileError("empty device profile name")
    if _looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ProfileError(f"device profile file not found: {path}")
    else:
        name = str(name_or_path)
        if not _NAME_RE.match(name):
            raise ProfileError(f"bad device profile name {name!r}")
        d = profiles_dir(config_dir)
        path = next((d / f"{name}{s}" for s in PROFILE_SUFFIXES if (d / f"{name}{s}").is_file()), None)
        if path is None:
            raise ProfileError(f"unknown device profile '{name}' in {d}; "
                               f"available: {', '.join(list_profiles(config_dir)) or 'none'}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc}") from exc
    return profile_from_dict(data, origin=str(path))
