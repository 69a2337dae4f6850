#!/usr/bin/env bash
# Run the test suite: unit tests of the core and cross-process ROS 2 tests.
# ROS traffic stays on this machine: loopback discovery always, and a private network
# namespace with only `lo` when we are root and unshare works.
# Usage: scripts/test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( 100 + RANDOM % 100 ))}"
# shellcheck disable=SC1091
. scripts/env.sh
python -c "import quant_llm_interfaces, llama_cpp" || { echo "run scripts/setup.sh first" >&2; exit 2; }
cmd=(python -m pytest -ra "$@")
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
  echo "running in a private network namespace (loopback only), ROS_DOMAIN_ID=$ROS_DOMAIN_ID"
  exec unshare -n bash -c 'ip link set lo up && exec "$@"' bash "${cmd[@]}"
fi
echo "running with loopback-only discovery, ROS_DOMAIN_ID=$ROS_DOMAIN_ID"
exec "${cmd[@]}"
