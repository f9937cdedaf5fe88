"""``edgekit profile``: measure packages here, estimate them on device profiles, gate on budgets."""

from __future__ import annotations

import argparse
from typing import Any

from edgekit.cli import COMMANDS, Command

EXAMPLES = """examples:
  edgekit profile out/minilm-fp32 out/minilm-int8 --device host --device raspberry-pi-5 --html profile.html
  edgekit profile out/llm-int4 --device pixel-8 --max-latency-ms 20 --max-memory-mb 300   # exit 3 if exceeded
"""


def _add(p: argparse.ArgumentParser) -> None:
    p.epilog = EXAMPLES
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the examples' lines as written
    p.add_argument("packages", nargs="+", metavar="PKG", help="package directories (or .onnx files) to profile")
    p.add_argument(
        "--device",
        action="append",
        metavar="NAME",
        help="a device profile (edgekit devices lists them); repeatable; default: host",
    )
    p.add_argument("--device-dir", action="append", metavar="DIR", help="a directory of your own device profiles")
    p.add_argument("--runs", type=int, default=100, help="timed runs per phase after warm-up (default 100)")
    p.add_argument("--warmup", type=int, help="untimed runs first (default: a tenth of --runs, 2 to 10)")
    p.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME=1x128",
        help="bind an input's dynamic dims, e.g. input_ids=1x128; repeatable",
    )
    p.add_argument(
        "--max-latency-ms",
        type=float,
        metavar="X",
        help="fail (exit 3) if a phase's latency exceeds X ms on any device (host: measured p50)",
    )
    p.add_argument(
        "--max-memory-mb",
        type=float,
        metavar="Y",
        help="fail (exit 3) if peak memory exceeds Y MB on any device (host: measured)",
    )
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report with plots")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="intra-op threads for the host measurement (default: the host profile's physical cores)",
    )
    p.add_argument(
        "--providers",
        nargs="+",
        metavar="P",
        help="execution providers to measure the host with, in priority order (e.g. xnnpack cpu; default cpu)",
    )
    p.add_argument(
        "--prompt-tokens",
        type=int,
        metavar="N",
        help="text generation: prompt length of the prefill phase (default 32)",
    )
    p.add_argument(
        "--new-tokens",
        type=int,
        metavar="N",
        help="text generation: new tokens of the end-to-end generation run (default 16)",
    )


def _run(args: argparse.Namespace) -> tuple[Any, str]:
    from edgekit import limits
    from edgekit.commands.export import parse_shapes
    from edgekit.profiler.api import _positive_budget, budget_error, profile
    from edgekit.progress import Progress

    # Bad budgets, counts and outputs are usage errors before anything is measured.
    _positive_budget("max_latency_ms", args.max_latency_ms)
    _positive_budget("max_memory_mb", args.max_memory_mb)
    limits.check("runs", args.runs, option="--runs")
    limits.check("warmup", args.warmup, option="--warmup")
    if args.html:
        limits.check_writable_file(args.html, option="--html")
    report = profile(
        args.packages,
        devices=args.device or ["host"],
        runs=args.runs,
        input_shapes=parse_shapes(args.input_shape),
        max_latency_ms=args.max_latency_ms,
        max_memory_mb=args.max_memory_mb,
        progress=Progress(enabled=not args.quiet),
        warmup=args.warmup,
        device_dirs=args.device_dir,
        threads=args.threads,
        providers=args.providers,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
    )
    text = report.render_table()
    if args.html:
        path = report.write_html(args.html)
        text += f"\n\nHTML report: {path}"
    result = report.result_dict()
    error = budget_error(report)
    if error is not None:  # reported by the CLI after the table (or JSON): the log shows what exceeded
        result["_error"] = error
    return result, text


COMMANDS.add("profile", Command("profile", "measure packages here and estimate them on device profiles", _add, _run))
