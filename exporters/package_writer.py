"""Assembling a model package in a (temp) directory: graph, assets, optional ORT format, manifest last."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from edgekit.errors import UnsupportedModelError
from edgekit.hashing import sha256_file
from edgekit.manifest import (
    MANIFEST_NAME,
    MODEL_NAME,
    FileEntry,
    GenerationSpec,
    Manifest,
    RecipeInfo,
    RuntimeInfo,
    SourceInfo,
)
from exporters import graph
from exporters.sources import ConvertedModel, copy_assets
from runtimes.decoder_feeds import SEQLENS_K, TOTAL_SEQUENCE_LENGTH


def write_ort_format(model_path: Path, dest: Path) -> list[str]:
    """ORT-format model + required-operators config, for ONNX Runtime's reduced mobile builds."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    staging = dest / ".ort_staging"
    staging.mkdir()
    shutil.copy2(model_path, staging / MODEL_NAME)
    try:
        # The converter prints progress to stdout, which belongs to --json.
        with contextlib.redirect_stdout(sys.stderr):
            convert_onnx_models_to_ort(staging, output_dir=staging, optimization_styles=[OptimizationStyle.Fixed])
    except Exception as exc:
        raise UnsupportedModelError(
            f"converting to the ORT format failed: {str(exc).strip().splitlines()[0]}",
            hint="drop --format ort; the .onnx package still runs everywhere",
        ) from None
    names = []
    for produced in staging.iterdir():
        if produced.suffix == ".ort" or produced.name.startswith("required_operators"):
            target = "model.ort" if produced.suffix == ".ort" else produced.name
            shutil.move(str(produced), dest / target)
            names.append(target)
    shutil.rmtree(staging)
    return sorted(names)


def write_package(
    dest: Path,
    *,
    model_path: Path,
    converted: ConvertedModel,
    task: str,
    name: str,
    recipe: RecipeInfo,
    accuracy: dict[str, Any] | None,
    ort_format: bool = False,
    runtime: RuntimeInfo | None = None,
) -> Manifest:
    model = graph.load_model(model_path, check=False)
    graph.save_model(model, dest / MODEL_NAME)
    copy_assets(converted.assets, dest)
    if ort_format:
        write_ort_format(dest / MODEL_NAME, dest)
    inputs, outputs = graph.io_specs(model)
    files = [
        FileEntry(path=p.relative_to(dest).as_posix(), bytes=p.stat().st_size, sha256=sha256_file(p))
        for p in sorted(dest.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    ]
    manifest = Manifest(
        task=task,
        name=name,
        recipe=recipe,
        inputs=inputs,
        outputs=outputs,
        source=portable_source(converted.source),
        files=files,
        weights=graph.weight_stats(model),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        preprocessing=converted.preprocessing,
        labels=converted.labels,
        generation=_generation(converted.generation, model),
        accuracy=accuracy,
        runtime=runtime,
    )
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2, default=_json_default) + "\n")
    return manifest


def portable_source(source: SourceInfo) -> SourceInfo:
    """The source as the manifest records it: its name (folder or file, ``file.py:factory``), never the export
    machine's absolute path, which says nothing on a device and leaks the exporter's directory layout."""
    name = PurePosixPath(source.path.replace("\\", "/")).name or source.path
    return dataclasses.replace(source, path=name)


def _generation(spec: GenerationSpec | None, model: Any) -> GenerationSpec | None:
    """The generation spec, with what the final graph allows: GroupQueryAttention updates its KV in place, and
    takes the lengths in place of the mask where the fusion made them inputs."""
    if spec is None or not spec.with_kv_cache:
        return spec
    shared = any(n.op_type == "GroupQueryAttention" for n in model.graph.node)
    names = {i.name for i in model.graph.input}
    return dataclasses.replace(
        spec,
        shared_kv_buffer=shared,
        attention_mask_name=spec.attention_mask_name if spec.attention_mask_name in names else None,
        seqlens_k_name=SEQLENS_K if SEQLENS_K in names else None,
        total_sequence_length_name=TOTAL_SEQUENCE_LENGTH if TOTAL_SEQUENCE_LENGTH in names else None,
    )


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
