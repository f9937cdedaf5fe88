"""What one parallel section costs: a single LayerNormalization at MiniLM's batch-1 shape (18 x 384), timed on
1 and 2 intra-op threads with ONNX Runtime's spinning off and on, in interleaved rounds.

ONNX Runtime's CPU LayerNormalization splits its rows over the pool whenever there are two or more, so on 2
threads each run wakes the second thread once; its work here is a few microseconds, so the difference between
the rows is the wake-up, which the export benchmark's in-process setting (spinning off) pays per parallel node.

    python benchmarks/_wake_probe.py [--rows 18] [--hidden 384] [--rounds 15] [--runs 500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _model(rows: int, hidden: int) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows, hidden])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, rows, hidden])
    weights = [
        numpy_helper.from_array(np.ones(hidden, np.float32), "g"),
        numpy_helper.from_array(np.zeros(hidden, np.float32), "b"),
    ]
    node = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-12)
    graph = helper.make_graph([node], "layer_norm", [x], [y], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=18)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", type=int, default=500)
    args = ap.parse_args()
    import onnxruntime as ort

    data = _model(args.rows, args.hidden)
    feed = {"x": np.random.default_rng(0).random((1, args.rows, args.hidden), dtype=np.float32)}
    sessions = {}
    for threads in (1, 2):
        for spin in ("0", "1"):
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.add_session_config_entry("session.intra_op.allow_spinning", spin)
            sessions[(threads, spin)] = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    times: dict[tuple[int, str], list[float]] = {k: [] for k in sessions}
    for _ in range(args.rounds):
        for key, session in sessions.items():
            for _ in range(50):
                session.run(None, feed)
            t0 = time.perf_counter()
            for _ in range(args.runs):
                session.run(None, feed)
            times[key].append((time.perf_counter() - t0) / args.runs * 1e6)
    print(f"LayerNormalization {args.rows} x {args.hidden}, median of {args.rounds} rounds of {args.runs} runs")
    print("| intra-op threads | spinning | us per run |")
    print("|---|---|---|")
    for (threads, spin), v in times.items():
        print(f"| {threads} | {'on' if spin == '1' else 'off'} | {np.median(v):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
