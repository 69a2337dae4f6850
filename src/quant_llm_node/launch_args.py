"""Launch arguments of launch/robot.launch.py: their descriptions and their validation.

Plain Python (no ``launch`` import) so that unit tests can check it where launch is not
installed; the launch file calls :func:`node_settings` in an OpaqueFunction before it builds the
node, so a malformed value fails the launch with a message naming the argument instead of an
exception from deep inside launch_ros or a node that dies at start.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

from quant_llm_node.config import iter_settings

# name -> (default, description); params_file's default (the installed config/robot.yaml) is
# filled in by the launch file. Empty values keep what the params file says.
ARGUMENTS: dict[str, tuple[str, str]] = {
    "params_file": ("", "node parameters (ROS 2 params file)"),
    "model": ("", "manifest model name or .gguf path (empty: params file)"),
    "profile": ("", "device profile, e.g. orin_nx_16gb, or a profile .yaml path (empty: params file)"),
    "n_gpu_layers": ("", "layers offloaded to the GPU, -1 = all (empty: params file)"),
    "namespace": ("", "node namespace, e.g. robot1 (empty: none)"),
    "autostart": ("true", "configure and activate by itself (false: leave it to a lifecycle "
                          "manager such as nav2_lifecycle_manager)"),
    "log_level": ("info", "node log level: debug, info, warn, error or fatal; "
                          "or LOGGER:=LEVEL for one logger (passed as --ros-args --log-level)"),
    "enclave": ("", "SROS2 enclave, e.g. /quant_llm_node (passed as --ros-args --enclave; "
                    "empty: none; security itself is switched on by ROS_SECURITY_* variables)"),
}

LOG_LEVELS = ("debug", "info", "warn", "warning", "error", "fatal", "unset")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_INTEGER = re.compile(r"^[+-]?\d+$")
_NS_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOGGER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_NS_MAX_CHARS = 200


class LaunchArgumentError(ValueError):
    """A launch argument with a malformed value; the message names the argument."""

    def __init__(self, name: str, value: str, why: str):
        super().__init__(f"launch argument '{name}' = '{value}': {why}")
        self.argument = name


def _setting_range(name: str) -> tuple[int, int]:
    for key, _, f in iter_settings():
        if key == name:
            return int(f.metadata["lo"]), int(f.metadata["hi"])
    raise KeyError(name)


def parse_bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise LaunchArgumentError(name, value, "expected true or false")


def parse_int_setting(name: str, value: str, setting: str) -> int:
    """An integer launch argument that sets the parameter ``setting``, within its range."""
    v = value.strip()
    if not _INTEGER.match(v):
        raise LaunchArgumentError(name, value, f"not an integer ({setting})")
    lo, hi = _setting_range(setting)
    n = int(v)
    if not lo <= n <= hi:
        raise LaunchArgumentError(name, value, f"outside {lo}..{hi} ({setting})")
    return n


def check_namespace(value: str, name: str = "namespace") -> str:
    """A ROS namespace (the rules of rmw_validate_namespace, leading '/' optional)."""
    ns = value.strip()
    if not ns or ns == "/":
        return ns
    body = ns[1:] if ns.startswith("/") else ns
    if len(ns) > _NS_MAX_CHARS:
        raise LaunchArgumentError(name, value, f"longer than {_NS_MAX_CHARS} characters")
    if body.endswith("/"):
        raise LaunchArgumentError(name, value, "must not end with '/'")
    for token in body.split("/"):
        if not token:
            raise LaunchArgumentError(name, value, "empty part ('//')")
        if not _NS_TOKEN.match(token):
            raise LaunchArgumentError(name, value,
                                      f"part '{token}' must be letters, digits and _, "
                                      "not starting with a digit")
    return ns


def check_enclave(value: str) -> str:
    """An SROS2 enclave path: absolute, with namespace-like parts."""
    enclave = value.strip()
    if enclave and not enclave.startswith("/"):
        raise LaunchArgumentError("enclave", value, "must start with '/' (e.g. /quant_llm_node)")
    return check_namespace(enclave, "enclave") if enclave != "/" else enclave


def check_log_level(value: str) -> str:
    """``LEVEL`` or ``LOGGER:=LEVEL``; returns it lower-cased (rcutils accepts any case)."""
    v = value.strip()
    logger, sep, level = v.rpartition(":=")
    if sep and not _LOGGER.match(logger):
        raise LaunchArgumentError("log_level", value, f"'{logger}' is not a logger name")
    if level.lower() not in LOG_LEVELS:
        raise LaunchArgumentError("log_level", value, "expected one of " + ", ".join(LOG_LEVELS[:6]))
    return f"{logger}:={level.lower()}" if sep else level.lower()


def _check_text(name: str, value: str) -> str:
    v = value.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise LaunchArgumentError(name, value, "contains a control character")
    return v


def node_settings(values: Mapping[str, str]) -> dict[str, Any]:
    """Validated launch argument values -> what the launch file gives the node:
    ``parameters`` (the params file, then the overrides), ``namespace`` and ``ros_arguments``.
    Raises LaunchArgumentError naming the first malformed argument."""
    def arg(name: str) -> str:
        value = values.get(name, ARGUMENTS[name][0])
        return "" if value is None else str(value)

    params_file = _check_text("params_file", arg("params_file"))
    if not params_file:
        raise LaunchArgumentError("params_file", params_file, "a params file is required")
    if not os.path.isfile(params_file):
        raise LaunchArgumentError("params_file", params_file, "no such file")
    overrides: dict[str, Any] = {}
    if _check_text("model", arg("model")):
        overrides["model.name"] = arg("model").strip()
    if _check_text("profile", arg("profile")):
        overrides["node.device_profile"] = arg("profile").strip()
    if arg("n_gpu_layers").strip():
        overrides["engine.n_gpu_layers"] = parse_int_setting("n_gpu_layers", arg("n_gpu_layers"),
                                                             "engine.n_gpu_layers")
    overrides["node.autostart"] = parse_bool("autostart", arg("autostart"))
    ros_arguments = []
    if arg("log_level").strip():
        ros_arguments += ["--log-level", check_log_level(arg("log_level"))]
    if check_enclave(arg("enclave")):
        ros_arguments += ["--enclave", check_enclave(arg("enclave"))]
    return {
        "parameters": [params_file, overrides],
        "namespace": check_namespace(arg("namespace")),
        "ros_arguments": ros_arguments,
    }
