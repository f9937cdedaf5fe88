"""benchmarks/_wake_probe.py: its graph is one LayerNormalization that ONNX Runtime runs to numpy's values, and
the script prints one timed row per (threads, spinning) setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks import _wake_probe as probe


def test_the_probe_graph_normalizes_each_row_as_numpy_does() -> None:
    session = ort.InferenceSession(probe._model(3, 16), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, 3, 16)).astype(np.float32)
    (y,) = session.run(None, {"x": x})
    want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


def test_the_script_prints_four_settings() -> None:
    script = Path(probe.__file__)
    out = subprocess.run(
        [sys.executable, str(script), "--rows", "4", "--hidden", "32", "--rounds", "2", "--runs", "5"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [tuple(r.split("|")[1:3]) for r in rows] == [
        (" 1 ", " off "),
        (" 1 ", " on "),
        (" 2 ", " off "),
        (" 2 ", " on "),
    ]
    assert all(float(r.split("|")[3]) > 0 for r in rows)
