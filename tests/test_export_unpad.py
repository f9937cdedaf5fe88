"""Padding removal (exporters/unpad.py): real-token rows unchanged, pad rows zero, unsuitable graphs left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.ort_policy import disabled_optimizers
from exporters.unpad import find_region, remove_padding
from runtimes.preprocess import TextEncoder
from runtimes.samples import sentences

pytestmark = pytest.mark.slow


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"], disabled_optimizers=disabled_optimizers()
    )
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]


def test_unpadded_minilm_keeps_real_rows_and_zeroes_pad_rows(minilm_fp32_pkg: Path) -> None:
    model = onnx.load(str(minilm_fp32_pkg / "model.onnx"))
    before = _run(model, feeds := _padded_batch(minilm_fp32_pkg))
    details = remove_padding(model)
    # the fp32 package's attention is a projection MatMul + Add and a GroupQueryAttention per layer
    # (exporters/encoder_attention.py): the projections run packed too
    assert details == {"packed_tensors": 79, "attention_nodes": 6, "hidden": 384}
    ops = [n.op_type for n in model.graph.node]
    # 7 packs (embeddings + 6 attention outputs); the 6 attention inputs and the output unpacked by one Gather
    # each, and one Gather of the mask's length for the attention
    assert ops.count("GatherND") == 7 and ops.count("Gather") == 8
    assert ops.count("NonZero") == 1 and ops.count("CumSum") == 1 and "ScatterND" not in ops
    onnx.checker.check_model(model)
    after = _run(model, feeds)
    mask = feeds["attention_mask"].astype(bool)
    assert (~mask).sum() > 20  # the batch really is padded
    np.testing.assert_allclose(after[mask], before[mask], atol=1e-4)
    assert not after[~mask].any()
    # an unpadded batch (every mask 1) runs the same graph: identical to the original too
    one = {k: v[:1, : int(mask[0].sum())] for k, v in feeds.items()}
    original = onnx.load(str(minilm_fp32_pkg / "model.onnx"))
    np.testing.assert_allclose(_run(model, one), _run(original, one), atol=1e-4)


def _padded_batch(pkg: Path) -> dict[str, np.ndarray]:
    enc = TextEncoder(pkg / "tokenizer.json", max_length=256)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    return enc.encode_batch(sentences(120)[6:14]).feeds(names)


def test_a_graph_without_fused_embeddings_is_left_alone() -> None:
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [w],
    )
    model = helper.make_model(g)
    assert "EmbedLayerNormalization" in remove_padding(model)["reason"]
    assert [n.op_type for n in model.graph.node] == ["MatMul"]


def test_a_node_that_mixes_rows_stops_the_rewrite(minilm_fp32_pkg: Path) -> None:
    model = onnx.load(str(minilm_fp32_pkg / "model.onnx"), load_external_data=False)
    ln = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    # a Transpose of the hidden state mixes tokens: packing it would change the function
    model.graph.node.append(helper.make_node("Transpose", [ln.output[0]], ["mixed"], name="mix", perm=[1, 0, 2]))
    found = find_region(model)
    assert isinstance(found, str) and "'mix' does not work row by row" in found


def test_the_step_writes_the_graph_unchanged_when_off_or_unsuitable(minilm_fp32_pkg: Path, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from exporters.unpad import step_unpad

    src = minilm_fp32_pkg / "model.onnx"
    changed, details = step_unpad(src, tmp_path / "off.onnx", SimpleNamespace(remove_padding=False), None)
    assert not changed and details == {"reason": "remove_padding is off"}
    assert [n.op_type for n in onnx.load(str(tmp_path / "off.onnx")).graph.node] == [
        n.op_type for n in onnx.load(str(src)).graph.node
    ]
    changed, details = step_unpad(src, tmp_path / "on.onnx", SimpleNamespace(), None)
    assert changed and details["attention_nodes"] == 6


def test_an_all_zero_mask_runs_and_gives_zeros(minilm_fp32_pkg: Path) -> None:
    """A hand-made batch with no real token: before, the first unpack gathered from an empty tensor and ONNX
    Runtime failed (index out of range); position (0, 0) is now always packed."""
    model = onnx.load(str(minilm_fp32_pkg / "model.onnx"))
    remove_padding(model)
    feeds = _padded_batch(minilm_fp32_pkg)
    feeds["attention_mask"] = np.zeros_like(feeds["attention_mask"])
    out = _run(model, feeds)
    assert out.shape[:2] == feeds["input_ids"].shape and np.isfinite(out).all() and not out.any()
    # row 0 all pads, the others real: (0, 0) is packed though a pad, and the real rows stay the original's
    mixed = _padded_batch(minilm_fp32_pkg)
    mixed["attention_mask"][0] = 0
    original = onnx.load(str(minilm_fp32_pkg / "model.onnx"))
    real = mixed["attention_mask"].astype(bool)
    got = _run(model, mixed)
    np.testing.assert_allclose(got[real], _run(original, mixed)[real], atol=1e-4)
    assert not got[0].any()


def test_unpadded_feeds_take_a_branch_without_packing_with_identical_outputs(
    minilm_fp32_pkg: Path, tmp_path: Path
) -> None:
    """exporters/unpad_branch.py: one If runs the region without pack / unpack nodes when the mask has no 0;
    padded and unpadded feeds give the flat graph's outputs exactly, and the structure survives a save."""
    from exporters.unpad_branch import IF_NAME, branch_on_padding

    flat = onnx.load(str(minilm_fp32_pkg / "model.onnx"))
    remove_padding(flat)
    branched = onnx.ModelProto()
    branched.CopyFrom(flat)
    details = branch_on_padding(branched)
    assert details == {"top_level_nodes": 14, "unpadded_branch_nodes": 78, "padded_branch_nodes": 106}
    onnx.checker.check_model(branched)
    onnx.save(branched, str(tmp_path / "branched.onnx"))
    back = onnx.load(str(tmp_path / "branched.onnx"))
    top = [n.op_type for n in back.graph.node]
    # the attention's lengths are computed before the If; every layer (its projection reads the packed
    # embeddings) is inside
    assert top.count("If") == 1 and "GatherND" not in top and "GroupQueryAttention" not in top and "Max" in top
    (node,) = [n for n in back.graph.node if n.op_type == "If"]
    assert node.name == IF_NAME
    branches = {a.name: [n.op_type for n in a.g.node] for a in node.attribute}
    assert not {"GatherND", "Gather", "NonZero", "CumSum"} & set(branches["then_branch"])
    assert branches["else_branch"].count("GatherND") == 7 and "NonZero" in branches["else_branch"]
    padded = _padded_batch(minilm_fp32_pkg)
    mask = padded["attention_mask"].astype(bool)
    unpadded = {k: v[:1, : int(mask[0].sum())] for k, v in padded.items()}
    same_length = {k: np.repeat(v, 3, axis=0) for k, v in unpadded.items()}
    np.testing.assert_array_equal(_run(back, padded), _run(flat, padded))  # the same nodes run
    for feeds in (unpadded, same_length):
        # float rounding only: ORT fuses the packed 2-D MatMul + Add into a Gemm, not the 3-D one (the int8
        # package's DynamicQuantizeMatMul takes its bias either way: exact there, see the next test)
        np.testing.assert_allclose(_run(back, feeds), _run(flat, feeds), atol=1e-5)
    assert branch_on_padding(back) == {"reason": "the graph already branches on padding"}
    assert branch_on_padding(onnx.load(str(minilm_fp32_pkg / "model.onnx"))) == {
        "reason": "no padding removal in this graph"
    }


def test_the_shipped_int8_package_branches_on_padding(minilm_int8_pkg: Path) -> None:
    """The package's graph, read back: the If with a pack-free branch, and both branches agree on unpadded feeds."""
    from edgekit.onnx_graph import inline_ifs

    model = onnx.load(str(minilm_int8_pkg / "model.onnx"))
    (node,) = [n for n in model.graph.node if n.op_type == "If"]
    then = [n.op_type for n in next(a.g for a in node.attribute if a.name == "then_branch").node]
    assert "GroupQueryAttention" in then and not {"GatherND", "Gather", "NonZero"} & set(then)
    padded_only = inline_ifs(model, lambda n: "else_branch")  # the flat padding-removal graph
    feeds = _padded_batch(minilm_int8_pkg)
    one = {k: v[:1, : int(feeds["attention_mask"][0].sum())] for k, v in feeds.items()}
    for f in (feeds, one):
        np.testing.assert_array_equal(_run(model, f), _run(padded_only, f))
    # one quantize step, which records the branch: the accuracy search re-runs it whole
    import json

    steps = {s["name"]: s for s in json.loads((minilm_int8_pkg / "edgekit.json").read_text())["recipe"]["steps"]}
    assert list(steps)[-1] == "quantize" and steps["quantize"]["details"]["unpad_branch"]["unpadded_branch_nodes"] > 0
