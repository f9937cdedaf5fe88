"""exporters.merge_projections: sibling MatMuls (a decoder's gate and up projections) as one MatMul + Split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporters.merge_projections import merge_sibling_matmuls, sibling_groups, step_merge_projections
from exporters.recipes import Int4Config, RecipeContext


def _graph(*, opset: int = 17, shared_weight: bool = False, other_k: bool = False) -> onnx.ModelProto:
    """x -> gate (8x6) / up (8x5) MatMuls -> Sigmoid(gate)[:, :5] * up; a third MatMul reads x with K 8 or 4."""
    rng = np.random.default_rng(0)
    w = {
        n: numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
        for n, s in (("wg", (8, 6)), ("wu", (8, 5)), ("wo", (4, 3) if other_k else (8, 3)))
    }
    nodes = [
        helper.make_node("MatMul", ["x", "wg"], ["g"], name="gate_proj/MatMul"),
        helper.make_node("MatMul", ["x", "wu"], ["u"], name="up_proj/MatMul"),
        helper.make_node("Sigmoid", ["g"], ["s"]),
        helper.make_node("Slice", ["s", "st", "en", "ax"], ["s5"]),
        helper.make_node("Mul", ["s5", "u"], ["y"]),
    ]
    inits = [
        *w.values(),
        *(numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("st", 0), ("en", 5), ("ax", 1))),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])]
    if other_k:  # a MatMul of another reduction length on another input: never grouped with the two
        nodes.append(helper.make_node("MatMul", ["x4", "wo"], ["o"], name="other/MatMul"))
    else:
        nodes.append(helper.make_node("MatMul", ["x", "wo"], ["o"], name="third/MatMul"))
    outputs.append(helper.make_tensor_value_info("o", TensorProto.FLOAT, [2, 3]))
    if shared_weight:  # another node reads up's weight: merging would keep a second copy of it
        nodes.append(helper.make_node("Identity", ["wu"], ["wu_copy"]))
        outputs.append(helper.make_tensor_value_info("wu_copy", TensorProto.FLOAT, [8, 5]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])]
    if other_k:
        inputs.append(helper.make_tensor_value_info("x4", TensorProto.FLOAT, [2, 4]))
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _run(model: onnx.ModelProto) -> list[np.ndarray]:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    feeds = {
        i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
        for i in model.graph.input
    }
    return s.run(None, feeds)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


@pytest.mark.parametrize("opset", [11, 17])
def test_siblings_become_one_matmul_and_a_split_with_identical_outputs(opset: int) -> None:
    src = _graph(opset=opset)
    model = _copy(src)
    merged = merge_sibling_matmuls(model)
    onnx.checker.check_model(model)
    assert [(m.nodes, m.widths) for m in merged] == [
        (("gate_proj/MatMul", "up_proj/MatMul", "third/MatMul"), (6, 5, 3))
    ]
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["MatMul"] == 1 and ops["Split"] == 1
    assert {i.name for i in model.graph.initializer} >= {"merged_projections/0/weight"}
    assert not {"wg", "wu", "wo"} & {i.name for i in model.graph.initializer}  # no second copy of any weight
    for got, want in zip(_run(model), _run(src), strict=True):
        np.testing.assert_array_equal(got, want)  # the same dot products: bit-identical


def test_excluded_names_shared_weights_and_other_reductions_stay_apart() -> None:
    # nodes_to_exclude names a projection: it keeps its name (the int4 step keeps it float by that name)
    model = _graph()
    merged = merge_sibling_matmuls(model, exclude={"up_proj/MatMul"})
    assert [m.nodes for m in merged] == [("gate_proj/MatMul", "third/MatMul")]
    assert "up_proj/MatMul" in {n.name for n in model.graph.node}
    # up's weight is read by another node too
    assert [[n.name for n in g] for g in sibling_groups(_graph(shared_weight=True))] == [
        ["gate_proj/MatMul", "third/MatMul"]
    ]
    # the third MatMul reads another input with another K: only gate and up share x
    assert [[n.name for n in g] for g in sibling_groups(_graph(other_k=True))] == [
        ["gate_proj/MatMul", "up_proj/MatMul"]
    ]


def test_a_lone_matmul_or_an_activation_weight_is_not_a_group() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 8])  # a graph input, not a constant
    y1 = helper.make_tensor_value_info("y1", TensorProto.FLOAT, [2, 8])
    y2 = helper.make_tensor_value_info("y2", TensorProto.FLOAT, [2, 8])
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y1"]), helper.make_node("MatMul", ["x", "w"], ["y2"])],
        "g",
        [x, w],
        [y1, y2],
    )
    assert sibling_groups(helper.make_model(g)) == []


def _ctx(work: Path, task_kind: str) -> RecipeContext:
    return RecipeContext(work=work, task_kind=task_kind, model_type="llama")


def test_step_passes_other_tasks_and_the_switched_off_option_through(tmp_path: Path) -> None:
    src = tmp_path / "src.onnx"
    onnx.save(_graph(), src)
    changed, details = step_merge_projections(src, tmp_path / "a.onnx", Int4Config(), _ctx(tmp_path, "embedding"))
    assert not changed and "decoders" in details["skipped"] and details["merged"] == []
    off = Int4Config(merge_projections=False)
    changed, details = step_merge_projections(src, tmp_path / "b.onnx", off, _ctx(tmp_path, "generation"))
    assert not changed and "switched off" in details["skipped"]
    for out in ("a.onnx", "b.onnx"):
        assert Counter(n.op_type for n in onnx.load(tmp_path / out).graph.node)["MatMul"] == 3
    changed, details = step_merge_projections(src, tmp_path / "c.onnx", Int4Config(), _ctx(tmp_path, "generation"))
    assert changed and details["merged"][0]["widths"] == [6, 5, 3] and "skipped" not in details


@pytest.mark.slow
def test_int4_decoder_package_merges_gate_and_up_and_generates_the_same_tokens(
    toy_llama_fp32_pkg: Path, tmp_path: Path
) -> None:
    import runtimes
    from edgekit.cli import main

    pkgs = {}
    for merge in ("true", "false"):
        out = tmp_path / f"int4-{merge}"
        argv = ["quantize", "-q", str(toy_llama_fp32_pkg), "-o", str(out), "--recipe", "int4", "--allow-slower"]
        assert main([*argv, "--option", "block_size=16", "--option", f"merge_projections={merge}"]) == 0
        pkgs[merge] = out
    import json

    steps = {
        m: {s["name"]: s for s in json.loads((p / "edgekit.json").read_text())["recipe"]["steps"]}
        for m, p in pkgs.items()
    }
    merged = steps["true"]["merge_projections"]["details"]["merged"]
    layers = 2  # the toy Llama's
    assert len(merged) == layers and all(len(m["nodes"]) == 2 for m in merged)  # gate and up, per layer
    assert all("gate_proj" in " ".join(m["nodes"]) and "up_proj" in " ".join(m["nodes"]) for m in merged)
    assert steps["false"]["merge_projections"]["details"]["merged"] == []
    nbits = {
        m: Counter(n.op_type for n in onnx.load(p / "model.onnx").graph.node)["MatMulNBits"] for m, p in pkgs.items()
    }
    assert nbits["true"] == nbits["false"] - layers
    prompt = list(b"12+34=")
    tokens = {
        m: runtimes.load(p, threads=1).generate(prompt, max_tokens=24, ignore_eos=True).token_ids
        for m, p in pkgs.items()
    }
    assert list(tokens["true"]) == list(tokens["false"])
