"""Every command's ``--json`` stdout is exactly one JSON document, valid against its kind's JSON Schema.

The documents come from ``edgekit.cli.main`` (stdout captured by capsys) and are parsed with a strict
``json.loads`` of the whole stream: a stray print from a dependency (ORT's calibrators print progress) fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.cli import main
from tests.onnx_builders import mlp_classifier

SCHEMAS = Path(__file__).resolve().parents[1] / "edgekit" / "schemas"


def _validator(kind: str) -> Any:
    """The kind's schema with every schema of edgekit/schemas resolvable by its $id (the shared envelope)."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    docs = [json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.schema.json"))]
    registry = Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in docs)
    schema = json.loads((SCHEMAS / f"{kind}_report.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=registry)


def _report(argv: list[str], capsys: pytest.CaptureFixture[str], *, code: int = 0) -> tuple[dict[str, Any], str]:
    assert main([*argv, "--json"]) == code
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # the whole stdout: one document, nothing before or after it
    errors = sorted(_validator(report["kind"]).iter_errors(report), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]
    return report, captured.err


def third_party_lines(stderr: str) -> list[str]:
    """stderr lines edgekit did not write: its own start with [edgekit] or error[...] / hint."""
    own = ("[edgekit]", "error[", "  hint:")
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(own)]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("json")
    np.savez(root / "cal.npz", x=np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32))
    np.savez(root / "x.npz", x=np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32))
    return mlp_classifier(root / "mlp.onnx")


@pytest.mark.slow
def test_export_inspect_run_profile_reports(mlp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pkg = tmp_path / "pkg"
    report, err = _report(
        ["export", str(mlp), "--task", "tensor", "--recipe", "int8-dynamic", "-o", str(pkg), "--allow-slower"], capsys
    )
    assert report["kind"] == "export" and report["result"]["recipe"] == "int8-dynamic"
    assert third_party_lines(err) == []

    report, _ = _report(["inspect", str(pkg)], capsys)
    assert report["result"]["kind"] == "package" and report["result"]["ops"]
    report, _ = _report(["inspect", str(pkg / "model.onnx")], capsys)
    assert report["result"]["kind"] == "onnx" and report["result"]["nodes"] == sum(report["result"]["ops"].values())

    report, err = _report(["run", str(pkg), "--input", str(mlp.parent / "x.npz")], capsys)
    assert report["kind"] == "run" and report["result"]["metrics"]["load_seconds"] >= 0
    assert third_party_lines(err) == []

    report, err = _report(["profile", str(pkg), "--input-shape", "x=1x16", "--runs", "3", "-q"], capsys)
    assert report["kind"] == "profile" and report["status"] == "ok"
    assert third_party_lines(err) == []


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_static_calibrators_print_nothing(
    method: str, mlp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ORT's percentile / entropy calibrators print progress with print(): not on stdout, and not at all without -v."""
    argv = ["quantize", str(mlp), "--recipe", "int8-static", "-o", str(tmp_path / "q"), "--allow-slower"]
    argv += ["--calibration", str(mlp.parent / "cal.npz"), "--option", f"method={method}"]
    report, err = _report(argv, capsys)
    assert report["kind"] == "quantize" and report["result"]["manifest"]["recipe"]["options"]["method"] == method
    assert third_party_lines(err) == []
    assert "Collecting tensor data" not in err

    # With -v the calibrator's lines are shown, on stderr; stdout is still one document.
    report, err = _report([*argv[:-4], "--force", *argv[-4:], "-v"], capsys)
    assert "Collecting tensor data" in err and report["status"] == "ok"


def test_devices_reports(capsys: pytest.CaptureFixture[str]) -> None:
    report, _ = _report(["devices"], capsys)
    assert {d["name"] for d in report["result"]["devices"]} >= {"raspberry-pi-5", "pixel-8"}
    report, _ = _report(["devices", "show", "pixel-8"], capsys)
    assert report["result"]["name"] == "pixel-8"
    assert report["environment"]["cpu"]["isa_features"] is not None


def test_serve_key_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """serve is long-running (its summary prints when it stops); its key commands answer at once."""
    keys = str(tmp_path / "keys.json")
    report, _ = _report(["serve", "--api-keys", keys, "--add-key", "ci", "--daily-quota", "5"], capsys)
    assert report["result"]["id"] == "ci" and report["result"]["key"]
    report, _ = _report(["serve", "--api-keys", keys, "--remove-key", "ci"], capsys)
    assert report["result"]["removed"] == "ci"


def test_error_reports_follow_the_same_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "missing.onnx")
    report, _ = _report(["export", missing, "--task", "tensor", "-o", str(tmp_path / "o")], capsys, code=1)
    assert report["status"] == "error" and report["errors"][0]["code"] == "source_not_found"
    report, _ = _report(["inspect", missing], capsys, code=1)
    assert report["errors"][0]["code"] == "source_not_found" and report["result"] is None
    report, _ = _report(["devices", "show", "pixel-9"], capsys, code=2)
    assert report["errors"][0]["code"] == "unknown_name"


def test_schemas_reject_what_they_must(mlp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The schemas are not vacuous: a wrong kind, a NaN-turned-string metric or a missing field fails."""
    report, _ = _report(["inspect", str(mlp)], capsys)
    validator = _validator("inspect")
    assert not list(validator.iter_errors(report))
    for broken in (
        {**report, "kind": "export"},
        {**report, "status": "maybe"},
        {**report, "result": {**report["result"], "nodes": "NaN"}},
        {k: v for k, v in report.items() if k != "environment"},
        {**report, "errors": [{"code": "x"}]},
    ):
        assert list(validator.iter_errors(broken)), broken


@pytest.mark.slow
def test_stdout_is_one_document_at_the_descriptor_level(mlp: Path, tmp_path: Path) -> None:
    """In a real process (fd 1 and fd 2, C++ logs included) stdout holds the JSON document and nothing else."""
    import subprocess
    import sys

    argv = ["quantize", str(mlp), "--recipe", "int8-static", "-o", str(tmp_path / "q"), "--json", "--allow-slower"]
    argv += ["--calibration", str(mlp.parent / "cal.npz"), "--option", "method=entropy"]
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "edgekit", *argv], capture_output=True, text=True, timeout=300, cwd=repo
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert not list(_validator("quantize").iter_errors(report))
    assert third_party_lines(proc.stderr) == []


def test_run_reports_for_generate_embed_and_classify(
    lm_package: Path, embed_package: Path, text_cls_package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report, err = _report(["run", str(lm_package), "--prompt", "the", "--max-tokens", "3", "--stream"], capsys)
    assert report["result"]["result"]["usage"]["completion_tokens"] >= 1 and third_party_lines(err) == []
    report, _ = _report(["run", str(embed_package), "--text", "a", "--text", "b"], capsys)
    assert report["result"]["result"]["count"] == 2
    report, _ = _report(["run", str(text_cls_package), "--text", "a"], capsys)
    assert len(report["result"]["result"]["predictions"]) == 1
