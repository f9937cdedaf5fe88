"""``edgekit export`` and ``edgekit quantize``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit.cli import COMMANDS, Command, parse_key_values
from edgekit.progress import Progress
from edgekit.recipe_names import recipe_names
from edgekit.tasks import TASKS

EXPORT_EXAMPLES = """examples:
  edgekit export out/sources/all-MiniLM-L6-v2 --recipe int8-dynamic -o out/minilm-int8 --max-accuracy-drop 0.02
  edgekit export out/sources/tiny-llama --recipe int4 --option block_size=32 -o out/llm-int4
  edgekit export out/sources/all-MiniLM-L6-v2 --recipe int8-dynamic -o out/minilm-int8 --device raspberry-pi-5
  edgekit export out/cnn.onnx --recipe int8-static --calibration out/calib.npz -o out/cnn-qdq
  edgekit export out/digits_cnn.py:make_model --weights out/cnn.pt --input-shape x=1x1x8x8 -o out/cnn-fp32

--task auto (the default) reads config.json's architectures: *ForCausalLM -> text-generation,
*ForSequenceClassification -> text-classification (audio-classification over an audio feature extractor),
*ForImageClassification -> image-classification, *ForAudioClassification -> audio-classification,
*Model with sentence-transformers files -> feature-extraction; an .onnx file or file.py:factory -> tensor.
"""

QUANTIZE_EXAMPLES = """examples:
  edgekit quantize out/minilm-fp32 --recipe int4 -o out/minilm-int4   # a package keeps its task and files
  edgekit quantize out/minilm-fp32 --recipe int8-dynamic -o out/m8 --device pixel-8 --require-device-speedup
  edgekit quantize out/cnn.onnx --recipe int8-static --calibration out/calib.npz -o out/cnn-qdq
"""


class TickingProgress(Progress):
    """Progress that keeps talking through a long silent stage (optimum's conversion, ORT's quantizer): after a
    stage line ending in "…" it shows the elapsed time, redrawn in place on a terminal, else one line every
    ``interval`` seconds, until the next line or bar. Call :meth:`stop` when the work ends."""

    def __init__(self, *, enabled: bool = True, interval: float = 15.0) -> None:
        super().__init__(enabled=enabled)
        self.interval = interval
        self._stop: threading.Event | None = None
        self._lock = threading.Lock()  # a tick never lands after stop() returned
        self._drawn = False

    def log(self, message: str) -> None:
        self.stop()
        super().log(message)
        if self.enabled and message.endswith(("…", "...")):
            self._stop = threading.Event()
            threading.Thread(target=self._tick, args=(self._stop, time.perf_counter()), daemon=True).start()

    def bar(self, total: int, desc: str) -> Any:
        self.stop()
        return super().bar(total, desc)

    def stop(self) -> None:
        with self._lock:
            if self._stop is not None:
                self._stop.set()
                self._stop = None
            if self._drawn:  # clear the in-place elapsed time before the next line
                self.stream.write("\r\033[K")
                self.stream.flush()
                self._drawn = False

    def _tick(self, stop: threading.Event, start: float) -> None:
        tty = getattr(self.stream, "isatty", lambda: False)()
        period = 1.0 if tty else self.interval
        while not stop.wait(period):
            with self._lock:
                if stop.is_set():
                    break
                elapsed = time.perf_counter() - start
                if tty:
                    self.stream.write(f"\r[edgekit]   {elapsed:.0f} s")
                    self._drawn = True
                else:
                    self.stream.write(f"[edgekit]   still working ({elapsed:.0f} s)\n")
                self.stream.flush()


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default="fp32", help=f"one of: {', '.join(recipe_names())}")
    p.add_argument("-o", "--output", required=True, help="package directory to write")
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="a recipe option (e.g. --option block_size=64, --option method=entropy); repeatable",
    )
    p.add_argument("--calibration", help=".npz of named arrays, a folder of images, or a .txt of lines")
    p.add_argument("--validation-data", help="like --calibration; an .npz may hold a 'labels' array")
    p.add_argument("--validation-samples", type=int, default=64)
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        help="fail (write nothing) if the task's primary metric drops more than this fraction;"
        " int8 recipes first keep the most sensitive layers in float",
    )
    p.add_argument(
        "--format",
        choices=["onnx", "ort"],
        default="onnx",
        help="ort also writes model.ort + required operators config for reduced mobile builds",
    )
    p.add_argument(
        "--allow-slower",
        action="store_true",
        help="keep a quantized package that measures slower than the export's fp32 graph on this host"
        " (recorded in the manifest, with a warning); by default it is refused and nothing is written",
    )
    p.add_argument(
        "--device",
        action="append",
        metavar="NAME",
        help="a target device profile (edgekit devices) on which the profiler estimates the quantized package"
        " against its fp32 graph; recorded in runtime.speedup.devices, a slower estimate warns; repeatable",
    )
    p.add_argument("--device-dir", action="append", metavar="DIR", help="a directory of your own device profiles")
    p.add_argument(
        "--require-device-speedup",
        action="store_true",
        help="refuse (write nothing) when a --device estimate is slower than fp32 beyond its error band",
    )
    p.add_argument("--force", action="store_true", help="replace an existing output directory")


def _add_export(p: argparse.ArgumentParser) -> None:
    p.epilog = EXPORT_EXAMPLES
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the examples' lines as written
    p.add_argument("source", help="HF model dir, model.onnx, a package dir, or file.py:factory (with --weights)")
    p.add_argument(
        "--task",
        default="auto",
        help=f"auto (default: from config.json's architectures, see below) or one of: {', '.join(TASKS.names())}",
    )
    p.add_argument("--weights", help="state-dict file for a file.py:factory source")
    p.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME=1x3x224x224",
        help="example input shape for a file.py:factory source (float32, axis 0 = batch); repeatable",
    )
    p.add_argument("--no-kv-cache", action="store_true", help="text-generation without the KV cache")
    _common(p)


def _add_quantize(p: argparse.ArgumentParser) -> None:
    p.epilog = QUANTIZE_EXAMPLES
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("model", help="an .onnx file or an fp32 package directory")
    p.add_argument("--task", help="task for a bare .onnx (default: the package's, or tensor)")
    _common(p)


def _kwargs(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from edgekit import limits

    limits.check("validation_samples", args.validation_samples, option="--validation-samples")
    # -o is checked by exporters (fsutil.check_output) before any conversion: one check for CLI and API.
    return {
        "recipe_options": parse_key_values(args.option, "--option"),
        "calibration": args.calibration,
        "validation_data": args.validation_data,
        "validation_samples": args.validation_samples,
        "max_accuracy_drop": args.max_accuracy_drop,
        "ort_format": args.format == "ort",
        "force": args.force,
        "on_slower": "warn" if args.allow_slower else "refuse",
        "on_device_slower": "refuse" if args.require_device_speedup else "warn",
        "device_speedup": _device_estimator(args),
        "progress": progress,
    }


def _device_estimator(args: argparse.Namespace) -> Any:
    """The profiler's per-device speed-up estimate for ``--device`` (built here: exporters never import it)."""
    if not args.device:
        return None
    from edgekit.profiler.speedup import DeviceEstimator

    return DeviceEstimator.for_devices(args.device, args.device_dir)


def _runtime_lines(runtime: Any) -> list[str]:
    """The measured speed-up over fp32 and the thread policy, when the export recorded them."""
    lines = []
    speed = runtime.speedup if runtime else None
    if speed is not None:
        lines.append(
            f"  speed-up vs fp32: {speed.speedup:.2f}x ({speed.verdict}; {speed.workload}, {speed.threads}"
            f" thread(s) vs fp32 at {speed.fp32_threads}, median of {speed.rounds} rounds on {speed.cpu})"
        )
        lines += [
            f"    estimated on {d.device}: {d.speedup:.2f}x ({d.fp32_ms:.3g} -> {d.package_ms:.3g} ms; {d.summary()})"
            for d in speed.devices
        ]
    policy = runtime.session_policy if runtime else None
    if policy is not None:
        lines.append(f"  threads: {policy.intra_op_threads} ({policy.rule}: {policy.reason})")
    return lines


def _render(result: Any) -> str:
    m = result.manifest
    acc = (m.accuracy or {}).get("metrics", {})
    size = sum(f.bytes for f in m.files)
    ref = (m.accuracy or {}).get("reference_model_bytes")
    lines = [
        f"wrote {result.package_dir}  ({m.task}, {m.recipe.name}, {size / 1e6:.2f} MB"
        + (f" = {size / ref:.0%} of the fp32 ONNX" if ref else "")
        + f", {result.seconds:.1f}s)",
        "  accuracy vs fp32: " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items() if isinstance(v, float)),
    ]
    if m.recipe.float_nodes:
        lines.append(f"  kept in float: {', '.join(m.recipe.float_nodes)}")
    lines += _runtime_lines(m.runtime)
    last = result.steps[-1] if result.steps else {}
    # The last step is what the recipe's name promises: an "int8" package that stayed float is said out loud.
    if last and not last.get("changed", True):
        reason = last.get("details", {}).get("reason", "no reason recorded")
        lines.append(f"  note: step {last['name']} changed nothing: {reason}")
    return "\n".join(lines)


def parse_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]] | None:
    """``NAME=1x3x224x224`` items; shapes whose float32 tensor would not fit in memory are refused."""
    from edgekit import limits
    from edgekit.errors import UsageError

    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or []:
        name, sep, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise UsageError(
                f"--input-shape takes NAME=DIMxDIM..., e.g. pixel_values=1x3x224x224; got {item!r}",
                hint="positive integer dims joined by x, one --input-shape per input",
                param="input_shape",
            )
        if name in shapes:
            raise UsageError(f"--input-shape gives {name!r} twice", hint="one --input-shape per input")
        limits.check_shape(name, shape)
        shapes[name] = shape
    return shapes or None


@contextlib.contextmanager
def _slower_warning_as_log() -> Iterator[None]:
    """--allow-slower's warning as edgekit's own stderr line (``[edgekit] WARNING ...``), not Python's
    ``file:line: Warning`` form; --json keeps stdout one document either way."""
    import warnings

    from edgekit.errors import SlowerThanFp32Warning

    previous = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, SlowerThanFp32Warning):
            logging.getLogger("edgekit.export").warning(str(message))
        else:
            previous(message, category, *args, **kwargs)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def _run_export(args: argparse.Namespace) -> tuple[Any, str]:
    import exporters

    source: Any = args.source
    if ":" in args.source and args.source.split(":")[0].endswith(".py"):
        source = exporters.torch_source_from_spec(
            args.source, weights=args.weights, example_shapes=parse_shapes(args.input_shape)
        )
    elif not Path(args.source).exists():
        from edgekit.errors import SourceNotFoundError

        raise SourceNotFoundError(
            f"the source {args.source} does not exist",
            hint="pass a HF model directory, an .onnx file, or file.py:factory --weights W",
        )
    task = args.task
    if task == "auto":
        from edgekit.task_detect import detect_task

        task = detect_task(args.source)
    progress = TickingProgress(enabled=not args.quiet)
    try:
        with _slower_warning_as_log():
            result = exporters.export(
                source,
                output=args.output,
                task=task,
                recipe=args.recipe,
                with_kv_cache=not args.no_kv_cache,
                **_kwargs(args, progress),
            )
    finally:
        progress.stop()
    # The report's config records what ran (the detected task) next to what was asked for ("auto").
    out = {**result.to_dict(), "_config": {"task": task, "task_requested": args.task}}
    return out, _render(result)


def _run_quantize(args: argparse.Namespace) -> tuple[Any, str]:
    import exporters

    progress = TickingProgress(enabled=not args.quiet)
    try:
        with _slower_warning_as_log():
            result = exporters.quantize(
                args.model, output=args.output, recipe=args.recipe, task=args.task, **_kwargs(args, progress)
            )
    finally:
        progress.stop()
    return result.to_dict(), _render(result)


COMMANDS.add("export", Command("export", "export a model to a quantized, validated package", _add_export, _run_export))
COMMANDS.add(
    "quantize", Command("quantize", "quantize an .onnx file or package with a recipe", _add_quantize, _run_quantize)
)
