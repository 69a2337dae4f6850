"""The node's ROS parameters: descriptors from the settings' metadata, and what a change means.

Each setting declares its apply mode and, when it bears on safety, which way is stricter
(quant_llm_node.config). ``live`` settings apply to the next request, ``swap`` settings (the
model) load a new model beside the serving one, ``reload`` settings wait for the next configure
(refused while configured, with the reason), ``fixed`` ones are read-only. Once the node has
started, in every lifecycle state, a change may make it stricter, never looser: loosening is a
launch-time decision (the params file, or ``-p`` at launch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from quant_llm_node.config import (
    ApplyMode, Config, ConfigError, apply_mode, config_from_flat, direction_text, loosened,
    safer_direction)
from quant_llm_node.models.registry import unvouched_reason

_PARAM_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
                list: ParameterType.PARAMETER_STRING_ARRAY}

_APPLIES = {ApplyMode.LIVE: "changes apply live, to the next request",
            ApplyMode.SWAP: "a change on a running node swaps the model without dropping queries",
            ApplyMode.RELOAD: "changes apply at the next configure (refused while configured)",
            ApplyMode.FIXED: "read at launch only"}

# settings that name a model file: a running node takes only files it can vouch for
_MODEL_FILES = {"model.name": "model.sha256", "model.draft_name": "", "screen.model": ""}


def descriptor(name: str, default: Any, meta: dict) -> ParameterDescriptor:
    """The ROS descriptor of one setting: type, range or choices, how a change applies and,
    for a safety-relevant setting, which way is stricter."""
    mode = apply_mode(name)
    desc = ParameterDescriptor(description=meta["description"], type=_PARAM_TYPES[type(default)],
                               read_only=mode is ApplyMode.FIXED)
    constraints = [f"applies: {mode.value} ({_APPLIES[mode]})"]
    if meta.get("choices"):
        constraints.insert(0, "one of: " + ", ".join(meta["choices"]))
    safer = safer_direction(name)
    if safer is not None:
        constraints.append(f"safety: {direction_text(safer)}; a running node only becomes "
                           "stricter (loosen it at launch)")
    desc.additional_constraints = "; ".join(constraints)
    if meta.get("lo") is not None and meta.get("hi") is not None:
        if isinstance(default, int) and not isinstance(default, bool):
            desc.integer_range = [IntegerRange(from_value=int(meta["lo"]), to_value=int(meta["hi"]),
                                               step=0)]
        elif isinstance(default, float):
            desc.floating_point_range = [FloatingPointRange(
                from_value=float(meta["lo"]), to_value=float(meta["hi"]), step=0.0)]
    return desc


@dataclass(frozen=True)
class ChangePlan:
    """What to do with a set of parameter changes."""

    ok: bool
    reason: str = ""
    live: Optional[Config] = None      # the running service's configuration with the changes
    swap: Optional[Config] = None      # the configuration to load a new model with


def refuse_loosening(current: dict[str, Any], changed: dict[str, Any]) -> str:
    """Why ``changed`` may not apply to a started node ("" when it only tightens)."""
    loose = loosened(current, changed)
    if not loose:
        return ""
    items = "; ".join(f"{n} {current[n]!r} -> {changed[n]!r} loosens it "
                      f"({direction_text(safer_direction(n))})" for n in loose)
    example = loose[0]
    return (f"{items}. A running node only becomes stricter: loosen it at launch, in the params "
            f"file or with -p {example}:=VALUE")


def refuse_unknown_model(wanted: Config, changed: dict[str, Any]) -> str:
    """Why a changed model setting names a file a started node will not take ("" if none)."""
    if wanted.model.allow_unlisted:
        return ""
    for name, sha_key in _MODEL_FILES.items():
        touched = name in changed or (sha_key and sha_key in changed)
        value = getattr(getattr(wanted, name.split(".")[0]), name.split(".")[1])
        if not touched or not value:
            continue
        sha = getattr(wanted.model, "sha256") if sha_key else ""
        why = unvouched_reason(value, sha)
        if why:
            return f"{name}: {why}"
    return ""


def plan_change(current: dict[str, Any], changes: dict[str, Any], running: Config | None,
                swapping: bool = False) -> ChangePlan:
    """Validate ``changes`` over the ``current`` parameter values, as configure would, and say
    how they apply. ``running`` is the service's configuration (None when not configured: the
    next configure reads them, but the safety envelope holds in every state)."""
    try:
        wanted = config_from_flat({**current, **changes})
    except ConfigError as exc:
        return ChangePlan(False, str(exc))
    changed = {n: v for n, v in changes.items() if current.get(n) != v}
    modes = {n: apply_mode(n) for n in changed}
    fixed = sorted(n for n, m in modes.items() if m is ApplyMode.FIXED)
    if fixed:
        return ChangePlan(False, f"{', '.join(fixed)}: read at launch only (the params file or -p "
                                 "at launch); restart the node to change")
    refusal = refuse_loosening(current, changed) or refuse_unknown_model(wanted, changed)
    if refusal:
        return ChangePlan(False, refusal)
    if running is None:
        return ChangePlan(True)  # the next configure reads it
    reload = sorted(n for n, m in modes.items() if m is ApplyMode.RELOAD)
    if reload:
        return ChangePlan(False, f"{', '.join(reload)}: needs a reload; deactivate and cleanup, "
                                 "set it, then configure (model.name swaps the model live)")
    live_changes = {n: v for n, v in changed.items() if modes[n] is ApplyMode.LIVE}
    swap = any(m is ApplyMode.SWAP for m in modes.values())
    if swap and swapping:
        return ChangePlan(False, "a model swap is in progress; set model.* again when it is done")
    try:
        live = config_from_flat(live_changes, base=running) if live_changes else None
    except ConfigError as exc:
        return ChangePlan(False, str(exc))
    return ChangePlan(True, live=live, swap=wanted if swap else None)
