#!/usr/bin/env bash
# Native baseline: llama.cpp's own llama-bench, built from the llama.cpp vendored in the pinned
# llama-cpp-python sdist with the flags the wheel used (scripts/setup.sh), run with the engine's
# threads, then printed as one JSON object on stdout (progress goes to stderr). The same build also
# gives llama-server (the fleet benchmark's site server, -np slots) and llama-batched-bench.
#
# Usage: scripts/native_baseline.sh [MODEL.gguf] [-t THREADS] [-n GEN_TOKENS] [-p PROMPT_TOKENS]
#                                   [-r REPS] [-d DEPTH] [-fa on|off] [--build-only]
# Defaults match LlamaEngine: n_batch = n_ubatch = 512, flash attention off (llama-bench's own
# default is auto), threads = nproc. Feed the output to decode_bench --native-json.
# --build-only: build (or reuse) the binaries and print their paths as JSON:
#   {"bin_dir": ..., "llama_bench": ..., "llama_server": ..., "llama_batched_bench": ...}
#   (run them with LD_LIBRARY_PATH=bin_dir; the shared libs are copied next to them).
# Env:   QLN_CACHE (default ~/.cache/quant_llm_node): sdist + build + binary live in $QLN_CACHE/native
#        LLAMA_CMAKE_ARGS: same default as scripts/setup.sh (must match the installed wheel)
# A benchmark helper, not run in CI; nothing it fetches or builds goes into the repository.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="0.3.36"
LLAMA_CMAKE_ARGS="${LLAMA_CMAKE_ARGS:--DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}"
CACHE="${QLN_CACHE:-$HOME/.cache/quant_llm_node}/native"
MODEL="$ROOT/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
THREADS="$(nproc)"; GEN=64; PP=512; REPS=3; DEPTH=0; FA=off; BATCH=512; BUILD_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    -t|--threads) THREADS="$2"; shift 2 ;;
    -n|--tokens) GEN="$2"; shift 2 ;;
    -p|--prompt) PP="$2"; shift 2 ;;
    -r|--reps) REPS="$2"; shift 2 ;;
    -d|--depth) DEPTH="$2"; shift 2 ;;
    -fa|--flash-attn) FA="$2"; shift 2 ;;
    -b|--batch) BATCH="$2"; shift 2 ;;
    --build-only) BUILD_ONLY=1; shift ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) MODEL="$1"; shift ;;
  esac
done
log() { echo "[native_baseline] $*" >&2; }

# The binary uses -march=native like the wheel: key it by version, flags and CPU features.
FP=$( (echo "$VERSION $LLAMA_CMAKE_ARGS"; grep -m1 -E '^(flags|Features)' /proc/cpuinfo || uname -m) \
      | sha256sum | cut -c1-16)
BIN_DIR="$CACHE/llama-bench-$VERSION-$FP"
BENCH="$BIN_DIR/llama-bench"
TARGETS=(llama-bench llama-server llama-batched-bench)
missing() { for t in "${TARGETS[@]}"; do [ -x "$BIN_DIR/$t" ] || return 0; done; return 1; }

if missing; then
  mkdir -p "$CACHE"
  SDIST="$CACHE/llama_cpp_python-$VERSION.tar.gz"
  if [ ! -f "$SDIST" ]; then
    log "downloading the llama-cpp-python $VERSION sdist"
    PY="${PYTHON:-$(command -v python3)}"
    [ -x "$ROOT/.venv/bin/python" ] && PY="$ROOT/.venv/bin/python"
    "$PY" -m pip download -q --no-deps --no-binary :all: -d "$CACHE/dl.tmp" "llama-cpp-python==$VERSION"
    mv "$CACHE/dl.tmp"/llama_cpp_python-"$VERSION".tar.gz "$SDIST"; rm -rf "$CACHE/dl.tmp"
  fi
  SRC="$CACHE/llama_cpp_python-$VERSION"
  [ -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ] || { log "extracting"; tar -xzf "$SDIST" -C "$CACHE"; }
  BUILD="$CACHE/build-$VERSION-$FP"
  log "configuring (wheel flags: $LLAMA_CMAKE_ARGS; + tools and server on, curl/openssl/web UI off)"
  # Configure llama-cpp-python's own top-level CMakeLists, as pip does (shared libs, native CPU,
  # Release), with llama.cpp's tools and server enabled so that the three targets exist. The web UI
  # is neither built (npm) nor downloaded: the server gets an empty asset table, the API is intact.
  # shellcheck disable=SC2086
  cmake -S "$SRC" -B "$BUILD" -G "$(command -v ninja >/dev/null && echo Ninja || echo 'Unix Makefiles')" \
    -DCMAKE_BUILD_TYPE=Release $LLAMA_CMAKE_ARGS -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >&2
  log "building ${TARGETS[*]} (about 25 CPU-min: 20-40 min on 2 cores)"
  cmake --build "$BUILD" --target "${TARGETS[@]}" -j "$(nproc)" >&2
  rm -rf "$BIN_DIR.tmp" && mkdir -p "$BIN_DIR.tmp"
  for t in "${TARGETS[@]}"; do
    BUILT="$(find "$BUILD" -type f -name "$t" -perm -u+x | head -n1)"
    [ -n "$BUILT" ] || { log "$t not found under $BUILD"; exit 1; }
    cp "$BUILT" "$BIN_DIR.tmp/"
    find "$(dirname "$BUILT")" -maxdepth 1 -name 'lib*.so*' -exec cp -Pn {} "$BIN_DIR.tmp/" \;
  done
  rm -rf "$BIN_DIR" && mv "$BIN_DIR.tmp" "$BIN_DIR"
  log "cached ${TARGETS[*]} in $BIN_DIR"
fi
if [ "$BUILD_ONLY" = 1 ]; then
  printf '{"bin_dir": "%s", "llama_bench": "%s", "llama_server": "%s", "llama_batched_bench": "%s"}\n' \
    "$BIN_DIR" "$BENCH" "$BIN_DIR/llama-server" "$BIN_DIR/llama-batched-bench"
  exit 0
fi
[ -f "$MODEL" ] || { log "model not found: $MODEL"; exit 2; }

export LD_LIBRARY_PATH="$BIN_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
COMMON=(-m "$MODEL" -t "$THREADS" -r "$REPS" -b "$BATCH" -ub "$BATCH" -fa "$FA" -d "$DEPTH" -o json)
log "tg: -p 0 -n $GEN ${COMMON[*]:2}"
TG=$("$BENCH" -p 0 -n "$GEN" "${COMMON[@]}" 2>/dev/null)
log "pp: -p $PP -n 0 ${COMMON[*]:2}"
PPJ=$("$BENCH" -p "$PP" -n 0 "${COMMON[@]}" 2>/dev/null)
LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
TG="$TG" PPJ="$PPJ" python3 - "$MODEL" "$THREADS" "$BENCH" "$LOAD" <<'EOF'
import json, os, sys
model, threads, bench, load = sys.argv[1:5]
def pick(runs):
    r = runs[0]
    keep = ("n_prompt", "n_gen", "n_depth", "n_threads", "flash_attn", "n_batch", "n_ubatch", "type_k", "avg_ts", "stddev_ts",
            "avg_ns", "samples_ts", "build_commit", "cpu_info", "model_type", "model_size")
    return {k: r[k] for k in keep if k in r}
tg, pp = pick(json.loads(os.environ["TG"])), pick(json.loads(os.environ["PPJ"]))
print(json.dumps({"model": model, "threads": int(threads), "llama_bench": bench, "loadavg": load,
                  "tg_tps": tg["avg_ts"], "pp_tps": pp["avg_ts"], "tg": tg, "pp": pp}, indent=1))
EOF
