"""Calibration (and validation) data from the user: an ``.npz`` of named arrays, a folder of images or of WAV
clips, or a text file of lines. Each format is one ``DATA_FORMATS`` entry. Arrays are checked against the model's
inputs before any quantizer sees them, so a mismatch is reported by name, dtype and shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import CalibrationError, SourceNotFoundError
from edgekit.manifest import TensorSpec
from edgekit.registry import Registry
from runtimes.preprocess import AudioSettings, ImageSettings, audio_batch, preprocess_images
from runtimes.samples import SampleContext, generation_feeds, prompt_ids

AUDIO_SUFFIXES = {".wav"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
LABELS_KEY = "labels"  # an optional array in a validation .npz: true classes, for labeled accuracy


@dataclass(frozen=True)
class Dataset:
    samples: list[dict[str, np.ndarray]]
    labels: np.ndarray | None = None


@dataclass(frozen=True)
class DataFormat:
    name: str
    matches: Callable[[Path], bool]
    load: Callable[[Path, SampleContext, int], Dataset]


DATA_FORMATS: Registry[DataFormat] = Registry("calibration data format")


def load_dataset(path: str | Path, ctx: SampleContext, *, limit: int = 256) -> Dataset:
    p = Path(path)
    if not p.exists():
        raise SourceNotFoundError(
            f"calibration data not found: {p}", hint="pass an .npz, a folder of images or WAV clips, or a .txt file"
        )
    for fmt in DATA_FORMATS:
        if fmt.matches(p):
            data = fmt.load(p, ctx, limit)
            if not data.samples:
                raise CalibrationError(f"the calibration data {p} holds no samples")
            for sample in data.samples:
                check_feeds(sample, ctx.inputs, source=str(p))
            return data
    raise CalibrationError(
        f"cannot read calibration data {p}: unknown format",
        hint="use an .npz of arrays named like the model inputs, a folder of images or WAV clips, or a .txt file"
        " with one text per line",
    )


def check_feeds(feeds: dict[str, np.ndarray], inputs: list[TensorSpec], *, source: str) -> None:
    expected = {t.name: t for t in inputs}
    want = ", ".join(f"{t.name} {t.dtype}{list(t.shape)}" for t in inputs)
    missing = [n for n in expected if n not in feeds]
    extra = [n for n in feeds if n not in expected]
    if extra or missing:
        raise CalibrationError(
            f"{source}: input names do not match the model"
            + (f"; unknown: {', '.join(extra)}" if extra else "")
            + (f"; missing: {', '.join(missing)}" if missing else ""),
            hint=f"the model expects {want}",
        )
    for name, arr in feeds.items():
        spec = expected[name]
        if arr.dtype != np.dtype(spec.dtype):
            raise CalibrationError(
                f"{source}: input {name!r} has dtype {arr.dtype}, the model expects {spec.dtype}",
                hint=f"the model expects {want}",
            )
        if arr.ndim != len(spec.shape) or any(
            isinstance(d, int) and d > 0 and d != s for d, s in zip(spec.shape, arr.shape, strict=False)
        ):
            raise CalibrationError(
                f"{source}: input {name!r} has shape {list(arr.shape)} (one sample), the model expects {list(spec.shape)}",
                hint="in an .npz the first axis indexes samples; each sample keeps the model's batch axis of 1",
            )
        # ORT's calibrators turn a NaN or inf into an invalid scale deep inside quantization: refuse it here.
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise CalibrationError(
                f"{source}: input {name!r} holds NaN or infinite values",
                hint="calibration data must be finite: drop or fix those samples",
            )


def _load_npz(path: Path, ctx: SampleContext, limit: int) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{path} is not a readable .npz file ({exc})") from None
    labels = arrays.pop(LABELS_KEY, None)
    if not arrays:
        raise CalibrationError(f"{path} holds no arrays")
    counts = {k: v.shape[0] if v.ndim else 0 for k, v in arrays.items()}
    if len(set(counts.values())) != 1:
        raise CalibrationError(
            f"{path}: arrays disagree on the number of samples (first axis): {counts}",
            hint="every array's first axis must index the same samples",
        )
    n = min(next(iter(counts.values())), limit)
    # Each sample keeps a batch axis of 1: the model's batch dim is what the first axis slices into.
    samples = [{k: v[i : i + 1] for k, v in arrays.items()} for i in range(n)]
    return Dataset(samples, labels[:n] if labels is not None else None)


def _load_images(path: Path, ctx: SampleContext, limit: int) -> Dataset:
    if "image" not in ctx.preprocessing:
        raise CalibrationError(f"{path} is an image folder, but this model takes no images", hint="pass an .npz")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise CalibrationError(f"{path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    settings = ImageSettings.from_dict(ctx.preprocessing["image"])
    name = ctx.input_names[0]
    return Dataset([{name: preprocess_images([f], settings)} for f in files])


def _holds_audio(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in AUDIO_SUFFIXES for p in path.iterdir())


def _load_audio(path: Path, ctx: SampleContext, limit: int) -> Dataset:
    if "audio" not in ctx.preprocessing:
        raise CalibrationError(f"{path} is a folder of WAV clips, but this model takes no audio", hint="pass an .npz")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)[:limit]
    settings = AudioSettings.from_dict(ctx.preprocessing["audio"])
    # Each clip through the package's own feature extractor (waveform or log-mel), as the device will see it.
    return Dataset([audio_batch([f], settings).feeds(ctx.input_names) for f in files])


def _load_text(path: Path, ctx: SampleContext, limit: int) -> Dataset:
    if "tokenizer_file" not in ctx.preprocessing:
        raise CalibrationError(f"{path} is a text file, but this model takes no text", hint="pass an .npz")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()][:limit]
    enc = ctx.text_encoder()
    if ctx.generation is not None:
        # Each line is cut to the context window, as the validation samples are.
        samples = [generation_feeds(prompt_ids(enc, ln, ctx.generation), ctx.generation, ctx.inputs) for ln in lines]
    else:
        samples = [enc.encode_batch([ln]).feeds(ctx.input_names) for ln in lines]
    return Dataset(samples)


DATA_FORMATS.add("npz", DataFormat("npz", lambda p: p.suffix == ".npz", _load_npz))
DATA_FORMATS.add("audio", DataFormat("audio", _holds_audio, _load_audio))
DATA_FORMATS.add("images", DataFormat("images", lambda p: p.is_dir() and not _holds_audio(p), _load_images))
DATA_FORMATS.add("text", DataFormat("text", lambda p: p.suffix in (".txt", ".text"), _load_text))
