"""The host's layout conversions (NCHWc reorders): read from its level-"all" graph, sized from the portable one."""

from __future__ import annotations

import platform
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.profiler import calibration, layout, static
from edgekit.profiler.estimate import DeviceRates, estimate_latency


def _conv_erf_conv(path: Path, channels: int = 16, size: int = 8) -> Path:
    """Conv -> Erf -> Conv: Erf stays in NCHW, so the NCHWc pass converts out of and back into blocks."""
    rng = np.random.default_rng(0)
    w = [
        numpy_helper.from_array(rng.standard_normal((channels, channels, 3, 3)).astype(np.float32), f"w{i}")
        for i in range(2)
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1], name="conv0"),
        helper.make_node("Erf", ["c0"], ["e0"], name="erf0"),
        helper.make_node("Conv", ["e0", "w1"], ["y"], pads=[1, 1, 1, 1], name="conv1"),
    ]
    shape = [1, channels, size, size]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        w,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_reorders_are_memory_nodes_of_their_nchw_side() -> None:
    host = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("ReorderInput", ["a"], ["a_blocked"], domain=layout.NCHWC_DOMAIN, name="in"),
                helper.make_node("ReorderOutput", ["b_blocked"], ["b"], domain=layout.NCHWC_DOMAIN, name="out"),
                helper.make_node("ReorderOutput", ["c_blocked"], ["c"], domain=layout.NCHWC_DOMAIN, name="gone"),
                helper.make_node("ReorderInput", ["d"], ["d2"], domain="com.microsoft", name="not_nchwc"),
            ],
            "h",
            [],
            [],
        )
    )
    analysis = replace(_empty_analysis(), value_shapes={"a": (1, 24, 10, 10), "b": (1, 32, 5, 5), "d": (1, 8)})
    nodes = {n.name: n for n in layout.reorder_nodes(host, analysis)}
    assert set(nodes) == {"in", "out"}  # "c" is not in the portable graph: not guessed; the other domain is not NCHWc
    assert nodes["in"].bytes_read == nodes["in"].bytes_written == 24 * 10 * 10 * 4
    assert nodes["out"].bytes_moved == 2 * 32 * 5 * 5 * 4
    assert nodes["out"].kind == static.NodeKind.DATA and nodes["out"].total_flops == 0


def _empty_analysis() -> static.StaticAnalysis:
    return static.StaticAnalysis(
        input_shapes={}, bound_dims={}, parameter_count=0, weight_bytes_by_dtype={}, folded_nodes=0,
        op_histogram={}, nodes=(), peak_activation_bytes=0, peak_at_node=None, shape_source="onnx",
    )  # fmt: skip


def test_a_graph_without_convolutions_gets_no_reorders_and_no_second_session(tmp_path: Path) -> None:
    analysis = replace(_empty_analysis(), nodes=())
    dst = tmp_path / "host.onnx"
    assert layout.host_layout_nodes(tmp_path / "absent.onnx", dst, [analysis, analysis]) == [(), ()]
    assert not dst.exists()


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="MLAS's NCHWc layout is x86's")
def test_the_host_estimate_pays_for_the_reorders_this_host_adds(tmp_path: Path) -> None:
    src = _conv_erf_conv(tmp_path / "m.onnx")
    portable = static.analyze(static.runtime_graph(src, tmp_path / "rt.onnx"))
    (reorders,) = layout.host_layout_nodes(src, tmp_path / "host.onnx", [portable])
    kinds = sorted(n.op_type for n in reorders)
    # out of blocks before Erf, back in after it; the graph's input and output convert too
    assert kinds.count("ReorderOutput") >= 1 and kinds.count("ReorderInput") >= 1
    assert all(n.bytes_moved == 2 * 16 * 8 * 8 * 4 for n in reorders)
    rates = DeviceRates(
        device="host", threads=1, gemm_gflops={"fp32": 1.0}, conv_gflops={"fp32": 1.0}, vector_gflops=1.0,
        normalization_gflops=1.0, lrn_gflops=1.0, bandwidth_gbps=1.0, dram_bandwidth_gbps=1.0, cache_bytes=1 << 30,
        conv_half_reduction=0.0, attention_gflops={"fp32": 1.0}, call_overhead_us={}, node_overhead_us=0.0,
        parallel_node_overhead_us=0.0, run_overhead_ms=0.0, io_overhead_us=0.0, basis="test",
    )  # fmt: skip
    before = estimate_latency("forward", portable, rates).latency_ms
    after = estimate_latency("forward", layout.with_layout(portable, reorders), rates).latency_ms
    # each reorder reads and writes 4 KB at 1 GB/s: 8.192 us
    assert after - before == pytest.approx(len(reorders) * 8192 / 1e9 * 1e3, rel=1e-9)


def _conv(name: str, *, flops: int = 0, groups: int = 1, marked: bool = False) -> static.NodeCost:
    return static.NodeCost(
        name=name, op_type="Conv", domain="", kind=static.NodeKind.CONV, flops={"fp32": flops}, macs=flops // 2,
        bytes_read=0, bytes_written=0, weight_bytes=0, groups=groups, nchw_on_host=marked,
    )  # fmt: skip


def test_convolutions_the_nchwc_pass_leaves_in_nchw_are_marked_in_place() -> None:
    host = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("Conv", ["a", "w"], ["b"], domain=layout.NCHWC_DOMAIN, name="blocked"),
                helper.make_node("FusedConv", ["b", "w"], ["c"], domain="com.microsoft", name="plain"),
                helper.make_node("ReorderOutput", ["c"], ["d"], domain=layout.NCHWC_DOMAIN, name="ReorderOutput"),
                helper.make_node("ReorderOutput", ["d"], ["e"], domain=layout.NCHWC_DOMAIN, name="ReorderOutput"),
            ],
            "h",
            [],
            [],
        )
    )
    analysis = replace(
        _empty_analysis(), nodes=(_conv("blocked"), _conv("plain")), value_shapes={"d": (1, 8), "e": (1, 8)}
    )
    marked = layout.nchw_convs(host, analysis)
    assert [n.name for n in marked] == ["plain"] and marked[0].nchw_on_host
    extra = layout.reorder_nodes(host, analysis) + marked
    after = layout.with_layout(analysis, extra)
    # the conv replaced where it was, both same-named reorders added after the portable nodes
    assert [(n.name, n.nchw_on_host) for n in after.nodes] == [
        ("blocked", False), ("plain", True), ("ReorderOutput", False), ("ReorderOutput", False),
    ]  # fmt: skip


def test_a_conv_left_in_nchw_runs_at_the_nchw_rate_plus_its_cost_per_group() -> None:
    rates = DeviceRates(
        device="host", threads=1, gemm_gflops={"fp32": 1.0}, conv_gflops={"fp32": 1000.0}, vector_gflops=1.0,
        normalization_gflops=1.0, lrn_gflops=1.0, bandwidth_gbps=1000.0, dram_bandwidth_gbps=1.0, cache_bytes=1 << 30,
        conv_half_reduction=0.0, attention_gflops={"fp32": 1.0}, call_overhead_us={}, node_overhead_us=0.0,
        parallel_node_overhead_us=0.0, run_overhead_ms=0.0, io_overhead_us=0.0, basis="test",
        nchw_conv_gflops=100.0, nchw_group_us=2.0,
    )  # fmt: skip
    nodes = (_conv("a", flops=1_000_000, groups=10, marked=True), _conv("b", flops=1_000_000, groups=10))
    est = estimate_latency("forward", replace(_empty_analysis(), nodes=nodes), rates)
    # marked: 1e6 / 100 GFLOP/s = 10 us + 10 groups x 2 us = 30 us; unmarked: 1e6 / 1000 GFLOP/s = 1 us
    assert est.latency_ms == pytest.approx(0.031, rel=1e-9)


def _solver(timings_ms: dict[str, float], cases: dict[str, tuple[static.NodeCost, ...]]) -> calibration._Solver:
    by = {
        k: calibration.SuiteCase(
            name=k, path=Path(k), feeds_file=Path(k), budget_s=0.0, analysis=replace(_empty_analysis(), nodes=v)
        )
        for k, v in cases.items()
    }
    return calibration._Solver(by=by, t=timings_ms, threads=1, node_s=0.0, run_s=0.0, io_s=0.0, bw=1e12)


def test_the_nchw_rate_and_cost_per_group_are_solved_from_a_dense_and_a_depthwise_case() -> None:
    dense = tuple(_conv(f"d{i}", flops=1_000_000, marked=True) for i in range(3))
    dw = tuple(_conv(f"w{i}", flops=100_000, groups=58, marked=True) for i in range(3))
    # at 100 GFLOP/s and 2 us per group: 3 x (10 + 2) us and 3 x (1 + 116) us
    cases = {"conv_fp32": (_conv("c"),), "conv_nchw": dense, "conv_nchw_dw": dw}
    fit = _solver({"conv_nchw": 0.036, "conv_nchw_dw": 0.351}, cases).nchw_convs(0.0)
    assert fit["nchw_conv_gflops"] == pytest.approx(100.0, rel=1e-9)
    assert fit["nchw_group_us"] == pytest.approx(2.0, rel=1e-9)
    # a host without NCHWc kernels runs even the dense case in NCHW: no separate rate there
    no_nchwc = dict(cases, conv_fp32=(_conv("c", marked=True),))
    assert _solver({"conv_nchw": 0.036, "conv_nchw_dw": 0.351}, no_nchwc).nchw_convs(0.0) == {}


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="MLAS's NCHWc layout is x86's")
def test_a_58_channel_conv_stays_in_nchw_on_this_host_and_a_16_channel_one_does_not(tmp_path: Path) -> None:
    for channels, expected in ((58, True), (16, False)):
        src = _conv_erf_conv(tmp_path / f"m{channels}.onnx", channels=channels)
        portable = static.analyze(static.runtime_graph(src, tmp_path / f"rt{channels}.onnx"))
        (extra,) = layout.host_layout_nodes(src, tmp_path / f"host{channels}.onnx", [portable])
        convs = [n for n in layout.with_layout(portable, extra).nodes if n.kind == static.NodeKind.CONV]
        assert len(convs) == 2 and all(n.nchw_on_host is expected for n in convs)


def _weights_model(convs: list[tuple[str, str, str, tuple[int, ...]]]) -> object:
    """A graph of (node name, domain, output, weight dims) convolutions, weights as initializers."""
    nodes = [helper.make_node("Conv", ["x", f"w_{n}"], [out], domain=d, name=n) for n, d, out, _ in convs]
    inits = [
        numpy_helper.from_array(np.zeros(dims, np.float32), f"w_{n}") for n, _, _, dims in convs
    ]  # fmt: skip
    return helper.make_model(helper.make_graph(nodes, "g", [], [], inits))


def test_a_blocked_conv_does_the_work_of_its_channels_padded_to_whole_blocks() -> None:
    # MobileNet-v2 on AVX-512: 96 -> 24 stored, [32, 96] once blocked; 24 -> 144 reads 32 padded channels
    portable = _weights_model(
        [
            ("reduce", "", "r", (24, 96, 1, 1)),
            ("expand", "", "e", (144, 24, 1, 1)),
            ("full", "", "f", (64, 64, 3, 3)),
            ("nchw", "", "n", (58, 58, 1, 1)),
        ]
    )
    host = _weights_model(
        [
            ("r_nchwc", layout.NCHWC_DOMAIN, "rb", (32, 96, 1, 1)),
            ("e_nchwc", layout.NCHWC_DOMAIN, "eb", (144, 32, 1, 1)),
            ("f_nchwc", layout.NCHWC_DOMAIN, "fb", (64, 64, 3, 3)),
            ("nchw", "", "n", (58, 58, 1, 1)),
        ]
    )
    nodes = tuple(
        replace(_conv(name, flops=9_600), output_elements=100) for name in ("reduce", "expand", "full", "nchw")
    )
    analysis = replace(_empty_analysis(), nodes=nodes)
    padded = {n.name: n for n in layout.padded_convs(host, portable, analysis)}
    assert set(padded) == {"reduce", "expand"}  # full blocks and NCHW convs keep their work
    assert padded["reduce"].total_flops == 12_800 and padded["reduce"].output_elements == 133  # x 32 / 24 outputs
    assert padded["expand"].total_flops == 12_800 and padded["expand"].reduction == pytest.approx(4800 * 4 / 3 / 100)
    after = layout.with_layout(analysis, tuple(padded.values()))
    assert [n.name for n in after.nodes] == ["reduce", "expand", "full", "nchw"]  # replaced in place, none added
    assert after.flops == 12_800 * 2 + 9_600 * 2


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="MLAS's NCHWc layout is x86's")
def test_the_host_pads_a_24_channel_conv_only_where_its_block_is_wider_than_8(tmp_path: Path) -> None:
    src = _conv_erf_conv(tmp_path / "m.onnx", channels=24)
    portable_path = static.runtime_graph(src, tmp_path / "rt.onnx")
    portable = static.analyze(portable_path, feeds={"x": np.zeros((1, 24, 8, 8), np.float32)})
    (extra,) = layout.host_layout_nodes(src, tmp_path / "host.onnx", [portable], portable=portable_path)
    host_dims = {i.name: tuple(i.dims) for i in static.load_onnx(tmp_path / "host.onnx").graph.initializer}
    blocked = [d for d in host_dims.values() if len(d) == 4]
    grown = [n for n in extra if n.kind == static.NodeKind.CONV and not n.nchw_on_host]
    # AVX-512's block of 16 pads 24 channels to 32 (the conv's work x 32/24 or more); AVX2's of 8 does not
    if any(d[0] == 32 for d in blocked):
        before = {n.name: n.total_flops for n in portable.nodes}
        assert grown and all(n.total_flops > before[n.name] for n in grown)
    else:
        assert not grown


def _pool(name: str, flops: int) -> static.NodeCost:
    return static.NodeCost(
        name=name, op_type="MaxPool", domain="", kind=static.NodeKind.ELEMENTWISE, flops={"fp32": flops}, macs=0,
        bytes_read=0, bytes_written=0, weight_bytes=0,
    )  # fmt: skip


def test_pools_left_in_nchw_are_marked_and_run_at_the_nchw_pool_rate() -> None:
    host = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("MaxPool", ["a"], ["b"], domain=layout.NCHWC_DOMAIN, name="blocked"),
                helper.make_node("MaxPool", ["b"], ["c"], name="plain"),
            ],
            "h",
            [],
            [],
        )
    )
    analysis = replace(_empty_analysis(), nodes=(_pool("blocked", 1_000_000), _pool("plain", 1_000_000)))
    marked = layout.nchw_pools(host, analysis)
    assert [(n.name, n.nchw_on_host) for n in marked] == [("plain", True)]
    rates = DeviceRates(
        device="host", threads=1, gemm_gflops={"fp32": 1.0}, conv_gflops={"fp32": 1.0}, vector_gflops=100.0,
        normalization_gflops=1.0, lrn_gflops=1.0, bandwidth_gbps=1000.0, dram_bandwidth_gbps=1.0, cache_bytes=1 << 30,
        conv_half_reduction=0.0, attention_gflops={"fp32": 1.0}, call_overhead_us={}, node_overhead_us=0.0,
        parallel_node_overhead_us=0.0, run_overhead_ms=0.0, io_overhead_us=0.0, basis="test",
        nchw_conv_gflops=1.0, nchw_group_us=100.0, nchw_pool_gflops=10.0,
    )  # fmt: skip
    est = estimate_latency("forward", layout.with_layout(analysis, marked), rates)
    # blocked: 1e6 / 100 GFLOP/s = 10 us; in NCHW: 1e6 / 10 = 100 us (never the NCHW conv's rate or per-group cost)
    assert est.latency_ms == pytest.approx(0.110, rel=1e-9)
    # a device (no NCHW pool rate) runs the marked pool at the vector rate
    assert estimate_latency(
        "forward", layout.with_layout(analysis, marked), replace(rates, nchw_pool_gflops=0.0)
    ).latency_ms == pytest.approx(0.020, rel=1e-9)
