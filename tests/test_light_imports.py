"""The device side stays light: importing edgekit / runtimes, loading packages and running embed and generate
never imports torch, transformers, optimum or onnx (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "optimum", "onnx", "sentence_transformers", "exporters")

SCRIPT = """
import json, sys
heavy = {heavy!r}
def loaded():
    return sorted(m for m in heavy if m in sys.modules)
report = {{}}
import edgekit
report["import_edgekit"] = loaded() + sorted(m for m in ("onnxruntime", "numpy") if m in sys.modules)
import runtimes
report["import_runtimes"] = loaded() + sorted(m for m in ("onnxruntime", "numpy") if m in sys.modules)
vec = edgekit.load({embed!r}).embed(["light", "imports"])
lm = runtimes.load({lm!r}, threads=1)
res = lm.generate("the", max_tokens=3)
text = "".join(lm.stream("the", max_tokens=3))
report["after_run"] = loaded()
report["shape"] = list(vec.shape)
report["tokens"] = res.usage.completion_tokens
print(json.dumps(report))
"""


def test_runtime_does_not_import_heavy_packages(embed_package: Path, lm_package: Path) -> None:
    code = SCRIPT.format(heavy=HEAVY, embed=str(embed_package), lm=str(lm_package))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["import_edgekit"] == []  # not even onnxruntime or numpy: import edgekit is instant
    assert report["import_runtimes"] == []
    assert report["after_run"] == []
    assert report["shape"] == [2, 16] and report["tokens"] >= 1


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_core_install_in_a_fresh_venv(tmp_path: Path, embed_package: Path, lm_package: Path) -> None:
    """`pip install .` with no extras is enough on a device: embed and generate run, nothing heavy is installed."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "-c", str(REPO / "constraints.txt"), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True)
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"edgekit", "onnxruntime", "numpy", "tokenizers"} <= installed
    assert not installed & {"torch", "transformers", "optimum", "optimum-onnx", "onnx"}, installed
    code = SCRIPT.format(heavy=HEAVY, embed=str(embed_package), lm=str(lm_package))
    # Run outside the repo so the installed copy, not the checkout, is imported.
    proc = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["after_run"] == []
    assert report["shape"] == [2, 16] and report["tokens"] >= 1
    _core_cli_checks(py, embed_package, tmp_path)


def _core_cli_checks(py: Path, package: Path, cwd: Path) -> None:
    """The core install's CLI: inspect works without onnx; profile names the extra it needs, no traceback."""

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(py), "-m", "edgekit", *argv], capture_output=True, text=True, timeout=300, cwd=cwd)

    inspected = cli("inspect", str(package), "--json")
    assert inspected.returncode == 0, inspected.stderr[-3000:]
    info = json.loads(inspected.stdout)["result"]
    assert info["task"] == "feature-extraction" and info["ops"]["Gather"] >= 1
    profiled = cli("profile", str(package), "--device", "host", "--runs", "2", "--json")
    assert profiled.returncode == 1 and "Traceback" not in profiled.stderr, profiled.stderr[-3000:]
    assert json.loads(profiled.stdout)["errors"][0]["code"] == "missing_dependency"
    assert "pip install 'edgekit[profile]'" in profiled.stderr
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("edgekit ") and "onnxruntime " in version.stdout


# The dependency direction (core <- runtimes <- exporters, the CLI on top) is checked by the import-linter
# contracts in pyproject.toml, run by tests/test_layers.py and `make lint`.
