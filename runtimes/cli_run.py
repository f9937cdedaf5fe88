"""``edgekit run PACKAGE ...``: the options and the command body, wired into ``edgekit.cli`` by the lead.

    edgekit run PACKAGE --prompt TEXT [--max-tokens N --temperature T --top-p P --top-k K --seed S --stream]
    edgekit run PACKAGE --text TEXT [--text TEXT ...]        embed or classify, by the package's task
    edgekit run PACKAGE --image PATH [--image PATH ...]      classify
    edgekit run PACKAGE --audio PATH [--audio PATH ...]      classify
    edgekit run PACKAGE --input FILE.npz [--output OUT.npz]  named arrays in, named arrays out
    common: [--device NAME] [--providers NAME ...] [--threads N] [--no-verify] [--json]

``run_command`` returns the JSON report (``schema_version``, ``kind``, ``status``, ``config``, ``environment``,
``model``, ``result``, ``metrics``); with ``--stream`` and without ``--json`` it also writes the text as it is
generated. Generation options go through ``GenerationConfig.from_dict``, as the Python API and the server do.
Errors are raised as ``EdgekitError`` for the CLI to print.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit import limits
from edgekit.errors import InvalidInputError, UsageError, translate

REPORT_SCHEMA_VERSION = "1.0"
# Arrays with at most this many elements are written into the JSON report in full.
_INLINE_VALUES = 64


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("package", metavar="PACKAGE", help="model package directory, .zip, or a bare .onnx file")
    inputs = parser.add_argument_group("inputs (give one kind)")
    inputs.add_argument("--prompt", metavar="TEXT", help="text to continue (text-generation packages)")
    inputs.add_argument("--text", metavar="TEXT", action="append", help="text to embed or classify; repeatable")
    inputs.add_argument("--image", metavar="PATH", action="append", type=Path, help="image to classify; repeatable")
    inputs.add_argument("--audio", metavar="PATH", action="append", type=Path, help="WAV file to classify; repeatable")
    inputs.add_argument("--input", metavar="FILE.npz", type=Path, help="named input arrays for a plain run")
    inputs.add_argument("--output", metavar="FILE.npz", type=Path, help="save the outputs of --input here")
    gen = parser.add_argument_group("generation")
    gen.add_argument("--max-tokens", type=int, default=128, metavar="N", help="new tokens at most (default 128)")
    gen.add_argument("--temperature", type=float, default=0.0, metavar="T", help="0 is greedy (default)")
    gen.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling mass, in (0, 1]")
    gen.add_argument(
        "--top-k",
        type=int,
        default=None,
        metavar="K",
        help="sampling: keep the K likeliest tokens; classify: show K labels (5)",
    )
    gen.add_argument("--repetition-penalty", type=float, default=1.0, metavar="R", help="> 1 discourages repeats")
    gen.add_argument("--seed", type=int, default=None, metavar="S", help="makes sampling reproducible")
    gen.add_argument("--stop", action="append", default=None, metavar="TEXT", help="stop sequence; repeatable")
    gen.add_argument("--ignore-eos", action="store_true", help="keep generating past the end-of-text token")
    gen.add_argument(
        "--truncate", choices=["left"], default=None, help="drop the start of a prompt too long for the context"
    )
    gen.add_argument("--stream", action="store_true", help="print the text as it is generated")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="texts per batch for embeddings")
    rt = parser.add_argument_group("runtime")
    rt.add_argument("--device", metavar="NAME", help="device profile: its execution providers and threads")
    rt.add_argument("--providers", nargs="+", metavar="NAME", help="execution providers to try (e.g. xnnpack cpu)")
    rt.add_argument("--threads", type=int, metavar="N", help="intra-op threads (default: device profile, else cores)")
    rt.add_argument("--no-verify", action="store_true", help="skip the package's sha256 check")


def run_command(args: argparse.Namespace, *, write: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Load the package, run the one kind of input given, and return the report."""
    from runtimes.model import load

    mode = _mode(args)
    # Bounds and outputs are checked before the package loads: a typo fails fast, nothing half-written.
    limits.check("threads", args.threads, option="--threads")
    if mode == "prompt":
        limits.check("max_tokens", _generation_config(args).max_tokens, option="--max-tokens")
    limits.check("batch_size", args.batch_size, option="--batch-size")
    if args.output is not None:
        limits.check_writable_file(args.output, option="--output")
    started = time.perf_counter()
    model = load(
        args.package, device=args.device, providers=args.providers, threads=args.threads, verify=not args.no_verify
    )
    load_seconds = time.perf_counter() - started
    out = write or _stdout
    result, metrics, config = _MODES[mode](model, args, out)
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": "run",
        "status": "ok",
        "config": {
            "package": str(args.package),
            "mode": mode,
            "device": args.device,
            "providers": args.providers,
            "threads": args.threads,
            "verify": not args.no_verify,
            **config,
        },
        "environment": _environment(),
        "model": model.info(),
        "result": result,
        "metrics": {"load_seconds": round(load_seconds, 4), **metrics},
        "errors": [],
    }


def _stdout(text: str) -> None:
    from edgekit.quiet import stdout  # the real stdout even while third-party output is kept off it

    stream = stdout()
    stream.write(text)
    stream.flush()


def _mode(args: argparse.Namespace) -> str:
    given = [name for name in _MODES if getattr(args, name, None) is not None]
    if len(given) != 1:
        flags = ", ".join(f"--{n}" for n in _MODES)
        what = "none" if not given else ", ".join(f"--{n}" for n in given)
        raise UsageError(
            f"give exactly one kind of input: {flags} (got {what})",
            hint="e.g. --prompt TEXT for text-generation, --text TEXT to embed or classify",
            param="input",
        )
    return given[0]


def _generation_config(args: argparse.Namespace) -> Any:
    from runtimes.pipelines.generate import GenerationConfig

    options: dict[str, Any] = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k if args.top_k is not None else 0,
        "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
        "stop": list(args.stop or []),
        "ignore_eos": bool(args.ignore_eos),
        "truncate": args.truncate,
    }
    return GenerationConfig.from_dict(options)


def _run_prompt(model: Any, args: argparse.Namespace, write: Callable[[str], Any]) -> tuple[dict, dict, dict]:
    config = _generation_config(args)
    if args.stream:
        stream = model.stream(args.prompt, config)
        for delta in stream:
            if not args.json:
                write(delta)
        if not args.json:
            write("\n")
        result = stream.result
    else:
        result = model.generate(args.prompt, config)
    metrics = {k: v for k, v in result.timings.items()}
    return result.to_dict(), metrics, {"generation": config.to_dict(), "stream": bool(args.stream)}


def _run_text(model: Any, args: argparse.Namespace, write: Callable[[str], Any]) -> tuple[dict, dict, dict]:
    texts = list(args.text)
    start = time.perf_counter()
    if "embed" in model.methods:
        vectors = model.embed(texts, batch_size=args.batch_size)
        seconds = time.perf_counter() - start
        result = {"embeddings": vectors.tolist(), "dim": int(vectors.shape[1]), "count": len(texts)}
        return result, {"embed_seconds": round(seconds, 6)}, {"batch_size": args.batch_size}
    return _classify(model, texts, args, start, "texts")


def _run_image(model: Any, args: argparse.Namespace, write: Callable[[str], Any]) -> tuple[dict, dict, dict]:
    return _classify(model, [str(p) for p in args.image], args, time.perf_counter(), "images")


def _run_audio(model: Any, args: argparse.Namespace, write: Callable[[str], Any]) -> tuple[dict, dict, dict]:
    return _classify(model, [str(p) for p in args.audio], args, time.perf_counter(), "clips")


def _classify(
    model: Any, items: list[Any], args: argparse.Namespace, start: float, what: str
) -> tuple[dict, dict, dict]:
    top_k = args.top_k if args.top_k is not None else 5
    ranked = model.classify(items, top_k=top_k)
    seconds = time.perf_counter() - start
    result = {"predictions": [{"input": str(item), "top": top} for item, top in zip(items, ranked, strict=True)]}
    return result, {"classify_seconds": round(seconds, 6), what: len(items)}, {"top_k": top_k}


def _run_input(model: Any, args: argparse.Namespace, write: Callable[[str], Any]) -> tuple[dict, dict, dict]:
    import numpy as np

    path = Path(args.input)
    if not path.is_file():
        raise InvalidInputError(
            f"input file not found: {path}", hint="pass an .npz written by numpy.savez", param="input"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            feeds = {name: data[name] for name in data.files}
    except Exception as exc:  # empty, truncated, pickled or bare .npy: the boundary's table names each
        raise translate(exc, context=f"--input {path}") from exc
    start = time.perf_counter()
    outputs = model.run(feeds)
    seconds = time.perf_counter() - start
    if args.output:
        np.savez(args.output, **outputs)
    result = {
        "outputs": {
            name: {
                "shape": list(arr.shape),
                "dtype": arr.dtype.name,
                "values": arr.tolist() if arr.size <= _INLINE_VALUES else None,
            }
            for name, arr in outputs.items()
        },
        "saved_to": str(args.output) if args.output else None,
    }
    return result, {"run_seconds": round(seconds, 6)}, {"input": str(path)}


_MODES: dict[str, Callable[[Any, argparse.Namespace, Callable[[str], Any]], tuple[dict, dict, dict]]] = {
    "prompt": _run_prompt,
    "text": _run_text,
    "image": _run_image,
    "audio": _run_audio,
    "input": _run_input,
}


def _environment() -> dict[str, Any]:
    import onnxruntime as ort

    from runtimes.providers import available_providers

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "onnxruntime": ort.__version__,
        "available_providers": available_providers(),
    }


def render_run_report(report: dict[str, Any]) -> str:
    """The terminal view of a run report (the JSON is the source of truth)."""
    model = report["model"]
    lines = [f"{model.get('name') or report['config']['package']} ({model['task']}) on {', '.join(model['providers'])}"]
    for fb in model.get("fallbacks", []):
        lines.append(f"  fallback: {fb['asked']} {fb['reason']}; running {', '.join(fb['running'])}")
    result = report["result"]
    if "text" in result:
        if not report["config"].get("stream"):
            lines.append(result["text"])
        usage = result["usage"]
        lines.append(
            f"[{result['finish_reason']}] {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens,"
            f" {result['timings'].get('decode_tokens_per_second', 0)} tok/s"
        )
    elif "embeddings" in result:
        lines.append(f"{result['count']} embeddings of dimension {result['dim']}")
    elif "predictions" in result:
        for pred in result["predictions"]:
            top = ", ".join(f"{t['label']} {t['score']:.3f}" for t in pred["top"])
            lines.append(f"{pred['input']}: {top}")
    elif "outputs" in result:
        for name, out in result["outputs"].items():
            lines.append(f"{name}: {out['dtype']}{out['shape']}")
    return "\n".join(lines)
