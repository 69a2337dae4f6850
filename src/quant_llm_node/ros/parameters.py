"""The node's ROS parameters: descriptors from the settings' metadata, and what a change means.

Each setting has an apply mode (quant_llm_node.config.apply_mode): ``live`` settings apply to
the next request, ``swap`` settings (the model) load a new model beside the serving one,
``reload`` settings wait for the next configure (refused while configured, with the reason),
``fixed`` ones are read-only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from quant_llm_node.config import ApplyMode, Config, ConfigError, apply_mode, config_from_flat

_PARAM_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
                list: ParameterType.PARAMETER_STRING_ARRAY}

_APPLIES = {ApplyMode.LIVE: "changes apply live, to the next request",
            ApplyMode.SWAP: "a change on a running node swaps the model without dropping queries",
            ApplyMode.RELOAD: "changes apply at the next configure (refused while configured)",
            ApplyMode.FIXED: "read at start only"}


def descriptor(name: str, default: Any, meta: dict) -> ParameterDescriptor:
    """The ROS descriptor of one setting: type, range or choices, and how a change applies."""
    mode = apply_mode(name)
    desc = ParameterDescriptor(description=meta["description"], type=_PARAM_TYPES[type(default)],
                               read_only=mode is ApplyMode.FIXED)
    constraints = [f"applies: {mode.value} ({_APPLIES[mode]})"]
    if meta.get("choices"):
        constraints.insert(0, "one of: " + ", ".join(meta["choices"]))
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


def plan_change(current: dict[str, Any], changes: dict[str, Any], running: Config | None,
                swapping: bool = False) -> ChangePlan:
    """Validate ``changes`` over the ``current`` parameter values, as configure would, and say
    how they apply. ``running`` is the service's configuration (None when not configured)."""
    try:
        wanted = config_from_flat({**current, **changes})
    except ConfigError as exc:
        return ChangePlan(False, str(exc))
    changed = {n: v for n, v in changes.items() if current.get(n) != v}
    modes = {n: apply_mode(n) for n in changed}
    fixed = sorted(n for n, m in modes.items() if m is ApplyMode.FIXED)
    if fixed:
        return ChangePlan(False, f"{', '.join(fixed)}: read at start only; restart the node to change")
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
