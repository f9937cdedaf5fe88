"""Encoder attention as GroupQueryAttention (exporters/encoder_attention.py): same real rows, fused ones kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from exporters import graph
from exporters.encoder_attention import PREFLIGHT_ATOL, rewrite, step_encoder_attention

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fused_bert(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT's fp32 package with ORT's fused Attention left as it is."""
    from exporters import export

    out = tmp_path_factory.mktemp("fused") / "bert"
    export(
        tiny_bert_dir,
        output=out,
        task="feature-extraction",
        recipe="fp32",
        recipe_options={"encoder_gqa": False},
        progress=False,
    )
    return out / "model.onnx"


def _run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]


def _batch(lengths: list[int], seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    ids = rng.integers(5, 500, (len(lengths), seq)).astype(np.int64)
    mask = (np.arange(seq)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_rewritten_attention_matches_the_fused_kernel_on_real_rows(fused_bert: Path, tmp_path: Path) -> None:
    before = _ops(fused_bert)
    assert before.count("Attention") >= 2 and "GroupQueryAttention" not in before
    changed, details = step_encoder_attention(fused_bert, tmp_path / "gqa.onnx", None, None)
    assert changed and details == {"rewritten": before.count("Attention"), "kept": {}}
    after = _ops(tmp_path / "gqa.onnx")
    assert "Attention" not in after and after.count("GroupQueryAttention") == before.count("Attention")
    gqa = next(n for n in onnx.load(str(tmp_path / "gqa.onnx")).graph.node if n.op_type == "GroupQueryAttention")
    attrs = {a.name: helper.get_attribute_value(a) for a in gqa.attribute}
    assert attrs["causal"] == 0 and attrs["num_heads"] == attrs["kv_num_heads"]
    # right-padded rows of several lengths, one row with no real token at all (the kernel's lengths are clamped)
    feeds = _batch([9, 4, 1, 0], seq=9)
    ref, got = _run(fused_bert, feeds), _run(tmp_path / "gqa.onnx", feeds)
    real = feeds["attention_mask"].astype(bool)
    np.testing.assert_allclose(got[real], ref[real], atol=PREFLIGHT_ATOL)
    assert np.isfinite(got).all()
    # each row's result does not depend on the other rows' lengths: the same as the row alone
    alone = _run(tmp_path / "gqa.onnx", {k: v[1:2, :4] for k, v in feeds.items()})
    np.testing.assert_allclose(alone[0], got[1, :4], atol=PREFLIGHT_ATOL)


def test_an_attention_the_kernel_would_compute_differently_stays_fused(fused_bert: Path) -> None:
    model = graph.load_model(fused_bert, check=False)
    first = next(n for n in model.graph.node if n.op_type == "Attention")
    first.attribute.append(helper.make_attribute("unidirectional", 1))
    details = rewrite(model)
    name = first.name or first.output[0]
    assert details["kept"] == {name: "attributes ['unidirectional']"}
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Attention") == 1 and ops.count("GroupQueryAttention") == details["rewritten"] >= 1


def test_a_graph_without_fused_embeddings_is_left_alone(tmp_path: Path) -> None:
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert rewrite(model) == {"reason": "needs one fused EmbedLayerNormalization with an attention mask"}


def test_a_rewrite_that_fails_its_check_writes_the_fused_graph(
    fused_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import exporters.encoder_attention as ea

    monkeypatch.setattr(ea, "preflight", lambda a, b: "outputs differ by up to 0.5")
    changed, details = ea.step_encoder_attention(fused_bert, tmp_path / "out.onnx", None, None)
    assert not changed and details["reason"].startswith("the rewritten graph failed its check (outputs differ")
    assert _ops(tmp_path / "out.onnx") == _ops(fused_bert)


def test_the_preflight_catches_a_wrong_rewrite(fused_bert: Path, tmp_path: Path) -> None:
    """Lengths one short (each row loses its last real key): the check says the outputs differ; lengths one long
    the kernel itself rejects, and the check reports that."""
    from onnx import numpy_helper

    from exporters.encoder_attention import PREFIX, preflight

    for offset, expected in ((2, "outputs differ by up to"), (0, "onnxruntime: ")):
        model = graph.load_model(fused_bert, check=False)
        rewrite(model)
        one = next(t for t in model.graph.initializer if t.name == PREFIX + "one")
        one.CopyFrom(numpy_helper.from_array(np.array(offset, dtype=np.int32), one.name))
        graph.save_model(model, tmp_path / "wrong.onnx")
        problem = preflight(fused_bert, tmp_path / "wrong.onnx")
        assert problem is not None and problem.startswith(expected), problem
