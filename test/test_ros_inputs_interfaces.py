"""The interface files' comments (what `ros2 interface show` displays) name only real error codes
and real parameters (issue 13, finding 4), and RobotState says what an unset field means
(finding 8)."""
import re

import pytest
import yaml

from conftest import ROOT
from quant_llm_node.config import iter_settings, params_section
from quant_llm_node.reasoning import errors as E

IFACE = ROOT / "ros2_ws" / "src" / "quant_llm_interfaces"
FILES = sorted(p for sub in ("msg", "srv", "action") for p in (IFACE / sub).glob("*.*"))
CODES = {v for k, v in vars(E).items() if k.isupper() and isinstance(v, str)}
SETTINGS = {name for name, _, _ in iter_settings()}
# Upper-case words the comments may use that are neither codes nor constants.
ACRONYMS = {"JSON", "ROS", "UTF", "ASCII", "GBNF", "LLM", "NAN", "GPU", "CPU", "ID"}
_UPPER = re.compile(r"(?<![\w.])[A-Z][A-Z0-9_]{2,}(?![\w])")
# section.field, section.prefix_* and the like; not file names (places.yaml) nor "e.g."
_DOTTED = re.compile(r"(?<![\w./])([a-z][a-z0-9_]*)\.([a-z_*][a-z0-9_*]*)(?![\w.(/])")
_NOT_PARAMS = {("e", "g"), ("i", "e")}
_FILE_EXT = {"msg", "srv", "action", "yaml", "py", "gguf", "xml", "md"}


def comments(path):
    """(line number, comment text) of every comment in an interface file."""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if "#" in line:
            yield n, line.split("#", 1)[1]


def fields():
    """Field names declared in any interface file: ``decision.source`` is a field path."""
    names = set()
    for path in FILES:
        for line in path.read_text().splitlines():
            m = re.match(r"^\s*[\w/\[\]]+\s+([a-z][a-z0-9_]*)(\s|$)", line.split("#", 1)[0])
            if m:
                names.add(m.group(1))
    return names


def params_named(text):
    """The dotted parameter-like names in a comment (file names, field paths such as
    decision.source, and "e.g." left out)."""
    return [f"{sec}.{name}" for sec, name in _DOTTED.findall(text)
            if (sec, name) not in _NOT_PARAMS and name not in _FILE_EXT and sec not in fields()]


def constants():
    """Constant names declared in any interface file (``type NAME=value``)."""
    names = set()
    for path in FILES:
        for line in path.read_text().splitlines():
            m = re.match(r"^\s*[\w/\[\]]+\s+([A-Z][A-Z0-9_]*)\s*=", line.split("#", 1)[0])
            if m:
                names.add(m.group(1))
    return names


def test_there_are_interface_files_to_check():
    assert {p.name for p in FILES} >= {"NavQuery.srv", "RobotState.msg", "QueryRequest.msg",
                                       "QueryResult.msg", "Reason.action", "Decision.msg"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_comments_name_only_real_error_codes(path):
    known = CODES | constants()
    bad = [(n, word) for n, text in comments(path) for word in _UPPER.findall(text)
           if word not in known and word not in ACRONYMS]
    assert not bad, f"{path.name}: unknown codes/constants in comments: {bad}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_comments_name_only_real_parameters(path):
    bad = [(n, name) for n, text in comments(path) for name in params_named(text)
           if name not in SETTINGS]
    assert not bad, f"{path.name}: unknown parameters in comments: {bad}"


def test_named_parameters_are_in_the_params_file():
    """Every parameter an interface comment names is a key of config/robot.yaml, where an
    operator looks for it."""
    doc = params_section(yaml.safe_load((ROOT / "config" / "robot.yaml").read_text()))
    keys = {f"{sec}.{k}" for sec, body in doc.items() for k in body}
    named = {name for p in FILES for _, t in comments(p) for name in params_named(t)}
    assert named, "the comments name no parameter at all"
    assert named <= keys, named - keys


def test_the_checks_catch_the_old_wrong_names():
    """The codes and the parameter the issue found in NavQuery.srv would be caught."""
    text = "see config scheduler.priority_* thresholds; a code such as INVALID_QUERY, MODEL_NOT_LOADED"
    assert {w for w in _UPPER.findall(text)} - CODES == {"INVALID_QUERY", "MODEL_NOT_LOADED"}
    assert params_named(text) == ["scheduler.priority_*"]
    assert "scheduler.priority_*" not in SETTINGS
    assert not params_named("places.yaml e.g. a .gguf path, RobotState.msg, i.e. none")


def test_navquery_lists_every_response_code():
    """The response's error_code comment lists every code a NavQuery answer can carry."""
    text = " ".join(t for _, t in comments(IFACE / "srv" / "NavQuery.srv"))
    service_codes = CODES - {E.CANCELLED}  # action goals only (Reason.action says so)
    assert service_codes <= set(_UPPER.findall(text)), service_codes - set(_UPPER.findall(text))
    action = " ".join(t for _, t in comments(IFACE / "action" / "Reason.action"))
    assert E.CANCELLED in action


def test_robot_state_says_what_an_unset_battery_means():
    text = (IFACE / "msg" / "RobotState.msg").read_text()
    assert re.search(r"^float32 BATTERY_UNKNOWN=-1\.0$", text, re.M)
    assert re.search(r"^float32 battery_pct -1\.0$", text, re.M)  # the default: not given
    assert "unknown" in text.lower()
