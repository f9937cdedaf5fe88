"""Input preprocessing read from the package (tokenizer.json, preprocessing settings), with no transformers.

Shared by the runtime pipelines and by the exporters (validation samples, calibration data), so the
numbers a package is validated on are produced exactly as on the device.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InvalidInputError, MissingDependencyError, PackageError


@dataclass(frozen=True)
class TextBatch:
    input_ids: np.ndarray  # int64 [batch, seq]
    attention_mask: np.ndarray  # int64 [batch, seq]
    token_type_ids: np.ndarray  # int64 [batch, seq]

    def feeds(self, input_names: list[str]) -> dict[str, np.ndarray]:
        arrays = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }
        return {n: arrays[n] for n in input_names if n in arrays}


class TextEncoder:
    """Tokenizes with the ``tokenizers`` library from the package's tokenizer.json; pads to the longest."""

    def __init__(self, tokenizer_file: str | Path, *, max_length: int | None = None) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - tokenizers is a core dependency
            raise MissingDependencyError.for_extra("tokenizers", "core") from exc
        path = Path(tokenizer_file)
        if not path.is_file():
            raise PackageError(
                f"this text model has no tokenizer file ({path.name} is missing from {path.parent})",
                hint="export from a model directory that has tokenizer.json, or copy it into the package",
            )
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.max_length = max_length
        if max_length:
            self.tokenizer.enable_truncation(max_length)
        else:
            self.tokenizer.no_truncation()
        self.pad_id = self._pad_id()

    def _pad_id(self) -> int:
        for tok in ("[PAD]", "<pad>", "<|pad|>", "<|endoftext|>", "</s>"):
            tid = self.tokenizer.token_to_id(tok)
            if tid is not None:
                return tid
        return 0

    def encode_batch(self, texts: list[str], *, add_special_tokens: bool = True) -> TextBatch:
        if not texts:
            raise InvalidInputError("no texts were given", hint="pass at least one string")
        for t in texts:
            if not isinstance(t, str):
                raise InvalidInputError(f"texts must be strings, got {type(t).__name__}")
        encs = self.tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)
        seq = max(1, max(len(e.ids) for e in encs))
        ids = np.full((len(encs), seq), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encs), seq), dtype=np.int64)
        types = np.zeros((len(encs), seq), dtype=np.int64)
        for i, e in enumerate(encs):
            n = len(e.ids)
            ids[i, :n] = e.ids
            mask[i, :n] = 1
            types[i, :n] = e.type_ids
        return TextBatch(ids, mask, types)

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: list[int], *, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


# ---------------------------------------------------------------------------------------------- images


@dataclass(frozen=True, kw_only=True)
class ImageSettings:
    """What an HF image processor config says, reduced to what the runtime needs."""

    height: int
    width: int
    resize_shortest: int | None = None  # resize so the short side is this, then centre-crop
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255
    channels: int = 3

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> ImageSettings:
        size = cfg.get("crop_size") if cfg.get("do_center_crop") else cfg.get("size")
        size = size or {"height": 224, "width": 224}
        if isinstance(size, int):
            h = w = size
        elif "height" in size:
            h, w = int(size["height"]), int(size["width"])
        else:
            h = w = int(size.get("shortest_edge", 224))
        shortest = None
        if cfg.get("do_center_crop") and isinstance(cfg.get("size"), dict) and "shortest_edge" in cfg["size"]:
            shortest = int(cfg["size"]["shortest_edge"])
        mean = tuple(cfg.get("image_mean") or (0.5, 0.5, 0.5)) if cfg.get("do_normalize", True) else (0.0, 0.0, 0.0)
        std = tuple(cfg.get("image_std") or (0.5, 0.5, 0.5)) if cfg.get("do_normalize", True) else (1.0, 1.0, 1.0)
        rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
        return cls(height=h, width=w, resize_shortest=shortest, mean=mean, std=std, rescale_factor=rescale)

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "width": self.width,
            "resize_shortest": self.resize_shortest,
            "mean": list(self.mean),
            "std": list(self.std),
            "rescale_factor": self.rescale_factor,
            "channels": self.channels,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageSettings:
        return cls(
            height=int(d["height"]),
            width=int(d["width"]),
            resize_shortest=d.get("resize_shortest"),
            mean=tuple(d.get("mean", (0.5, 0.5, 0.5))),
            std=tuple(d.get("std", (0.5, 0.5, 0.5))),
            rescale_factor=float(d.get("rescale_factor", 1 / 255)),
            channels=int(d.get("channels", 3)),
        )


def load_image(source: str | Path | bytes | np.ndarray) -> Any:
    """Decode an image file or bytes with Pillow; a uint8 HxWxC array passes through."""
    if isinstance(source, np.ndarray):
        return source
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise MissingDependencyError.for_extra("Pillow", "vision") from exc
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        img = Image.open(io.BytesIO(data))
        img.load()
    except FileNotFoundError:
        raise InvalidInputError(f"image file not found: {source}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        name = "the given bytes" if isinstance(source, bytes) else str(source)
        raise InvalidInputError(
            f"{name} is not an image Pillow can read ({exc})", hint="pass a PNG, JPEG, BMP or similar file"
        ) from None
    return img


def preprocess_images(images: list[Any], settings: ImageSettings) -> np.ndarray:
    """Resize, centre-crop, rescale and normalize into float32 NCHW."""
    out = []
    for src in images:
        img = load_image(src)
        if isinstance(img, np.ndarray):
            arr = _resize_array(img, settings)
        else:
            img = img.convert("RGB" if settings.channels == 3 else "L")
            if settings.resize_shortest:
                w, h = img.size
                scale = settings.resize_shortest / min(w, h)
                img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample=3)
                w, h = img.size
                left, top = (w - settings.width) // 2, (h - settings.height) // 2
                img = img.crop((left, top, left + settings.width, top + settings.height))
            else:
                img = img.resize((settings.width, settings.height), resample=2)
            arr = np.asarray(img, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        arr = arr * settings.rescale_factor
        arr = (arr - np.asarray(settings.mean, np.float32)) / np.asarray(settings.std, np.float32)
        out.append(arr.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out).astype(np.float32))


def _resize_array(arr: np.ndarray, settings: ImageSettings) -> np.ndarray:
    if arr.ndim not in (2, 3):
        raise InvalidInputError(f"an image array must be HxW or HxWxC, got shape {arr.shape}")
    h, w = arr.shape[:2]
    ys = (np.arange(settings.height) * h / settings.height).astype(int)
    xs = (np.arange(settings.width) * w / settings.width).astype(int)
    return arr[ys][:, xs].astype(np.float32)


# ----------------------------------------------------------------------------------------------- audio


@dataclass(frozen=True, kw_only=True)
class AudioSettings:
    sampling_rate: int = 16000
    do_normalize: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"sampling_rate": self.sampling_rate, "do_normalize": self.do_normalize}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AudioSettings:
        return cls(sampling_rate=int(d.get("sampling_rate", 16000)), do_normalize=bool(d.get("do_normalize", True)))


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM WAV file as mono float32 in [-1, 1] with its sampling rate (standard library only)."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            raw = w.readframes(w.getnframes())
    except FileNotFoundError:
        raise InvalidInputError(f"audio file not found: {path}") from None
    except (wave.Error, EOFError) as exc:
        raise InvalidInputError(f"{path} is not a PCM WAV file ({exc})", hint="convert it to 16-bit PCM WAV") from None
    dtypes = {1: np.uint8, 2: np.int16, 4: np.int32}
    if width not in dtypes:
        raise InvalidInputError(f"{path}: {8 * width}-bit WAV is not supported", hint="use 8, 16 or 32-bit PCM")
    x = np.frombuffer(raw, dtype=dtypes[width]).astype(np.float32)
    x = (x - 128) / 128 if width == 1 else x / float(2 ** (8 * width - 1))
    return x.reshape(-1, channels).mean(axis=1), rate


def preprocess_audio(clips: list[Any], settings: AudioSettings, *, rates: list[int] | None = None) -> np.ndarray:
    """Resample (linear) to the model's rate, zero-mean/unit-variance normalize, pad to the longest."""
    waves = []
    for i, clip in enumerate(clips):
        if isinstance(clip, (str, Path)):
            x, rate = read_wav(clip)
        else:
            x = np.asarray(clip, dtype=np.float32).reshape(-1)
            rate = rates[i] if rates else settings.sampling_rate
        if x.size == 0:
            raise InvalidInputError("an audio clip is empty")
        if rate != settings.sampling_rate:
            n = max(1, round(x.size * settings.sampling_rate / rate))
            x = np.interp(np.linspace(0, x.size - 1, n), np.arange(x.size), x).astype(np.float32)
        if settings.do_normalize:
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        waves.append(x.astype(np.float32))
    n = max(w.size for w in waves)
    return np.stack([np.pad(w, (0, n - w.size)) for w in waves]).astype(np.float32)
