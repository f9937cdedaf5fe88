"""The static analysis follows the If branch the feeds take (edgekit/profiler/branches.py), else the larger one."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgekit import onnx_graph
from edgekit.profiler.static import analyze_model


def _branching_mlp() -> object:
    """x [2, 8] -> If(no 0 in mask): one MatMul (then) or two (else); padding removal's condition nodes."""
    w = [numpy_helper.from_array(np.full((8, 8), 0.1 * (i + 1), np.float32), f"w{i}") for i in range(3)]
    out = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, None)  # noqa: E731
    then = helper.make_graph([helper.make_node("MatMul", ["x", "w0"], ["t"], name="one")], "then", [], [out("t")])
    other = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="a"),
            helper.make_node("MatMul", ["h", "w2"], ["e"], name="b"),
        ],
        "else",
        [],
        [out("e")],
    )
    nodes = [
        helper.make_node("Cast", ["mask"], ["mb"], to=TensorProto.BOOL),
        helper.make_node("Cast", ["mb"], ["mi"], to=TensorProto.INT64),
        helper.make_node("ReduceMin", ["mi"], ["mn"], keepdims=0),
        helper.make_node("Cast", ["mn"], ["full"], to=TensorProto.BOOL),
        helper.make_node("If", ["full"], ["y"], name="if", then_branch=then, else_branch=other),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, [2, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
        w,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def _matmul_flops(a: object) -> int:
    return sum(n.total_flops for n in a.nodes if n.op_type == "MatMul")  # type: ignore[attr-defined]


def test_the_analysis_counts_the_branch_the_feeds_take() -> None:
    model = _branching_mlp()
    x = np.ones((2, 8), np.float32)
    one_matmul = 2 * 2 * 8 * 8
    full = analyze_model(model, feeds={"x": x, "mask": np.ones((2, 4), np.int64)})
    padded = analyze_model(model, feeds={"x": x, "mask": np.array([[1, 1, 1, 0], [1, 1, 1, 1]])})
    assert _matmul_flops(full) == one_matmul and [n.name for n in full.nodes if n.op_type == "MatMul"] == ["one"]
    assert _matmul_flops(padded) == 2 * one_matmul
    # no feeds: the larger branch (an upper bound)
    assert _matmul_flops(analyze_model(model, {"x": (2, 8), "mask": (2, 4)})) == 2 * one_matmul
    # the manifest's count sees the weights of both branches (they are the outer graph's initializers)
    assert onnx_graph.weight_stats(model).parameter_count == 3 * 64


def test_inline_ifs_returns_an_outer_tensor_a_branch_passes_through() -> None:
    model = _branching_mlp()
    then = next(a.g for a in model.graph.node[-1].attribute if a.name == "then_branch")
    del then.node[:]
    then.output[0].name = "x"  # the branch returns its input unchanged
    flat = onnx_graph.inline_ifs(model, lambda n: "then_branch")
    assert [(n.op_type, list(n.input), list(n.output)) for n in flat.graph.node][-1] == ("Identity", ["x"], ["y"])
    assert model.graph.node[-1].op_type == "If"  # the input model is left as it was


def test_the_benchmark_profile_counts_an_if_by_its_branch_nodes_only() -> None:
    from benchmarks._ort_profile import summarize

    run = {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100}
    node = lambda op, dur: {"cat": "Node", "name": f"{op}_kernel_time", "ts": 1, "dur": dur, "args": {"op_name": op}}  # noqa: E731
    out = summarize([run, node("If", 90), node("MatMul", 60), node("Add", 20)], runs=1, warmup=0)
    assert out["ops_ms"] == {"MatMul": 0.06, "Add": 0.02} and out["kernels_ms"] == 0.08
