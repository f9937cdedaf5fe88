"""The one ONNX reader: the manifest (exporters) and the profiler count the same parameters and weight bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit import onnx_graph
from edgekit.errors import CorruptModelError, SourceNotFoundError
from edgekit.package import read_manifest
from edgekit.profiler.static import analyze_model, load_onnx
from exporters import export
from tests.onnx_builders import mlp_classifier

FEATURES, HIDDEN, CLASSES = 64, 128, 32
# Every weight and bias of the MLP: what each recipe's package must report, whatever the storage.
FP32_PARAMS = FEATURES * HIDDEN + HIDDEN + HIDDEN * CLASSES + CLASSES


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reader") / "mlp.onnx"
    return mlp_classifier(path, features=FEATURES, hidden=HIDDEN, classes=CLASSES)


RECIPES = {
    "fp32": ({}, {"float32"}),
    "int8-dynamic": ({}, {"int8", "uint8"}),
    "int4": ({"block_size": 32}, {"int4"}),
}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_manifest_and_profiler_agree_on_weights(recipe: str, mlp: Path, tmp_path: Path) -> None:
    options, quantized_dtypes = RECIPES[recipe]
    out = tmp_path / recipe
    export(mlp, output=out, task="tensor", recipe=recipe, recipe_options=options, progress=False, on_slower="warn")
    weights = read_manifest(out).weights
    static = analyze_model(load_onnx(out / "model.onnx"), {"x": (1, FEATURES)})
    # Quantized storage does not change how many parameters the model has.
    assert weights.parameter_count == FP32_PARAMS
    assert static.parameter_count == weights.parameter_count
    assert static.weight_bytes_by_dtype == weights.bytes_by_dtype
    assert set(weights.bytes_by_dtype) & quantized_dtypes, weights.bytes_by_dtype
    if recipe == "int4":
        # 4-bit weights take half a byte each: both big matrices packed, plus their fp32 scales elsewhere.
        assert weights.bytes_by_dtype["int4"] == (FEATURES * HIDDEN + HIDDEN * CLASSES) // 2


def test_matmulnbits_counts_logical_elements_from_its_attributes() -> None:
    from onnx import TensorProto, helper

    packed = helper.make_tensor("w", TensorProto.UINT8, [8, 2, 16], bytes(8 * 2 * 16), raw=True)
    scales = helper.make_tensor("s", TensorProto.FLOAT, [16], [1.0] * 16)
    node = helper.make_node(
        "MatMulNBits", ["x", "w", "s"], ["y"], domain="com.microsoft", K=64, N=8, bits=4, block_size=32
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [packed, scales],
    )
    stats = onnx_graph.weight_stats(helper.make_model(graph))
    assert stats.parameter_count == 8 * 64  # the scales are bookkeeping
    assert stats.bytes_by_dtype == {"int4": 8 * 2 * 16, "float32": 16 * 4}


def test_indexes_and_io_specs(mlp: Path) -> None:
    model = onnx_graph.load_model(mlp)
    produced = onnx_graph.producers(model.graph)
    read = onnx_graph.consumers(model.graph)
    assert produced["h2"].op_type == "Relu"
    assert [n.name for n in read["h2"]] == ["fc2"]
    inputs, outputs = onnx_graph.io_specs(model)
    assert [(t.name, t.dtype) for t in inputs] == [("x", "float32")]
    assert outputs[0].name == "logits" and outputs[0].shape[-1] == CLASSES
    assert onnx_graph.opset(model) > 0
    assert onnx_graph.op_histogram(model) == {"MatMul": 2, "Add": 2, "Relu": 1}


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match="not found"):
        onnx_graph.load_model(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage-not-a-protobuf\xff\xff")
    with pytest.raises(CorruptModelError) as err:
        onnx_graph.load_model(bad)
    assert str(bad) in str(err.value) and err.value.code == "corrupt_model"


def test_importing_the_reader_does_not_import_onnx() -> None:
    import subprocess
    import sys

    code = "import sys, edgekit.onnx_graph; print('onnx' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "False"
