"""The host roofline is a limit: the probe streams with the engine's thread count over a buffer
above the last-level cache, an efficiency above 1 is clamped and flagged (ladder report, plot
and diagnostics), and the stored ladder has no point above its roofline."""
import copy
import json
import math
import threading
from pathlib import Path

import pytest

from quant_llm_node.bench.ladder import rederive, report, runner, targets
from quant_llm_node.serving import roofline
from quant_llm_node.serving.pipeline import Roofline

GB = 10**9
MIB = 2**20
STORED = Path(__file__).resolve().parents[1] / "docs" / "results" / "ladder.json"


def test_efficiency_is_clamped_and_an_exceeded_roofline_is_flagged():
    assert roofline.efficiency(10.0, GB, 50.0) == pytest.approx(0.2)
    assert not roofline.exceeds_roofline(10.0, GB, 50.0)
    assert roofline.raw_efficiency(100.0, GB, 50.0) == pytest.approx(2.0)
    assert roofline.efficiency(100.0, GB, 50.0) == 1.0
    assert roofline.exceeds_roofline(100.0, GB, 50.0)
    assert math.isnan(roofline.efficiency(10.0, GB, 0.0))
    assert roofline.roofline_tps(GB, 50.0) == pytest.approx(50.0)


def test_a_decode_faster_than_the_probe_becomes_the_bounds_floor():
    assert roofline.bandwidth_bound(30.0, 20.0, GB) == (30.0, False)    # reads 20 GB/s
    gbps, floored = roofline.bandwidth_bound(15.0, 20.0, GB)
    assert floored and gbps == pytest.approx(20.0)
    assert roofline.efficiency(20.0, GB, gbps) == pytest.approx(1.0)
    assert not roofline.exceeds_roofline(20.0, GB, gbps)
    assert roofline.bandwidth_bound(15.0) == (15.0, False)
    gbps, note, floored = targets.host_bound(15.0, 20.0, GB, "F16")
    assert floored and gbps == pytest.approx(20.0) and "floor" in note and "underestimates" in note


def test_diagnostics_efficiency_is_clamped_and_flagged():
    r = Roofline(bytes_per_token=GB, bandwidth_gbps=50.0)
    within, above = r.values(10.0), r.values(80.0)   # synthetic: 80 tok/s x 1 GB > 50 GB/s
    assert within["roofline_efficiency"] == pytest.approx(0.2) and not within["roofline_exceeded"]
    assert above["roofline_efficiency"] == 1.0 and above["roofline_exceeded"]
    assert not r.values(0.0)["roofline_exceeded"]


def test_ladder_rows_never_show_an_efficiency_above_one():
    below = targets.roofline_fields(GB, 10.0, 50.0, {})
    above = targets.roofline_fields(GB, 80.0, 50.0, {})
    assert below["efficiency_host"] == pytest.approx(0.2) and not below["above_host_roofline"]
    assert above["efficiency_host"] == 1.0 and above["above_host_roofline"]
    assert above["efficiency_host_raw"] == pytest.approx(1.6)


def _report_rows(host_gbps: float) -> list[dict]:
    rows = []
    for name, mib, tps in (("F16", 1200.0, 10.0), ("Q4_0", 400.0, 60.0)):
        row = {"variant": name, "file_mib": mib, "tensor_bytes": int(mib * MIB), "decode_tps": tps,
               "bits_per_weight": 16.0 if name == "F16" else 4.5}
        row.update(targets.roofline_fields(row["tensor_bytes"], tps, host_gbps, {}))
        rows.append(row)
    return rows


def test_report_flags_a_point_above_the_roofline_instead_of_printing_its_efficiency(tmp_path):
    rows = _report_rows(20.0)   # Q4_0 reads 60 x 400 MiB = 25 GB/s > 20
    assert rows[1]["above_host_roofline"] and rows[1]["efficiency_host_raw"] > 1
    doc = {"meta": {"model": "m", "host_bandwidth_gbps": 20.0}, "host": {}, "rows": rows}
    paths = report.write_all(rows, doc, tmp_path)
    md = paths["md"].read_text()
    assert "| 1.00" + report.ABOVE_MARK + " |" in md and report.ABOVE_NOTE in md
    assert f"{rows[1]['efficiency_host_raw']:.2f} |" not in md   # the raw figure is no table cell
    assert paths["png"].stat().st_size > 0


def test_bound_rows_floors_at_the_reference_and_marks_it():
    rows = _report_rows(5.0)    # F16 reads 10 x 1200 MiB = 12.6 GB/s > 5
    gbps, note = runner.bound_rows(rows, "F16", 5.0, {})
    assert gbps == pytest.approx(10.0 * 1200 * MIB / GB) and "floor" in note
    assert rows[0]["sets_host_roofline"] and rows[0]["efficiency_host"] == pytest.approx(1.0)
    assert not rows[0]["above_host_roofline"]
    md = report.markdown(rows, {"meta": {"host_bandwidth_gbps": gbps, "bandwidth_bound": note}})
    assert report.FLOOR_MARK in md and "floor" in md


def _stored() -> dict:
    if not STORED.is_file():
        pytest.skip("no stored ladder report")
    return json.loads(STORED.read_text())


def _eff_cells(md: str) -> list[str]:
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    col = [c.strip() for c in lines[0].strip("|").split("|")].index("eff.")
    return [[c.strip() for c in ln.strip("|").split("|")][col] for ln in lines[1:]
            if ln.count("|") == lines[0].count("|")]


def test_stored_ladder_has_no_point_above_the_host_roofline():
    doc = _stored()
    gbps = doc["meta"]["host_bandwidth_gbps"]
    for row in doc["rows"]:
        assert row["decode_tps"] * row["tensor_bytes"] / GB <= gbps * (1 + 1e-9), row["variant"]
        assert row["efficiency_host"] <= 1.0 and not row["above_host_roofline"]
        assert row["decode_tps"] <= row["roofline_host_tps"] * (1 + 1e-9)
    # re-deriving from the stored measurements gives the same bound and no point above it
    again = rederive.rederive(copy.deepcopy(doc))
    assert again["meta"]["host_bandwidth_gbps"] == pytest.approx(gbps)
    assert not any(r["above_host_roofline"] for r in again["rows"])
    md = (STORED.parent / "ladder.md").read_text()
    cells = _eff_cells(md)
    assert len(cells) == len(doc["rows"])
    assert all(float(c.rstrip(report.ABOVE_MARK + report.FLOOR_MARK)) <= 1.0 for c in cells)
    assert report.ABOVE_MARK not in "".join(cells)


def test_probe_streams_with_the_requested_threads(monkeypatch):
    seen: set[int] = set()
    lock = threading.Lock()

    def counting(buf):
        with lock:
            seen.add(threading.get_ident())
        return buf.view("float32").max()

    real = roofline._readers
    monkeypatch.setattr(roofline, "_readers", lambda: {**real(), "counting": counting})
    d: dict = {}
    gbps = roofline.measure_read_bandwidth_gbps(3, nbytes=24 * MIB, repeats=2, details=d)
    assert math.isfinite(gbps) and gbps > 0 and d["gbps"] == gbps
    assert d["threads"] == 3 and d["bytes"] <= 24 * MIB and set(d["kernels_gbps"]) >= {"numpy max", "counting"}
    assert len(seen - {threading.get_ident()}) == 3      # the measured reads ran on 3 worker threads
    assert roofline.probe_threads(0) >= 1 and roofline.probe_threads(3) == 3


def test_probe_buffer_is_above_the_last_level_cache(tmp_path, monkeypatch):
    for i, (level, kind, size) in enumerate(((1, "Data", "48K"), (1, "Instruction", "32K"),
                                             (2, "Unified", "2048K"), (3, "Unified", "266240K"))):
        d = tmp_path / f"index{i}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(kind + "\n")
        (d / "size").write_text(size + "\n")
    assert roofline.last_level_cache_bytes(tmp_path) == 260 * MIB
    assert roofline.last_level_cache_bytes(tmp_path / "none") == 0
    monkeypatch.setattr(roofline, "_available_bytes", lambda: 64 * 2**30)
    assert roofline.probe_bytes(2, llc_bytes=260 * MIB) == 520 * MIB
    assert roofline.probe_bytes(2, llc_bytes=0) == 256 * MIB
    assert roofline.probe_bytes(64, llc_bytes=2**30) == 1024 * MIB     # capped
    monkeypatch.setattr(roofline, "_available_bytes", lambda: 1024 * MIB)
    assert roofline.probe_bytes(2, llc_bytes=260 * MIB) == 256 * MIB   # a quarter of free memory


def test_host_probe_readings():
    best, probes = targets.host_bandwidth_gbps(2, model_bytes=16 * MIB)
    assert {"probe_1_thread_gbps", "probe_2_threads_gbps", "probe_2_threads_model_sized_gbps"} <= set(probes)
    assert best == max(probes["probe_1_thread_gbps"], probes["probe_2_threads_gbps"]) > 0
    assert probes["probe_kernel"] in ("memchr", "numpy max") and probes["probe_bytes"] > 0
