"""The layers of docs/architecture.md, enforced: the import-linter contracts in pyproject.toml hold (the same check
`make lint` runs), every module is placed in a layer, and the CLI dispatches lazily."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Not importorskip: the contracts are part of the suite, so a missing import-linter is a failure (it is in the
# `test` extra).
from importlinter import api as importlinter_api
from importlinter.application import use_cases

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"


def test_import_contracts_hold(capsys) -> None:
    kept = use_cases.lint_imports(config_filename=str(PYPROJECT), no_logo=True, cache_dir=None)
    report = capsys.readouterr().out
    assert kept is use_cases.SUCCESS, report
    assert "4 kept, 0 broken" in report, report


def _layer_modules() -> set[str]:
    config = importlinter_api.read_configuration(str(PYPROJECT))
    (layers,) = [c for c in config["contracts_options"] if c.get("id") == "layers"]
    names: set[str] = set()
    for layer in layers["layers"]:
        names.update(part.strip() for part in layer.replace("|", ":").split(":") if part.strip())
    return names


def test_every_module_has_a_layer() -> None:
    # A new module in edgekit/ must be placed in a layer, or the contracts would not see it.
    placed = _layer_modules()
    assert {"exporters", "runtimes", "edgekit.profiler", "edgekit.cli", "edgekit.errors"} <= placed
    unplaced = []
    for path in sorted((REPO / "edgekit").iterdir()):
        if path.name == "__init__.py" or path.name.startswith((".", "__pycache__")):
            continue
        if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").is_file()):
            module = f"edgekit.{path.stem if path.suffix == '.py' else path.name}"
            if module not in placed:
                unplaced.append(module)
    assert not unplaced, f"add these to a layer in pyproject.toml [tool.importlinter]: {unplaced}"


HELP_SCRIPT = """
import sys
import edgekit.cli
heavy = ("torch", "transformers", "optimum", "onnx", "onnxruntime", "numpy", "fastapi", "exporters")
def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in heavy or m.startswith("edgekit.profiler"))
for argv in (["--help"], *[[verb, "--help"] for verb in sys.argv[1:]]):
    try:
        edgekit.cli.main(argv)
    except SystemExit:
        pass
    if loaded():
        print("after", argv, loaded(), file=sys.stderr)
        raise SystemExit(3)
"""


def test_cli_help_imports_nothing_heavy() -> None:
    verbs = ["export", "run", "profile", "serve", "inspect", "devices"]
    proc = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT, *verbs], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout and "export" in proc.stdout
