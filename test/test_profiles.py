"""Device profiles: the shipped files load, bad ones are refused with a clear ProfileError."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from quant_llm_node.engine.kv_types import KV_CACHE_TYPES
from quant_llm_node.deploy.profiles import (
    DeviceProfile, ProfileError, list_profiles, load_profile, profile_from_dict,
    profiles_dir)

ROOT = Path(__file__).resolve().parents[1]

SHIPPED = {
    "agx_orin_64gb": 204.8,
    "orin_nx_16gb": 102.4,
    "orin_nano_8gb": 68.0,
    "x86_cpu": 15.2,
}


def _good() -> dict:
    return yaml.safe_load((ROOT / "config" / "profiles" / "orin_nx_16gb.yaml").read_text())


def _write(tmp_path: Path, data, name: str = "custom") -> Path:
    d = tmp_path / "config" / "profiles"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_shipped_profile_loads(name):
    p = load_profile(name)
    assert isinstance(p, DeviceProfile)
    assert p.name == name
    assert p.memory_bandwidth_gbps == pytest.approx(SHIPPED[name])
    assert p.kv_cache_type in KV_CACHE_TYPES
    assert p.memory_budget_mb > 0 and p.n_ctx > 0 and p.n_threads > 0
    assert p.onnx_providers == ("CPUExecutionProvider",)  # shared memory on Orin: CPU default
    assert p.source.endswith(f"{name}.yaml")


def test_shipped_set_and_jetson_specifics():
    assert set(SHIPPED) <= set(list_profiles())
    for name in ("agx_orin_64gb", "orin_nx_16gb", "orin_nano_8gb"):
        p = load_profile(name)
        assert p.unified_memory and p.n_gpu_layers == -1 and p.n_gpu_layers != 0
    cpu = load_profile("x86_cpu")
    assert cpu.n_gpu_layers == 0 and not cpu.unified_memory


def test_shipped_profile_keys_are_commented():
    for name in SHIPPED:
        lines = (ROOT / "config" / "profiles" / f"{name}.yaml").read_text().splitlines()
        keyed = [ln for ln in lines if ln and not ln.startswith("#") and ":" in ln]
        uncommented = [ln for ln in keyed if "#" not in ln and not ln.startswith("name:")]
        assert not uncommented, f"{name}: keys without a comment: {uncommented}"


def test_load_by_path_and_by_config_dir(tmp_path):
    path = _write(tmp_path, _good(), "custom")
    assert load_profile(path).name == "orin_nx_16gb"
    assert load_profile(str(path)).n_ctx == 4096
    assert load_profile("custom", config_dir=tmp_path / "config").name == "orin_nx_16gb"
    assert profiles_dir(tmp_path / "config") == path.parent


def test_colcon_share_layout_via_env(tmp_path, monkeypatch):
    share = tmp_path / "install" / "quant_llm_node" / "share" / "quant_llm_node" / "config"
    (share / "profiles").mkdir(parents=True)
    (share / "profiles" / "robot_x.yaml").write_text(yaml.safe_dump(_good()))
    monkeypatch.setenv("QLN_CONFIG_DIR", str(share))
    assert "robot_x" in list_profiles()
    assert load_profile("robot_x").n_gpu_layers == -1


def test_engine_kwargs_and_replace():
    from quant_llm_node.engine.llama_engine import EngineSettings
    p = load_profile("orin_nx_16gb")
    kw = EngineSettings.from_config(p, "m.gguf")  # what the engine loads with under this profile
    assert kw.n_gpu_layers == -1 and kw.flash_attn is True
    assert KV_CACHE_TYPES[kw.kv_cache_type].ggml_type == 8  # GGML_TYPE_Q8_0, for type_k and type_v
    q = p.replace(n_ctx=2048)
    assert q.n_ctx == 2048 and p.n_ctx == 4096
    with pytest.raises(ProfileError, match="unknown key"):
        p.replace(n_ctxx=1)
    with pytest.raises(ProfileError, match="n_ctx"):
        p.replace(n_ctx=-5)


@pytest.mark.parametrize("key, value, message", [
    ("n_ctx", "4096", r"'n_ctx' must be an integer"),
    ("n_ctx", True, r"'n_ctx' must be an integer"),
    ("n_threads", -2, r"'n_threads' must be > 0"),
    ("n_batch", 0, r"'n_batch' must be > 0"),
    ("n_gpu_layers", -2, r"'n_gpu_layers' must be >= -1"),
    ("kv_cache_type", "q5_0", r"'kv_cache_type' must be one of \['f16', 'q8_0', 'q4_0'\]"),
    ("flash_attn", "yes", r"'flash_attn' must be a boolean"),
    ("memory_bandwidth_gbps", 0, r"'memory_bandwidth_gbps' must be > 0"),
    ("memory_bandwidth_gbps", -1.5, r"'memory_bandwidth_gbps' must be > 0"),
    ("memory_budget_mb", -100, r"'memory_budget_mb' must be > 0"),
    ("runtime_overhead_mb", -1, r"'runtime_overhead_mb' must be >= 0"),
    ("onnx_providers", [], r"'onnx_providers' must be a non-empty list"),
    ("onnx_providers", ["cuda"], r"not provider names"),
    ("unified_memory", 1, r"'unified_memory' must be a boolean"),
])
def test_bad_values_give_clear_errors(tmp_path, key, value, message):
    data = _good()
    data[key] = value
    path = _write(tmp_path, data)
    with pytest.raises(ProfileError, match=message) as exc:
        load_profile(path)
    assert str(path) in str(exc.value)  # says which file


def test_unknown_and_missing_keys(tmp_path):
    data = _good()
    data["n_gpu_layer"] = 10
    with pytest.raises(ProfileError, match=r"unknown key\(s\) \['n_gpu_layer'\]"):
        load_profile(_write(tmp_path, data))
    data = _good()
    del data["memory_budget_mb"]
    with pytest.raises(ProfileError, match=r"missing key\(s\) \['memory_budget_mb'\]"):
        profile_from_dict(data)


def test_quantized_kv_needs_flash_attention():
    data = _good()
    data["flash_attn"] = False
    with pytest.raises(ProfileError, match="needs flash_attn: true"):
        profile_from_dict(data)


def test_unknown_name_lists_available():
    with pytest.raises(ProfileError, match=r"unknown device profile 'orin_tx9'.*orin_nx_16gb"):
        load_profile("orin_tx9")


def test_bad_files(tmp_path):
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(_write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(ProfileError, match="must be a mapping"):
        load_profile(_write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ProfileError, match="file not found"):
        load_profile(tmp_path / "absent.yaml")
    with pytest.raises(ProfileError, match="empty"):
        load_profile("")
    with pytest.raises(ProfileError, match="no device profile folder"):
        load_profile("x", config_dir=tmp_path / "nowhere")


def test_engine_settings_match_node_engine_config():
    import dataclasses

    from quant_llm_node.config import EngineConfig
    from quant_llm_node.deploy.profiles import ENGINE_KEYS
    names = {f.name for f in dataclasses.fields(EngineConfig)}
    profile = load_profile("orin_nano_8gb")
    settings = {key: getattr(profile, key) for key in ENGINE_KEYS}
    assert set(settings) <= names, set(settings) - names
    assert settings["kv_cache_type"] == "q8_0" and settings["n_gpu_layers"] == -1


def test_profile_supplies_the_default_model_and_batch_unless_set():
    from quant_llm_node.config import Config
    from quant_llm_node.serving.assembly import apply_profile
    cfg = Config()
    cfg.node.device_profile = "orin_nx_16gb"
    applied, profile = apply_profile(cfg)
    assert applied.model.name == profile.model == "qwen2.5-coder-1.5b-instruct-q4_k_m"
    assert applied.engine.n_parallel == profile.n_parallel == 4
    assert cfg.model.name != applied.model.name  # the caller's config is not changed
    cfg.model.name, cfg.engine.n_parallel = "qwen2.5-coder-0.5b-instruct-q4_k_m-custom.gguf", 2
    applied, profile = apply_profile(cfg)
    assert applied.model.name == cfg.model.name and applied.engine.n_parallel == 2
    assert profile.n_parallel == 2  # the effective profile reports what runs


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_profile_kv_holds_its_batch(name):
    """n_ctx holds the ~1270-token static prefix plus ~300 tokens per batched sequence."""
    p = load_profile(name)
    assert p.n_ctx >= 1300 + 300 * p.n_parallel
