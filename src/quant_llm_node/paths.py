"""Where the project's files live, from a source checkout or a colcon install."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "quant_llm_node"


def _share_dir() -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # not installed through colcon, or ament_index missing
        return None


def repo_root() -> Path | None:
    """The source checkout holding this package, when running from one."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "package.xml").is_file() and (root / "config").is_dir() else None


def data_dir(name: str) -> Path:
    """`config` or `models`: the checkout's folder first, else the installed share folder."""
    env = os.environ.get(f"QLN_{name.upper()}_DIR")
    if env:
        return Path(env)
    root = repo_root()
    if root is not None:
        return root / name
    share = _share_dir()
    if share is not None:
        return share / name
    raise FileNotFoundError(f"cannot locate the {name}/ folder of {PACKAGE}")


def config_dir() -> Path:
    return data_dir("config")


def models_dir() -> Path:
    return data_dir("models")


def cache_dir() -> Path:
    """Downloads and built artefacts kept between set-ups (outside the checkout)."""
    return Path(os.environ.get("QLN_CACHE", Path.home() / ".cache" / PACKAGE))
