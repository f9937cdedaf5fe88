"""Run as a script (under an emulated CPU too): how far ORT's fused int8 kernels are from the unfused QDQ graph.

    python tests/qdq_parity.py MODEL.onnx [MODEL.onnx ...]   -> one JSON line: {model: max |fused - unfused| / span}

Both run the same integer arithmetic, so only a requantization rounding the other way or a saturating kernel
(AVX2's u8s8 int16 pair sums) separates them. Inputs: 8 standard-normal samples of each model's input shape.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def parity(path: str) -> float:
    import onnxruntime as ort

    def session(level: object) -> ort.InferenceSession:
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        so.intra_op_num_threads = 1
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    fused = session(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    plain = session(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    inp = fused.get_inputs()[0]
    xs = np.random.default_rng(7).standard_normal((8, *inp.shape)).astype(np.float32)
    worst = 0.0
    for x in xs:
        f, p = fused.run(None, {inp.name: x})[0], plain.run(None, {inp.name: x})[0]
        worst = max(worst, float(np.max(np.abs(f - p)) / (p.max() - p.min())))
    return worst


if __name__ == "__main__":
    print(json.dumps({p: parity(p) for p in sys.argv[1:]}))
