"""The Python API refuses the same out-of-range numbers as the CLI (edgekit.limits), before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx_builders import mlp_classifier

import edgekit
import exporters
from edgekit.errors import OutOfBoundsError


@pytest.mark.parametrize("samples", [0, 100_000_000, True])
def test_export_validation_samples_bounded(tmp_path: Path, samples: object) -> None:
    src = mlp_classifier(tmp_path / "m.onnx")
    with pytest.raises(OutOfBoundsError) as err:
        exporters.export(src, output=tmp_path / "pkg", task="tensor", progress=False, validation_samples=samples)
    assert (
        err.value.code == "out_of_bounds" and "validation_samples must be an integer in [1, 10000]" in err.value.message
    )
    assert err.value.hint and not (tmp_path / "pkg").exists()


@pytest.mark.parametrize("threads", [100_000, 10**9])
def test_load_threads_bounded(tmp_path: Path, threads: int) -> None:
    src = mlp_classifier(tmp_path / "m.onnx")
    exporters.export(src, output=tmp_path / "pkg", task="tensor", progress=False, validation_samples=2)
    with pytest.raises(OutOfBoundsError) as err:
        edgekit.load(tmp_path / "pkg", threads=threads)
    assert err.value.code == "out_of_bounds" and "threads must be an integer in [1, " in err.value.message
