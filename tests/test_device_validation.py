"""Device estimates: host-independent, banded by published measurements, kernel classes per ISA."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest
import tomllib

from edgekit.devices import get_device
from edgekit.profiler import kernels, validation
from edgekit.profiler.calibration import HostEfficiency
from edgekit.profiler.estimate import device_rates, estimate_latency
from edgekit.profiler.static import NodeCost, StaticAnalysis


def _host(scale: float) -> HostEfficiency:
    """A host calibration; ``scale`` stands for a quiet (1.0) or a loaded (0.2) machine."""
    return HostEfficiency(
        run_overhead_ms=0.05 / scale,
        io_overhead_us=2.0 / scale,
        node_overhead_us=3.0 / scale,
        parallel_node_overhead_us=9.0 / scale,
        bandwidth_gbps=40.0 * scale,
        dram_bandwidth_gbps=12.0 * scale,
        cache_bytes=32 << 20,
        vector_gflops=5.0 * scale,
        lrn_gflops=1.0 * scale,
        gemm_gflops={"fp32": 80.0 * scale, "int8": 150.0 * scale},
        conv_gflops={"fp32": 60.0 * scale},
        conv_peak_gflops=70.0 * scale,
        conv_half_reduction=50.0,
        threads=2,
        timings_ms={},
    )


def _conv(name: str, *, groups: int, cpg: int, macs: int, out: int) -> NodeCost:
    return NodeCost(
        name=name,
        op_type="Conv",
        domain="",
        kind="conv",
        flops={"fp32": 2 * macs},
        macs=macs,
        bytes_read=4 * out,
        bytes_written=4 * out,
        weight_bytes=1000,
        output_elements=out,
        groups=groups,
        channels_per_group=cpg,
    )


def _analysis(nodes: tuple[NodeCost, ...]) -> StaticAnalysis:
    return StaticAnalysis(
        input_shapes={"x": (1, 3, 224, 224)},
        bound_dims={},
        parameter_count=0,
        weight_bytes_by_dtype={},
        folded_nodes=0,
        op_histogram={},
        nodes=nodes,
        peak_activation_bytes=0,
        peak_at_node=None,
        shape_source="onnx",
        output_count=1,
    )


MOBILE_BLOCK = (
    _conv("expand", groups=1, cpg=96, macs=96 * 576 * 3136, out=576 * 3136),
    _conv("depthwise", groups=576, cpg=1, macs=9 * 576 * 3136, out=576 * 3136),
    _conv("stem", groups=1, cpg=3, macs=27 * 32 * 12544, out=32 * 12544),
)


def test_per_device_factor_scales_the_whole_estimate() -> None:
    """A device with published rows is estimated with its factor: the latency scales by exactly it."""
    phone = get_device("lowend-a53-phone")
    rates = device_rates(phone, None, None)
    factor = rates.error_band.device_factor
    assert factor == validation.device_factor("lowend-a53-phone") and abs(factor - 1.0) > 0.01
    unadapted = dataclasses.replace(
        rates,
        work_gflops={w: {p: r * factor for p, r in v.items()} for w, v in rates.work_gflops.items()},
        bandwidth_gbps=rates.bandwidth_gbps * factor,
        dram_bandwidth_gbps=rates.dram_bandwidth_gbps * factor,
        node_overhead_us=rates.node_overhead_us / factor,
        parallel_node_overhead_us=rates.parallel_node_overhead_us / factor,
        run_overhead_ms=rates.run_overhead_ms / factor,
        io_overhead_us=rates.io_overhead_us / factor,
    )
    a = estimate_latency("forward", _analysis(MOBILE_BLOCK), rates).latency_ms
    b = estimate_latency("forward", _analysis(MOBILE_BLOCK), unadapted).latency_ms
    assert a == pytest.approx(b * factor, rel=1e-9)


def test_device_estimate_does_not_depend_on_the_host_calibration() -> None:
    """A quiet host and a host five times slower give the same device estimate, to the last bit."""
    pi5, host = get_device("raspberry-pi-5"), get_device("host")
    quiet = device_rates(pi5, _host(1.0), host)
    loaded = device_rates(pi5, _host(0.2), host)
    assert quiet == loaded
    a = estimate_latency("forward", _analysis(MOBILE_BLOCK), quiet).latency_ms
    b = estimate_latency("forward", _analysis(MOBILE_BLOCK), loaded).latency_ms
    assert a == b > 0
    # the host's own estimate does follow its calibration
    assert device_rates(host, _host(1.0), host) != device_rates(host, _host(0.2), host)


def test_conv_classes_from_groups_and_reduction() -> None:
    classes = [n.conv_class for n in MOBILE_BLOCK]
    assert classes == ["dense", "depthwise", "small"]
    grouped = _conv("g", groups=4, cpg=16, macs=16 * 9 * 100, out=100)
    assert grouped.conv_class == "grouped"
    assert kernels.work_kind(grouped) == "conv_grouped"


def test_depthwise_runs_far_below_dense_on_every_isa_class() -> None:
    for isa in kernels.ISA_CLASSES:
        dense, dw = kernels.efficiency(isa, "conv_dense"), kernels.efficiency(isa, "conv_depthwise")
        assert dw.fp32 < dense.fp32 / 4, isa
        assert dw.why and dense.why


def test_isa_class_of_each_bundled_profile() -> None:
    expected = {
        "raspberry-pi-4": "arm-neon",
        "lowend-a53-phone": "arm-neon",
        "raspberry-pi-5": "arm-dotprod",
        "rk3588": "arm-dotprod",
        "qcs6490": "arm-dotprod",
        "pixel-8": "arm-i8mm",
        "galaxy-s24-snapdragon": "arm-i8mm",
        "intel-n100": "x86-avx2",
    }
    for name, isa in expected.items():
        assert kernels.isa_class(get_device(name).isa_features) == isa, name


def test_threads_land_on_big_cores_first() -> None:
    """RK3588 (4x A76 + 4x A55): 4 threads use the A76 peak; the 5th adds an A55, not another A76."""
    rk = get_device("rk3588")
    four = device_rates(rk, None, None)  # default_threads = 4
    a76 = max(rk.cpu_clusters, key=lambda c: c.max_ghz)
    te = kernels.DEVICE_MODEL.thread_efficiency
    per_core = a76.peak_gops("fp32") / a76.cores
    eff = kernels.efficiency("arm-dotprod", "conv_dense").fp32
    factor = four.error_band.device_factor  # the per-device adaptation from RK3588's published rows
    assert four.work_gflops["conv_dense"]["fp32"] == pytest.approx(per_core * (1 + 3 * te) * eff / factor)
    eight = dataclasses.replace(rk, default_threads=8)
    a55 = min(rk.cpu_clusters, key=lambda c: c.max_ghz)
    gain = device_rates(eight, None, None).work_gflops["conv_dense"]["fp32"] - four.work_gflops["conv_dense"]["fp32"]
    assert gain == pytest.approx(4 * te * a55.peak_gops("fp32") / a55.cores * eff / factor)


def test_every_estimate_carries_its_band(tmp_path: Path) -> None:
    pi4 = device_rates(get_device("raspberry-pi-4"), None, None)
    est = estimate_latency("forward", _analysis(MOBILE_BLOCK), pi4)
    band = est.to_dict()["error_band"]
    assert band["isa_class"] == "arm-neon"
    assert band["validated"] and band["class_rows"] > 0 and band["device_rows"] > 0
    assert band["label"].startswith("±") and "published arm-neon rows" in band["label"]
    # the Pixel 8 has no rows of its own but its class (i8mm) has: the table-only band, no per-device factor
    pixel = estimate_latency("forward", _analysis(MOBILE_BLOCK), device_rates(get_device("pixel-8"), None, None))
    assert pixel.error_band is not None and pixel.error_band.validated
    assert pixel.error_band.device_rows == 0 and pixel.error_band.device_factor == 1.0
    bands = tomllib.loads(validation.BANDS_FILE.read_text(encoding="utf-8"))["class"]["arm-i8mm"]
    assert pixel.error_band.band_pct == bands["band_pct_unadapted"]
    # no published x86 AVX2 CPU rows: the N100 says so
    n100 = estimate_latency("forward", _analysis(MOBILE_BLOCK), device_rates(get_device("intel-n100"), None, None))
    assert n100.error_band is not None and not n100.error_band.validated
    assert n100.to_dict()["error_band"]["label"].startswith("not validated")


def test_published_table_rows_are_complete_and_sourced() -> None:
    rows = validation.published_rows()
    assert len(rows) >= 40
    assert len({r["device"] for r in rows}) >= 8 and len({r["device"] for r in rows if validation.scored(r)}) >= 8
    for r in rows:
        get_device(r["device"])  # every row names a bundled profile
        assert r["source_url"].startswith("https://") and r["quote"], r
        assert float(r["latency_ms"]) > 0 and r["runtime"] and r["model"] and r["input_shape"]
    # NPU rows are listed, labelled, and never scored
    npu = [r for r in rows if r["compute_unit"] == "NPU"]
    assert npu and not any(validation.scored(r) for r in npu)


def test_bands_file_matches_the_table() -> None:
    """Each class's band rests on no more rows than the table has scored rows of that class."""
    scored = [r for r in validation.published_rows() if validation.scored(r)]
    by_class: dict[str, int] = {}
    for r in scored:
        isa = kernels.isa_class(get_device(r["device"]).isa_features)
        by_class[isa] = by_class.get(isa, 0) + 1
    for isa, n in by_class.items():
        band = validation.error_band("x", isa)
        assert band.class_rows == n, isa
        assert band.band_pct is not None and band.band_pct > 0


def test_band_label_for_a_table_without_rows(tmp_path: Path) -> None:
    empty = tmp_path / "published.csv"
    with empty.open("w", newline="") as f:
        csv.writer(f).writerow(["device", "compute_unit", "precision"])
    assert validation.published_rows(empty) == ()
    band = dataclasses.replace(validation.error_band("intel-n100", "x86-avx2"))
    assert band.label() == "not validated (no published x86-avx2 rows)"


def test_host_estimate_without_calibration_is_a_clear_error() -> None:
    from edgekit.errors import CalibrationError

    with pytest.raises(CalibrationError) as info:
        device_rates(get_device("host"), None, None)
    assert info.value.code == "calibration_mismatch" and "calibration" in info.value.message


def test_calibration_has_a_depthwise_case_and_the_host_uses_its_rate(tmp_path: Path) -> None:
    from edgekit.profiler import calibration

    cases = {c.name: c for c in calibration.build_suite(tmp_path)}
    convs = [n for n in cases["conv_depthwise"].analysis.nodes if n.kind == "conv"]
    assert len(convs) == 3 and all(n.conv_class == "depthwise" for n in convs)
    host = dataclasses.replace(_host(1.0), depthwise_gflops=2.0)
    rates = device_rates(get_device("host"), host, get_device("host"))
    assert rates.work_gflops == {"conv_depthwise": {"fp32": 2.0, "fp16": 2.0, "int8": 2.0}}
    dw = MOBILE_BLOCK[1]
    slow = estimate_latency("forward", _analysis((dw,)), rates).compute_ms
    fast = estimate_latency("forward", _analysis((dw,)), dataclasses.replace(rates, work_gflops={})).compute_ms
    assert slow == pytest.approx(dw.total_flops / 2.0e9 * 1e3)
    assert slow > fast  # the dense-conv curve at r = 9 would have made it faster


def test_pool_window_larger_than_its_input_counts_only_the_input(tmp_path: Path) -> None:
    """transformers' EfficientNet pools a 7x7 map with a 1280-wide ceil_mode kernel: 49 reads per output."""
    import onnx
    from onnx import TensorProto, helper

    from edgekit.profiler.static import analyze

    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[1280, 1280], ceil_mode=1)
    graph = helper.make_graph(
        [node],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 7, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 1, 1])],
    )
    path = tmp_path / "pool.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    (pool,) = analyze(path, probe=False).nodes
    assert pool.total_flops == 8 * 49


def test_two_runs_of_a_package_device_estimate_agree_whatever_the_host(image_package: Path, tmp_path: Path) -> None:
    """issue 13: two runs of the same device estimate within 5 % (here: exactly equal). One real package,
    analysed as ONNX Runtime runs it, estimated for every bundled non-host device twice, with the host's
    calibration recomputed between the runs as a quiet host and as one at a third of the rates with every
    per-node cost tripled (what a loaded machine measures)."""
    from edgekit.devices import list_devices
    from edgekit.profiler.static import analyze, runtime_graph

    model = next(image_package.glob("*.onnx"))
    analysis = analyze(runtime_graph(model, tmp_path / "runtime.onnx"), {"pixel_values": (1, 3, 8, 8)})
    host = get_device("host")
    devices = [p for p in list_devices() if p.name != "host"]
    assert len(devices) >= 8
    for profile in devices:
        first = estimate_latency("forward", analysis, device_rates(profile, _host(1.0), host))
        second = estimate_latency("forward", analysis, device_rates(profile, _host(1 / 3), host))
        assert first.latency_ms > 0, profile.name
        assert abs(second.latency_ms / first.latency_ms - 1) <= 0.05, profile.name
        assert second.to_dict() == first.to_dict(), profile.name  # the very same figures, band included
    # the host's own estimate does follow its (recomputed) calibration
    quiet = estimate_latency("forward", analysis, device_rates(host, _host(1.0), host)).latency_ms
    loaded = estimate_latency("forward", analysis, device_rates(host, _host(1 / 3), host)).latency_ms
    assert loaded > 2 * quiet
