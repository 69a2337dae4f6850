#!/usr/bin/env bash
# The main job on the default model: start the node with config/robot.yaml, wait until it is
# active, ask it three planner questions through the real service, print its diagnostics, stop.
# Usage: scripts/demo.sh [extra --ros-args, e.g. -p model.name:=qwen2.5-coder-1.5b-instruct-q4_k_m]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "$(id -u)" = 0 ] && [ -z "${QLN_IN_NETNS:-}" ] && unshare -n true 2>/dev/null; then
  # a private network namespace: DDS traffic cannot leave this machine
  exec unshare -n env QLN_IN_NETNS=1 bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "$@"
fi
cd "$ROOT"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( 100 + RANDOM % 100 ))}"
# shellcheck disable=SC1091
. scripts/env.sh
LOG="$ROOT/ros2_ws/log/demo_node.log"
mkdir -p "$(dirname "$LOG")"
quant_llm_node --ros-args --params-file config/robot.yaml "$@" >"$LOG" 2>&1 &
NODE=$!
trap 'kill -INT $NODE 2>/dev/null; wait $NODE 2>/dev/null || true' EXIT
echo "node started (pid $NODE, log $LOG); waiting until it is active"
for _ in $(seq 180); do
  grep -q "active: serving" "$LOG" && break
  kill -0 $NODE 2>/dev/null || { cat "$LOG"; exit 1; }
  sleep 1
done
grep -E "loaded|active" "$LOG" || { echo "node did not become active"; cat "$LOG"; exit 1; }
ask() { echo; echo "\$ quant-llm-query $*"; quant-llm-query "$@" --timeout 120; }
ask "A person stepped into the corridor 1.5 m ahead. What should I do?" \
    --state speed_mps=1.2 battery_pct=80 obstacle_distance_m=1.5 people_distances_m=1.5 zone=aisle_3
ask "Take me to the charging dock near aisle 4." --goal "the charging dock near aisle 4" \
    --state speed_mps=0 battery_pct=40 obstacle_distance_m=10 zone=aisle_7
ask "The corridor ahead is empty and well lit. Continue to the packing station?" \
    --goal "packing station" --state speed_mps=0.8 battery_pct=75 obstacle_distance_m=12 zone=aisle_7
echo
python - <<'PY'
import rclpy, time
from diagnostic_msgs.msg import DiagnosticArray
rclpy.init()
n = rclpy.create_node("demo_diagnostics")
got = {}
n.create_subscription(DiagnosticArray, "/diagnostics",
                      lambda m: got.update({s.name: s for s in m.status}), 10)
end = time.monotonic() + 5
while time.monotonic() < end and not any("latency" in k for k in got):
    rclpy.spin_once(n, timeout_sec=0.2)
for name, st in sorted(got.items()):
    kv = {v.key: v.value for v in st.values}
    keep = [k for k in ("quantization", "backend", "layers_offloaded", "total_p50_ms",
                        "time_to_first_token_p50_ms", "decode_tokens_per_s_p50",
                        "roofline_efficiency", "requests_served", "providers") if k in kv]
    print(f"[diagnostics] {name}: level={st.level[0]} {st.message} " +
          " ".join(f"{k}={kv[k]}" for k in keep))
n.destroy_node()
rclpy.shutdown()
PY
