"""Benchmarks (ROS-free). Ladder: ``ladder`` (variants), ``perf`` / ``quality`` (measured in
fresh processes by ``worker``), ``host``, ``targets`` (rooflines), ``estimate``, ``report``,
``runner``; CLI: ``quant-llm-bench ladder``."""
