"""benchmarks/export.py's spinning-on diagnostic (each peer alone in a worker process, the order rotated), and the
benchmark workers' request loop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks import export as bench

WORKER = Path(bench.__file__).resolve().parent / "_spin_worker.py"


def _matmul_model(path: Path) -> Path:
    w = numpy_helper.from_array(np.eye(8, dtype=np.float32) * 2, "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["input_ids_f", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("input_ids_f", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [w],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_the_worker_times_each_batch_of_its_feeds_alone(tmp_path: Path) -> None:
    model = _matmul_model(tmp_path / "m.onnx")
    feeds = tmp_path / "feeds.npz"
    # the feeds file holds every batch's arrays; inputs the graph does not take are skipped
    np.savez(
        feeds,
        **{
            "batch 1/input_ids_f": np.ones((1, 8), np.float32),
            "batch 8/input_ids_f": np.ones((8, 8), np.float32),
            "batch 8/attention_mask": np.ones((8, 8), np.int64),
        },
    )
    done = subprocess.run(
        [sys.executable, str(WORKER), str(model), str(feeds), "--threads", "1", "--seconds", "0.05"],
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(out) == {"batch 1", "batch 8"} and all(0 < ms < 1000 for ms in out.values())


def test_the_peers_order_rotates_and_each_gets_a_time_per_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def fake_run(cmd: list[str], **kw: Any) -> Any:
        name = Path(cmd[2]).parent.name
        calls.append(name)
        ms = {bench.ONNX_FP32: 4.0, bench.EK_FP32: 3.0, bench.EK_INT8: 1.0}[name]
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps({"batch 1": ms}) + "\n", stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    out = bench.spinning_on(tmp_path, {"batch 1": {"x": np.zeros(1)}}, threads=2, rounds=3)
    assert calls[:3] == list(bench.PROFILED) and calls[3] == bench.PROFILED[1] and calls[6] == bench.PROFILED[2]
    assert out == {"batch 1": {bench.ONNX_FP32: [4.0] * 3, bench.EK_FP32: [3.0] * 3, bench.EK_INT8: [1.0] * 3}}
    lines = "\n".join(bench._render_spinning(out))
    assert "| batch 1 | edgekit-int8-dynamic | 1 | 0.25 | 0.250-0.250 |" in lines


def test_the_workers_request_loop_answers_each_line_and_stops_at_quit(monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/_worker_loop.py (the genai and edgekit workers): a reply a line, errors as replies, quit ends it."""
    import io

    from benchmarks._worker_loop import serve

    def boom(req: Any) -> dict[str, Any]:
        raise KeyError(req["name"])

    lines = [
        {"cmd": "run", "x": 2},
        {"cmd": "load", "name": "m"},
        {"cmd": "nope"},
        {"cmd": "quit"},
        {"cmd": "run", "x": 9},
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(json.dumps(r) + "\n" for r in lines)))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    serve({"run": lambda req: {"twice": req["x"] * 2}, "load": boom})
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    assert replies == [{"twice": 4}, {"error": "KeyError: 'm'"}, {"error": "unknown command 'nope'"}]


def test_the_gemm_ceiling_measures_what_the_threads_give_each_precision(tmp_path: Path) -> None:
    """benchmarks/export.py's GEMM ceiling: int8 vs fp32 GEMMs, and each on one thread over all of them."""
    batch = {"batch 1": {"input_ids": np.ones((1, 4), np.int64)}}
    two = bench.gemm_ceiling(tmp_path, batch, threads=2, rounds=2, block=0.01, budget=5.0)["batch 1"]
    assert two["rows"] == 4 and two["fp32_ms"] > 0
    for key in ("int8_vs_fp32", "uint8_vs_fp32", "fp32_threads_speedup", "int8_threads_speedup"):
        assert 0.05 < two[key] < 20, (key, two[key])
    one = bench.gemm_ceiling(tmp_path, batch, threads=1, rounds=2, block=0.01, budget=5.0)["batch 1"]
    assert "int8_threads_speedup" not in one  # one thread: nothing to compare it with
    rows = [
        line
        for line in "\n".join(bench._render_ceiling({"batch 1": two, "batch 8": one})).splitlines()
        if line.startswith(("| batch 1 ", "| batch 8 "))
    ]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    # compared as numbers: a ratio that rounds to 1.0 is printed "1"
    assert float(cells[0][5]) == round(two["fp32_threads_speedup"], 2)
    assert float(cells[0][6]) == round(two["int8_threads_speedup"], 2)
    assert cells[1][5:] == ["—", "—"]
    assert bench._render_ceiling({}) == []


def test_the_spinning_table_shows_the_middle_half_of_the_per_round_ratios() -> None:
    spin = {"batch 8": {bench.ONNX_FP32: [4.0, 4.0, 4.0, 4.0], bench.EK_INT8: [1.0, 2.0, 1.0, 3.0]}}
    lines = "\n".join(bench._render_spinning(spin))  # type: ignore[arg-type]
    # per-round ratios 0.25 / 0.5 / 0.25 / 0.75: median 0.375, quartiles 0.25 and 0.5625
    assert "| batch 8 | edgekit-int8-dynamic | 1.5 | 0.375 | 0.250-0.562 |" in lines
    assert "| batch 8 | onnx-fp32 | 4 | 1 | 1.000-1.000 |" in lines
