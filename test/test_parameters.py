"""What a parameter change means on a started node: the direction of every safety setting, the
remote link fixed at launch, and only known model files swapped in (no ROS process)."""
from __future__ import annotations

import pytest

from quant_llm_node.config import (
    ApplyMode, Config, ConfigError, Safer, apply_mode, config_from_flat, iter_settings, loosened,
    loosens, safer_direction)
from quant_llm_node.ros.parameters import descriptor, plan_change

DEFAULTS = Config().flat()


def plan(changes, running=True):
    return plan_change(DEFAULTS, changes, Config() if running else None)


def test_every_safety_setting_declares_mode_and_direction_in_its_definition():
    for name, section, f in iter_settings():
        assert isinstance(f.metadata["mode"], ApplyMode), name
        if section == "safety" or name in ("screen.margin", "screen.clear_margin", "screen.enabled",
                                            "model.verify_checksum"):
            assert f.metadata["safer"] is not None, f"{name} has no safe direction"
        if isinstance(getattr(Config(), section).__dict__[f.name], bool) and section == "safety":
            assert apply_mode(name) is ApplyMode.FIXED, f"rule toggle {name} must be fixed"


@pytest.mark.parametrize("name, tighter, looser", [
    ("safety.person_stop_distance_m", 3.0, 1.0),
    ("safety.person_reaction_time_s", 2.0, 0.5),
    ("safety.person_slow_distance_m", 8.0, 4.0),
    ("safety.obstacle_stop_distance_m", 1.5, 0.5),
    ("safety.obstacle_slow_distance_m", 4.0, 2.0),
    ("safety.battery_dock_pct", 15.0, 5.0),
    ("safety.battery_low_pct", 30.0, 15.0),
    ("safety.max_speed_mps", 1.0, 2.0),
    ("safety.person_slow_speed_mps", 0.2, 0.5),
    ("safety.obstacle_slow_speed_mps", 0.3, 0.8),
    ("screen.margin", 0.5, 2.0),
    ("screen.clear_margin", -2.0, 0.0),
])
def test_tightening_applies_live_and_loosening_is_refused(name, tighter, looser):
    ok = plan({name: tighter})
    assert ok.ok and ok.live is not None, ok.reason
    section, key = name.split(".")
    assert getattr(getattr(ok.live, section), key) == tighter
    refused = plan({name: looser})
    assert not refused.ok and "loosens" in refused.reason and "at launch" in refused.reason
    assert f"-p {name}:=" in refused.reason


def test_loosening_is_refused_in_every_lifecycle_state():
    assert not plan({"safety.max_speed_mps": 5.0}, running=False).ok
    assert plan({"safety.max_speed_mps": 1.0}, running=False).ok


def test_zone_limits_may_only_tighten_or_add_zones():
    base = DEFAULTS["safety.zone_speed_limits"]
    assert not loosens("safety.zone_speed_limits", base, base + ["aisle_7:0.9"])
    assert not loosens("safety.zone_speed_limits", base, [z.replace("0.8", "0.5") for z in base])
    assert loosens("safety.zone_speed_limits", base, base[1:])
    assert loosens("safety.zone_speed_limits", base, [z.replace("0.8", "1.2") for z in base])


def test_fixed_settings_are_refused_whatever_the_direction():
    for name in ("safety.enabled", "safety.injection_hold", "screen.enabled", "model.verify_checksum",
                 "engine.backend", "remote.url", "remote.token_file", "remote.token_env",
                 "remote.ca_file", "remote.allow_insecure_http", "model.allow_unlisted"):
        assert apply_mode(name) is ApplyMode.FIXED, name
        f = next(f for n, _, f in iter_settings() if n == name)
        assert descriptor(name, DEFAULTS[name], f.metadata).read_only, name


def test_clear_margin_must_stay_below_the_flag_margin():
    with pytest.raises(ConfigError, match="clear_margin"):
        config_from_flat({"screen.margin": 0.5, "screen.clear_margin": 0.5})
    assert not plan({"screen.margin": -1.5}).ok  # below the clear margin in force (-1.0)


def test_loosened_names_each_loosened_value():
    values = dict(DEFAULTS, **{"safety.max_speed_mps": 2.0, "screen.margin": 1.5,
                               "safety.person_stop_distance_m": 2.5})
    assert loosened(DEFAULTS, values) == ["safety.max_speed_mps", "screen.margin"]
    assert safer_direction("safety.max_speed_mps") is Safer.LOWER


def test_only_known_model_files_are_swapped_in(tmp_path, model_path):
    import os
    unlisted = tmp_path / "unlisted.gguf"
    os.link(model_path, unlisted)
    refused = plan({"model.name": str(unlisted)})
    assert not refused.ok and "sha256" in refused.reason
    vouched = plan({"model.name": str(unlisted), "model.sha256": "ab" * 32})
    assert vouched.ok and vouched.swap is not None
    link = tmp_path / "linked.gguf"
    os.symlink(model_path, link)  # the manifest's own file: its checksum applies
    assert plan({"model.name": str(link)}).ok
    assert not plan({"model.name": "no-such-model"}).ok
    allowed = plan_change(dict(DEFAULTS, **{"model.allow_unlisted": True}),
                          {"model.name": str(unlisted)}, Config())
    assert allowed.ok


def test_descriptor_names_the_direction():
    f = next(f for n, _, f in iter_settings() if n == "safety.person_stop_distance_m")
    d = descriptor("safety.person_stop_distance_m", 2.0, f.metadata)
    assert "larger is stricter" in d.additional_constraints and "at launch" in d.additional_constraints
