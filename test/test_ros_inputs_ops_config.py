"""The operations files cover the node's interfaces: config/diagnostics_aggregator.yaml has an
analyzer for every status the node publishes, and config/sros2_policy.xml allows every topic,
service and action the node serves, plus its lifecycle and parameter services (issue 13, item 5).

Not testable here: the PyPI Fast DDS wheel has no DDS security and diagnostic_aggregator is not
on PyPI; these tests check the files against the node's source instead."""
import re
import xml.etree.ElementTree as ET

import pytest
import yaml

from conftest import ROOT

SRC = ROOT / "src" / "quant_llm_node" / "ros"
AGGREGATOR = ROOT / "config" / "diagnostics_aggregator.yaml"
POLICY = ROOT / "config" / "sros2_policy.xml"
NODE = "quant_llm_node"

# every rclpy lifecycle node serves these (lifecycle, parameters, type descriptions) and publishes
LIFECYCLE_SERVICES = ["~/change_state", "~/get_state", "~/get_available_states",
                      "~/get_available_transitions", "~/get_transition_graph"]
PARAMETER_SERVICES = ["~/describe_parameters", "~/get_parameter_types", "~/get_parameters",
                      "~/list_parameters", "~/set_parameters", "~/set_parameters_atomically",
                      "~/get_type_description"]
IMPLIED_PUBLISHED = ["~/transition_event", "/parameter_events", "/rosout"]


def node_source() -> str:
    return "\n".join(p.read_text() for p in sorted(SRC.glob("*.py")))


def node_interfaces() -> dict[str, set[str]]:
    """Names passed as string literals to create_service/publisher/subscription and
    ActionServer in src/quant_llm_node/ros/*.py."""
    src = node_source()
    found = {kind: set(re.findall(pattern, src)) for kind, pattern in {
        "reply": r"create_service\(\s*\w+\s*,\s*[\"']([^\"']+)[\"']",
        "publish": r"create_publisher\(\s*\w+\s*,\s*[\"']([^\"']+)[\"']",
        "subscribe": r"create_subscription\(\s*\w+\s*,\s*[\"']([^\"']+)[\"']",
        "execute": r"ActionServer\(\s*\w+\s*,\s*\w+\s*,\s*[\"']([^\"']+)[\"']",
    }.items()}
    found["reply"] |= set(LIFECYCLE_SERVICES + PARAMETER_SERVICES)
    found["publish"] |= set(IMPLIED_PUBLISHED)
    return found


def status_names() -> set[str]:
    """The part after "<prefix>: " of every status name built in ros/*.py, plus "remote"."""
    names = set(re.findall(r"f[\"']\{prefix\}: ([a-z][a-z ]*)[\"']", node_source()))
    return names | {"remote"}


# ---- diagnostics aggregator ------------------------------------------------------------------
def analyzers(node: dict, path: str = "") -> list[tuple[str, dict]]:
    """(path, params) of every GenericAnalyzer, through AnalyzerGroups."""
    out = []
    for key, value in node.items():
        if not isinstance(value, dict) or "type" not in value:
            continue
        sub = f"{path}/{value.get('path', key)}"
        if value["type"].endswith("AnalyzerGroup"):
            out += analyzers(value.get("analyzers", {}), sub)
        else:
            out.append((sub, value))
    return out


def matches(params: dict, name: str) -> bool:
    """GenericAnalyzer's match(): exact name/expected, startswith, contains, regex."""
    return (name in params.get("name", []) or name in params.get("expected", [])
            or any(name.startswith(s) for s in params.get("startswith", []))
            or any(s in name for s in params.get("contains", []))
            or any(re.fullmatch(r, name) for r in params.get("regex", [])))


def test_status_names_are_found_in_the_source():
    assert {"model", "inference latency", "queue", "grounding"} <= status_names()


def test_aggregator_file_is_a_params_file_for_the_aggregator_node():
    doc = yaml.safe_load(AGGREGATOR.read_text())
    params = doc["analyzers"]["ros__parameters"]
    assert params["path"]
    for path, a in analyzers(params):
        assert a["type"] == "diagnostic_aggregator/GenericAnalyzer", path
        assert a.get("path") and a.get("timeout", 5.0) > 0, path
        assert any(a.get(k) for k in ("name", "expected", "startswith", "contains", "regex")), path


@pytest.mark.parametrize("namespace", ["", "robot1/"])
def test_one_analyzer_per_status(namespace):
    params = yaml.safe_load(AGGREGATOR.read_text())["analyzers"]["ros__parameters"]
    found = analyzers(params)
    for status in status_names():
        full = f"{namespace}{NODE}: {status}"
        hits = [path for path, a in found if matches(a, full)]
        assert len(hits) == 1, f"{full!r} is matched by {hits}"
    # and no analyzer waits for a status the node never publishes
    for path, a in found:
        assert any(matches(a, f"{namespace}{NODE}: {s}") for s in status_names()), path
    assert not any(matches(a, "other_node: model") for _, a in found)


# ---- SROS2 policy ----------------------------------------------------------------------------
def resolve(name: str, ns: str, node: str) -> str:
    """sros2's expression resolution (policy/templates/dds/permissions.xsl)."""
    ns = ns if ns.endswith("/") else ns + "/"
    if name.startswith("/"):
        return name
    if name.startswith("~"):
        return ns + node + name[1:]
    return ns + name


def permissions(enclave: str) -> dict[str, set[str]]:
    """{"publish"|"subscribe"|"reply"|"request"|"execute"|"call": resolved names} allowed."""
    root = ET.parse(POLICY).getroot()
    out: dict[str, set[str]] = {}
    for enc in root.iter("enclave"):
        if enc.get("path") != enclave:
            continue
        for profile in enc.iter("profile"):
            ns, node = profile.get("ns"), profile.get("node")
            for group in profile:
                for kind, rule in group.attrib.items():
                    if rule == "ALLOW":
                        out.setdefault(kind, set()).update(
                            resolve(e.text.strip(), ns, node) for e in group)
    return out


def test_policy_has_the_shape_sros2_expects():
    root = ET.parse(POLICY).getroot()
    assert root.tag == "policy" and root.get("version") == "0.2.0"
    enclaves = root.findall("enclaves/enclave")
    assert enclaves and all(e.get("path", "").startswith("/") for e in enclaves)
    kinds = {"topics": ("publish", "subscribe", "topic"), "services": ("reply", "request", "service"),
             "actions": ("execute", "call", "action")}
    for profile in root.iter("profile"):
        assert profile.get("ns", "").startswith("/") and profile.get("node")
        for group in profile:
            assert group.tag in kinds, group.tag
            *rules, child = kinds[group.tag]
            assert group.attrib and set(group.attrib) <= set(rules)
            assert set(group.attrib.values()) <= {"ALLOW", "DENY"}
            assert len(group) and all(e.tag == child and e.text.strip() for e in group)


def test_node_interfaces_are_found_in_the_source():
    found = node_interfaces()
    assert {"~/query"} <= found["reply"]
    assert {"~/query_out", "/diagnostics"} <= found["publish"]
    assert {"~/query_in"} <= found["subscribe"]
    assert {"~/reason"} <= found["execute"]


def test_policy_allows_every_interface_of_the_node():
    allowed = permissions(f"/{NODE}")
    missing = []
    for kind, names in node_interfaces().items():
        for name in names:
            if resolve(name, "/", NODE) not in allowed.get(kind, set()):
                missing.append(f"{kind} {name}")
    assert not missing, f"config/sros2_policy.xml lacks: {sorted(missing)}"


def test_policy_lets_a_planner_and_a_lifecycle_manager_use_the_node():
    base = f"/{NODE}"
    planner = permissions("/planner")
    assert f"{base}/query" in planner["request"]
    assert f"{base}/query_in" in planner["publish"] and f"{base}/query_out" in planner["subscribe"]
    assert f"{base}/reason" in planner["call"]
    manager = permissions("/lifecycle_manager_llm")
    assert {f"{base}/change_state", f"{base}/get_state"} <= manager["request"]
    aggregator = permissions("/diagnostic_aggregator")
    assert "/diagnostics" in aggregator["subscribe"]
