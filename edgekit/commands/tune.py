"""``edgekit tune``: try recipe variants, keep the best package per device under the budgets."""

from __future__ import annotations

import argparse
from typing import Any

from edgekit.cli import COMMANDS, Command

TUNE_EXAMPLES = """examples:
  edgekit tune out/cnn.onnx --task tensor --input-shape x=1x1x8x8 --device host --device pixel-8 -o out/tuned
  edgekit tune out/sources/all-MiniLM-L6-v2 --task feature-extraction --device pixel-8 --max-accuracy-drop 0.01 -o tuned
  edgekit tune m1/ m2/ --task text-classification --device raspberry-pi-5 --max-latency-ms 20 --ray -o sweep
"""


def _add(p: argparse.ArgumentParser) -> None:
    p.epilog = TUNE_EXAMPLES
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="HF model dirs, .onnx files or fp32 packages")
    p.add_argument("--task", required=True, help="the task every source is exported for")
    p.add_argument(
        "--device", action="append", metavar="NAME", help="a device profile (edgekit devices); repeatable; default host"
    )
    p.add_argument("--device-dir", action="append", metavar="DIR", help="a directory of your own device profiles")
    p.add_argument("-o", "--output", required=True, help="directory for OUT/<device>/ packages and tune.json/.html")
    p.add_argument("--max-accuracy-drop", type=float, metavar="X", help="fraction of the primary metric, e.g. 0.01")
    p.add_argument("--max-latency-ms", type=float, metavar="Y", help="per device: host measured p50, else estimated")
    p.add_argument("--max-memory-mb", type=float, metavar="Z", help="peak memory per device")
    p.add_argument(
        "--latency-tie",
        type=float,
        default=0.05,
        metavar="F",
        help="latencies within this fraction of the fastest tie; the smaller model, then the more accurate,"
        " wins (default 0.05: host timing noise)",
    )
    p.add_argument(
        "--variants",
        action="append",
        metavar="PATTERN",
        help="keep variants whose recipe or name matches (shell pattern, e.g. 'int8-dynamic*'); repeatable",
    )
    p.add_argument("--max-trials", type=int, metavar="N", help="at most N variants per source (fp32 first)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per package on this host (default 50)")
    p.add_argument("--input-shape", action="append", metavar="NAME=1x128", help="bind dynamic input dims; repeatable")
    p.add_argument("--calibration", help="calibration data; enables the int8-static variants")
    p.add_argument("--validation-data", help="labelled validation data (as for edgekit export)")
    p.add_argument("--validation-samples", type=int, default=64)
    p.add_argument("--no-kv-cache", action="store_true", help="text-generation without the KV cache")
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run the export trials as Ray tasks (pip install 'edgekit[sweep]'); ADDRESS of a running cluster"
        " (e.g. ray://head:10001 or auto), none for a local Ray instance",
    )
    p.add_argument("--workers", type=int, help="local export processes (default: the cores)")
    p.add_argument("--cache-dir", help="trial cache (default OUT/.trials); a repeated tune resumes from it")
    p.add_argument("--force", action="store_true", help="use -o even if it holds something that is not a tune")


def _run(args: argparse.Namespace) -> tuple[Any, str]:

    from edgekit.commands.export import parse_shapes
    from edgekit.progress import Progress
    from edgekit.tuning import tune

    result = tune(
        args.sources,
        task=args.task,
        output=args.output,
        devices=args.device or ["host"],
        max_accuracy_drop=args.max_accuracy_drop,
        max_latency_ms=args.max_latency_ms,
        max_memory_mb=args.max_memory_mb,
        latency_tie=args.latency_tie,
        variants=args.variants,
        max_trials=args.max_trials,
        runs=args.runs,
        input_shapes=parse_shapes(args.input_shape),
        calibration=args.calibration,
        validation_data=args.validation_data,
        validation_samples=args.validation_samples,
        with_kv_cache=not args.no_kv_cache,
        executor="ray" if args.ray is not None else "local",
        ray_address=args.ray or None,
        workers=args.workers,
        cache_dir=args.cache_dir,
        device_dirs=args.device_dir,
        force=args.force,
        progress=Progress(enabled=not args.quiet),
    )
    out = result.result_dict()
    text = result.render_table() + f"\n\nreport: {result.output_dir / 'tune.json'}, {result.output_dir / 'tune.html'}"
    error = result.error()
    if error is not None:  # reported by the CLI after the table (or JSON)
        out["_error"] = error
    return out, text


COMMANDS.add(
    "tune", Command("tune", "find the best package per device under accuracy/latency/memory budgets", _add, _run)
)
