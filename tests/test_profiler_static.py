"""Static analysis against numbers computed by hand on tiny graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import profiler_graphs as g
import pytest

from edgekit.errors import CorruptModelError, UsageError
from edgekit.profiler.static import OP_COSTS, analyze, analyze_model


def _node(analysis, name):
    return next(n for n in analysis.nodes if n.name == name)


def test_matmul_flops_are_two_m_k_n() -> None:
    m, k, n = 3, 5, 7
    a = analyze_model(g.matmul(m, k, n))
    node = _node(a, "mm")
    assert node.macs == m * k * n
    assert node.flops == {"fp32": 2 * m * k * n}
    # x and w read, y written, float32
    assert node.bytes_read == 4 * (m * k + k * n)
    assert node.bytes_written == 4 * m * n
    assert node.weight_bytes == 4 * k * n
    assert a.parameter_count == k * n
    assert a.weight_bytes_by_dtype == {"float32": 4 * k * n}


def test_gemm_counts_the_bias_add() -> None:
    a = analyze_model(g.gemm_bias(2, 3, 4))
    assert _node(a, "gemm").total_flops == 2 * 2 * 3 * 4 + 2 * 4
    assert a.parameter_count == 3 * 4 + 4


@pytest.mark.parametrize(("group", "c"), [(1, 8), (8, 8)])
def test_conv_flops(group: int, c: int) -> None:
    n, h, w, m, k = 1, 6, 6, 8, 3
    a = analyze_model(g.conv(n, c, h, w, m, k, group=group))
    # every output element takes (C / group) x k x k multiply-adds
    assert _node(a, "conv").macs == n * m * h * w * (c // group) * k * k
    assert _node(a, "conv").kind == "conv"


def test_peak_activation_memory_on_a_chain() -> None:
    # x 1 KB -> a 1 KB -> b 4 KB -> y 4 KB; while Tile runs a and b are live (x freed after relu1),
    # while relu2 runs b and y: the peak is 8 KB.
    a = analyze_model(g.chain())
    assert a.peak_activation_bytes == 4 * (1024 + 1024)
    assert a.peak_at_node == "relu2"
    assert _node(a, "tile").kind == "data" and _node(a, "tile").total_flops == 0


def test_peak_activation_memory_on_a_diamond() -> None:
    # x stays live until Sigmoid has read it, so x, a and b are live together: 3 x 4000 bytes.
    a = analyze_model(g.diamond())
    assert a.peak_activation_bytes == 3 * 4000
    assert a.peak_at_node == "right"


def test_constant_folded_weights_count_as_weights() -> None:
    a = analyze_model(g.folded_weight())
    assert a.folded_nodes == 1
    assert [n.op_type for n in a.nodes] == ["MatMul"]
    assert a.weight_bytes_by_dtype["float32"] == 4 * 8 * 4
    assert a.parameter_count == 8 * 4
    assert a.weight_bytes_by_use.get("other") == 4 * 8 * 4


def test_unbound_dims_are_named_with_the_option(tmp_path: Path) -> None:
    from onnx_builders import mlp_classifier

    with pytest.raises(UsageError) as err:
        analyze(mlp_classifier(tmp_path / "mlp.onnx"))
    assert "batch" in err.value.message and "x" in err.value.message
    assert "--input-shape x=1x16" in err.value.hint


def test_a_dim_bound_on_one_input_binds_the_output(tmp_path: Path) -> None:
    from onnx_builders import mlp_classifier

    a = analyze(mlp_classifier(tmp_path / "mlp.onnx", features=16, hidden=64, classes=4), {"x": (5, 16)})
    assert a.bound_dims == {"batch": 5}
    assert _node(a, "fc1").macs == 5 * 16 * 64
    assert a.op_histogram == {"MatMul": 2, "Add": 2, "Relu": 1}


def test_wrong_input_shapes_are_usage_errors(tmp_path: Path) -> None:
    from onnx_builders import mlp_classifier

    path = mlp_classifier(tmp_path / "mlp.onnx")
    with pytest.raises(UsageError, match="conflicts"):
        analyze(path, {"x": (1, 15)})
    with pytest.raises(UsageError, match="does not take"):
        analyze(path, {"pixel_values": (1, 16)})


def test_contrib_op_shapes_come_from_the_onnxruntime_probe() -> None:
    a = analyze_model(g.contrib_gelu(), {"x": (3, 8)})
    assert a.shape_source == "onnx+onnxruntime-probe"
    assert a.unknown_shape_nodes == 0
    assert a.value_shapes["y"] == (3, 16)
    assert _node(a, "gelu").total_flops == 3 * 16 * 10  # ~10 FLOPs per element for Gelu


def test_corrupt_model_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not a protobuf" * 10)
    with pytest.raises(CorruptModelError, match="bad.onnx"):
        analyze(bad)


def test_every_op_cost_entry_counts_something_sane() -> None:
    # registry entries: keys are domain:op, every entry has a kind the estimator knows
    kinds = {
        "gemm",
        "conv",
        "attention",
        "attention_core",
        "elementwise",
        "normalization",
        "lrn",
        "data",
        "view",
        "other",
    }
    for name, entry in OP_COSTS.items():
        assert ":" in name
        assert entry.kind in kinds


@pytest.mark.parametrize(("activation", "fused"), [("Clip", "Clip"), ("Relu", "Relu"), (None, "")])
def test_a_fused_convolution_names_its_activation(tmp_path: Path, activation: str | None, fused: str) -> None:
    # ONNX Runtime's extended level fuses Conv + Clip / Relu into FusedConv with an ``activation`` attribute,
    # which the host estimate reads (MLAS applies Relu in the kernel, any other activation in a second pass)
    import onnx
    from onnx import helper, numpy_helper

    from edgekit.profiler.static import runtime_graph

    model = g.conv(1, 16, 8, 8, 16, 3)
    conv = model.graph.node[0]
    if activation:
        out = conv.output[0]
        conv.output[0] = "pre"
        extra = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", 0.0), ("hi", 6.0))]
        model.graph.initializer.extend(extra if activation == "Clip" else [])
        inputs = ["pre", "lo", "hi"] if activation == "Clip" else ["pre"]
        model.graph.node.append(helper.make_node(activation, inputs, [out], name="act"))
    src = g.save(model, tmp_path / "m.onnx")
    runtime = onnx.load(str(runtime_graph(src, tmp_path / "rt.onnx")))
    a = analyze_model(runtime)
    (conv_cost,) = [n for n in a.nodes if n.kind == "conv"]
    assert conv_cost.op_type == ("FusedConv" if activation else "Conv")
    assert conv_cost.activation == fused
    assert len(a.nodes) == 1  # the activation is inside the convolution, not a node of its own


def test_a_convolution_counts_its_output_rows() -> None:
    a = analyze_model(g.conv(2, 8, 6, 5, 4, 3))  # [2, 8, 6, 5] -> [2, 4, 6, 5]
    assert _node(a, "conv").output_rows == 2 * 4 * 6  # N x C x H: every row of width W
    assert _node(analyze_model(g.matmul(3, 5, 7)), "mm").output_rows == 0
