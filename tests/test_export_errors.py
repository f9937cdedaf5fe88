"""Bad input gets a clear error (type and message checked) and never leaves a package behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import (
    AccuracyError,
    CalibrationError,
    ConfigError,
    CorruptModelError,
    OutputExistsError,
    SourceNotFoundError,
    UnknownNameError,
    UnsupportedModelError,
)
from exporters import export
from tests.onnx_builders import mlp_classifier


def _nothing_left(parent: Path, name: str) -> None:
    leftovers = [p.name for p in parent.iterdir() if p.name.startswith(name) or p.name.startswith(f".{name}")]
    assert leftovers == [], leftovers


@pytest.fixture
def mlp(tmp_path) -> Path:
    return mlp_classifier(tmp_path / "mlp.onnx")


def test_missing_source(tmp_path):
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        export(tmp_path / "nope", output=tmp_path / "out", task="tensor", progress=False)
    _nothing_left(tmp_path, "out")


def test_unknown_task_lists_known_ones(mlp, tmp_path):
    with pytest.raises(UnknownNameError) as err:
        export(mlp, output=tmp_path / "out", task="text-clasification", progress=False)
    assert "Did you mean 'text-classification'" in err.value.message
    assert "feature-extraction" in err.value.message


def test_unknown_recipe_lists_known_ones(mlp, tmp_path):
    with pytest.raises(UnknownNameError) as err:
        export(mlp, output=tmp_path / "out", task="tensor", recipe="int3", progress=False)
    assert "int4" in err.value.message and "int8-dynamic" in err.value.message


def test_unknown_recipe_option_is_refused(mlp, tmp_path):
    with pytest.raises(ConfigError, match="block_sise.*Did you mean 'block_size'"):
        export(
            mlp,
            output=tmp_path / "out",
            task="tensor",
            recipe="int4",
            recipe_options={"block_sise": 64},
            progress=False,
        )
    with pytest.raises(ConfigError, match="block_size must be a power of two"):
        export(
            mlp,
            output=tmp_path / "out",
            task="tensor",
            recipe="int4",
            recipe_options={"block_size": 48},
            progress=False,
        )


def test_truncated_onnx(mlp, tmp_path):
    data = mlp.read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptModelError, match="truncated|not a readable ONNX|fails the ONNX checker"):
        export(bad, output=tmp_path / "out", task="tensor", progress=False)
    _nothing_left(tmp_path, "out")


def test_garbage_onnx(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"this is not a protobuf at all" * 10)
    with pytest.raises(CorruptModelError):
        export(bad, output=tmp_path / "out", task="tensor", progress=False)


def test_existing_output_refused_unless_force(mlp, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="already exists") as err:
        export(mlp, output=out, task="tensor", progress=False)
    assert "--force" in err.value.hint
    assert (out / "keep.txt").read_text() == "mine"
    # --force replaces only an edgekit package or an empty directory, never a folder of the user's files
    with pytest.raises(OutputExistsError, match="not an edgekit package"):
        export(mlp, output=out, task="tensor", progress=False, force=True)
    assert (out / "keep.txt").read_text() == "mine"
    pkg = tmp_path / "pkg"
    export(mlp, output=pkg, task="tensor", progress=False)
    (pkg / "stale.txt").write_text("from the old package")
    export(mlp, output=pkg, task="tensor", progress=False, force=True)
    assert (pkg / "edgekit.json").is_file() and not (pkg / "stale.txt").exists()


def test_interrupted_export_leaves_nothing(mlp, tmp_path, monkeypatch):
    import exporters.api as api

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "write_package", boom)
    with pytest.raises(KeyboardInterrupt):
        export(mlp, output=tmp_path / "out", task="tensor", progress=False)
    _nothing_left(tmp_path, "out")


def _calib(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_calibration_wrong_name(mlp, tmp_path):
    cal = _calib(tmp_path / "cal.npz", input=np.zeros((4, 16), np.float32))
    with pytest.raises(CalibrationError, match="unknown: input; missing: x") as err:
        export(mlp, output=tmp_path / "out", task="tensor", recipe="int8-static", calibration=cal, progress=False)
    assert "x float32['batch', 16]" in err.value.hint
    _nothing_left(tmp_path, "out")


def test_calibration_wrong_dtype(mlp, tmp_path):
    cal = _calib(tmp_path / "cal.npz", x=np.zeros((4, 16), np.float64))
    with pytest.raises(CalibrationError, match="'x' has dtype float64, the model expects float32"):
        export(mlp, output=tmp_path / "out", task="tensor", recipe="int8-static", calibration=cal, progress=False)


def test_calibration_wrong_shape(mlp, tmp_path):
    cal = _calib(tmp_path / "cal.npz", x=np.zeros((4, 15), np.float32))
    with pytest.raises(CalibrationError, match=r"'x' has shape \[1, 15\].*expects \['batch', 16\]"):
        export(mlp, output=tmp_path / "out", task="tensor", recipe="int8-static", calibration=cal, progress=False)


def test_static_without_calibration(mlp, tmp_path):
    with pytest.raises(CalibrationError, match="needs calibration data") as err:
        export(mlp, output=tmp_path / "out", task="tensor", recipe="int8-static", progress=False)
    assert "--calibration" in err.value.hint


def test_accuracy_breach_writes_nothing(mlp, tmp_path):
    # fp16 cannot keep layers in float, and a zero budget cannot be met by a lossy recipe.
    with pytest.raises(AccuracyError, match="more than --max-accuracy-drop 0.0; no package was written"):
        export(
            mlp,
            output=tmp_path / "out",
            task="tensor",
            recipe="int4",
            max_accuracy_drop=0.0,
            recipe_options={"block_size": 16},
            progress=False,
        )
    _nothing_left(tmp_path, "out")


def test_max_accuracy_drop_out_of_range(mlp, tmp_path):
    with pytest.raises(ConfigError, match=r"max_accuracy_drop must be in \[0, 1\)"):
        export(mlp, output=tmp_path / "out", task="tensor", max_accuracy_drop=5, progress=False)


def test_hf_dir_without_weights(tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(SourceNotFoundError, match="no weights file"):
        export(d, output=tmp_path / "out", task="feature-extraction", progress=False)


def test_unsupported_architecture_is_named(tiny_bert_dir, tmp_path):
    # A BERT encoder has no causal-LM head: optimum refuses, and we say which architecture and task.
    with pytest.raises(UnsupportedModelError, match=r"'bert'.*'text-generation-with-past'"):
        export(tiny_bert_dir, output=tmp_path / "out", task="text-generation", progress=False)
    _nothing_left(tmp_path, "out")


def test_unknown_architecture(tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "wobbleformer", "architectures": ["WobbleModel"]}))
    (d / "model.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises((UnsupportedModelError, CorruptModelError), match="wobbleformer"):
        export(d, output=tmp_path / "out", task="feature-extraction", progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out")]
