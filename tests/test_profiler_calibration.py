"""The estimator's calibration suite: its graphs run, its fits recover known factors, the estimate uses them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgekit.profiler import calibration
from edgekit.profiler.estimate import DeviceRates, estimate_latency


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, calibration.SuiteCase]:
    return {c.name: c for c in calibration.build_suite(tmp_path_factory.mktemp("suite"))}


def test_every_suite_graph_runs_with_its_feeds(suite: dict[str, calibration.SuiteCase]) -> None:
    for case in suite.values():
        feeds = dict(np.load(case.feeds_file))
        session = ort.InferenceSession(str(case.path), providers=["CPUExecutionProvider"])
        outputs = session.run(None, feeds)
        assert all(np.isfinite(o).all() for o in outputs), case.name


def test_attention_cases_count_projected_attention_per_head(suite: dict[str, calibration.SuiteCase]) -> None:
    # 4 query heads of 16 (the packed QKV input is 128 wide: the head size comes from the output)
    for name, q_len, kv_len in (("attention_prefill", 64, 64), ("attention_decode", 1, 65)):
        nodes = [n for n in suite[name].analysis.nodes if n.kind == "attention_core"]
        assert [n.op_type for n in nodes] == ["GroupQueryAttention"] * 4, name  # no pass merged them
        core = 2 * 4 * q_len * kv_len * 16
        assert nodes[0].macs == core
        assert nodes[0].total_flops == 2 * core + 5 * 4 * q_len * kv_len
    kinds = {n.op_type: n.kind for n in suite["normalization"].analysis.nodes}
    assert kinds == {"LayerNormalization": "normalization", "SkipSimplifiedLayerNormalization": "normalization"}


def _case_times(suite: dict[str, calibration.SuiteCase], call_s: float, rate_gflops: float) -> dict[str, float]:
    """Times (ms) the two attention cases would take with these factors and the fixed ones below."""
    out = {}
    for name in ("attention_prefill", "attention_decode"):
        a = suite[name].analysis
        att = [n for n in a.nodes if n.kind == "attention_core"]
        rest = sum(n.bytes_moved / 20e9 for n in a.nodes if n.kind != "attention_core")
        io = (len(a.input_shapes) + a.output_count) * 2e-6
        work = sum(call_s + n.total_flops / (rate_gflops * 1e9) for n in att)
        out[name] = (20e-6 + io + len(a.nodes) * 1e-6 + rest + work) * 1e3
    return out


def _fit(suite: dict[str, calibration.SuiteCase], t: dict[str, float]) -> tuple[float, float]:
    return calibration._attention_fit(
        suite["attention_prefill"].analysis,
        suite["attention_decode"].analysis,
        t,
        run_s=20e-6,
        io_s=2e-6,
        overhead=lambda ns: len(ns) * 1e-6,
        bw=20e9,
        fallback_gflops=90.0,
    )


def test_attention_fit_recovers_call_cost_and_rate(suite: dict[str, calibration.SuiteCase]) -> None:
    rate, call = _fit(suite, _case_times(suite, call_s=12e-6, rate_gflops=35.0))
    assert rate == pytest.approx(35.0, rel=1e-6)
    assert call == pytest.approx(12e-6, rel=1e-6)


def test_attention_fit_falls_back_to_the_gemm_rate_on_noise(suite: dict[str, calibration.SuiteCase]) -> None:
    t = _case_times(suite, call_s=12e-6, rate_gflops=35.0)
    # a preempted decode sample longer than the prompt: no positive rate explains both
    t["attention_decode"] = t["attention_prefill"] * 1.5
    rate, call = _fit(suite, t)
    assert rate == 90.0
    assert call > 0


def test_estimate_times_attention_at_its_own_rate(suite: dict[str, calibration.SuiteCase]) -> None:
    common = dict(
        device="host",
        threads=1,
        conv_gflops={"fp32": 100.0},
        vector_gflops=10.0,
        normalization_gflops=5.0,
        lrn_gflops=1.0,
        bandwidth_gbps=1e6,  # so every node here is compute-bound
        dram_bandwidth_gbps=1e6,
        cache_bytes=1 << 30,
        conv_half_reduction=0.0,
        node_overhead_us=1.0,
        parallel_node_overhead_us=1.0,
        run_overhead_ms=0.0,
        io_overhead_us=0.0,
        basis="test",
    )
    analysis = suite["attention_prefill"].analysis
    flops = sum(n.total_flops for n in analysis.nodes if n.kind == "attention_core")
    by_att = {}
    for att_rate, call_us in ((10.0, 0.0), (40.0, 0.0), (40.0, 25.0)):
        rates = DeviceRates(
            **common,
            gemm_gflops={"fp32": 1000.0},
            attention_gflops={"fp32": att_rate},
            call_overhead_us={"attention_core": call_us},
        )
        by_att[(att_rate, call_us)] = estimate_latency("prefill", analysis, rates).by_op_ms["GroupQueryAttention"]
    # 4 nodes: dispatch + call + flops / rate each, the GEMM rate not involved
    for (att_rate, call_us), ms in by_att.items():
        assert ms == pytest.approx(4 * (1.0 + call_us) / 1e3 + flops / (att_rate * 1e9) * 1e3, rel=1e-9)
    assert by_att[(10.0, 0.0)] > 3 * by_att[(40.0, 0.0)]


def test_suite_files_live_in_the_work_dir(tmp_path: Path) -> None:
    cases = calibration.build_suite(tmp_path)
    names = {c.name for c in cases}
    assert {"attention_prefill", "attention_decode", "normalization", "gemm_fp32"} <= names
    assert all(c.path.parent == tmp_path and c.path.exists() for c in cases)


def test_resident_ratio_is_the_rise_per_stored_byte_and_the_prior_when_unusable() -> None:
    # 61.6 MB resident for 18 874 368 stored bytes (8 convolutions 256->256 3x3): 3.2637 copies
    assert calibration.resident_ratio(61.6, 18_874_368, "conv") == pytest.approx(3.26369, rel=1e-4)
    prior = calibration.RESIDENT_COPIES["conv"]
    assert calibration.resident_ratio(None, 18_874_368, "conv") == prior  # no /proc
    assert calibration.resident_ratio(200.0, 18_874_368, "conv") == prior  # 10.6: not a copy count
    assert calibration.resident_ratio(5.0, 18_874_368, "conv") == prior  # 0.26: below one copy
    assert calibration.resident_ratio(5.0, 0, "quantized_gemm") == calibration.RESIDENT_COPIES["quantized_gemm"]


def test_memory_calibration_measures_each_kind_of_weight_in_its_own_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each case graph's rise over its stored weights of that kind; float GEMM weights keep the prior (1)."""
    rises = {"mem_tiny": 0.5, "mem_conv": 61.6, "mem_folded_conv": 40.0, "mem_quantized_gemm": 9.2}
    seen: list[str] = []

    def fake_run(path: Path, threads: int) -> dict[str, float]:
        seen.append(path.stem)
        return {"overhead_mb": 11.0, "model_mb": rises[path.stem]}

    monkeypatch.setattr(calibration, "_MEMORY_CACHE", {})
    monkeypatch.setattr(calibration, "_memory_run", fake_run)
    cal = calibration.memory_calibration(tmp_path, 2)
    assert sorted(seen) == sorted(rises)
    conv_bytes = 8 * 256 * 256 * 9 * 4  # float32, stored and folded alike
    int8_bytes = 16 * (512 * 512 + 512)  # int8 weights, an int8 zero point per channel (the float scales: "other")
    copies = cal.bytes_per_weight_byte
    assert copies["conv"] == pytest.approx(61.6e6 / conv_bytes, rel=1e-9)
    assert copies["folded_conv"] == pytest.approx(40.0e6 / conv_bytes, rel=1e-9)
    assert copies["quantized_gemm"] == pytest.approx(9.2e6 / int8_bytes, rel=1e-9)
    assert copies["other"] == 1.0
    assert cal.runtime_overhead_mb == pytest.approx(11.5)
    assert calibration.memory_calibration(tmp_path, 2) is cal  # cached: it does not move with the load


def test_other_devices_keep_the_prior_copies_and_the_measured_overhead() -> None:
    host = calibration.MemoryCalibration(
        runtime_overhead_mb=11.0, bytes_per_weight_byte={"conv": 3.3, "folded_conv": 2.1, "quantized_gemm": 2.2}
    )
    other = host.for_other_devices()
    assert other.runtime_overhead_mb == 11.0
    assert other.bytes_per_weight_byte == calibration.RESIDENT_COPIES


def _host_fit(**kw: object) -> calibration.HostEfficiency:
    """A host calibration with round figures; ``kw`` overrides them."""
    base = dict(
        run_overhead_ms=0.0, io_overhead_us=0.0, node_overhead_us=0.0, parallel_node_overhead_us=0.0,
        bandwidth_gbps=100.0, dram_bandwidth_gbps=20.0, cache_bytes=1 << 30, vector_gflops=10.0, lrn_gflops=1.0,
        gemm_gflops={"fp32": 100.0, "int8": 200.0}, conv_gflops={"fp32": 200.0}, threads=1, timings_ms={},
    )  # fmt: skip
    base.update(kw)
    return calibration.HostEfficiency(**base)  # type: ignore[arg-type]


def _host_rates(**kw: object) -> DeviceRates:
    base = dict(
        device="host", threads=1, gemm_gflops={"fp32": 100.0}, conv_gflops={"fp32": 200.0}, vector_gflops=10.0,
        normalization_gflops=5.0, lrn_gflops=1.0, bandwidth_gbps=1000.0, dram_bandwidth_gbps=20.0,
        cache_bytes=1 << 30, conv_half_reduction=0.0, attention_gflops={"fp32": 50.0}, call_overhead_us={},
        node_overhead_us=0.0, parallel_node_overhead_us=0.0, run_overhead_ms=0.0, io_overhead_us=0.0, basis="test",
    )  # fmt: skip
    base.update(kw)
    return DeviceRates(**base)  # type: ignore[arg-type]


def test_depthwise_rate_and_cost_per_row_stem_and_pad_rates_are_recovered(
    suite: dict[str, calibration.SuiteCase],
) -> None:
    from edgekit.profiler.kernels import WorkKind

    truth = _host_rates(
        work_gflops={WorkKind.CONV_DEPTHWISE: {"fp32": 80.0}, WorkKind.CONV_SMALL: {"fp32": 120.0}},
        row_ns={WorkKind.CONV_DEPTHWISE: 6.0},
        op_bandwidth_gbps={"Pad": 15.0},
        vector_gflops=1e4,  # the pool after the stem memory-bound, as the solver takes the other nodes to be
    )
    names = ("conv_depthwise", "conv_depthwise_small", "conv_stem", "pad")
    t = {k: estimate_latency(k, suite[k].analysis, truth).latency_ms for k in names}
    solver = calibration._Solver(by=suite, t=t, threads=1, node_s=0.0, run_s=0.0, io_s=0.0, bw=1e12)
    dw = solver.depthwise(0.0)
    assert dw["depthwise_gflops"] == pytest.approx(80.0, rel=1e-6)
    assert dw["depthwise_row_ns"] == pytest.approx(6.0, rel=1e-6)
    assert solver.stem(0.0) == pytest.approx(120.0, rel=1e-6)
    # the stem's map stays blocked to the end (pooled there): no reorder of it for the stem's rate to absorb
    stem_case = suite["conv_stem"].analysis.nodes
    assert [n.op_type for n in stem_case] == ["FusedConv", "GlobalAveragePool", "ReorderOutput"]
    assert stem_case[-1].bytes_moved < 1e3
    assert solver.pad() == pytest.approx(15.0, rel=1e-6)
    # the small map costs more per FLOP than the large one: what the cost per row stands for
    per_flop = {k: t[k] / sum(n.total_flops for n in suite[k].analysis.nodes) for k in names[:2]}
    assert per_flop["conv_depthwise_small"] > per_flop["conv_depthwise"]


def test_copy_ops_bandwidth_is_recovered_from_the_shuffle_cases(suite: dict[str, calibration.SuiteCase]) -> None:
    truth = _host_rates(copy_gbps=40.0, bandwidth_gbps=100.0)
    names = ("copy_large", "copy_small")
    t = {k: estimate_latency(k, suite[k].analysis, truth).latency_ms for k in names}
    ops = {n.op_type for k in names for n in suite[k].analysis.nodes if calibration.is_copy(n)}
    assert ops == {"Split", "Concat", "Transpose"}  # every copy of both cases is large enough to count
    solver = calibration._Solver(by=suite, t=t, threads=1, node_s=0.0, run_s=0.0, io_s=0.0, bw=100e9)
    assert solver.copy_bandwidth() == pytest.approx(40e9, rel=1e-6)
    # at the streaming rate the same cases would take 40 % of the time: the copy rate is what moved them
    streaming = sum(estimate_latency(k, suite[k].analysis, _host_rates(bandwidth_gbps=100.0)).latency_ms for k in names)
    assert streaming == pytest.approx(0.4 * sum(t.values()), rel=1e-6)
    assert calibration._Solver(by=suite, t={}, threads=1, node_s=0.0, run_s=0.0, io_s=0.0).copy_bandwidth() == 0.0


def test_a_large_transpose_moves_at_the_copy_rate_and_a_shape_concat_does_not() -> None:
    from edgekit.profiler.estimate import _node_time_s
    from edgekit.profiler.static import NodeCost, NodeKind

    def data(op: str, nbytes: int) -> NodeCost:
        return NodeCost(
            name=op, op_type=op, domain="", kind=NodeKind.DATA, flops={}, macs=0, bytes_read=nbytes // 2,
            bytes_written=nbytes // 2, weight_bytes=0, output_elements=nbytes // 8,
        )  # fmt: skip

    rates = _host_rates(copy_gbps=40.0, bandwidth_gbps=100.0)
    big, tiny = data("Transpose", 800_000), data("Concat", 64)
    assert calibration.is_copy(big) and not calibration.is_copy(tiny)
    assert _node_time_s(big, rates)[0] == pytest.approx(800_000 / 40e9)
    assert _node_time_s(tiny, rates)[0] == pytest.approx(64 / 100e9)
    assert _node_time_s(data("Cast", 800_000), rates)[0] == pytest.approx(800_000 / 100e9)  # not a copy op


def test_without_the_small_map_or_on_noise_depthwise_falls_back_to_one_rate(
    suite: dict[str, calibration.SuiteCase],
) -> None:
    from edgekit.profiler.kernels import WorkKind

    truth = _host_rates(work_gflops={WorkKind.CONV_DEPTHWISE: {"fp32": 80.0}})
    t = {"conv_depthwise": estimate_latency("dw", suite["conv_depthwise"].analysis, truth).latency_ms}
    solver = calibration._Solver(by=suite, t=t, threads=1, node_s=0.0, run_s=0.0, io_s=0.0, bw=1e12)
    assert solver.depthwise(0.0) == {"depthwise_gflops": pytest.approx(80.0, rel=1e-6)}
    # a small map measured faster per FLOP than the large one (a preempted large-map sample) has no positive cost
    noisy = dict(t, conv_depthwise_small=t["conv_depthwise"] / 50)
    solver = calibration._Solver(by=suite, t=noisy, threads=1, node_s=0.0, run_s=0.0, io_s=0.0, bw=1e12)
    assert set(solver.depthwise(0.0)) == {"depthwise_gflops"}


def test_the_host_runs_pad_at_its_own_bandwidth_and_the_stem_at_its_rate() -> None:
    from edgekit.devices import get_device
    from edgekit.profiler.estimate import device_rates
    from edgekit.profiler.kernels import WorkKind

    host = get_device("host")
    fit = calibration.HostEfficiency(
        run_overhead_ms=0.0, io_overhead_us=0.0, node_overhead_us=0.0, parallel_node_overhead_us=0.0,
        bandwidth_gbps=100.0, dram_bandwidth_gbps=20.0, cache_bytes=1 << 30, vector_gflops=10.0, lrn_gflops=1.0,
        gemm_gflops={"fp32": 100.0, "int8": 200.0}, conv_gflops={"fp32": 200.0}, depthwise_gflops=80.0,
        depthwise_row_ns=6.0, stem_gflops=120.0, pad_gbps=15.0, threads=1, timings_ms={},
    )  # fmt: skip
    rates = device_rates(host, replace(fit, copy_gbps=40.0), host)
    assert (
        rates.op_bandwidth_gbps == {"Pad": 15.0}
        and rates.row_ns == {WorkKind.CONV_DEPTHWISE: 6.0}
        and rates.copy_gbps == 40.0
    )
    assert rates.work_gflops[WorkKind.CONV_SMALL]["fp32"] == 120.0
    # another device never gets the host's calibration
    pi = device_rates(get_device("raspberry-pi-5"), fit, host)
    assert pi.op_bandwidth_gbps == {} and pi.row_ns == {} and pi.copy_gbps == 0.0


def test_the_nchw_pool_rate_is_solved_from_its_case_where_the_host_leaves_it_in_nchw(
    suite: dict[str, calibration.SuiteCase],
) -> None:
    truth = _host_rates(nchw_pool_gflops=4.0)
    case = suite["pool_nchw"]
    t = {"pool_nchw": estimate_latency("pool", case.analysis, truth).latency_ms}
    solver = calibration._Solver(by=suite, t=t, threads=1, node_s=0.0, run_s=0.0, io_s=0.0, bw=1e12)
    if any(n.nchw_on_host for n in case.analysis.nodes):  # 58 channels: NCHW on every NCHWc host
        assert solver.nchw_pool() == pytest.approx(4.0, rel=1e-6)
    else:  # a host without the NCHWc pass marks nothing: no separate rate
        assert solver.nchw_pool() == 0.0


def test_a_reported_cache_the_weights_case_streamed_past_is_capped_at_that_case(
    suite: dict[str, calibration.SuiteCase],
) -> None:
    case_bytes = sum(n.weight_bytes for n in suite["weights_dram"].analysis.nodes)
    # four times the reported last-level cache, within 48-168 MiB
    assert case_bytes == calibration.dram_layers() * 1024 * 1024 * 4
    assert calibration.DRAM_CASE_BYTES[0] <= case_bytes <= calibration.DRAM_CASE_BYTES[1]
    solver = calibration._Solver(by=suite, t={"weights_dram": 2.0}, threads=2, node_s=0.0, run_s=0.0, io_s=0.0, bw=75e9)
    # a VM's sysfs reports the socket's 480 MiB L3, but the case's weights streamed at 26 GB/s: not in cache
    assert solver.effective_cache_bytes(480 << 20, 26e9) == case_bytes
    # streamed near the cache rate: the reported cache holds; a case larger than the cache: nothing to cap
    assert solver.effective_cache_bytes(480 << 20, 60e9) == 480 << 20
    assert solver.effective_cache_bytes(case_bytes - 1, 26e9) == case_bytes - 1
    # without the case's timing the reported cache stands
    bare = calibration._Solver(by=suite, t={}, threads=2, node_s=0.0, run_s=0.0, io_s=0.0, bw=75e9)
    assert bare.effective_cache_bytes(480 << 20, 26e9) == 480 << 20


def test_the_weights_case_grows_with_the_reported_cache_within_its_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    for llc, layers in ((2 << 20, 12), (24 << 20, 24), (480 << 20, 42)):
        monkeypatch.setattr(calibration, "last_level_cache_bytes", lambda default=0, llc=llc: llc)
        assert calibration.dram_layers() == layers, llc


def test_small_nodes_stream_at_the_small_case_rate_on_one_thread(suite: dict[str, calibration.SuiteCase]) -> None:
    from edgekit.profiler.estimate import _node_time_s
    from edgekit.profiler.static import NodeCost, NodeKind

    small, large = suite["stream_small"].analysis.nodes, suite["stream_large"].analysis.nodes
    b_small, b_large = small[0].bytes_moved, large[0].bytes_moved
    # one thread: 128 kB nodes at 60 GB/s (in L2), 2 MB nodes at 24 GB/s (past it), 0.3 us dispatch each
    t = {
        "stream_small": len(small) * (0.3e-6 + b_small / 60e9) * 1e3,
        "stream_large": len(large) * (0.3e-6 + b_large / 24e9) * 1e3,
    }
    one = calibration._Solver(by=suite, t=t, threads=1, node_s=0.3e-6, run_s=0.0, io_s=0.0).streamed()
    assert one.small_bw == pytest.approx(60e9, rel=1e-6)
    assert one.bw < one.small_bw  # the two-size fit sees mostly the large nodes' rate
    assert b_small <= one.small_bytes < b_large
    # two threads, both sizes at one rate plus a thread pool's cost per node: the small rate is that rate
    t2 = {
        "stream_small": len(small) * (2e-6 + b_small / 50e9) * 1e3,
        "stream_large": len(large) * (2e-6 + b_large / 50e9) * 1e3,
    }
    two = calibration._Solver(by=suite, t=t2, threads=2, node_s=0.3e-6, run_s=0.0, io_s=0.0).streamed()
    assert two.par_s == pytest.approx(2e-6, rel=1e-6)
    assert two.small_bw == pytest.approx(two.bw, rel=1e-6) and two.bw == pytest.approx(50e9, rel=1e-6)

    def relu(nbytes: int) -> NodeCost:
        return NodeCost(
            name="r", op_type="Relu", domain="", kind=NodeKind.ELEMENTWISE, flops={"fp32": nbytes // 8}, macs=0,
            bytes_read=nbytes // 2, bytes_written=nbytes // 2, weight_bytes=0, output_elements=nbytes // 8,
        )  # fmt: skip

    rates = _host_rates(bandwidth_gbps=24.0, small_bandwidth_gbps=60.0, small_bytes=one.small_bytes, vector_gflops=1e6)
    assert _node_time_s(relu(b_small), rates)[0] == pytest.approx(b_small / 60e9)
    assert _node_time_s(relu(b_large), rates)[0] == pytest.approx(b_large / 24e9)


def test_bidirectional_attention_has_its_own_cases_rate_and_call_cost(
    suite: dict[str, calibration.SuiteCase],
) -> None:
    """The encoders' GroupQueryAttention (causal=0) is told apart from the decoder's; its pair of cases pins its
    own call cost and rate, and the estimate times it with them (the decoder's attention keeps its own)."""
    enc, short, dec = (suite[n].analysis for n in ("attention_encoder", "attention_encoder_short", "attention_prefill"))
    assert {n.bidirectional for n in enc.nodes if n.kind == "attention_core"} == {True}
    assert {n.bidirectional for n in dec.nodes if n.kind == "attention_core"} == {False}
    t = {}
    for name, a in (("attention_encoder", enc), ("attention_encoder_short", short)):
        att = [n for n in a.nodes if n.kind == "attention_core"]
        rest = sum(n.bytes_moved / 20e9 for n in a.nodes if n.kind != "attention_core")
        io = (len(a.input_shapes) + a.output_count) * 2e-6
        work = sum(20e-6 + n.total_flops / (70e9) for n in att)
        t[name] = (20e-6 + io + len(a.nodes) * 1e-6 + rest + work) * 1e3
    rate, call = calibration._attention_fit(
        enc,
        short,
        t,
        20e-6,
        2e-6,
        lambda ns: len(ns) * 1e-6,
        20e9,
        12.0,
        names=("attention_encoder", "attention_encoder_short"),
    )
    assert rate == pytest.approx(70.0, rel=1e-6) and call == pytest.approx(20e-6, rel=1e-6)
    rates = _host_rates(
        bandwidth_gbps=1e6,
        dram_bandwidth_gbps=1e6,
        node_overhead_us=1.0,
        parallel_node_overhead_us=1.0,
        gemm_gflops={"fp32": 1000.0},
        attention_gflops={"fp32": 10.0},
        call_overhead_us={"attention_core": 3.0},
        bidirectional_attention_gflops=70.0,
        bidirectional_attention_call_us=20.0,
    )
    for a, rate_gflops, call_us in ((enc, 70.0, 20.0), (dec, 10.0, 3.0)):
        flops = sum(n.total_flops for n in a.nodes if n.kind == "attention_core")
        ms = estimate_latency("forward", a, rates).by_op_ms["GroupQueryAttention"]
        assert ms == pytest.approx(4 * (1.0 + call_us) / 1e3 + flops / (rate_gflops * 1e9) * 1e3, rel=1e-9)


def test_the_int8_gemm_case_is_quantized_as_the_recipe_stores_weights(tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    from edgekit.profiler import calibration
    from exporters.recipes import Int8DynamicConfig

    src = calibration._ffn(tmp_path / "f.onnx", 4, 16, 32, 0)
    model = onnx.load(str(calibration._quantized(src, tmp_path / "q.onnx")))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = {n: a for n, a in inits.items() if n.endswith("_quantized") and a.ndim == 2}
    assert len(weights) == 3
    assert Int8DynamicConfig().per_channel  # the recipe's default, which the case mirrors
    for name, w in weights.items():
        assert w.dtype.name == "int8"
        scale = inits[name.removesuffix("_quantized") + "_scale"]
        assert scale.shape == (w.shape[1],)  # one scale per output column


def test_the_dense_conv_rate_and_cost_per_row_are_recovered_from_the_cases(
    suite: dict[str, calibration.SuiteCase],
) -> None:
    from edgekit.profiler.kernels import WorkKind

    truth = _host_rates(conv_gflops={"fp32": 180.0}, row_ns={WorkKind.CONV_DENSE: 14.0})
    t = {k: estimate_latency(k, suite[k].analysis, truth).latency_ms for k in calibration.CONV_FIT_CASES}
    cases = {k: suite[k].analysis.nodes for k in calibration.CONV_FIT_CASES}
    fit = calibration._conv_fit(cases, t, 0.0, lambda ns: 0.0, 1000e9)
    assert fit.peak_gflops == pytest.approx(180.0, rel=1e-6)
    assert fit.row_ns == pytest.approx(14.0, rel=1e-6)
    assert fit.half_reduction == 0.0
    # the narrow case is what separates the two: 2.8x the rows per FLOP of the bottleneck, 18x the wide conv's
    per_flop = {k: sum(n.output_rows for n in v) / sum(n.total_flops for n in v) for k, v in cases.items()}
    assert per_flop["conv_narrow"] > 2.5 * per_flop["conv_fp32"] > 2.5 * 6 * per_flop["conv_wide"]
    # a case time no positive row cost explains (the narrow case measured far too fast): the reduction curve, or
    # one rate, never a negative cost
    noisy = dict(t, conv_narrow=t["conv_narrow"] / 20)
    fallback = calibration._conv_fit(cases, noisy, 0.0, lambda ns: 0.0, 1000e9)
    assert fallback.row_ns == 0.0 and fallback.peak_gflops > 0 and fallback.half_reduction >= 0.0
    # two cases are solved exactly (by either term: two cases cannot tell them apart)
    two = {k: cases[k] for k in ("conv_fp32", "conv_narrow")}
    exact = calibration._conv_fit(two, t, 0.0, lambda ns: 0.0, 1000e9)
    for k in two:
        relus = sum(n.bytes_moved / 1000e9 for n in two[k] if n.kind != "conv")  # the rest, at the bandwidth given
        convs = sum(exact.seconds(n) for n in two[k] if n.kind == "conv")
        assert (convs + relus) * 1e3 == pytest.approx(t[k], rel=1e-6)


def test_a_cost_per_activation_byte_is_told_from_a_cost_per_row_by_the_expand_pair(
    suite: dict[str, calibration.SuiteCase],
) -> None:
    expand = [n for n in suite["conv_expand"].analysis.nodes if n.kind == "conv"]
    # the pair moves the same activation bytes both ways at equal FLOPs, with 6x the output rows one way
    assert [n.total_flops for n in expand] == [expand[0].total_flops] * 2
    assert expand[0].activation_bytes == pytest.approx(expand[1].activation_bytes, rel=0.01)
    assert expand[0].output_rows == 6 * expand[1].output_rows
    truth = _host_rates(conv_gflops={"fp32": 300.0}, conv_activation_gbps=120.0)
    t = {k: estimate_latency(k, suite[k].analysis, truth).latency_ms for k in calibration.CONV_FIT_CASES}
    cases = {k: suite[k].analysis.nodes for k in calibration.CONV_FIT_CASES}
    fit = calibration._conv_fit(cases, t, 0.0, lambda ns: 0.0, 1000e9)
    assert fit.peak_gflops == pytest.approx(300.0, rel=1e-6)
    assert fit.activation_gbps == pytest.approx(120.0, rel=1e-6) and fit.row_ns == 0.0
    # the estimate adds the bytes term to dense convolutions only, and only on the host's rates
    plain = estimate_latency("e", suite["conv_expand"].analysis, replace(truth, conv_activation_gbps=0.0)).latency_ms
    moved = sum(n.activation_bytes for n in expand)
    assert t["conv_expand"] - plain == pytest.approx(moved / 120e9 * 1e3, rel=1e-6)
    dw = suite["conv_depthwise"].analysis
    assert (
        estimate_latency("d", dw, truth).latency_ms
        == estimate_latency("d", dw, replace(truth, conv_activation_gbps=0.0)).latency_ms
    )


def test_least_squares_weighs_each_case_by_its_relative_error() -> None:
    # x = 2, y = 3 fits the first two rows exactly; the third, 10 % off, moves the solution only a little
    rows = [(1.0, 0.0, 2.0), (0.0, 1.0, 3.0), (1.0, 1.0, 5.5)]
    x, y = calibration._least_squares2(rows)
    assert 1.9 < x < 2.2 and 2.9 < y < 3.3
    assert calibration._least_squares2(rows[:2]) == pytest.approx((2.0, 3.0))
    assert calibration._least_squares2([(1.0, 2.0, 1.0), (2.0, 4.0, 2.0), (3.0, 6.0, 3.0)]) is None  # collinear


def test_the_int8_gemm_case_holds_weights_beyond_a_cores_l2(suite: dict[str, calibration.SuiteCase]) -> None:
    # its weights stream from L3 as an int8 model's do: over a 1.2 MB block the same GEMMs ran 1.19-1.31x faster
    nodes = [n for n in suite["gemm_int8"].analysis.nodes if n.kind == "gemm"]
    assert len(nodes) == 3 * calibration.INT8_GEMM_BLOCKS
    assert all("int8" in n.flops for n in nodes)
    int8_bytes = sum(n.weight_bytes for n in nodes)
    assert int8_bytes > 4 * (2 << 20)  # 4x the largest per-core L2 of the hosts here (2 MB)
    assert int8_bytes < 16 << 20  # and inside a small host's L3


def test_the_streamed_gemm_case_outgrows_the_cache_within_its_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    block = calibration._FFN_BLOCK_BYTES
    for llc, blocks in ((2 << 20, 4), (32 << 20, 8), (480 << 20, 14)):
        monkeypatch.setattr(calibration, "last_level_cache_bytes", lambda default=0, llc=llc: llc)
        assert calibration.streamed_gemm_blocks() == blocks, llc
        if blocks not in calibration.STREAMED_GEMM_BLOCKS:  # unclamped: past the cache, by less than a block over 1.25x
            assert 1.25 * llc <= blocks * block < 1.25 * llc + block


def test_the_streamed_gemm_pair_differs_only_in_its_weights(suite: dict[str, calibration.SuiteCase]) -> None:
    dram, cached = suite["gemm_fp32_dram"], suite["gemm_fp32_cached"]
    gemms = [n for n in dram.analysis.nodes if n.kind == "gemm"]
    assert len(gemms) == 3 * calibration.streamed_gemm_blocks()
    assert [n.flops for n in gemms] == [n.flops for n in cached.analysis.nodes if n.kind == "gemm"]
    import onnx

    stored = {c.name: sum(np.prod(t.dims) * 4 for t in onnx.load(c.path).graph.initializer) for c in (dram, cached)}
    # past the reported cache, or as far as the ceiling goes where a VM reports the socket's (480 MiB on a Xeon)
    past = min(calibration.last_level_cache_bytes(), calibration.STREAMED_GEMM_BLOCKS[1] * calibration._FFN_BLOCK_BYTES)
    assert stored["gemm_fp32_dram"] == sum(n.weight_bytes for n in gemms) >= past
    assert stored["gemm_fp32_cached"] == calibration._FFN_BLOCK_BYTES


def test_the_stream_cost_is_recovered_from_the_pair_and_added_to_streamed_fp32_gemms(
    suite: dict[str, calibration.SuiteCase],
) -> None:
    dram = suite["gemm_fp32_dram"].analysis
    # the cached case's 5.3 MB fit in the 8 MB cache, the dram case's weights do not
    truth = _host_rates(cache_bytes=8 << 20, dram_bandwidth_gbps=1000.0, streamed_gemm_us_per_mb=15.0)
    t = {"gemm_fp32_dram": estimate_latency("d", dram, truth).latency_ms}
    t["gemm_fp32_cached"] = estimate_latency("c", dram, replace(truth, cache_bytes=1 << 30)).latency_ms
    solver = calibration._Solver(by=suite, t=t, threads=2, node_s=0.0, run_s=0.0, io_s=0.0, bw=1e12)
    assert solver.streamed_gemm() == pytest.approx(15.0, rel=1e-6)
    # the stream ran no slower (noise): nothing added; without the pair: nothing
    assert replace(solver, t={**t, "gemm_fp32_dram": 0.9 * t["gemm_fp32_cached"]}).streamed_gemm() == 0.0
    assert replace(solver, t={"gemm_fp32_dram": 1.0}).streamed_gemm() == 0.0
    # in the estimate: 15 us per MB of the weights over the in-cache time, only where they stream
    weight_mb = dram.weight_bytes / 1e6
    without = estimate_latency("d", dram, replace(truth, streamed_gemm_us_per_mb=0.0)).latency_ms
    assert t["gemm_fp32_dram"] - without == pytest.approx(15.0 * weight_mb / 1e3, rel=1e-6)
    assert t["gemm_fp32_cached"] == pytest.approx(without, rel=1e-9)


def test_a_streamed_gemv_stays_bound_by_dram_and_int8_gemms_get_no_stream_cost(
    suite: dict[str, calibration.SuiteCase], tmp_path: Path
) -> None:
    from edgekit.profiler.static import analyze

    gemv = analyze(calibration._ffn(tmp_path / "gemv.onnx", 1, 384, 1536, 3, blocks=8))
    rates = _host_rates(cache_bytes=8 << 20, dram_bandwidth_gbps=20.0)
    # one row: 50 us per MB at 20 GB/s is above the in-cache time plus 15 us per MB
    with_stream = estimate_latency("v", gemv, replace(rates, streamed_gemm_us_per_mb=15.0)).latency_ms
    assert with_stream == pytest.approx(estimate_latency("v", gemv, rates).latency_ms, rel=1e-9)
    assert with_stream == pytest.approx(gemv.weight_bytes / 20e9 * 1e3, rel=0.02)
    # the Xeon's figures: in-cache reads at 50 GB/s (20 us per MB), 31 us per MB of stream cost, DRAM at 25 GB/s
    # (40 us per MB); the stream replaces the in-cache reads, so 40 us per MB, not 20 + 31
    xeon = _host_rates(cache_bytes=8 << 20, bandwidth_gbps=50.0, dram_bandwidth_gbps=25.0, streamed_gemm_us_per_mb=31.0)
    assert estimate_latency("x", gemv, xeon).latency_ms == pytest.approx(gemv.weight_bytes / 25e9 * 1e3, rel=0.02)
    int8 = suite["gemm_int8"].analysis
    streamed = replace(rates, cache_bytes=1 << 20, dram_bandwidth_gbps=1000.0)
    assert estimate_latency("q", int8, replace(streamed, streamed_gemm_us_per_mb=15.0)).latency_ms == pytest.approx(
        estimate_latency("q", int8, streamed).latency_ms, rel=1e-9
    )


def test_quick_gelu_runs_at_its_own_case_rate_on_the_host_and_nowhere_else(
    suite: dict[str, calibration.SuiteCase],
) -> None:
    from edgekit.devices import get_device
    from edgekit.profiler.estimate import device_rates
    from edgekit.profiler.static import NodeKind

    case = suite["quick_gelu"].analysis
    # what ONNX Runtime runs: four QuickGelu (alpha 1, EfficientNet's fused Swish), nothing else
    assert [n.op_type for n in case.nodes] == ["QuickGelu"] * 4
    truth = _host_rates(vector_gflops=10.0, op_gflops={"QuickGelu": 16.0})
    t = {"quick_gelu": estimate_latency("q", case, truth).latency_ms}
    solver = calibration._Solver(by=suite, t=t, threads=1, node_s=0.0, run_s=0.0, io_s=0.0, bw=1e12)
    assert solver.rate("quick_gelu", {NodeKind.ELEMENTWISE}) == pytest.approx(16.0, rel=1e-6)
    # 1.6x the vector rate: the case takes 1/1.6 of the time the Erf rate gives it; Erf keeps the vector rate
    at_vector = estimate_latency("q", case, _host_rates(vector_gflops=10.0)).latency_ms
    assert t["quick_gelu"] == pytest.approx(at_vector / 1.6, rel=1e-6)
    erf = suite["vector"].analysis
    assert estimate_latency("e", erf, truth).latency_ms == pytest.approx(
        estimate_latency("e", erf, _host_rates(vector_gflops=10.0)).latency_ms, rel=1e-9
    )
    host = get_device("host")
    fit = _host_fit(quick_gelu_gflops=16.0)
    assert device_rates(host, fit, host).op_gflops == {"QuickGelu": 16.0}
    assert device_rates(host, replace(fit, quick_gelu_gflops=0.0), host).op_gflops == {}  # not measured
    assert device_rates(get_device("raspberry-pi-5"), fit, host).op_gflops == {}  # never another device's


def test_the_clip_pass_rate_is_the_relu6_pairs_difference_and_the_estimate_uses_it(
    suite: dict[str, calibration.SuiteCase],
) -> None:
    from edgekit.devices import get_device
    from edgekit.profiler.estimate import device_rates

    relu, relu6 = suite["conv_expand"].analysis, suite["conv_expand_relu6"].analysis
    # the pair differs only in the activation ONNX Runtime fuses into each convolution
    assert [(n.op_type, n.activation) for n in relu.nodes if n.kind == "conv"] == [("FusedConv", "Relu")] * 2
    assert [(n.op_type, n.activation) for n in relu6.nodes if n.kind == "conv"] == [("FusedConv", "Clip")] * 2
    truth = _host_rates(bandwidth_gbps=60.0, activation_pass_gbps=120.0)
    t = {
        "conv_expand": estimate_latency("r", relu, truth).latency_ms,
        "conv_expand_relu6": estimate_latency("c", relu6, truth).latency_ms,
    }
    solver = calibration._Solver(by=suite, t=t, threads=2, node_s=0.0, run_s=0.0, io_s=0.0, bw=60e9)
    assert solver.activation_pass() == pytest.approx(120.0, rel=1e-6)
    # noise (Relu6 no slower, or absurdly slow) or an untimed pair: no measurement, the streaming rate stands
    assert replace(solver, t={**t, "conv_expand_relu6": t["conv_expand"]}).activation_pass() == 0.0
    assert replace(solver, t={**t, "conv_expand_relu6": 50 * t["conv_expand"]}).activation_pass() == 0.0
    assert replace(solver, t={"conv_expand": 1.0}).activation_pass() == 0.0
    host = get_device("host")
    fit = _host_fit(bandwidth_gbps=60.0, activation_pass_gbps=120.0)
    assert device_rates(host, fit, host).activation_pass_gbps == 120.0
    assert device_rates(host, replace(fit, activation_pass_gbps=0.0), host).activation_pass_gbps == 60.0
