"""A real profile of a tiny MLP: measurement sanity, the estimate against it, JSON schema, table, HTML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgekit.errors import BudgetExceededError
from edgekit.profiler.api import _budget_failures, budget_error
from edgekit.profiler.measure import latency_stats
from edgekit.profiler.report import load_schema


def _host(report: Any) -> dict:
    variant = report.to_dict()["result"]["variants"][0]
    return next(d for d in variant["devices"] if d["device"] == "host")


def test_latency_stats_percentiles() -> None:
    stats = latency_stats([float(i) for i in range(1, 101)])
    assert stats.runs == 100
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.p90_ms == pytest.approx(90.1)
    assert stats.p99_ms == pytest.approx(99.01)
    assert stats.min_ms == 1 and stats.max_ms == 100
    assert stats.mean_ms == pytest.approx(50.5)


def test_measurement_is_sane(profiled_mlp: Any) -> None:
    m = profiled_mlp.to_dict()["result"]["variants"][0]["measurement"]
    phase = m["phases"][0]
    lat = phase["latency"]
    assert lat["runs"] == 30 and len(phase["samples_ms"]) == 30
    assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert phase["throughput_per_s"] > 0 and phase["throughput_unit"] == "inputs/s"
    assert m["load_ms"] > 0 and m["first_inference_ms"] > 0
    assert m["threads"] >= 1
    # memory: ONNX Runtime's own overhead, then the model on top of it
    assert m["runtime_overhead_mb"] > 0
    assert m["inference_peak_rss_mb"] >= m["runtime_overhead_mb"] > 0
    assert phase["top_ops"], "the ORT per-op profile found no kernels"
    assert {o["op_type"] for o in phase["top_ops"]} & {"MatMul", "Gemm", "FusedGemm", "FusedMatMul"}


def test_host_estimate_is_within_a_loose_factor_of_the_measurement(profiled_mlp: Any) -> None:
    host = _host(profiled_mlp)
    checked = host["measured"]["phases"]["forward"]
    # a tiny model on a shared host: only the order of magnitude is asserted, never absolute times
    assert checked["p50_ms"] / 4 <= checked["estimate_ms"] <= checked["p50_ms"] * 4
    assert host["measured"]["memory_mb"] / 4 <= host["estimate"]["memory_mb"] <= host["measured"]["memory_mb"] * 4


def test_devices_get_estimates_that_inherit_unverified_figures(profiled_mlp: Any) -> None:
    devices = {d["device"]: d for d in profiled_mlp.to_dict()["result"]["variants"][0]["devices"]}
    assert set(devices) == {"host", "raspberry-pi-5", "pixel-8"}
    assert devices["host"]["estimate"]["inherits_unverified"] == []
    assert "peak_fp32_gflops" in devices["pixel-8"]["estimate"]["inherits_unverified"]
    assert devices["pixel-8"]["measured"] is None
    for d in devices.values():
        assert d["estimate"]["phases"][0]["latency_ms"] > 0
        assert d["fits"] is True  # a few MB against gigabyte budgets
    assert "peak_fp32_gflops" in devices["raspberry-pi-5"]["estimate"]["derived_fields"]


def test_json_report_validates_and_has_no_nan(profiled_mlp: Any) -> None:
    import jsonschema

    text = profiled_mlp.to_json()
    assert "NaN" not in text and "Infinity" not in text
    document = json.loads(text)
    jsonschema.validate(document, load_schema())
    assert document["kind"] == "profile" and document["status"] == "ok"
    static = document["result"]["variants"][0]["static"]
    assert static["parameter_count"] == 16 * 64 + 64 + 64 * 4 + 4
    assert static["flops"] > 2 * (16 * 64 + 64 * 4)


def test_table_shows_variants_by_devices(profiled_mlp: Any) -> None:
    table = profiled_mlp.render_table()
    for word in ("mlp", "host", "raspberry-pi-5", "pixel-8", "latency ms", "memory MB", "fits", "coverage"):
        assert word in table
    assert "* pixel-8: the estimate inherits unverified profile figures" in table


def test_html_report_is_one_file_with_the_plots(profiled_mlp: Any, tmp_path: Path) -> None:
    page = profiled_mlp.write_html(tmp_path / "report.html").read_text()
    assert page.count("<svg") >= 5  # measured and estimated heatmaps, memory, latency histogram, per-op bars
    for label in ("Measured on this host", "Estimated per device", "memory per device", "host latency", "time per op"):
        assert label in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_budget_failures_name_variant_device_figure_and_budget(profiled_mlp: Any) -> None:
    failures = _budget_failures(profiled_mlp.variants, 1e-6, 1e-6)
    assert {f.device for f in failures} == {"host", "raspberry-pi-5", "pixel-8"}
    assert {f.figure for f in failures} == {"latency_ms", "memory_mb"}
    host_latency = next(f for f in failures if f.device == "host" and f.figure == "latency_ms")
    assert host_latency.basis == "measured p50"
    assert "mlp on host" in host_latency.message and "exceeds the budget of 1e-06 ms" in host_latency.message
    assert not _budget_failures(profiled_mlp.variants, 1e9, 1e9)
    assert budget_error(profiled_mlp) is None


def test_budget_error_is_exit_code_3() -> None:
    assert BudgetExceededError.exit_code == 3
