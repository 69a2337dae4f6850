"""Configuration: the shipped file loads; bad values give clear errors."""
import pytest

from conftest import ROOT
from quant_llm_node.config import Config, ConfigError, config_from_flat, iter_settings, load_config


def test_robot_yaml_loads_and_matches_declared_settings():
    cfg = load_config(ROOT / "config" / "robot.yaml")
    assert cfg.model.name == "qwen2.5-coder-0.5b-instruct-q4_k_m"
    assert cfg.engine.use_grammar is True
    # every declared setting is in the shipped file, so the file documents all of them
    import yaml
    doc = yaml.safe_load((ROOT / "config" / "robot.yaml").read_text())
    params = doc["/**/quant_llm_node"]["ros__parameters"]
    for name, section, field in iter_settings():
        assert field.name in params[section], f"{name} missing from config/robot.yaml"


def test_the_manifest_names_the_models_of_the_default_configuration():
    """`quant-llm-models fetch` (and scripts/setup.sh) assemble what config/robot.yaml loads."""
    from quant_llm_node.models.registry import load_manifest
    cfg, manifest = load_config(ROOT / "config" / "robot.yaml"), load_manifest()
    assert manifest.default == cfg.model.name
    assert cfg.screen.enabled and manifest.screen == cfg.screen.model
    assert manifest.defaults == [cfg.model.name, cfg.screen.model]


@pytest.mark.parametrize("values, message", [
    ({"engine.n_ctx": 10}, "below the minimum"),
    ({"engine.n_ctx": "2048"}, "expected an integer"),
    ({"engine.kv_cache_type": "f8"}, "not one of"),
    ({"engine.temperature": float("nan")}, "finite"),
    ({"safety.enabled": "yes"}, "true/false"),
    ({"engine.bogus": 1}, "unknown setting"),
    ({"safety.person_stop_distance_m": 6.0}, "person_slow_distance_m must be >="),
    ({"safety.zone_speed_limits": ["aisle_3=0.8"]}, "zone_id:speed_mps"),
    ({"serving.default_deadline_ms": 900000}, "max_deadline_ms"),
])
def test_bad_values_are_refused_with_a_reason(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_flat(values)


def test_plain_mapping_and_missing_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("engine:\n  n_ctx: 4096\n")
    assert load_config(p).engine.n_ctx == 4096
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    p.write_text("engine: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_int_accepted_for_float_setting():
    assert config_from_flat({"safety.max_speed_mps": 1}).safety.max_speed_mps == 1.0
    assert isinstance(Config().flat()["safety.max_speed_mps"], float)
