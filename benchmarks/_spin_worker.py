"""One ORT session with onnxruntime's default thread spinning, timed alone in its process (benchmarks/export.py).

The export benchmark times every peer in one process, so it turns spinning off (idle sessions' spinning pool
threads would steal the cores from the one being timed). A deployment keeps ORT's default, spinning on, and
without spinning a graph pays a thread wake-up per parallel node: the many-node fp32 ONNX export the most. This
worker times one model in that setting, with no other session in its process:

    python _spin_worker.py MODEL FEEDS.npz --threads N [--edgekit-policy] [--seconds S]

FEEDS.npz holds each batch's arrays as ``<batch>/<input>``; prints one JSON line: ``{batch: median ms}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("feeds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--edgekit-policy", action="store_true", help="disable the optimizers edgekit's runtime does")
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per batch (after 0.2 s of warm-up)")
    args = ap.parse_args(argv)
    import onnxruntime as ort

    from edgekit.ort_policy import disabled_optimizers

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    off = disabled_optimizers() if args.edgekit_policy else []
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"], disabled_optimizers=off)
    names = {i.name for i in sess.get_inputs()}
    batches: dict[str, dict[str, np.ndarray]] = {}
    with np.load(args.feeds) as data:
        for key in data.files:
            batch, name = key.split("/", 1)
            if name in names:
                batches.setdefault(batch, {})[name] = data[key]
    out = {}
    for batch, feeds in batches.items():
        for seconds in (0.2, args.seconds):  # warm-up, then the timed window (its times are kept)
            times, end = [], time.perf_counter() + seconds
            while time.perf_counter() < end or len(times) < 3:
                t = time.perf_counter()
                sess.run(None, feeds)
                times.append((time.perf_counter() - t) * 1e3)
        out[batch] = float(np.median(times))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
