"""Shared fixtures. ROS processes started by tests stay on loopback with a private domain id."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "test"))

# Before anything imports rclpy: discovery on loopback only, a domain id of this run's own.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOCALHOST_ONLY"] = "1"
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
os.environ.setdefault("ROS_HOME", str(ROOT / "ros2_ws" / "log" / "ros_home_test"))

DEFAULT_MODEL = ROOT / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def pytest_configure(config):
    config.addinivalue_line("markers", "ros: starts ROS 2 processes")
    config.addinivalue_line("markers", "slow: long-running (larger model); run with -m slow")


@pytest.fixture(scope="session")
def model_path() -> Path:
    path = Path(os.environ.get("QLN_MODEL_PATH", DEFAULT_MODEL))
    if not path.is_file():
        pytest.fail(f"default model missing at {path}: run scripts/setup.sh")
    return path


@pytest.fixture(scope="session")
def public_scenarios() -> dict:
    import yaml
    return yaml.safe_load((ROOT / "test" / "data" / "scenarios.yaml").read_text())


@pytest.fixture(scope="module")
def ros(request):
    """A ROS client node in this process, spinning in the background (one per test module)."""
    import rclpy
    from ros_harness import Client
    rclpy.init()
    client = Client(f"client_{request.module.__name__.rsplit('.', 1)[-1]}")
    yield client
    client.close()
    rclpy.shutdown()
