# Source me: the project's environment for ROS 2 processes on this machine.
# DDS discovery stays on loopback (Kilted reads ROS_AUTOMATIC_DISCOVERY_RANGE; Humble reads
# ROS_LOCALHOST_ONLY); a domain id of the caller's choosing keeps runs apart.
_QLN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
# shellcheck disable=SC1091
case $- in *u*) set +u; . "$_QLN_ROOT/.venv/bin/activate"; set -u;; *) . "$_QLN_ROOT/.venv/bin/activate";; esac
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_LOCALHOST_ONLY=1
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-42}"
export ROS_HOME="${ROS_HOME:-$_QLN_ROOT/ros2_ws/log/ros_home}"
export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VIRTUAL_ENV"
export RCUTILS_COLORIZED_OUTPUT=0
if [ -f "$_QLN_ROOT/ros2_ws/install/setup.bash" ]; then
  # colcon's setup scripts read unset variables: relax `set -u` while sourcing them
  case $- in *u*) _QLN_U=1; set +u;; *) _QLN_U=;; esac
  # shellcheck disable=SC1091
  . "$_QLN_ROOT/ros2_ws/install/setup.bash"
  [ -n "$_QLN_U" ] && set -u
  # the node and the CLIs (quant-llm-query, quant-llm-bench, ...) from the colcon install
  export PATH="$_QLN_ROOT/ros2_ws/install/quant_llm_node/lib/quant_llm_node:$PATH"
fi
