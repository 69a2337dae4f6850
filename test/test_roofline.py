"""The host roofline is a limit: an efficiency above 1 is clamped and flagged, and the probe
streams with the engine's thread count."""
import math

import pytest

from quant_llm_node.bench.ladder import targets
from quant_llm_node.serving import roofline


def test_efficiency_is_clamped_and_an_exceeded_roofline_is_flagged():
    gb = 10**9
    assert roofline.efficiency(10.0, gb, 50.0) == pytest.approx(0.2)
    assert not roofline.exceeds_roofline(10.0, gb, 50.0)
    assert roofline.raw_efficiency(100.0, gb, 50.0) == pytest.approx(2.0)
    assert roofline.efficiency(100.0, gb, 50.0) == 1.0
    assert roofline.exceeds_roofline(100.0, gb, 50.0)
    assert math.isnan(roofline.efficiency(10.0, gb, 0.0))
    assert roofline.roofline_tps(gb, 50.0) == pytest.approx(50.0)


def test_ladder_rows_never_show_an_efficiency_above_one():
    below = targets.roofline_fields(10**9, 10.0, 50.0, {})
    above = targets.roofline_fields(10**9, 80.0, 50.0, {})
    assert below["efficiency_host"] == pytest.approx(0.2) and not below["above_host_roofline"]
    assert above["efficiency_host"] == 1.0 and above["above_host_roofline"]
    assert above["efficiency_host_raw"] == pytest.approx(1.6)


def test_probe_streams_with_the_requested_threads():
    d: dict = {}
    gbps = roofline.measure_read_bandwidth_gbps(2, nbytes=32 * 2**20, repeats=2, details=d)
    assert d["threads"] == 2 and d["kernel"] == "memchr" and d["bytes"] <= 32 * 2**20
    assert math.isfinite(gbps) and gbps > 0 and d["gbps"] == gbps
    assert roofline.probe_threads(0) >= 1 and roofline.probe_threads(3) == 3
    best, probes = targets.host_bandwidth_gbps(2)
    assert set(probes) == {"memchr_1_thread_gbps", "memchr_2_threads_gbps"}
    assert best == max(probes.values()) > 0
