"""``edgekit inspect``: what is inside a package or an ONNX file."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgekit.errors import CorruptModelError, SourceNotFoundError, UsageError
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
            # the thread policy and speed-up over fp32 measured at export (edgekit.session_policy)
            "runtime": dataclasses.asdict(manifest.runtime) if manifest.runtime else None,
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
        import onnx  # noqa: F401  (edgekit.onnx_graph reads graphs with it)
    except ImportError:  # a device install: onnxruntime and a standard-library scan of the file
        return _core_graph_info(model_path)
    from edgekit import onnx_graph as graph

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


def _core_graph_info(model_path: Path) -> dict[str, Any]:
    """What the core install can tell without ``onnx``: IO from onnxruntime, ops from :mod:`edgekit.onnx_scan`."""
    import onnxruntime as ort

    from edgekit.onnx_scan import scan_model

    if not model_path.is_file():
        raise SourceNotFoundError(f"ONNX file not found: {model_path}", hint="check the path")
    scan = scan_model(model_path)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / RuntimeError kinds
        raise CorruptModelError(
            f"{model_path} does not load in onnxruntime ({type(exc).__name__}: {str(exc).strip()[:300]})",
            hint="the file is corrupt or needs a newer onnxruntime: export it again",
        ) from None

    def spec(value: Any) -> dict[str, Any]:
        dtype = value.type.removeprefix("tensor(").removesuffix(")")
        return {"name": value.name, "dtype": _ORT_DTYPES.get(dtype, dtype), "shape": list(value.shape)}

    return {
        "inputs": [spec(v) for v in session.get_inputs()],
        "outputs": [spec(v) for v in session.get_outputs()],
        **scan,
        "model_bytes": model_path.stat().st_size,
        "note": "weights by dtype need the onnx package: pip install 'edgekit[profile]'",
    }


# onnxruntime's element type names -> the numpy names the manifest uses.
_ORT_DTYPES = {"float": "float32", "double": "float64", "float16": "float16", "bfloat16": "bfloat16"}


def _plain(value: Any) -> str:
    """An option value as a user would type it (``true``, ``a,b``, ``-``), not as a Python repr."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(_plain(v) for v in value) or "[]"
    return str(value)


def _shape(dims: list[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _fp32_setup(threads: Any) -> str:
    """What the package was compared against, when the manifest says (older manifests: the package's threads)."""
    return f" vs fp32 at {threads}" if threads else ""


def _runtime_lines(runtime: dict[str, Any]) -> list[str]:
    lines = []
    speed = runtime.get("speedup")
    if speed:
        lines.append(
            f"  speed-up         {speed['speedup']:.2f}x fp32 ({speed['verdict']}; {speed['workload']},"
            f" {speed['threads']} thread(s){_fp32_setup(speed.get('fp32_threads'))}, {speed['cpu']})"
        )
        lines += [
            f"    on {d['device']}: {d['speedup']:.2f}x fp32, estimated ("
            + (d["band"] if d["verdict"] == "not-validated" else f"{d['verdict']}; {d['band']}")
            + ")"
            for d in speed.get("devices") or []
        ]
    policy = runtime.get("session_policy")
    if policy:
        lines.append(f"  threads          {policy['intra_op_threads']} ({policy['rule']}: {policy['reason']})")
    return lines


def render_inspect(info: dict[str, Any]) -> str:
    lines = [f"{info['kind']}: {info['path']}"]
    for key in ("name", "task", "opset", "nodes", "parameter_count", "model_bytes", "package_bytes"):
        if info.get(key) is not None:
            lines.append(f"  {key:<16} {info[key]:,}" if isinstance(info[key], int) else f"  {key:<16} {info[key]}")
    if info.get("recipe"):
        r = info["recipe"]
        options = ", ".join(f"{k}={_plain(v)}" for k, v in r["options"].items())
        lines.append(f"  recipe           {r['name']}" + (f" ({options})" if options else ""))
        if r["float_nodes"]:
            lines.append(f"  kept in float    {', '.join(r['float_nodes'])}")
    lines.append("  inputs:")
    lines += [f"    {t['name']:<28} {t['dtype']:<8} {_shape(t['shape'])}" for t in info["inputs"]]
    lines.append("  outputs:")
    lines += [f"    {t['name']:<28} {t['dtype']:<8} {_shape(t['shape'])}" for t in info["outputs"]]
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
    lines += _runtime_lines(info.get("runtime") or {})
    if info.get("note"):
        lines.append(f"  note             {info['note']}")
    return "\n".join(lines)
