"""SmoothQuant-style activation smoothing: a graph transform that runs before dynamic int8 quantization.

Why: ``quantize_dynamic`` quantizes each MatMul's input per tensor at run time (one uint8 scale for the
whole activation), while the weights get one scale per output column. Transformer activations are not
uniform across channels: in all-MiniLM-L6-v2 the LayerNorm outputs that feed the FFN-up MatMul have one
channel (99) reaching 28-30 while the median channel stays under 2, and the GELU outputs that feed the
FFN-down MatMul have single channels near 24 with a median of 0.1. One outlier channel sets the step of
the whole tensor, so the ordinary channels are quantized with three or four levels. Short inputs ("ok",
"!", "Yes.") suffer most: their few tokens are the [CLS]/[SEP] rows that carry the outliers.

What: for a MatMul (or a fused ``Attention``) ``Y = X @ W`` with a constant ``W``, choose a per-input-
channel ``s`` and compute ``Y = (X / s) @ (diag(s) W)`` — exact in float. ``X / s`` has flatter channels
(easy per-tensor activation quantization); ``diag(s) W`` moves the range into the weights, whose
per-column scales absorb it. ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` (SmoothQuant). ``alpha``
is chosen per layer by simulating the quantized MatMul on calibration activations (ONNX Runtime's
dynamic quantization arithmetic: per-call asymmetric uint8 activations, per-column weights) and keeping
the alpha with the smallest output error; a layer that no alpha improves by ``MIN_GAIN`` is left alone.

Where ``1 / s`` goes: into the producer when that is exact and free — the gamma/beta of a
(Skip)LayerNormalization or the constant of a per-channel ``Mul`` (RMSNorm weight) whose output feeds
only the smoothed MatMuls (pre-LN models). Otherwise a ``Mul`` by the constant ``1 / s`` is inserted
before the MatMuls. Post-LN BERT needs the ``Mul``: its LayerNorm output is also the residual.

Calibration: feeds from ``ctx.calibration`` (the user's data), else ``ctx.samples`` (the task's generated
samples), capped at ``smoothing_samples``. The step reads these recipe-config fields, with defaults when a
config lacks them: ``smoothing`` (bool), ``smoothing_alpha`` (``None`` = per-layer search, or a fixed
value), ``smoothing_samples`` (int), plus ``weight_type``, ``per_channel``, ``op_types`` and
``nodes_to_exclude`` of the quantization that follows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exporters import graph
from exporters.ort_guard import guarded, ort_failure

ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9)
# A layer is smoothed only if its simulated quantization error drops below this fraction of the
# unsmoothed error. An inserted Mul costs ~0.4% of MiniLM's batch-1 latency, and small per-layer gains do
# not show end to end (MiniLM int8 vs PyTorch over 120 sentences: at 0.5, 17 Muls, cosine mean 0.9965 /
# min 0.9832; at 0.2, 8 Muls, 0.9952 / 0.9872; at 0.1, 3 Muls, 0.9936 / 0.9790).
MIN_GAIN = 0.2
DEFAULT_SAMPLES = 32
# Rows of each calibration activation kept for the error simulation (the range uses all rows).
ROWS_PER_SAMPLE = 64
# Producers whose per-channel affine parameters can absorb 1/s exactly: op type -> input indices.
_FOLDABLE = {
    "LayerNormalization": (1, 2),
    "SimplifiedLayerNormalization": (1,),
    "SkipLayerNormalization": (2, 3),
    "SkipSimplifiedLayerNormalization": (2,),
}


# --------------------------------------------------------------------------------------- simulation


def quantize_activation_sim(x: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
    """ONNX Runtime's DynamicQuantizeLinear (asymmetric uint8 over ``[min(lo, 0), max(hi, 0)]``), dequantized.

    ``lo`` / ``hi`` broadcast against ``x``: one range per call, e.g. ``(rows, 1)`` for rows of several calls.
    """
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    scale = (hi - lo) / 255.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    zp = np.clip(np.round(-lo / scale), 0, 255).astype(np.float32)
    return (np.clip(np.round(x / scale) + zp, 0, 255) - zp) * scale


def pair_safe_scale(w: np.ndarray, *, per_channel: bool) -> np.ndarray:
    """Symmetric int8 scales under which MLAS's AVX2 u8s8 kernel cannot saturate.

    Without VNNI, MLAS multiplies uint8 activations by int8 weights with ``vpmaddubsw``, which adds the
    products of rows ``2j`` and ``2j + 1`` in int16 and saturates: 255 * 127 * 2 > 32767. If every such
    pair of quantized weights has ``|q[2j]| + |q[2j+1]| <= 128``, no sum can leave the int16 range.
    Scaling by the largest pair sum over 127 guarantees it after rounding; it costs well under one bit
    against the plain ``max|w| / 127`` (the 7-bit ``reduce_range`` costs a full bit).
    """
    a = np.abs(w)
    if a.shape[0] % 2:
        a = np.concatenate([a, np.zeros((1, a.shape[1]), a.dtype)])
    pairs = a[0::2] + a[1::2]
    scale = (pairs.max(axis=0) if per_channel else np.full(w.shape[1], pairs.max())) / 127.0
    return np.where(scale == 0, 1.0, scale).astype(np.float32)


def quantize_weight_sim(w: np.ndarray, *, weight_type: str, per_channel: bool) -> np.ndarray:
    """The quantizer's weight rounding (per output column or per tensor), dequantized.

    ``weight_type``: ``uint8`` (asymmetric), ``int8`` (symmetric) or ``int8-pair-safe`` (symmetric with
    :func:`pair_safe_scale`).
    """
    axis = 0 if per_channel else None
    if weight_type == "int8-pair-safe":
        scale = pair_safe_scale(w, per_channel=per_channel)[None, :]
        return np.clip(np.round(w / scale), -127, 127) * scale
    if weight_type == "int8":  # symmetric, [-127, 127]
        scale = np.abs(w).max(axis=axis, keepdims=True) / 127.0
        scale = np.where(scale == 0, 1.0, scale)
        return np.clip(np.round(w / scale), -127, 127) * scale
    lo = np.minimum(w.min(axis=axis, keepdims=True), 0.0)
    hi = np.maximum(w.max(axis=axis, keepdims=True), 0.0)
    scale = (hi - lo) / 255.0
    scale = np.where(scale == 0, 1.0, scale)
    zp = np.round(-lo / scale)
    return (np.clip(np.round(w / scale) + zp, 0, 255) - zp) * scale


def pair_safe_overrides(
    model_path: Path, *, op_types: Iterable[str], exclude: Iterable[str] = (), per_channel: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """``TensorQuantOverrides`` for ``quantize_dynamic(weight_type=QInt8)`` with :func:`pair_safe_scale`.

    Pass as ``extra_options={"TensorQuantOverrides": ...}``: the quantizer then uses these scales (zero
    point 0) instead of ``max|w| / 127`` for the weights of the MatMul / Attention / Gemm nodes it quantizes.
    A ``Gemm`` with ``transB=1`` stores its weight as N x K: its scales are per row (axis 0), and the
    quantizer flips the axis when it rewrites the Gemm as a MatMul on the transposed weight.
    """
    from onnx import numpy_helper

    model = graph.load_model(model_path, check=False)
    inits = {i.name: i for i in model.graph.initializer}
    weights: dict[str, tuple[np.ndarray, int]] = {}  # name -> (K x N view, channel axis of the stored tensor)
    for g in find_groups(model, op_types=op_types, exclude=exclude):
        for node in g.nodes:
            name = node.input[_weight_index(node) or 1]
            weights[name] = (numpy_helper.to_array(inits[name]), 1)
    if "Gemm" in set(op_types):
        skip = set(exclude)
        for node in model.graph.node:
            if node.op_type != "Gemm" or node.name in skip or len(node.input) < 2 or node.input[1] not in inits:
                continue
            w = numpy_helper.to_array(inits[node.input[1]])
            if w.ndim != 2 or not np.issubdtype(w.dtype, np.floating):
                continue
            trans_b = bool(graph.node_attr(node, "transB", 0))
            weights[node.input[1]] = (w.T, 0) if trans_b else (w, 1)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, (w, axis) in weights.items():
        scale = pair_safe_scale(w, per_channel=per_channel)
        if per_channel:
            out[name] = [{"axis": axis, "scale": np.float32(v), "zero_point": np.int8(0)} for v in scale]
        else:
            out[name] = [{"scale": np.float32(scale[0]), "zero_point": np.int8(0)}]
    return out


@dataclass
class ActivationStats:
    """What calibration keeps of one MatMul input: per-sample channel ranges and a subsample of rows."""

    channel_min: list[np.ndarray] = field(default_factory=list)
    channel_max: list[np.ndarray] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)

    def add(self, x: np.ndarray) -> None:
        x2 = x.reshape(-1, x.shape[-1]).astype(np.float32)
        self.channel_min.append(x2.min(axis=0))
        self.channel_max.append(x2.max(axis=0))
        if len(x2) > ROWS_PER_SAMPLE:
            x2 = x2[np.linspace(0, len(x2) - 1, ROWS_PER_SAMPLE).astype(int)]
        self.rows.append(x2)

    @property
    def absmax(self) -> np.ndarray:
        return np.maximum(np.abs(np.min(self.channel_min, axis=0)), np.abs(np.max(self.channel_max, axis=0)))


class ErrorModel:
    """The simulated quantization error of one group's MatMuls as a function of the smoothing scale.

    Rows of all samples are stacked once (one GEMM per candidate, float32) and ``X @ W`` is computed once.
    Every output column counts: a column subsample would miss the few residual-stream outlier columns
    that dominate the error of FFN-down projections. The error is relative per sample, then averaged, so
    a one-token input ("!") weighs as much as a paragraph: short inputs are where int8 fails first.
    """

    def __init__(
        self, stats: ActivationStats, weights: list[np.ndarray], *, weight_type: str, per_channel: bool
    ) -> None:
        self.weight_type, self.per_channel = weight_type, per_channel
        self.x = np.concatenate(stats.rows).astype(np.float32)
        self.counts = np.array([len(r) for r in stats.rows])
        self.bounds = np.concatenate([[0], np.cumsum(self.counts)])
        self.cmin, self.cmax = np.stack(stats.channel_min), np.stack(stats.channel_max)
        self.weights = [w.astype(np.float32) for w in weights]
        self.refs = [self.x @ w for w in self.weights]
        self.ref_energy = self._per_sample(sum((y.astype(np.float64) ** 2).sum(axis=1) for y in self.refs))

    def _per_sample(self, row_values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(row_values, self.bounds[:-1])

    def __call__(self, s: np.ndarray) -> float:
        s32 = s.astype(np.float32)
        xs = self.x / s32
        # One DynamicQuantizeLinear range per sample (per call), spread over that sample's rows.
        lo = np.repeat((self.cmin / s).min(axis=1), self.counts)[:, None]
        hi = np.repeat((self.cmax / s).max(axis=1), self.counts)[:, None]
        xq = quantize_activation_sim(xs, lo, hi)
        rows = np.zeros(len(xq))
        for w, y in zip(self.weights, self.refs, strict=True):
            q = quantize_weight_sim(w * s32[:, None], weight_type=self.weight_type, per_channel=self.per_channel)
            rows += ((y - xq @ q).astype(np.float64) ** 2).sum(axis=1)
        return float(np.mean(self._per_sample(rows) / np.maximum(self.ref_energy, 1e-30)))


def smoothing_scale(act_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float) -> np.ndarray:
    a = np.maximum(act_absmax, 1e-5 * max(float(act_absmax.max()), 1e-12))
    w = np.maximum(weight_absmax, 1e-5 * max(float(weight_absmax.max()), 1e-12))
    s = a**alpha / w ** (1.0 - alpha)
    return s / np.exp(np.mean(np.log(s)))  # geometric mean 1: keeps weights and activations near their scale


# --------------------------------------------------------------------------------------------- graph


@dataclass
class _Group:
    """MatMuls that read the same input tensor: they share one smoothing scale."""

    tensor: str
    nodes: list[Any]
    positions: list[int]  # indices of ``nodes`` in the graph's node list


def _weight_index(node: Any) -> int | None:
    if node.op_type == "MatMul" and node.domain in ("", "ai.onnx"):
        return 1
    if node.op_type == "Attention" and node.domain == "com.microsoft":
        return 1
    return None


def find_groups(model: Any, *, op_types: Iterable[str], exclude: Iterable[str]) -> list[_Group]:
    """Quantizable MatMul / Attention nodes with a constant 2-D float weight, grouped by their input."""
    from onnx import TensorProto

    inits = {i.name: i for i in model.graph.initializer}
    wanted, skip = set(op_types), set(exclude)
    groups: dict[str, _Group] = {}
    for pos, node in enumerate(model.graph.node):
        idx = _weight_index(node)
        if idx is None or node.op_type not in wanted or node.name in skip or len(node.input) <= idx:
            continue
        w = inits.get(node.input[idx])
        if w is None or len(w.dims) != 2 or w.data_type != TensorProto.FLOAT:
            continue
        g = groups.setdefault(node.input[0], _Group(node.input[0], [], []))
        g.nodes.append(node)
        g.positions.append(pos)
    return list(groups.values())


def collect_stats(
    model_path: Path, tensors: list[str], feeds: list[dict[str, np.ndarray]], work: Path
) -> dict[str, ActivationStats]:
    """Run the float model on ``feeds`` with ``tensors`` exposed as outputs."""
    import onnx
    import onnxruntime as ort

    model = graph.load_model(model_path, check=False)
    present = {o.name for o in model.graph.output}
    for t in tensors:
        if t not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    probe = work / f"{model_path.stem}.smoothing-probe.onnx"
    graph.save_model(model, probe)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = guarded(
        lambda: ort.InferenceSession(str(probe), so, providers=["CPUExecutionProvider"]),
        during=f"loading {model_path.name} for smoothing's statistics",
    )
    names = {i.name for i in sess.get_inputs()}
    stats = {t: ActivationStats() for t in tensors}
    for i, feed in enumerate(feeds):
        try:
            outs = sess.run(tensors, {k: v for k, v in feed.items() if k in names})
        except Exception as exc:  # onnxruntime raises several types for wrong names, dtypes and shapes
            raise ort_failure(
                exc,
                during=f"smoothing's statistics run on calibration sample {i}",
                hint="give calibration data with the model's input names, dtypes and shapes, or set smoothing: false",
            ) from None
        for t, x in zip(tensors, outs, strict=True):
            stats[t].add(x)
    del sess
    for p in probe.parent.glob(f"{probe.name}*"):
        p.unlink()
    return stats


def _consumer_positions(model: Any, tensor: str) -> set[int]:
    return {i for i, n in enumerate(model.graph.node) if tensor in n.input}


def _fold_target(model: Any, group: _Group, use_count: dict[str, int], inits: dict[str, Any]) -> list[str] | None:
    """The producer's per-channel constants that can absorb ``1 / s`` exactly, or None."""
    if group.tensor in {o.name for o in model.graph.output}:
        return None
    if _consumer_positions(model, group.tensor) != set(group.positions):
        return None
    producer = next((n for n in model.graph.node if group.tensor in n.output), None)
    if producer is None or producer.output[0] != group.tensor:
        return None
    if producer.op_type in _FOLDABLE:
        names = [
            producer.input[i] for i in _FOLDABLE[producer.op_type] if i < len(producer.input) and producer.input[i]
        ]
    elif producer.op_type == "Mul":
        consts = [i for i in producer.input if i in inits]
        if len(consts) != 1 or len(inits[consts[0]].dims) != 1:
            return None
        names = consts
    else:
        return None
    ok = all(n in inits and use_count.get(n, 0) == 1 and len(inits[n].dims) == 1 for n in names)
    return names if ok and names else None


def apply_smoothing(model: Any, group: _Group, s: np.ndarray, pending: dict[int, list[Any]]) -> str:
    """Rewrite ``model`` for ``group`` and scale ``s``; returns how 1/s was placed.

    An inserted ``Mul`` is added to ``pending`` (keyed by the index of the first consumer) rather than to
    the graph: node lists are rebuilt once, by :func:`insert_pending`, so node references stay valid.
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    use_count: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            use_count[i] = use_count.get(i, 0) + 1
    for node in group.nodes:
        idx = _weight_index(node)
        assert idx is not None
        name = node.input[idx]
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        scaled = numpy_helper.from_array((w * s[:, None].astype(np.float32)).astype(np.float32), name)
        if use_count[name] > 1:  # shared with a node outside this scale: give this one its own copy
            scaled.name = f"{name}_smoothed_{len(model.graph.initializer)}"
            model.graph.initializer.append(scaled)
            node.input[idx] = scaled.name
        else:
            inits[name].CopyFrom(scaled)
    inv = (1.0 / s).astype(np.float32)
    fold = _fold_target(model, group, use_count, inits)
    if fold is not None:
        for name in fold:
            p = numpy_helper.to_array(inits[name]).astype(np.float32)
            inits[name].CopyFrom(numpy_helper.from_array((p * inv).astype(np.float32), name))
        return "folded"
    base = (group.nodes[0].name or group.tensor).replace("/", "_").strip("_")
    scale_name, out_name = f"{base}_smooth_inv_scale", f"{group.tensor}_smoothed"
    model.graph.initializer.append(numpy_helper.from_array(inv, scale_name))
    pending.setdefault(min(group.positions), []).append(
        helper.make_node("Mul", [group.tensor, scale_name], [out_name], name=f"{base}_Smooth")
    )
    for node in group.nodes:
        for k, name in enumerate(node.input):
            if name == group.tensor:
                node.input[k] = out_name
    return "mul"


def insert_pending(model: Any, pending: dict[int, list[Any]]) -> None:
    """Put each pending node right before the node at its index (the original order otherwise)."""
    if not pending:
        return
    nodes = []
    for i, node in enumerate(model.graph.node):
        nodes.extend(pending.get(i, []))
        nodes.append(node)
    nodes = [type(n).FromString(n.SerializeToString()) for n in nodes]
    del model.graph.node[:]
    model.graph.node.extend(nodes)


# ---------------------------------------------------------------------------------------------- step


def _weight_type(cfg: Any) -> str:
    from exporters.recipes import resolve_weight_type

    return resolve_weight_type(getattr(cfg, "weight_type", "auto"))[0]


def step_smooth(src: Path, dst: Path, cfg: Any, ctx: Any) -> tuple[bool, dict[str, Any]]:
    """Migrate activation outliers into MatMul weights (see the module docstring); writes ``dst``."""

    def passthrough(reason: str) -> tuple[bool, dict[str, Any]]:
        graph.save_model(graph.load_model(src, check=False), dst)
        return False, {"skipped": reason}

    if not getattr(cfg, "smoothing", True):
        return passthrough("disabled")
    feeds = getattr(ctx, "calibration", None) or getattr(ctx, "samples", None)
    if not feeds:
        return passthrough("no calibration or sample inputs")
    feeds = list(feeds)[: getattr(cfg, "smoothing_samples", DEFAULT_SAMPLES)]
    fixed_alpha = getattr(cfg, "smoothing_alpha", None)
    alphas = (fixed_alpha,) if fixed_alpha is not None else ALPHAS
    weight_type = _weight_type(cfg)
    per_channel = bool(getattr(cfg, "per_channel", True))

    from onnx import numpy_helper

    model = graph.load_model(src, check=False)
    groups = find_groups(
        model,
        op_types=getattr(cfg, "op_types", ("MatMul", "Attention")),
        exclude=getattr(cfg, "nodes_to_exclude", ()),
    )
    if not groups:
        return passthrough("no MatMul with constant weights")
    ctx.log(f"smoothing: calibrating {len(groups)} MatMul inputs on {len(feeds)} samples…")
    stats = collect_stats(src, [g.tensor for g in groups], feeds, ctx.work)
    inits = {i.name: i for i in model.graph.initializer}
    layers: list[dict[str, Any]] = []
    pending: dict[int, list[Any]] = {}
    for g in groups:
        weights = [numpy_helper.to_array(inits[n.input[_weight_index(n) or 1]]).astype(np.float32) for n in g.nodes]
        st = stats[g.tensor]
        act = st.absmax
        wmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        error = ErrorModel(st, weights, weight_type=weight_type, per_channel=per_channel)
        base = error(np.ones_like(act))
        best_alpha, best_err, best_s = None, base, None
        for alpha in alphas:
            s = smoothing_scale(act, wmax, alpha)
            e = error(s)
            if e < best_err:
                best_alpha, best_err, best_s = alpha, e, s
        entry: dict[str, Any] = {
            "nodes": [n.name for n in g.nodes],
            "outlier_ratio": round(float(act.max() / max(np.median(act), 1e-12)), 1),
            "error_before": float(f"{base:.3g}"),
        }
        if best_s is not None and (fixed_alpha is not None or best_err < MIN_GAIN * base):
            entry.update(
                alpha=best_alpha,
                error_after=float(f"{best_err:.3g}"),
                placed=apply_smoothing(model, g, best_s, pending),
            )
        else:
            entry.update(alpha=None, error_after=entry["error_before"], placed=None)
        layers.append(entry)
    insert_pending(model, pending)
    graph.save_model(model, dst)
    smoothed = [x for x in layers if x["placed"]]
    return bool(smoothed), {
        "calibration_samples": len(feeds),
        "weight_type": weight_type,
        "smoothed": len(smoothed),
        "folded": sum(1 for x in smoothed if x["placed"] == "folded"),
        "muls_inserted": sum(1 for x in smoothed if x["placed"] == "mul"),
        "layers": layers,
    }
