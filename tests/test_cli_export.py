"""CLI: main(argv) exit codes, --json on stdout, errors as error[code] on stderr."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.cli import main
from tests.conftest import assert_valid_manifest
from tests.onnx_builders import mlp_classifier


@pytest.fixture
def mlp(tmp_path):
    return mlp_classifier(tmp_path / "mlp.onnx")


def test_export_json_and_inspect(mlp, tmp_path, capsys):
    out = tmp_path / "pkg"
    code = main(
        ["export", str(mlp), "--task", "tensor", "--recipe", "int8-dynamic", "-o", str(out), "--json", "--allow-slower"]
    )
    captured = capsys.readouterr()
    assert code == 0
    report = json.loads(captured.out)
    assert report["status"] == "ok" and report["kind"] == "export" and report["schema_version"] == "1.0"
    assert report["result"]["recipe"] == "int8-dynamic"
    assert report["result"]["accuracy"]["metrics"]["output_cosine_mean"] > 0.97
    assert "validating" in captured.err  # progress goes to stderr
    assert_valid_manifest(out)

    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["result"]
    assert info["task"] == "tensor"
    # Both MatMuls of the MLP run as int8 (MatMulInteger); none is left in float.
    assert info["ops"].get("MatMulInteger") == 2 and "MatMul" not in info["ops"], info["ops"]
    # Quantized storage keeps the parameter count of the fp32 source (weights and biases of the two layers).
    assert info["parameter_count"] == 16 * 64 + 64 + 64 * 4 + 4
    assert info["recipe"]["name"] == "int8-dynamic"

    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "int8-dynamic" in text and "x " in text and "logits" in text


def test_export_errors_are_reported_with_codes(mlp, tmp_path, capsys):
    assert main(["export", str(mlp), "--task", "tensor", "--recipe", "int9", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "error[unknown_name]: unknown recipe 'int9'" in err
    assert "Traceback" not in err

    (tmp_path / "exists").mkdir()
    assert main(["export", str(mlp), "--task", "tensor", "-o", str(tmp_path / "exists")]) == 1
    err = capsys.readouterr().err
    assert "error[output_exists]" in err and "hint: choose another -o path, or pass --force" in err

    assert (
        main(["export", str(tmp_path / "missing.onnx"), "--task", "tensor", "-o", str(tmp_path / "m"), "--json"]) == 1
    )
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "error" and report["errors"][0]["code"] == "source_not_found"


def test_recipe_options_and_quantize(mlp, tmp_path, capsys):
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32))
    code = main(
        [
            "quantize",
            str(mlp),
            "--recipe",
            "int8-static",
            "-o",
            str(tmp_path / "q"),
            "-q",
            "--calibration",
            str(tmp_path / "cal.npz"),
            "--option",
            "method=entropy",
            "--allow-slower",
        ]
    )
    assert code == 0, capsys.readouterr().err
    m = assert_valid_manifest(tmp_path / "q")
    assert m["recipe"]["options"]["method"] == "entropy"
    assert main(["quantize", str(mlp), "--recipe", "int4", "-o", str(tmp_path / "b"), "--option", "block_size=20"]) == 2
    assert "block_size must be a power of two >= 16, got 20" in capsys.readouterr().err


def test_torch_factory_from_cli(tmp_path, capsys):
    import torch

    from tests.digits_cnn_factory import make_model

    model = make_model()
    torch.save(model.state_dict(), tmp_path / "w.pt")
    factory = __import__("tests.digits_cnn_factory", fromlist=["x"]).__file__
    code = main(
        [
            "export",
            f"{factory}:make_model",
            "--weights",
            str(tmp_path / "w.pt"),
            "--task",
            "tensor",
            "--input-shape",
            "pixels=1x1x8x8",
            "-o",
            str(tmp_path / "cnn"),
            "-q",
        ]
    )
    assert code == 0, capsys.readouterr().err
    m = assert_valid_manifest(tmp_path / "cnn")
    assert m["source"]["kind"] == "torch" and m["source"]["path"].endswith("digits_cnn_factory.py:make_model")
    assert m["inputs"] == [{"name": "pixels", "dtype": "float32", "shape": ["batch", 1, 8, 8]}]
    # A weights file from another architecture is refused with the reason.
    torch.save({"nope": torch.zeros(1)}, tmp_path / "bad.pt")
    assert (
        main(
            [
                "export",
                f"{factory}:make_model",
                "--weights",
                str(tmp_path / "bad.pt"),
                "--task",
                "tensor",
                "--input-shape",
                "pixels=1x1x8x8",
                "-o",
                str(tmp_path / "cnn2"),
            ]
        )
        == 1
    )
    assert "does not fit" in capsys.readouterr().err
    assert not (tmp_path / "cnn2").exists()
