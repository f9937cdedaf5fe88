"""Every recipe on small hand-built and tiny HF models: packages read back, validated and schema-checked."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from edgekit.hashing import sha256_file
from edgekit.package import open_package
from exporters import RECIPES, TASKS, export, export_torch, quantize
from tests.conftest import assert_valid_manifest
from tests.onnx_builders import mlp_classifier


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    return mlp_classifier(tmp_path_factory.mktemp("mlp") / "mlp.onnx")


def _run(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _calibration(tmp_path, n=64):
    rng = np.random.default_rng(1)
    path = tmp_path / "cal.npz"
    np.savez(path, x=rng.standard_normal((n, 16)).astype(np.float32))
    return path


@pytest.mark.parametrize("recipe", RECIPES.names())
def test_every_recipe_writes_a_valid_package(recipe, mlp, tmp_path):
    out = tmp_path / recipe
    kwargs = {"calibration": _calibration(tmp_path)} if RECIPES.get(recipe).needs_calibration else {}
    if recipe == "int4":
        kwargs["recipe_options"] = {"block_size": 16}
    result = export(mlp, output=out, task="tensor", recipe=recipe, progress=False, on_slower="warn", **kwargs)
    manifest = assert_valid_manifest(out)
    assert manifest["recipe"]["name"] == recipe
    # Files listed with sizes and sums that match what is on disk.
    for f in manifest["files"]:
        assert (out / f["path"]).stat().st_size == f["bytes"]
        assert sha256_file(out / f["path"]) == f["sha256"]
    pkg = open_package(out)  # verifies the sums again through the runtime's reader
    assert [t.name for t in pkg.manifest.inputs] == ["x"]
    # The package computes what the source computes, within the recipe's error.
    x = np.random.default_rng(5).standard_normal((3, 16)).astype(np.float32)
    ref, got = _run(mlp, {"x": x}), _run(out / "model.onnx", {"x": x})
    cos = float(np.sum(ref * got) / (np.linalg.norm(ref) * np.linalg.norm(got)))
    assert cos > (0.9999 if recipe == "fp32" else 0.97), cos
    acc = result.manifest.accuracy
    assert acc["metrics"]["output_cosine_mean"] == pytest.approx(manifest["accuracy"]["metrics"]["output_cosine_mean"])
    assert acc["outputs"]["logits"]["max_abs_error"] >= 0


def test_int8_packages_are_smaller_and_store_int_weights(mlp, tmp_path):
    fp32 = export(mlp, output=tmp_path / "a", task="tensor", recipe="fp32", progress=False)
    q = export(mlp, output=tmp_path / "b", task="tensor", recipe="int8-dynamic", progress=False, on_slower="warn")
    i4 = export(
        mlp,
        output=tmp_path / "c",
        task="tensor",
        recipe="int4",
        recipe_options={"block_size": 16},
        progress=False,
        on_slower="warn",
    )
    assert set(q.manifest.weights.bytes_by_dtype) >= {"uint8"} or "int8" in q.manifest.weights.bytes_by_dtype
    assert "int4" in i4.manifest.weights.bytes_by_dtype
    assert (tmp_path / "b" / "model.onnx").stat().st_size < (tmp_path / "a" / "model.onnx").stat().st_size
    assert fp32.manifest.weights.parameter_count == 16 * 64 + 64 + 64 * 4 + 4
    ops = {n.op_type for n in __import__("onnx").load(str(tmp_path / "c" / "model.onnx")).graph.node}
    assert "MatMulNBits" in ops


def test_int8_static_records_calibration_and_qdq(mlp, tmp_path):
    res = export(
        mlp,
        output=tmp_path / "s",
        task="tensor",
        recipe="int8-static",
        progress=False,
        on_slower="warn",
        calibration=_calibration(tmp_path),
        recipe_options={"method": "percentile", "percentile": 99.9},
    )
    quant = res.manifest.recipe.steps[-1]["details"]
    assert quant["calibration_samples"] == 64 and quant["method"] == "percentile"
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "s" / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_ort_format_writes_model_ort_and_required_operators(mlp, tmp_path):
    export(
        mlp,
        output=tmp_path / "o",
        task="tensor",
        recipe="int8-dynamic",
        ort_format=True,
        progress=False,
        on_slower="warn",
    )
    names = {p.name for p in (tmp_path / "o").iterdir()}
    assert "model.ort" in names
    config = next(p for p in (tmp_path / "o").iterdir() if p.name.startswith("required_operators"))
    assert "ai.onnx;14;Relu" in config.read_text()
    assert "DynamicQuantizeMatMul" in config.read_text()  # the int8 kernel a reduced build must keep
    sess = ort.InferenceSession(str(tmp_path / "o" / "model.ort"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == "x"
    manifest = assert_valid_manifest(tmp_path / "o")
    assert "model.ort" in {f["path"] for f in manifest["files"]}


def test_export_torch_module(tmp_path):
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    x = torch.randn(2, 8)
    res = export_torch(
        module,
        x,
        output=tmp_path / "t",
        input_names=["features"],
        output_names=["scores"],
        dynamic_axes={"features": {0: "batch"}, "scores": {0: "batch"}},
        recipe="fp32",
        progress=False,
    )
    assert_valid_manifest(tmp_path / "t")
    assert res.manifest.source.kind == "torch"
    assert res.manifest.inputs[0].shape == ["batch", 8]
    with torch.no_grad():
        ref = module(x).numpy()
    np.testing.assert_allclose(_run(tmp_path / "t" / "model.onnx", {"features": x.numpy()}), ref, rtol=1e-4, atol=1e-5)


def test_quantize_a_package_keeps_its_task_and_assets(tiny_bert_classifier_dir, tmp_path):
    export(
        tiny_bert_classifier_dir,
        output=tmp_path / "fp32",
        task="text-classification",
        progress=False,
        validation_samples=8,
    )
    res = quantize(
        tmp_path / "fp32",
        output=tmp_path / "int8",
        recipe="int8-dynamic",
        progress=False,
        validation_samples=8,
        on_slower="warn",
    )
    m = assert_valid_manifest(tmp_path / "int8")
    assert m["task"] == "text-classification" and m["labels"] == ["negative", "positive"]
    assert (tmp_path / "int8" / "tokenizer.json").is_file()
    assert 0 <= res.manifest.accuracy["metrics"]["top1_agreement"] <= 1


def test_text_classification_hf_export(tiny_bert_classifier_dir, tmp_path):
    res = export(
        tiny_bert_classifier_dir,
        output=tmp_path / "c",
        task="text-classification",
        recipe="fp32",
        progress=False,
        validation_samples=16,
    )
    m = assert_valid_manifest(tmp_path / "c")
    assert m["preprocessing"]["tokenizer_file"] == "tokenizer.json"
    assert [o["name"] for o in m["outputs"]] == ["logits"]
    assert res.manifest.accuracy["metrics"]["top1_agreement"] == 1.0
    assert m["source"]["kind"] == "hf" and m["source"]["library_versions"]["onnxruntime"]


def test_every_task_names_metrics_that_report_its_primary_metric():
    # Identical reference and candidate outputs: each task's metrics exist and show full agreement.
    rng = np.random.default_rng(0)
    feeds = [{"input_ids": np.array([[1, 2, 3]]), "attention_mask": np.ones((1, 3), np.int64)}]
    outs = [[rng.standard_normal((1, 3, 8)).astype(np.float32)]]
    for task in TASKS:
        metrics = task.metric_fn()(feeds, outs, outs, None)
        assert metrics[task.primary_metric] == pytest.approx(1.0), (task.name, metrics)


def test_json_result_round_trips_and_matches_the_manifest(mlp, tmp_path):
    res = export(mlp, output=tmp_path / "j", task="tensor", progress=False)
    data = json.loads(json.dumps(res.to_dict(), allow_nan=False))  # strict JSON: no NaN / Infinity
    assert data == res.to_dict()
    manifest = json.loads((tmp_path / "j" / "edgekit.json").read_text())
    assert data["recipe"] == manifest["recipe"]["name"] == "fp32"
    assert data["accuracy"]["metrics"] == manifest["accuracy"]["metrics"]
