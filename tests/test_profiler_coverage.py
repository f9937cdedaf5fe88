"""Execution-provider coverage per device profile, through ONNX Runtime's own usability checker."""

from __future__ import annotations

import profiler_graphs as g
import pytest

from edgekit.devices import get_device
from edgekit.profiler.coverage import COVERAGE_RULES, device_coverage
from edgekit.profiler.static import analyze_model


def _coverage(model, device: str, shapes=None):
    a = analyze_model(model, shapes)
    return {
        p.provider: p
        for p in device_coverage(
            get_device(device), model, a.value_shapes, set(a.folded_outputs), set(a.dynamic_inputs)
        ).providers
    }


def test_an_op_nnapi_lacks_splits_the_graph_in_two() -> None:
    cov = _coverage(g.conv_erf_conv(), "pixel-8")
    nnapi = cov["NnapiExecutionProvider"]
    assert nnapi.known and nnapi.nodes_total == 3
    assert nnapi.nodes_supported == 2
    assert nnapi.partitions == 2 and nnapi.partition_sizes == (1, 1)
    assert nnapi.unsupported_ops == ("ai.onnx:Erf",)
    assert nnapi.reasons == {"op not supported": 1}
    assert nnapi.suitability == "no"  # ORT's own verdict: two partitions covering 67% of the nodes
    assert "nnapi_supported_ops.md" in nnapi.source
    cpu = cov["CPUExecutionProvider"]
    assert cpu.nodes_supported == 3 and cpu.partitions == 1


def _relu_if_model():
    """x -> If(cond: Relu, else: Relu -> Neg) -> y, the shape of the int8 encoders' unpadding branch."""
    from onnx import TensorProto, helper

    def branch(name: str, ops: list[str]):
        nodes, prev = [], "x"
        for k, op in enumerate(ops):
            nodes.append(helper.make_node(op, [prev], [f"{name}{k}"]))
            prev = f"{name}{k}"
        out = helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 8])
        return helper.make_graph(nodes, name, [], [out])

    nodes = [
        helper.make_node("ReduceMin", ["x"], ["m"], keepdims=0),
        helper.make_node("Greater", ["m", "zero"], ["c"]),
        helper.make_node(
            "If", ["c"], ["y"], then_branch=branch("t", ["Relu"]), else_branch=branch("e", ["Relu", "Neg"])
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "if",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_nodes_inside_an_if_count_in_the_total_as_in_the_taken() -> None:
    nnapi = _coverage(_relu_if_model(), "pixel-8")["NnapiExecutionProvider"]
    # 3 top-level nodes + 1 + 2 in the branches, as ONNX Runtime's checker counts them
    assert nnapi.nodes_total == 6
    assert nnapi.nodes_supported is not None and nnapi.nodes_supported <= nnapi.nodes_total


def test_qnn_takes_no_float_graph() -> None:
    qnn = _coverage(g.conv_erf_conv(), "galaxy-s24-snapdragon")["QNNExecutionProvider"]
    assert qnn.nodes_supported == 0 and qnn.partitions == 0
    assert any("QDQ" in reason for reason in qnn.reasons)
    assert "qdq_only" in qnn.constraints


def test_xnnpack_takes_only_2d_matmul() -> None:
    xnn = _coverage(g.matmul_3d(), "raspberry-pi-5")["XnnpackExecutionProvider"]
    assert xnn.nodes_supported == 0
    assert xnn.reasons == {"only 2D MatMul / Gemm": 1}
    two_d = _coverage(g.matmul(4, 8, 4), "raspberry-pi-5")["XnnpackExecutionProvider"]
    assert two_d.nodes_supported == 1 and two_d.partitions == 1


def test_static_shapes_count_the_graph_as_exported_too() -> None:
    # batch is dynamic in the model: NNAPI (static_shapes) takes nothing until it is fixed
    nnapi = _coverage(g.contrib_gelu(), "pixel-8", {"x": (1, 8)})["NnapiExecutionProvider"]
    assert nnapi.nodes_supported == 1  # MatMul at the profiled shape; com.microsoft Gelu is not on the list
    assert nnapi.nodes_supported_as_exported == 0


def test_a_provider_without_an_op_list_is_unknown_not_guessed() -> None:
    trt = _coverage(g.matmul(4, 8, 4), "jetson-orin-nano")["TensorrtExecutionProvider"]
    assert trt.known is False and trt.nodes_supported is None and trt.partitions is None


@pytest.mark.parametrize("name", COVERAGE_RULES.names())
def test_every_coverage_rule_has_an_op_list_and_a_source(name: str) -> None:
    rule = COVERAGE_RULES.get(name)
    ops = rule.ops()
    assert "ai.onnx:Conv" in ops  # every accelerator list has the basic convolution
    assert rule.source
