"""int8-static against fp32 on the CNN benchmark models: time ratio, cosine, Q/DQ nodes left after ORT's optimizer.

Each model (benchmarks/_cnn.py, random weights) is exported with the ``fp32`` and ``int8-static`` recipes
(calibration: 16 random images, as benchmarks/memory.py) and, with ``--before``, ``int8-static`` with the
previous defaults (Conv / MatMul / Gemm only, uint8 weights). The packages' graphs are then timed interleaved
at the same thread count (benchmarks/_common.interleave, ratios of per-round medians) and compared with the
fp32 package on inputs disjoint from the calibration. The weights are redrawn He-scaled: transformers' init
(std 0.02) lets EfficientNet's activations underflow to exactly 0 over its 16 blocks, which leaves no cosine to
measure (and, on Intel CPUs, runs it through denormals: see ``benchmarks._cnn.he_scaled``). ``speedup
guarantee`` is the export's own verdict (``runtime.speedup``: the package against its pre-quantization graph, at the package's thread policy).

    python benchmarks/cnn_int8.py [--only mobilenet_v2,resnet18,efficientnet_b0] [--threads 2] [--rounds 15] [--before]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks._cnn import export_cnn, he_scaled
from benchmarks._common import cpu_flags, cpu_model, interleave, markdown_table, ratio
from edgekit.manifest import MANIFEST_NAME

MODELS = ("mobilenet_v2", "resnet18", "efficientnet_b0")
BEFORE = {"op_types": ["Conv", "MatMul", "Gemm"], "weight_type": "uint8"}
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni")
INPUT = "pixel_values"


def export_packages(name: str, work: Path, before: bool) -> dict[str, Path]:
    from exporters import export

    src = he_scaled(export_cnn(name, work / "cnn"), work / "cnn" / f"{name}_he.onnx")
    cal = work / "calibration.npz"
    if not cal.exists():
        rng = np.random.default_rng(0)
        np.savez(cal, **{INPUT: rng.standard_normal((16, 3, 224, 224)).astype(np.float32)})
    peers: dict[str, tuple[str, dict[str, Any]]] = {"fp32": ("fp32", {}), "int8-static": ("int8-static", {})}
    if before:
        peers["int8-static (before)"] = ("int8-static", BEFORE)
    out = {}
    for peer, (recipe, options) in peers.items():
        pkg = work / f"{name}-{peer.replace(' ', '').replace('(', '-').replace(')', '')}"
        if (pkg / MANIFEST_NAME).is_file():  # exported by an earlier run into the same --work
            out[peer] = pkg
            continue
        extra = {"calibration": cal} if recipe == "int8-static" else {}
        export(
            src,
            output=pkg,
            task="tensor",
            recipe=recipe,
            recipe_options=options,
            progress=False,
            validation_samples=4,
            on_slower="warn",
            **extra,
        )
        out[peer] = pkg
    return out


def _session(path: Path, threads: int, optimized: Path | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def measure(name: str, packages: dict[str, Path], threads: int, rounds: int, work: Path) -> list[list[Any]]:
    import json

    import onnx

    inputs = np.random.default_rng(7).standard_normal((4, 1, 3, 224, 224)).astype(np.float32)
    sessions, qdq = {}, {}
    for peer, pkg in packages.items():
        opt = work / f"{name}-{len(sessions)}.optimized.onnx"
        sessions[peer] = _session(next(pkg.glob("*.onnx")), threads, opt)
        ops = Counter(n.op_type for n in onnx.load(str(opt), load_external_data=False).graph.node)
        qdq[peer] = (ops["QuantizeLinear"], ops["DequantizeLinear"])
    ref = [sessions["fp32"].run(None, {INPUT: x})[0] for x in inputs]
    fns = {p: (lambda s=s: s.run(None, {INPUT: inputs[0]})) for p, s in sessions.items()}
    timings = interleave(fns, rounds=rounds, block_seconds=0.3, budget_seconds=90)
    rows = []
    for peer, pkg in packages.items():
        if peer == "fp32":
            continue
        cos = min(_cosine(sessions[peer].run(None, {INPUT: x})[0], r) for x, r in zip(inputs, ref, strict=True))
        speed = json.loads((pkg / MANIFEST_NAME).read_text()).get("runtime", {}).get("speedup") or {}
        verdict = f"{speed.get('verdict', '—')} ({speed.get('median_ratio', float('nan')):.2f}x)"
        row = [name, peer, timings["fp32"].median_ms, timings[peer].median_ms, ratio(timings[peer], timings["fp32"])]
        rows.append([*row, round(cos, 4), f"{qdq[peer][0]} / {qdq[peer][1]}", verdict])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--before", action="store_true", help="also the previous defaults (Conv/MatMul/Gemm, uint8)")
    ap.add_argument("--work", type=Path, default=None, help="cache dir for exports (default: a temp dir)")
    args = ap.parse_args(argv)
    flags = cpu_flags()
    isa = ", ".join(f for f in ISA_FLAGS if f in flags) or "none of " + ", ".join(ISA_FLAGS)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        for name in args.only.split(","):
            rows += measure(name, export_packages(name, work, args.before), args.threads, args.rounds, work)
    headers = ["model", "recipe", "fp32 ms", "int8 ms", "int8 / fp32", "cosine min", "Q / DQ", "guarantee"]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"CPU: {cpu_model()} ({isa}); threads {args.threads}; load average {load}")
    print(markdown_table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
