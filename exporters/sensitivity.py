"""Keep the fewest quantized layers in float that meet an accuracy target.

Each quantizable node is scored by the error it adds: the relative error of its output in the fully
quantized model against fp32, minus the relative error already present at its input. The most sensitive
nodes are then kept in float, in growing numbers, until validation meets the target.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import AccuracyError
from exporters import graph

QUANTIZABLE = {"MatMul", "Gemm", "Attention", "Conv"}
_TRY_COUNTS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


@dataclass(frozen=True)
class NodeScore:
    node: str
    op_type: str
    added_error: float

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op_type": self.op_type, "added_error": round(self.added_error, 6)}


def quantizable_nodes(model: Any) -> list[Any]:
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type in QUANTIZABLE and n.name and any(i in inits for i in n.input[1:])]


def _with_outputs(path: Path, names: list[str], dst: Path) -> Path:
    import onnx

    model = graph.load_model(path, check=False)
    have = {o.name for o in model.graph.output}
    for name in names:
        if name and name not in have:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    graph.save_model(model, dst)
    return dst


def score_nodes(
    float_model: Path, quant_model: Path, samples: list[dict[str, np.ndarray]], work: Path
) -> list[NodeScore]:
    from exporters.validate import make_runner

    model = graph.load_model(float_model, check=False)
    nodes = quantizable_nodes(model)
    inputs = {i.name for i in model.graph.input}
    tensors = sorted({n.output[0] for n in nodes} | {n.input[0] for n in nodes if n.input[0] not in inputs})
    run_f, names_f = make_runner(_with_outputs(float_model, tensors, work / "sens_float.onnx"))
    run_q, names_q = make_runner(_with_outputs(quant_model, tensors, work / "sens_quant.onnx"))
    err_num = dict.fromkeys(tensors, 0.0)
    err_den = dict.fromkeys(tensors, 0.0)
    for feeds in samples:
        of = dict(zip(names_f, run_f(feeds), strict=True))
        oq = dict(zip(names_q, run_q(feeds), strict=True))
        for t in tensors:
            if t in of and t in oq and of[t].shape == oq[t].shape:
                err_num[t] += float(np.sum((of[t].astype(np.float64) - oq[t]) ** 2))
                err_den[t] += float(np.sum(of[t].astype(np.float64) ** 2))

    def rel(t: str) -> float:
        return float(np.sqrt(err_num.get(t, 0.0) / err_den[t])) if err_den.get(t) else 0.0

    scores = [NodeScore(n.name, n.op_type, rel(n.output[0]) - rel(n.input[0])) for n in nodes]
    return sorted(scores, key=lambda s: s.added_error, reverse=True)


def search_float_nodes(
    *,
    float_model: Path,
    quant_model: Path,
    config: Any,
    quantize: Callable[[Any], Path],
    evaluate: Callable[[Path], dict[str, Any]],
    max_accuracy_drop: float,
    samples: list[dict[str, np.ndarray]],
    work: Path,
    log: Callable[[str], None],
) -> tuple[Path, Any, dict[str, Any], list[NodeScore]]:
    """Return the quantized model, its config (with ``nodes_to_exclude``), its validation, and the scores."""
    scores = score_nodes(float_model, quant_model, samples[:16], work)
    log(
        f"sensitivity: scored {len(scores)} quantizable nodes; most sensitive: "
        + ", ".join(f"{s.node} (+{s.added_error:.3f})" for s in scores[:3])
    )
    best: tuple[float, int] | None = None
    for k in [c for c in _TRY_COUNTS if c < len(scores)] + [len(scores)]:
        keep = tuple(s.node for s in scores[:k])
        cfg = dataclasses.replace(config, nodes_to_exclude=tuple(dict.fromkeys(config.nodes_to_exclude + keep)))
        path = quantize(cfg)
        report = evaluate(path)
        drop = report["metrics"]["accuracy_drop"]
        log(f"sensitivity: {k} node(s) in float -> accuracy drop {drop:.4f} (target {max_accuracy_drop})")
        if drop <= max_accuracy_drop:
            return path, cfg, report, scores
        best = (drop, k) if best is None or drop < best[0] else best
    raise AccuracyError(
        f"no split meets --max-accuracy-drop {max_accuracy_drop}: the best was {best[0] if best else float('nan'):.4f}"
        f" with {best[1] if best else 0} node(s) in float",
        hint="raise --max-accuracy-drop, use a wider recipe (fp16, fp32), or give calibration data closer to real inputs",
    )
