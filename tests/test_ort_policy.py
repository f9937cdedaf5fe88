"""edgekit.ort_policy: Add + LayerNormalization stay unfused on CPU, in exports and in every edgekit session."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.ort_policy import disabled_optimizers
from edgekit.profiler.static import runtime_graph

HIDDEN = 32


def _residual_layernorm(path: Path) -> Path:
    """y = LayerNorm(x + skip): the pattern ONNX Runtime's SkipLayerNormFusion rewrites."""
    nodes = [
        helper.make_node("Add", ["x", "skip"], ["s"], name="residual"),
        helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12, name="ln"),
    ]
    g = helper.make_graph(
        nodes,
        "residual_ln",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN]),
            helper.make_tensor_value_info("skip", TensorProto.FLOAT, ["batch", "seq", HIDDEN]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
        [
            numpy_helper.from_array(np.linspace(0.5, 1.5, HIDDEN, dtype=np.float32), "gamma"),
            numpy_helper.from_array(np.zeros(HIDDEN, np.float32), "beta"),
        ],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _optimized_ops(src: Path, dst: Path, off: list[str]) -> Counter:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"], disabled_optimizers=off)
    return Counter(n.op_type for n in onnx.load(str(dst)).graph.node)


def test_policy_turns_the_fusion_off_on_cpu_only() -> None:
    assert disabled_optimizers() == ["SkipLayerNormFusion"]
    assert disabled_optimizers(["XnnpackExecutionProvider", "CPUExecutionProvider"]) == ["SkipLayerNormFusion"]
    assert disabled_optimizers([("CUDAExecutionProvider", {}), "CPUExecutionProvider"]) == []


def test_onnx_runtime_fuses_unless_the_policy_says_no(tmp_path: Path) -> None:
    src = _residual_layernorm(tmp_path / "ln.onnx")
    assert _optimized_ops(src, tmp_path / "default.onnx", [])["SkipLayerNormalization"] == 1  # the control
    kept = _optimized_ops(src, tmp_path / "policy.onnx", disabled_optimizers())
    assert kept == Counter({"Add": 1, "LayerNormalization": 1})
    # the profiler analyses the graph edgekit's sessions run
    analysed = Counter(n.op_type for n in onnx.load(str(runtime_graph(src, tmp_path / "rt.onnx"))).graph.node)
    assert analysed == Counter({"Add": 1, "LayerNormalization": 1})


def test_edgekit_sessions_run_the_unfused_graph_with_the_same_result(tmp_path: Path) -> None:
    from runtimes import load

    src = _residual_layernorm(tmp_path / "ln.onnx")
    from exporters import export

    export(src, output=tmp_path / "pkg", task="tensor", recipe="fp32", progress=False)
    model = load(tmp_path / "pkg", cache_optimized_graph=True, cache_dir=tmp_path / "graphs")
    rng = np.random.default_rng(0)
    feeds = {k: rng.standard_normal((2, 5, HIDDEN)).astype(np.float32) for k in ("x", "skip")}
    got = model.run(feeds)["y"]
    s = feeds["x"] + feeds["skip"]
    gamma = np.linspace(0.5, 1.5, HIDDEN, dtype=np.float32)
    ref = (s - s.mean(-1, keepdims=True)) / np.sqrt(s.var(-1, keepdims=True) + 1e-12) * gamma
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # the optimized-graph cache holds the graph the session ran: Add and LayerNormalization, not fused
    cached = list((tmp_path / "graphs").glob("*/model.onnx"))
    assert len(cached) == 1 and "-noSkipLayerNormFusion-" in cached[0].parent.name, cached
    ops = Counter(n.op_type for n in onnx.load(str(cached[0])).graph.node)
    assert ops["LayerNormalization"] == 1 and ops["SkipLayerNormalization"] == 0


@pytest.mark.slow
def test_bert_fusions_keep_layernorm_apart_and_still_fuse_attention(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from exporters import export

    res = export(tiny_bert_dir, output=tmp_path / "bert", task="feature-extraction", recipe="fp32", progress=False)
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "bert" / "model.onnx")).graph.node)
    assert ops["SkipLayerNormalization"] == 0 and ops["LayerNormalization"] >= 2
    # ORT fused the attention, and the encoder_attention step made it a GroupQueryAttention
    steps = {s["name"]: s for s in res.steps}
    assert ops["GroupQueryAttention"] == steps["encoder_attention"]["details"]["rewritten"] >= 1
    assert steps["optimize"]["details"]["fused"].get("Attention", 0) >= 1
    fused = steps["optimize"]["details"]["fused"]
    assert "SkipLayerNormalization" not in fused
