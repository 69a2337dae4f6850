"""Benchmarks. ``ladder/``: the quantization ladder (variants, perf and quality measured in
fresh processes, rooflines, report; ROS-free). ``serve/``: the serving benchmark, planner load
and soak (these start the node and use rclpy). ``decode_bench``: the engine's token loop;
``scenario_eval``: decisions scored on scenario files; ``host``: machine facts."""
