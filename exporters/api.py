"""The export pipeline: convert -> recipe steps -> validate (-> keep sensitive nodes in float) -> package.

Everything is built in a work directory and the package directory appears only at the very end, by a
rename, so a failure or an interrupt never leaves a half-written package.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit import limits
from edgekit.config import from_dict
from edgekit.errors import AccuracyError, ConfigError, edgekit_boundary
from edgekit.fsutil import atomic_dir, check_output, cleanup_on_signals
from edgekit.manifest import MANIFEST_NAME, MODEL_NAME, Manifest, RecipeInfo
from edgekit.package import open_package, read_manifest
from edgekit.progress import QUIET, Progress
from edgekit.session_policy import ON_DEVICE_SLOWER, ON_SLOWER, DeviceSpeedupEstimator
from edgekit.tasks import TASKS, TaskSpec
from exporters import graph
from exporters.calibration import load_dataset
from exporters.package_writer import write_package
from exporters.recipes import RECIPES, Recipe, RecipeContext, resolved_options
from exporters.sensitivity import search_float_nodes
from exporters.sources import (
    SOURCES,
    ConvertedModel,
    ConvertOptions,
    SourceKind,
    TorchSource,
    convert_source,
)
from exporters.speed import runtime_checks
from exporters.validate import make_runner, validate
from runtimes.preprocess import ImageSettings
from runtimes.samples import SampleContext, make_samples


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    package_dir: Path
    manifest: Manifest
    steps: list[dict[str, Any]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        fp32_bytes = self.manifest.accuracy.get("reference_model_bytes") if self.manifest.accuracy else None
        return {
            "package_dir": str(self.package_dir),
            "task": self.manifest.task,
            "recipe": self.manifest.recipe.name,
            "model_bytes": next((f.bytes for f in self.manifest.files if f.path == MODEL_NAME), None),
            "reference_model_bytes": fp32_bytes,
            "accuracy": self.manifest.accuracy,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "manifest": self.manifest.to_dict(),
        }


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    task: str
    recipe: str = "fp32"
    recipe_options: dict[str, Any] = field(default_factory=dict)
    calibration: str | Path | None = None
    validation_data: str | Path | None = None
    validation_samples: int = 64
    max_accuracy_drop: float | None = None
    with_kv_cache: bool = True
    ort_format: bool = False
    force: bool = False
    name: str | None = None
    labels: list[str] | None = None
    image_settings: ImageSettings | None = None
    opset: int | None = None
    # A quantized package slower than its fp32 graph on this host: "refuse" (SlowerThanFp32Error), "warn"
    # (keep it, record and warn) or "off" (do not compare). See edgekit.session_policy.
    on_slower: str = "refuse"
    # A target device (export's device_speedup estimator) estimated slower than fp32 beyond its error band:
    # "warn" (keep it, record and warn) or "refuse" (DeviceSlowerThanFp32Error). See exporters.device_speedup.
    on_device_slower: str = "warn"

    def __post_init__(self) -> None:
        if self.on_slower not in ON_SLOWER:
            raise ConfigError(
                f"on_slower must be one of {', '.join(ON_SLOWER)}, got {self.on_slower!r}",
                hint="'refuse' (default) refuses a quantized package slower than fp32; 'warn' keeps it",
                param="on_slower",
            )
        if self.on_device_slower not in ON_DEVICE_SLOWER:
            raise ConfigError(
                f"on_device_slower must be one of {', '.join(ON_DEVICE_SLOWER)}, got {self.on_device_slower!r}",
                hint="'warn' (default) keeps a package a device's estimate says is slower; 'refuse' refuses it",
                param="on_device_slower",
            )
        if self.on_device_slower == "refuse" and self.on_slower == "off":
            raise ConfigError(
                "on_device_slower='refuse' needs the speed-up comparison, which on_slower='off' skips",
                hint="leave on_slower at 'refuse' or 'warn' (CLI: drop --require-device-speedup, or keep both checks)",
                param="on_device_slower",
            )
        if self.max_accuracy_drop is not None and not (0 <= self.max_accuracy_drop < 1):
            raise ConfigError(
                f"max_accuracy_drop must be in [0, 1), got {self.max_accuracy_drop}",
                hint="it is a fraction: 0.01 allows a 1-point drop in the task's primary metric",
                param="max_accuracy_drop",
            )
        limits.check("validation_samples", self.validation_samples)  # the same bound as the CLI's


# ------------------------------------------------------------------------------- package as a source


def _is_package(source: Any) -> bool:
    return isinstance(source, (str, Path)) and (Path(source) / MANIFEST_NAME).is_file()


def _convert_package(source: Any, work: Path, options: ConvertOptions) -> ConvertedModel:
    # The source package is verified first: quantizing a changed model would re-hash it into a new package
    # that then passes every check as if it were the exporter's own.
    pkg = open_package(source, verify=True)
    root, manifest = pkg.root, pkg.manifest
    dst = work / "fp32.onnx"
    graph.save_model(graph.load_model(pkg.model_path), dst)
    model_type = _model_type(pkg.file("config.json") if "config.json" in pkg.verified else None)
    skip = {MODEL_NAME, MANIFEST_NAME, "model.ort"}
    # Only the verified files travel on (not whatever else sits in the folder), at the top of the package.
    assets = [
        root / entry.path
        for entry in manifest.files
        if "/" not in entry.path
        and entry.path not in skip
        and not entry.path.startswith((f"{MODEL_NAME}.", "required_op"))
    ]
    return ConvertedModel(
        onnx_path=dst,
        source=manifest.source,
        assets=assets,
        preprocessing=manifest.preprocessing,
        labels=manifest.labels,
        generation=manifest.generation,
        model_type=model_type,
    )


def _model_type(config_path: Path | None) -> str | None:
    """The HF ``model_type`` from a package's config.json; a config that is not a JSON object names none."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path else None
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    return model_type if isinstance(model_type, str) else None


SOURCES.add("package", SourceKind("package", _is_package, _convert_package))


# ---------------------------------------------------------------------------------------------- export


@edgekit_boundary
def export(
    source: Any,
    *,
    output: str | Path,
    task: str,
    recipe: str = "fp32",
    progress: Progress | bool = True,
    device_speedup: DeviceSpeedupEstimator | None = None,
    **kwargs: Any,
) -> ExportResult:
    """Export ``source`` (HF dir, ``.onnx``, package dir or :class:`TorchSource`) to a package at ``output``.

    Keyword options are the fields of :class:`ExportOptions` (``recipe_options``, ``calibration``,
    ``max_accuracy_drop``, ``with_kv_cache``, ``ort_format``, ``force``, ...). ``device_speedup``: the target
    devices' estimator (``edgekit.export(devices=[...])`` passes the profiler's), see :mod:`.device_speedup`.
    """
    t0 = time.perf_counter()
    opts = ExportOptions(task=task, recipe=recipe, **kwargs)
    _check_devices(opts, device_speedup)
    prog = progress if isinstance(progress, Progress) else (Progress() if progress else QUIET)
    task_spec: TaskSpec = TASKS.get(opts.task)
    recipe_spec: Recipe = RECIPES.get(opts.recipe)
    config = from_dict(recipe_spec.config_cls, opts.recipe_options, what=f"recipe {opts.recipe}")
    out = check_output(output, force=opts.force)
    # SIGTERM / SIGHUP unwind like Ctrl-C, so the work dir and a .partial beside the output are removed.
    with cleanup_on_signals(), tempfile.TemporaryDirectory(prefix="edgekit-export-") as tmp:
        work = Path(tmp)
        prog.log(f"converting {_describe(source)} for {task_spec.name}…")
        converted, inputs, asset_dir = _convert(source, work, opts, task_spec)
        calibration, samples, labels, generated_calibration = _export_samples(
            opts, task_spec, inputs, converted, asset_dir
        )
        rctx = RecipeContext(
            work=work,
            task_kind=task_spec.kind,
            model_type=converted.model_type,
            calibration=calibration,
            samples=generated_calibration,
            log=prog.log,
        )
        model_path, steps = recipe_spec.run(converted.onnx_path, config, rctx)
        evaluate = _evaluator(task_spec, converted, samples, labels, prog)
        model_path, config, report, float_nodes, sensitivity = _meet_accuracy(
            opts, task_spec, recipe_spec, rctx, model_path, config, evaluate, samples
        )
        _add_report_context(report, converted.onnx_path, opts.max_accuracy_drop, sensitivity)
        runtime = runtime_checks(
            kind=task_spec.kind,
            generation=converted.generation,
            samples=samples,
            model_path=model_path,
            fp32_path=_pre_quant_path(work, recipe_spec) if recipe_spec.speed_checked else None,
            on_slower=opts.on_slower,
            recipe=recipe_spec.name,
            log=prog.log,
            device_estimator=device_speedup,
            on_device_slower=opts.on_device_slower,
        )
        recipe_info = RecipeInfo(
            name=recipe_spec.name,
            options=resolved_options(config),
            float_nodes=float_nodes,
            steps=[s.to_dict() for s in steps],
        )
        name = opts.name or _default_name(source)
        with atomic_dir(out, force=opts.force) as dest:
            prog.log(f"writing package {out}")
            manifest = write_package(
                dest,
                model_path=model_path,
                converted=converted,
                task=task_spec.name,
                name=name,
                recipe=recipe_info,
                accuracy=report,
                ort_format=opts.ort_format,
                runtime=runtime,
            )
    return ExportResult(package_dir=out, manifest=manifest, steps=recipe_info.steps, seconds=time.perf_counter() - t0)


def _add_report_context(report: dict[str, Any], reference: Path, max_drop: Any, sensitivity: Any) -> None:
    """What the accuracy report is judged against: the reference graph's size, the allowed drop, the most
    sensitive nodes when the search ran."""
    report["reference_model_bytes"] = reference.stat().st_size
    report["max_accuracy_drop"] = max_drop
    if sensitivity is not None:
        report["most_sensitive_nodes"] = sensitivity


def _check_devices(opts: ExportOptions, estimator: DeviceSpeedupEstimator | None) -> None:
    if opts.on_device_slower == "refuse" and estimator is None:
        raise ConfigError(
            "on_device_slower='refuse' needs target devices to estimate, and none were given",
            hint="name them: edgekit export --device NAME, or edgekit.export(..., devices=['raspberry-pi-5'])",
            param="on_device_slower",
        )


def _evaluator(
    task_spec: TaskSpec, converted: Any, samples: Any, labels: Any, prog: Progress
) -> Callable[[Path], dict[str, Any]]:
    """Validation of a candidate model against the converted float reference (loaded now, once)."""
    ref_runner, out_names = make_runner(converted.onnx_path)

    def evaluate(path: Path) -> dict[str, Any]:
        runner, _ = make_runner(path)
        with prog.bar(len(samples), "validating") as update:
            return validate(
                task_spec,
                ref_runner,
                runner,
                out_names,
                samples,
                labels=labels,
                label_names=converted.labels,
                progress=update,
            )

    return evaluate


def _convert(source: Any, work: Path, opts: ExportOptions, task_spec: TaskSpec) -> tuple[Any, list[Any], Path]:
    """The source as ONNX in ``work``, its graph inputs and the directory its assets (tokenizer, ...) are copied to."""
    converted = convert_source(
        source,
        work,
        ConvertOptions(
            task=task_spec,
            with_kv_cache=opts.with_kv_cache,
            opset=opts.opset,
            labels=opts.labels,
            image_settings=opts.image_settings,
        ),
    )
    inputs, _ = graph.io_specs(graph.load_model(converted.onnx_path, load_weights=False, check=False))
    asset_dir = work / "assets"
    asset_dir.mkdir()
    for a in converted.assets:
        shutil.copy2(a, asset_dir / a.name)
    return converted, inputs, asset_dir


def _export_samples(
    opts: ExportOptions, task_spec: TaskSpec, inputs: list[Any], converted: Any, asset_dir: Path
) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]], Any, list[dict[str, Any]] | None]:
    """(user calibration or None, validation samples, their labels or None, generated calibration or None)."""
    sctx = SampleContext(
        inputs=inputs, preprocessing=converted.preprocessing, asset_dir=asset_dir, generation=converted.generation
    )
    calibration = load_dataset(opts.calibration, sctx).samples if opts.calibration else None
    if opts.validation_data:
        vdata = load_dataset(opts.validation_data, sctx, limit=opts.validation_samples)
        samples, labels = vdata.samples, vdata.labels
    elif calibration:
        samples, labels = calibration[: opts.validation_samples], None
    else:
        samples = make_samples(sctx, kind=task_spec.kind, modality=task_spec.modality, n=opts.validation_samples)
        labels = None

    # Statistics-driven steps (smoothing) calibrate on generated samples disjoint from validation's.
    calib_ctx = SampleContext(
        inputs=inputs,
        preprocessing=converted.preprocessing,
        asset_dir=asset_dir,
        generation=converted.generation,
        seed=1,
        offset=1000,
    )
    generated_calibration = (
        None if calibration else make_samples(calib_ctx, kind=task_spec.kind, modality=task_spec.modality, n=48)
    )
    return calibration, samples, labels, generated_calibration


def _meet_accuracy(
    opts: ExportOptions,
    task_spec: TaskSpec,
    recipe_spec: Recipe,
    rctx: RecipeContext,
    model_path: Path,
    config: Any,
    evaluate: Callable[[Path], dict[str, Any]],
    samples: list[dict[str, Any]],
) -> tuple[Path, Any, dict[str, Any], list[str], list[dict[str, Any]] | None]:
    """Validate the recipe's model; over ``max_accuracy_drop``, keep sensitive nodes in float or refuse.

    Returns (model, config, accuracy report, nodes kept in float, the most sensitive nodes or None)."""
    report = evaluate(model_path)
    float_nodes: list[str] = []
    sensitivity: list[dict[str, Any]] | None = None
    drop = report["metrics"]["accuracy_drop"]
    if opts.max_accuracy_drop is not None and drop > opts.max_accuracy_drop:
        if not recipe_spec.supports_float_fallback:
            raise AccuracyError(_breach(opts, task_spec, drop), hint="try a wider recipe or raise --max-accuracy-drop")
        rctx.log(f"accuracy drop {drop:.4f} > {opts.max_accuracy_drop}: searching for layers to keep in float")
        model_path, config, report, scores = _float_fallback(
            opts, recipe_spec, rctx, model_path, config, evaluate, samples
        )
        float_nodes = list(config.nodes_to_exclude)
        sensitivity = [s.to_dict() for s in scores[:20]]
    drop = report["metrics"]["accuracy_drop"]
    if opts.max_accuracy_drop is not None and drop > opts.max_accuracy_drop:
        raise AccuracyError(_breach(opts, task_spec, drop), hint="try a wider recipe or raise --max-accuracy-drop")
    return model_path, config, report, float_nodes, sensitivity


def _float_fallback(
    opts: ExportOptions,
    recipe_spec: Recipe,
    rctx: RecipeContext,
    model_path: Path,
    config: Any,
    evaluate: Callable[[Path], dict[str, Any]],
    samples: list[dict[str, Any]],
) -> tuple[Path, Any, dict[str, Any], list[Any]]:
    """Re-run the recipe's last (quantizing) step keeping the most sensitive nodes in float until the drop fits."""
    work = rctx.work
    pre_quant = _pre_quant_path(work, recipe_spec)
    _, last_step = recipe_spec.steps[-1]

    def requantize(cfg: Any) -> Path:
        dst = work / f"search.{len(list(work.glob('search.*')))}.onnx"
        last_step(pre_quant, dst, cfg, rctx)
        return dst

    return search_float_nodes(
        float_model=pre_quant,
        quant_model=model_path,
        config=config,
        quantize=requantize,
        evaluate=evaluate,
        max_accuracy_drop=opts.max_accuracy_drop,
        samples=samples,
        work=work,
        log=rctx.log,
    )


def _pre_quant_path(work: Path, recipe: Recipe) -> Path:
    """The output of the step before quantization (or the fp32 source when quantization is the only step)."""
    i = len(recipe.steps) - 2
    if i < 0:
        return work / "fp32.onnx"
    name = recipe.steps[i][0]
    return work / f"{recipe.name}.{i}.{name}.onnx"


def _breach(opts: ExportOptions, task: TaskSpec, drop: float) -> str:
    return (
        f"the {opts.recipe} model loses {drop:.4f} of {task.primary_metric} against fp32,"
        f" more than --max-accuracy-drop {opts.max_accuracy_drop}; no package was written"
    )


def _describe(source: Any) -> str:
    return source.path if isinstance(source, TorchSource) else str(source)


def _default_name(source: Any) -> str:
    if isinstance(source, TorchSource):
        return source.path.rsplit(":", 1)[-1]
    p = Path(source).resolve()
    if p.suffix == ".onnx":
        return p.stem
    # Model directories are often called "model" inside a project folder; its parent names it better.
    return p.parent.name if p.name in ("model", "onnx", "hf") else p.name


@edgekit_boundary
def export_torch(
    module: Any,
    example_inputs: Any,
    *,
    output: str | Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    task: str = "tensor",
    recipe: str = "fp32",
    **kwargs: Any,
) -> ExportResult:
    """Export a PyTorch ``nn.Module`` (traced with ``example_inputs``) to a package."""
    example = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    src = TorchSource(
        module=module,
        example_inputs=example,
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_axes=dynamic_axes,
        path=f"{type(module).__module__}.{type(module).__name__}",
    )
    return export(src, output=output, task=task, recipe=recipe, **kwargs)


@edgekit_boundary
def quantize(
    model: str | Path, *, output: str | Path, recipe: str, task: str | None = None, **kwargs: Any
) -> ExportResult:
    """Quantize an ``.onnx`` file or an fp32 package with a recipe; a package keeps its task and assets."""
    if task is None:
        task = read_manifest(model).task if _is_package(model) else "tensor"
    return export(model, output=output, task=task, recipe=recipe, **kwargs)
