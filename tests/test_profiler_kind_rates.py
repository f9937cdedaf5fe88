"""The estimator's per-kind rate table: each node kind is timed at its own rate (and the rest at the vector rate)."""

from __future__ import annotations

import pytest

from edgekit.profiler.estimate import KIND_RATES, DeviceRates, _node_time_s
from edgekit.profiler.static import NodeCost

# Distinct powers of two per rate, so a node timed at the wrong one is off by at least 2x.
RATES = DeviceRates(
    device="test",
    threads=1,
    gemm_gflops={"fp32": 2.0, "int8": 4.0},
    conv_gflops={"fp32": 8.0},
    vector_gflops=16.0,
    normalization_gflops=32.0,
    lrn_gflops=64.0,
    bandwidth_gbps=1e9,  # memory never bounds these nodes
    dram_bandwidth_gbps=1e9,
    cache_bytes=1 << 20,
    conv_half_reduction=0.0,
    attention_gflops={"fp32": 128.0},
    call_overhead_us={},
    node_overhead_us=0.0,
    parallel_node_overhead_us=0.0,
    run_overhead_ms=0.0,
    io_overhead_us=0.0,
    basis="test",
)


def _node(kind: str, precision: str = "fp32") -> NodeCost:
    return NodeCost(
        name=kind, op_type="X", domain="", kind=kind, flops={precision: 10**9}, macs=0, bytes_read=4,
        bytes_written=4, weight_bytes=0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "precision", "gflops"),
    [
        ("gemm", "fp32", 2.0),
        ("gemm", "int8", 4.0),
        ("gemm", "fp16", 2.0),  # no fp16 rate: the fp32 one
        ("attention", "fp32", 2.0),
        ("attention_core", "fp32", 128.0),
        ("conv", "fp32", 8.0),
        ("normalization", "fp32", 32.0),
        ("lrn", "fp32", 64.0),
        ("elementwise", "fp32", 16.0),
        ("other", "fp32", 16.0),
    ],
)
def test_each_kind_runs_at_its_rate(kind: str, precision: str, gflops: float) -> None:
    seconds, bound = _node_time_s(_node(kind, precision), RATES)
    assert bound == "compute"
    assert seconds == pytest.approx(1.0 / gflops, rel=1e-12)


def test_the_table_names_only_kinds_the_op_table_produces() -> None:
    from edgekit.profiler.static import OP_COSTS

    assert set(KIND_RATES) <= {entry.kind for entry in OP_COSTS} | {"attention"}


def test_kinds_are_one_enum_each_and_the_json_keeps_their_names() -> None:
    """issue 12: node kinds (OP_COSTS) and work kinds (the kernel table) are closed sets, not loose strings."""
    import json

    from edgekit.devices import get_device
    from edgekit.profiler import kernels
    from edgekit.profiler.estimate import device_rates
    from edgekit.profiler.static import OP_COSTS, NodeKind

    assert all(isinstance(entry.kind, NodeKind) for entry in OP_COSTS)
    assert all(isinstance(k, NodeKind) for k in KIND_RATES)
    node = _node("conv")  # a name is turned into the member
    assert node.kind is NodeKind.CONV and f"{node.kind}" == "conv"
    assert json.loads(json.dumps(node.to_dict()))["kind"] == "conv"
    assert tuple(kernels.WorkKind) == kernels.WORK_KINDS
    assert kernels.work_kind(node) is kernels.WorkKind.CONV_DENSE
    rates = json.loads(json.dumps(device_rates(get_device("raspberry-pi-5"), None, None).to_dict()))
    assert sorted(rates["work_gflops"]) == sorted(w.value for w in kernels.WorkKind)
    with pytest.raises(ValueError):
        _node("convolution")


def test_fused_attention_runs_its_core_at_the_attention_rate_and_pays_both_calls() -> None:
    """QAttention: int8 QKV projection at the int8 GEMM rate, the per-head attention at the attention rate."""
    from dataclasses import replace

    from edgekit.profiler.estimate import call_cost_us

    node = NodeCost(
        name="qatt", op_type="QAttention", domain="com.microsoft", kind="attention",
        flops={"int8": 10**9, "fp32": 5 * 10**8}, macs=0, bytes_read=4, bytes_written=4, weight_bytes=0,
        attention_flops=4 * 10**8,
    )  # fmt: skip
    seconds, _ = _node_time_s(node, RATES)
    assert seconds == pytest.approx(1e9 / 4e9 + 1e8 / 2e9 + 4e8 / 128e9, rel=1e-12)
    # the fp32 Attention of MiniLM: one float precision, split the same way
    fp32 = replace(node, flops={"fp32": 10**9})
    assert _node_time_s(fp32, RATES)[0] == pytest.approx(6e8 / 2e9 + 4e8 / 128e9, rel=1e-12)
    costs = replace(RATES, call_overhead_us={"gemm": 3.0, "attention_core": 8.0})
    assert call_cost_us(node, costs) == 11.0
    assert call_cost_us(replace(node, kind="attention_core", attention_flops=0), costs) == 8.0


def test_fused_attention_core_flops_of_a_minilm_layer() -> None:
    from edgekit.profiler.static import NodeView, Tensor, fused_attention_flops

    view = NodeView(
        "QAttention", "com.microsoft",
        (Tensor("x", "float32", (1, 32, 384)), Tensor("w", "int8", (384, 1152), True)),
        (Tensor("y", "float32", (1, 32, 384)),), {"num_heads": 12},
    )  # fmt: skip
    # 12 heads of 32 over 32 tokens: QK^T and AV, 2 x 12 x 32 x 32 x 32 MACs, x 2 FLOPs, + softmax 5 x 12 x 32 x 32
    assert fused_attention_flops(view) == 2 * (2 * 12 * 32 * 32 * 32) + 5 * 12 * 32 * 32


@pytest.mark.parametrize(
    ("activation", "passes"), [("Clip", True), ("HardSigmoid", True), ("Relu", False), ("", False)]
)
def test_an_activation_outside_the_kernel_moves_the_output_twice_more(activation: str, passes: bool) -> None:
    from dataclasses import replace

    from edgekit.profiler.estimate import IN_KERNEL_ACTIVATIONS

    out = 1_000_000
    conv = replace(_node("conv"), output_elements=out, activation=activation)
    host = replace(RATES, activation_pass_gbps=8.0)
    plain, _ = _node_time_s(conv, RATES)  # a device's rates: no pass (0 GB/s)
    seconds, bound = _node_time_s(conv, host)
    assert bound == "compute"
    assert plain == pytest.approx(1.0 / 8.0, rel=1e-12)
    assert seconds - plain == pytest.approx(2 * out * 4 / 8e9 if passes else 0.0, abs=1e-15)
    assert (activation in IN_KERNEL_ACTIVATIONS) is not passes
    # a GEMM never pays it, whatever the field says
    gemm = replace(_node("gemm"), output_elements=out, activation=activation)
    assert _node_time_s(gemm, host)[0] == _node_time_s(gemm, RATES)[0]


def test_a_blocked_fp32_convolution_pays_its_cost_per_output_row_and_only_it() -> None:
    from dataclasses import replace

    from edgekit.profiler.kernels import WorkKind

    conv = replace(_node("conv"), output_rows=1000)
    host = replace(RATES, row_ns={WorkKind.CONV_DENSE: 50.0})
    base, _ = _node_time_s(conv, RATES)
    assert _node_time_s(conv, host)[0] - base == pytest.approx(1000 * 50e-9, rel=1e-9)
    # int8 (no NCHWc kernel) and a convolution the host leaves in NCHW pay nothing per row
    int8 = replace(conv, flops={"int8": 10**9})
    assert _node_time_s(int8, host)[0] == _node_time_s(int8, RATES)[0]
    nchw_host = replace(host, nchw_conv_gflops=8.0)
    left = replace(conv, nchw_on_host=True)
    assert _node_time_s(left, nchw_host)[0] == pytest.approx(1.0 / 8.0)
