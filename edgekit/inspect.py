"""``edgekit inspect``: what is inside a package or an ONNX file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import SourceNotFoundError, UsageError
from edgekit.manifest import MANIFEST_NAME, MODEL_NAME
from edgekit.package import read_manifest


def inspect_path(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise SourceNotFoundError(f"nothing at {p}", hint="pass a package directory or an .onnx file")
    if p.is_dir():
        manifest = read_manifest(p)
        info: dict[str, Any] = {
            "path": str(p),
            "kind": "package",
            "name": manifest.name,
            "task": manifest.task,
            "inputs": [t.__dict__ for t in manifest.inputs],
            "outputs": [t.__dict__ for t in manifest.outputs],
            "recipe": {
                "name": manifest.recipe.name,
                "options": manifest.recipe.options,
                "float_nodes": manifest.recipe.float_nodes,
            },
            "parameter_count": manifest.weights.parameter_count,
            "weight_bytes_by_dtype": manifest.weights.bytes_by_dtype,
            "package_bytes": sum(f.bytes for f in manifest.files),
            "accuracy": (manifest.accuracy or {}).get("metrics"),
            "generation": manifest.generation.__dict__ if manifest.generation else None,
            "labels": manifest.labels,
            "source": manifest.source.__dict__,
        }
        model_path = p / MODEL_NAME
    elif p.suffix == ".onnx":
        info = {"path": str(p), "kind": "onnx", "name": p.stem}
        model_path = p
    else:
        raise UsageError(f"{p} is neither a package directory (with {MANIFEST_NAME}) nor an .onnx file")
    info.update(_graph_info(model_path))
    return info


def _graph_info(model_path: Path) -> dict[str, Any]:
    try:
        from exporters import graph
    except ImportError:  # device install: the manifest is all we can show
        return {"ops": None, "note": "install edgekit[export] for the op histogram"}
    model = graph.load_model(model_path)
    inputs, outputs = graph.io_specs(model)
    weights = graph.weight_stats(model)
    return {
        "inputs": [t.__dict__ for t in inputs],
        "outputs": [t.__dict__ for t in outputs],
        "opset": graph.opset(model),
        "nodes": len(model.graph.node),
        "ops": graph.op_histogram(model),
        "parameter_count": weights.parameter_count,
        "weight_bytes_by_dtype": weights.bytes_by_dtype,
        "model_bytes": model_path.stat().st_size,
    }


def render_inspect(info: dict[str, Any]) -> str:
    lines = [f"{info['kind']}: {info['path']}"]
    for key in ("name", "task", "opset", "nodes", "parameter_count", "model_bytes", "package_bytes"):
        if info.get(key) is not None:
            lines.append(f"  {key:<16} {info[key]:,}" if isinstance(info[key], int) else f"  {key:<16} {info[key]}")
    if info.get("recipe"):
        r = info["recipe"]
        lines.append(f"  recipe           {r['name']} {r['options']}")
        if r["float_nodes"]:
            lines.append(f"  kept in float    {', '.join(r['float_nodes'])}")
    lines.append("  inputs:")
    lines += [f"    {t['name']:<28} {t['dtype']:<8} {t['shape']}" for t in info["inputs"]]
    lines.append("  outputs:")
    lines += [f"    {t['name']:<28} {t['dtype']:<8} {t['shape']}" for t in info["outputs"]]
    if info.get("weight_bytes_by_dtype"):
        total = sum(info["weight_bytes_by_dtype"].values()) or 1
        mix = ", ".join(
            f"{k} {v / 1e6:.2f} MB ({100 * v / total:.0f}%)" for k, v in info["weight_bytes_by_dtype"].items()
        )
        lines.append(f"  weights          {mix}")
    if info.get("ops"):
        top = list(info["ops"].items())[:12]
        lines.append("  ops              " + ", ".join(f"{k}×{v}" for k, v in top))
    if info.get("accuracy"):
        acc = ", ".join(f"{k} {v:.4f}" for k, v in info["accuracy"].items() if isinstance(v, (int, float)))
        lines.append(f"  accuracy         {acc}")
    return "\n".join(lines)
