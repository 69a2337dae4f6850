"""Entry point of the node process: ``quant_llm_node --ros-args --params-file config/robot.yaml``."""
from __future__ import annotations

import signal
import sys

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

from quant_llm_node.ros.node import QuantLlmNode

EXECUTOR_THREADS = 4


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = QuantLlmNode()
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(node)

    def stop(signum, _frame):
        node.get_logger().info(f"signal {signum}: shutting down")
        executor.shutdown(timeout_sec=0)

    signal.signal(signal.SIGTERM, stop)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.release()  # queued requests answered SHUTTING_DOWN, models freed
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
