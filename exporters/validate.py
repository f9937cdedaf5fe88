"""Validation: run the fp32 reference and the new model on the same samples and compare.

Records per output the max / mean absolute error and cosine similarity, plus what the task cares about:
pooled-embedding cosine, top-1 agreement (and labeled accuracy when labels are given), next-token
agreement and perplexity for causal LMs. Tolerances are the caller's: we report numbers, the recipe's
``max_accuracy_drop`` decides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import CalibrationError, RuntimeBackendError
from edgekit.tasks import TaskSpec
from exporters.ort_guard import run_session

SessionRunner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def make_runner(
    model_path: str | Path, *, threads: int | None = None, purpose: str = "validation"
) -> tuple[SessionRunner, list[str]]:
    """A CPU session over ``model_path`` whose run failures are :class:`GraphRunError`s naming the node."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    try:
        sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise RuntimeBackendError(
            f"ONNX Runtime cannot load {Path(model_path).name}: {str(exc).strip().splitlines()[0]}",
            hint="the recipe produced a graph this onnxruntime cannot run; try another recipe",
        ) from None
    names = [o.name for o in sess.get_outputs()]
    during = f"{purpose} of {Path(model_path).name}"

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return run_session(sess, None, feeds, during=during)

    return run, names


@dataclass
class _Acc:
    """Running sums so validation never holds all outputs in memory."""

    max_abs: float = 0.0
    abs_sum: float = 0.0
    count: int = 0
    cos: list[float] | None = None

    def add(self, ref: np.ndarray, new: np.ndarray) -> None:
        r = ref.astype(np.float64).ravel()
        n = new.astype(np.float64).ravel()
        d = np.abs(r - n)
        if d.size:
            self.max_abs = max(self.max_abs, float(d.max()))
        self.abs_sum += float(d.sum())
        self.count += d.size
        self.cos = (self.cos or []) + [_cosine(r, n)]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


# ------------------------------------------------------------------------------- task-specific metrics

TaskMetric = Callable[
    [list[dict[str, np.ndarray]], list[list[np.ndarray]], list[list[np.ndarray]], Any], dict[str, Any]
]


def _pool(hidden: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if hidden.ndim == 2:
        v = hidden
    else:
        m = np.ones(hidden.shape[:2]) if mask is None else mask.astype(np.float64)
        v = (hidden * m[..., None]).sum(1) / np.maximum(m.sum(1, keepdims=True), 1e-9)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def embedding_metrics(feeds, refs, news, labels) -> dict[str, Any]:
    cos = []
    for f, r, n in zip(feeds, refs, news, strict=True):
        mask = f.get("attention_mask")
        cos.extend(np.sum(_pool(r[0], mask) * _pool(n[0], mask), axis=-1).tolist())
    return {"embedding_cosine_mean": float(np.mean(cos)), "embedding_cosine_min": float(np.min(cos))}


def classification_metrics(feeds, refs, news, labels) -> dict[str, Any]:
    r_top = np.concatenate([np.argmax(r[0].reshape(r[0].shape[0], -1), axis=-1) for r in refs])
    n_top = np.concatenate([np.argmax(n[0].reshape(n[0].shape[0], -1), axis=-1) for n in news])
    out: dict[str, Any] = {"top1_agreement": float(np.mean(r_top == n_top))}
    if labels is not None:
        y = np.asarray(labels).reshape(-1)[: r_top.size]
        out["top1_accuracy_reference"] = float(np.mean(r_top == y))
        out["top1_accuracy"] = float(np.mean(n_top == y))
    return out


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def generation_metrics(feeds, refs, news, labels) -> dict[str, Any]:
    agree, total, nll_r, nll_n, n_tok = 0, 0, 0.0, 0.0, 0
    for f, r, n in zip(feeds, refs, news, strict=True):
        lr, ln = r[0][0].astype(np.float64), n[0][0].astype(np.float64)
        agree += int(np.sum(lr.argmax(-1) == ln.argmax(-1)))
        total += lr.shape[0]
        ids = f["input_ids"][0]
        if ids.size > 1:
            tgt = ids[1:]
            nll_r -= float(_log_softmax(lr[:-1])[np.arange(tgt.size), tgt].sum())
            nll_n -= float(_log_softmax(ln[:-1])[np.arange(tgt.size), tgt].sum())
            n_tok += tgt.size
    out: dict[str, Any] = {"next_token_top1_agreement": agree / max(total, 1)}
    if n_tok:
        out["perplexity_reference"] = float(np.exp(nll_r / n_tok))
        out["perplexity"] = float(np.exp(nll_n / n_tok))
    return out


def tensor_metrics(feeds, refs, news, labels) -> dict[str, Any]:
    cos = [
        _cosine(r[0].ravel().astype(np.float64), n[0].ravel().astype(np.float64))
        for r, n in zip(refs, news, strict=True)
    ]
    out: dict[str, Any] = {"output_cosine_mean": float(np.mean(cos)), "output_cosine_min": float(np.min(cos))}
    if labels is not None:
        out.update(classification_metrics(feeds, refs, news, labels))
    return out


def accuracy_drop(task: TaskSpec, metrics: dict[str, Any]) -> float:
    """The drop ``--max-accuracy-drop`` bounds: labeled accuracy lost when labels exist, else 1 - agreement."""
    if "top1_accuracy" in metrics:
        return max(0.0, metrics["top1_accuracy_reference"] - metrics["top1_accuracy"])
    return max(0.0, 1.0 - float(metrics[task.primary_metric]))


_LABEL_HINT = "a 'labels' array in the validation .npz: one class id (or label name) per sample"


def check_labels(labels: Any, *, predictions: int, classes: int, label_names: list[str] | None) -> np.ndarray:
    """Labels as int64 class ids, one per prediction; refuse a wrong count, type or range.

    String labels map through the package's label names: compared as strings against class ids they
    matched nothing, and the package recorded a labeled accuracy of 0.0.
    """
    y = np.asarray(labels).reshape(-1)
    if y.size != predictions:
        raise CalibrationError(
            f"the validation data has {y.size} labels for {predictions} predictions", hint=_LABEL_HINT
        )
    if y.dtype.kind in "US":
        names = [str(n) for n in label_names or []]
        if not names:
            raise CalibrationError(
                "the validation labels are strings, but the model has no label names to map them through",
                hint="give integer class ids, or export with labels (the package's label list)",
            )
        index = {n: i for i, n in enumerate(names)}
        texts = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in y.tolist()]
        unknown = sorted({t for t in texts if t not in index})
        if unknown:
            raise CalibrationError(
                f"validation labels {unknown[:5]} are not label names of the model",
                hint=f"the model's labels are: {', '.join(names[:20])}",
            )
        return np.asarray([index[t] for t in texts], dtype=np.int64)
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise CalibrationError(f"validation labels must be integer class ids, got dtype {y.dtype}", hint=_LABEL_HINT)
    if y.size and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise CalibrationError(
            f"validation labels must be class ids in [0, {classes}), got values in [{int(y.min())}, {int(y.max())}]",
            hint=_LABEL_HINT,
        )
    return y.astype(np.int64)


def _predictions(refs: list[list[np.ndarray]]) -> tuple[int, int]:
    """How many top-1 predictions the first outputs hold, and over how many classes."""
    shapes = [r[0].reshape(r[0].shape[0], -1).shape for r in refs]
    return sum(s[0] for s in shapes), shapes[0][1] if shapes else 0


def validate(
    task: TaskSpec,
    reference: SessionRunner,
    candidate: SessionRunner,
    output_names: list[str],
    samples: Iterable[dict[str, np.ndarray]],
    *,
    labels: np.ndarray | None = None,
    label_names: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    accs = {name: _Acc() for name in output_names}
    feeds_l, refs, news = [], [], []
    for i, feeds in enumerate(samples):
        r, n = reference(feeds), candidate(feeds)
        for name, a, b in zip(output_names, r, n, strict=True):
            accs[name].add(a, b)
        # Only the first output feeds the task metrics; KV-cache outputs would only cost memory.
        feeds_l.append(feeds)
        refs.append(r[:1])
        news.append(n[:1])
        if progress:
            progress(i + 1)
    if labels is not None and refs:
        predictions, classes = _predictions(refs)
        labels = check_labels(labels, predictions=predictions, classes=classes, label_names=label_names)
    metric_fn: TaskMetric = task.metric_fn()  # the task record names its metrics (edgekit.tasks)
    task_metrics = metric_fn(feeds_l, refs, news, labels)
    task_metrics["accuracy_drop"] = accuracy_drop(task, task_metrics)
    per_output = {
        name: {
            "max_abs_error": a.max_abs,
            "mean_abs_error": a.abs_sum / max(a.count, 1),
            "cosine_mean": float(np.mean(a.cos)) if a.cos else None,
            "cosine_min": float(np.min(a.cos)) if a.cos else None,
        }
        for name, a in accs.items()
    }
    return {
        "samples": len(feeds_l),
        "primary_metric": task.primary_metric,
        "metrics": task_metrics,
        "outputs": per_output,
    }
