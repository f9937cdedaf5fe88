"""``edgekit profile``: exit codes 0 / 2 / 3, the budget message, --json and --html."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.cli import main


@pytest.mark.parametrize(
    ("flag", "value"), [("--max-latency-ms", "0"), ("--max-memory-mb", "-5"), ("--max-latency-ms", "nan")]
)
def test_non_positive_budget_is_a_usage_error(
    mlp_onnx: Path, flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["profile", str(mlp_onnx), flag, value]) == 2
    err = capsys.readouterr().err
    assert "error[usage_error]" in err and "must be a positive number" in err


def test_unknown_device_suggests_close_names(mlp_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", str(mlp_onnx), "--device", "raspberry-pi5"]) == 2
    assert "Did you mean 'raspberry-pi-5'" in capsys.readouterr().err


def test_unbound_dims_name_the_option(mlp_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", str(mlp_onnx), "--runs", "3"]) == 2
    err = capsys.readouterr().err
    assert "dynamic dims that are not bound: x (batch)" in err
    assert "--input-shape x=1x16" in err


def test_corrupt_model_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx model at all" * 20)
    assert main(["profile", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "error[corrupt_model]" in err and "broken.onnx" in err


def test_missing_package_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", str(tmp_path / "nope")]) == 1
    assert "nothing to profile at" in capsys.readouterr().err


def test_exceeded_budget_exits_3_with_the_message(
    mlp_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html = tmp_path / "report.html"
    code = main(
        [
            "profile",
            str(mlp_onnx),
            "--input-shape",
            "x=1x16",
            "--device",
            "host",
            "--device",
            "pixel-8",
            "--runs",
            "10",
            "--max-latency-ms",
            "1e-6",
            "--json",
            "--html",
            str(html),
            "-q",
        ]
    )
    assert code == 3
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["status"] == "failed"
    failures = report["result"]["budget_failures"]
    assert {f["device"] for f in failures} == {"host", "pixel-8"}
    assert "error[budget_exceeded]: mlp on host: measured p50 forward latency" in captured.err
    assert "exceeds the budget of 1e-06 ms" in captured.err
    assert html.is_file() and "<svg" in html.read_text()


def test_within_budget_exits_0_and_prints_the_table(mlp_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "profile",
            str(mlp_onnx),
            "--input-shape",
            "x=1x16",
            "--runs",
            "10",
            "--max-latency-ms",
            "60000",
            "--max-memory-mb",
            "100000",
            "-q",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "mlp" in out and "host" in out and "BUDGET EXCEEDED" not in out
