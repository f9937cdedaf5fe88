"""Per-op-type time of an ONNX Runtime session, from ORT's own profiler (``enable_profiling``).

Used by ``benchmarks/export.py --profile`` to show where the time of each MiniLM package goes: the GEMMs, and
everything around them (quantizing activations, attention, normalization, casts and reshapes).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

# Ops whose kernel time is the run of a subgraph (int8 MiniLM's padding branch, exporters/unpad_branch.py).
CONTAINER_OPS = frozenset({"If", "Loop", "Scan"})


def op_type_totals(
    model: Path, feeds: dict[str, np.ndarray], threads: int, runs: int, *, disabled: list[str] | None = None
) -> dict[str, Any]:
    """Mean milliseconds per run spent in each op type's kernels, over ``runs`` profiled runs (after warm-up)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with tempfile.TemporaryDirectory() as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "p")
        sess = ort.InferenceSession(
            str(model), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled or []
        )
        names = {i.name for i in sess.get_inputs()}
        f = {k: v for k, v in feeds.items() if k in names}
        for _ in range(3):
            sess.run(None, f)
        for _ in range(runs):
            sess.run(None, f)
        events = json.loads(Path(sess.end_profiling()).read_text())
    return summarize(events, runs, warmup=3)


def summarize(events: list[dict[str, Any]], runs: int, warmup: int) -> dict[str, Any]:
    """Kernel time per op type (ms per run) and the model_run wall time, from ORT profile events."""
    model_runs = [e["dur"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    timed = model_runs[warmup:]
    start_ts = [e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"][warmup]
    per_op: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < start_ts:
            continue
        op = e.get("args", {}).get("op_name", "?")
        if op in CONTAINER_OPS:  # its branch's nodes have events of their own: counting it too counts them twice
            continue
        per_op[op] += e["dur"]
        count[op] += 1
    n = max(len(timed), 1)
    ops = {k: round(v / n / 1000, 4) for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])}
    return {
        "run_ms": round(float(np.median(timed)) / 1000, 4) if timed else None,
        "kernels_ms": round(sum(ops.values()), 4),
        "ops_ms": ops,
        "nodes": {k: count[k] // n for k in ops},
    }
