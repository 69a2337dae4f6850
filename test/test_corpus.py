"""The evaluation corpus is well formed: every split loads, labels use real actions and map places,
and the held-out splits share no scenario with dev (so a score on them is a score on unseen data).
Only the structure is read here; the held-out scenarios' decisions are scored by quant-llm-eval."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from quant_llm_node.bench.fleet.scenarios import FROZEN_SPLITS, model_cases
from quant_llm_node.grounding.places import load_places
from quant_llm_node.reasoning.types import ACTIONS

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "bench" / "data" / "corpus"
SPLITS = {"dev": ("dev.yaml", "d_"), "test": ("test.yaml", "t_"), "fresh": ("test_fresh.yaml", "f_")}
CATEGORIES = {"battery", "clear_way", "goal", "injection", "multilingual", "state_hazard", "text_hazard"}
ATTACKS = {"chat_template", "fake_system", "hidden_in_long_text", "json_breakout", "role_play",
           "speed_hijack", "target_hijack"}
CHANNELS = {"query", "goal", "context_json"}
STATE_KEYS = {"speed_mps", "battery_pct", "obstacle_distance_m", "people_distances_m", "zone"}


def _split(name: str) -> list[dict]:
    return yaml.safe_load((CORPUS / SPLITS[name][0]).read_text())["scenarios"]


@pytest.fixture(scope="module")
def places() -> set[str]:
    return {p.id for p in load_places(ROOT / "config" / "places.yaml")}


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_every_scenario_is_well_formed(name, places):
    cases = _split(name)
    prefix = SPLITS[name][1]
    ids = [c["id"] for c in cases]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for c in cases:
        where = c["id"]
        assert where.startswith(prefix), where
        assert c["category"] in CATEGORIES, where
        assert set(c["state"]) <= STATE_KEYS and c["state"]["zone"] in places, where
        acc, forb = set(c["acceptable"]), set(c["forbidden"])
        assert acc <= set(ACTIONS) and forb <= set(ACTIONS), where
        assert not acc & forb, where
        assert acc or c.get("expect_error"), f"{where}: nothing is acceptable"
        for key in ("expect_place", "forbidden_place"):
            if c.get(key):
                assert c[key] in places, where
        assert c.get("expect_error", "UNKNOWN_PLACE") == "UNKNOWN_PLACE", where
        if "context_json" in c:
            assert isinstance(json.loads(c["context_json"]), dict), where
        if c["category"] == "injection":
            assert c["attack"] in ATTACKS and c["channel"] in CHANNELS, where
        if c["category"] == "clear_way":
            assert acc <= {"continue", "go_to"} and not forb, where


def test_held_out_splits_share_no_scenario_with_dev_or_each_other():
    def key(c):
        return (c["query"].strip().lower(), (c.get("goal") or "").strip().lower(), c.get("context_json", ""))
    seen: dict[tuple, str] = {}
    for name in ("dev", *(n for n in SPLITS if n != "dev")):   # dev may repeat a short report
        for c in _split(name):
            assert name == "dev" or key(c) not in seen, f"{c['id']} repeats {seen.get(key(c))}"
            seen.setdefault(key(c), c["id"])


def test_corpus_size_and_attack_counts_meet_the_evaluation_plan():
    dev, test, fresh = _split("dev"), _split("test"), _split("fresh")
    assert len(dev) + len(test) + len(fresh) >= 150
    assert sum(c["category"] == "injection" for c in test) >= 50
    for cases in (dev, test, fresh):
        assert {c["attack"] for c in cases if c["category"] == "injection"} == ATTACKS
    assert sum(c["category"] == "clear_way" for c in fresh) >= 20  # over-caution in steps of 5%


@pytest.mark.parametrize("name", sorted(FROZEN_SPLITS))
def test_benchmarks_refuse_the_frozen_splits(name):
    with pytest.raises(ValueError, match="held-out"):
        model_cases(CORPUS / name)
