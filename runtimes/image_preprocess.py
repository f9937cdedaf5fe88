"""Image preprocessing that reproduces the Hugging Face image processor recorded at export, with no transformers.

The export reads the processor's ``preprocessor_config.json`` once (:meth:`ImageSettings.from_hf_config`) and
reduces each processor class's rules to data: the resize rule and its target, the Pillow filter, the centre
crop, rescale (with EfficientNet's offset), and mean/std. The device then applies exactly those steps in the
order transformers does: Pillow resize of the uint8 image with the recorded filter, crop (zero padding when the
image is smaller), ``uint8 -> float64 * factor -> float32``, ``(x - mean) / std`` in float32. Same library, same
filter, same arithmetic order, so the pixels agree with the processor to float32 rounding.

A processor class is one :data:`IMAGE_PROCESSORS` entry (its ``__init__`` defaults and how it reads ``size``);
a class with no entry is refused with :class:`UnsupportedModelError` rather than given guessed pixels.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InvalidInputError, MissingDependencyError, PackageError, UnsupportedModelError
from edgekit.registry import Registry

RESIZE_MODES = ("exact", "shortest_edge", "none")
# PIL's filter codes (PIL.Image.Resampling), as transformers' PILImageResampling stores them in configs.
PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_STANDARD_MEAN = (0.5, 0.5, 0.5)  # transformers' IMAGENET_STANDARD_MEAN / _STD
_STANDARD_STD = (0.5, 0.5, 0.5)
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OPENAI_CLIP_MEAN / _STD (BitImageProcessor's defaults)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True, kw_only=True)
class ImageSettings:
    """The image processor's steps as data. ``height`` x ``width`` is the tensor the model gets.

    ``resize_mode``: ``exact`` resizes to ``resize_height`` x ``resize_width`` (default: the output size);
    ``shortest_edge`` scales the short side to ``resize_shortest`` keeping the aspect ratio (the long side
    truncated, as transformers' ``get_resize_output_image_size``); ``none`` keeps the input size.
    ``center_crop`` then cuts ``height`` x ``width`` from the middle. Pixels become
    ``((uint8 * rescale_factor - rescale_offset) - mean) / std``.
    """

    height: int
    width: int
    channels: int = 3
    resize_mode: str = "exact"
    resize_height: int | None = None
    resize_width: int | None = None
    resize_shortest: int | None = None
    resample: int = 2
    center_crop: bool = False
    rescale_factor: float = 1 / 255
    rescale_offset: float = 0.0
    mean: tuple[float, ...] = _STANDARD_MEAN
    std: tuple[float, ...] = _STANDARD_STD
    processor: str | None = None  # the HF class these settings came from, for reports and errors

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise PackageError(f"image resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.resize_mode == "shortest_edge" and not self.resize_shortest:
            raise PackageError("image resize_mode 'shortest_edge' needs resize_shortest")
        if self.resample not in PIL_FILTERS:
            raise PackageError(f"image resample must be a PIL filter code {sorted(PIL_FILTERS)}, got {self.resample}")
        if min(self.height, self.width) < 1 or self.channels not in (1, 3):
            raise PackageError(f"bad image size {self.height}x{self.width}x{self.channels}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any], *, model_config: Mapping[str, Any] | None = None) -> ImageSettings:
        """Settings from a ``preprocessor_config.json`` (and the model's ``config.json`` for the channels)."""
        model_config = model_config or {}
        rule = image_processor_rule(cfg, model_config)
        merged = {**rule.defaults, **{k: v for k, v in cfg.items() if v is not None}}
        geometry = rule.geometry(merged) if merged.get("do_resize", True) else _no_resize(merged, model_config)
        if rule.has_center_crop and merged.get("do_center_crop"):
            crop = _hw(merged.get("crop_size"), "crop_size", rule.name)
            geometry = {**geometry, "center_crop": True, "height": crop[0], "width": crop[1]}
        mean, std = _normalization(merged, rule)
        do_rescale = bool(merged.get("do_rescale", True))
        return cls(
            **geometry,
            channels=int(model_config.get("num_channels", 3)),
            resample=int(merged.get("resample", 2)),
            rescale_factor=float(merged.get("rescale_factor", 1 / 255)) if do_rescale else 1.0,
            # EfficientNet's rescale_offset: x * factor - 1 (maps [0, 255] to [-1, 1] with factor 1/127.5).
            rescale_offset=1.0 if do_rescale and rule.reads_rescale_offset and merged.get("rescale_offset") else 0.0,
            mean=mean,
            std=std,
            processor=rule.name,
        )

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ImageSettings:
        if "resize_mode" not in d:
            return _from_legacy_dict(d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PackageError(
                f"unknown image preprocessing keys {unknown}",
                hint="the package was written by a newer edgekit: upgrade, or export it again",
            )
        return cls(**dict(d))


def _from_legacy_dict(d: Mapping[str, Any]) -> ImageSettings:
    """Manifests written before the resize rules were recorded: shortest edge + crop (bicubic), else exact."""
    shortest = d.get("resize_shortest")
    return ImageSettings(
        height=int(d["height"]),
        width=int(d["width"]),
        channels=int(d.get("channels", 3)),
        resize_mode="shortest_edge" if shortest else "exact",
        resize_shortest=int(shortest) if shortest else None,
        resample=3 if shortest else 2,
        center_crop=bool(shortest),
        rescale_factor=float(d.get("rescale_factor", 1 / 255)),
        mean=tuple(d.get("mean", _STANDARD_MEAN)),
        std=tuple(d.get("std", _STANDARD_STD)),
    )


# ------------------------------------------------------------------------------ processor classes


@dataclass(frozen=True, kw_only=True)
class ImageProcessorRule:
    """One transformers image processor class: its defaults and how its resize step reads ``size``."""

    name: str
    defaults: Mapping[str, Any]  # the class's __init__ defaults, for keys a config leaves out
    geometry: Callable[[Mapping[str, Any]], dict[str, Any]]  # merged config -> ImageSettings geometry fields
    has_center_crop: bool  # whether preprocess() honours do_center_crop / crop_size
    model_types: tuple[str, ...] = ()  # AutoImageProcessor's model_type -> class map, for configs without a type
    reads_rescale_offset: bool = False
    include_top: bool = False  # EfficientNet: a second normalize(mean=0, std) after the first


IMAGE_PROCESSORS: Registry[ImageProcessorRule] = Registry("image processor")


def _size_dict(size: Any, *, default_to_square: bool, what: str, processor: str) -> dict[str, int]:
    """transformers' ``get_size_dict``: ints and (h, w) sequences from old configs become dicts."""
    if isinstance(size, dict):
        return {k: int(v) for k, v in size.items() if v is not None}
    if isinstance(size, int):
        return {"height": size, "width": size} if default_to_square else {"shortest_edge": size}
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return {"height": int(size[0]), "width": int(size[1])}
    raise UnsupportedModelError(f"{processor}: cannot read {what}={size!r}", hint="give {'height', 'width'}")


def _hw(size: Any, what: str, processor: str) -> tuple[int, int]:
    sd = _size_dict(size, default_to_square=True, what=what, processor=processor)
    if "height" not in sd or "width" not in sd:
        raise UnsupportedModelError(
            f"{processor} needs {what} with 'height' and 'width', got {sorted(sd)}",
            hint=f"set {what} to {{'height': H, 'width': W}} in preprocessor_config.json",
        )
    return sd["height"], sd["width"]


def _exact_geometry(name: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    def geometry(cfg: Mapping[str, Any]) -> dict[str, Any]:
        h, w = _hw(cfg.get("size"), "size", name)
        return {"resize_mode": "exact", "resize_height": h, "resize_width": w, "height": h, "width": w}

    return geometry


def _shortest_or_exact_geometry(name: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """MobileNet / BiT / CLIP style: ``{shortest_edge}`` keeps the aspect ratio, ``{height, width}`` warps."""

    def geometry(cfg: Mapping[str, Any]) -> dict[str, Any]:
        sd = _size_dict(cfg.get("size"), default_to_square=False, what="size", processor=name)
        if "shortest_edge" in sd:
            se = sd["shortest_edge"]
            return {"resize_mode": "shortest_edge", "resize_shortest": se, "height": se, "width": se}
        return _exact_geometry(name)(cfg)

    return geometry


def _convnext_geometry(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """ConvNextImageProcessor.resize: below 384 the short side goes to int(se / crop_pct), then an se x se crop."""
    name = "ConvNextImageProcessor"
    sd = _size_dict(cfg.get("size"), default_to_square=False, what="size", processor=name)
    if "shortest_edge" not in sd:
        raise UnsupportedModelError(
            f"{name} needs size={{'shortest_edge': N}}, got {sorted(sd)}", hint="fix size in preprocessor_config.json"
        )
    se = sd["shortest_edge"]
    if se >= 384:  # transformers warps without cropping at 384 and above
        return {"resize_mode": "exact", "resize_height": se, "resize_width": se, "height": se, "width": se}
    crop_pct = float(cfg.get("crop_pct") or 224 / 256)
    return {
        "resize_mode": "shortest_edge",
        "resize_shortest": int(se / crop_pct),
        "center_crop": True,
        "height": se,
        "width": se,
    }


def _no_resize(cfg: Mapping[str, Any], model_config: Mapping[str, Any]) -> dict[str, Any]:
    size = int(model_config.get("image_size") or 224)  # nominal: only the samples' size; inputs keep theirs
    return {"resize_mode": "none", "height": size, "width": size}


def _normalization(cfg: Mapping[str, Any], rule: ImageProcessorRule) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = _per_channel(cfg.get("image_mean", _STANDARD_MEAN))
    std = _per_channel(cfg.get("image_std", _STANDARD_STD))
    do_normalize = bool(cfg.get("do_normalize", True))
    if rule.include_top and cfg.get("include_top"):
        # A second normalize(mean=0, std): ((x - m) / s) / s == (x - m) / (s * s), folded into one step; the
        # float32 rounding differs by ~1 ulp of s * s, far inside the 1e-5 parity bound.
        if do_normalize:
            return mean, tuple(float(np.float32(s) * np.float32(s)) for s in std)
        return tuple(0.0 for _ in std), std
    if not do_normalize:
        return tuple(0.0 for _ in mean), tuple(1.0 for _ in std)
    return mean, std


def _per_channel(v: Any) -> tuple[float, ...]:
    return tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else (float(v),) * 3


def _register(rule: ImageProcessorRule) -> None:
    IMAGE_PROCESSORS.add(rule.name, rule)


_COMMON = {"do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True}
_register(
    ImageProcessorRule(
        name="ViTImageProcessor",
        defaults={**_COMMON, "size": {"height": 224, "width": 224}, "resample": 2},
        geometry=_exact_geometry("ViTImageProcessor"),
        has_center_crop=False,
        model_types=("vit", "swin", "swinv2", "vit_mae", "vit_msn", "dinat", "nat", "yolos"),
    )
)
_CROP_224 = {"do_center_crop": True, "crop_size": {"height": 224, "width": 224}}
_register(
    ImageProcessorRule(
        name="DeiTImageProcessor",
        defaults={**_COMMON, **_CROP_224, "size": {"height": 256, "width": 256}, "resample": 3},
        geometry=_exact_geometry("DeiTImageProcessor"),
        has_center_crop=True,
        model_types=("deit",),
    )
)
_register(
    ImageProcessorRule(
        name="BeitImageProcessor",
        defaults={**_COMMON, **_CROP_224, "size": {"height": 256, "width": 256}, "resample": 3},
        geometry=_exact_geometry("BeitImageProcessor"),
        has_center_crop=True,
        model_types=("beit", "data2vec-vision"),
    )
)
for _name, _types in (
    ("MobileNetV2ImageProcessor", ("mobilenet_v2",)),
    ("MobileNetV1ImageProcessor", ("mobilenet_v1",)),
):
    _register(
        ImageProcessorRule(
            name=_name,
            defaults={**_COMMON, **_CROP_224, "size": {"shortest_edge": 256}, "resample": 2},
            geometry=_shortest_or_exact_geometry(_name),
            has_center_crop=True,
            model_types=_types,
        )
    )
_register(
    ImageProcessorRule(
        name="BitImageProcessor",
        defaults={
            **_COMMON,
            **_CROP_224,
            "size": {"shortest_edge": 224},
            "resample": 3,
            "image_mean": _CLIP_MEAN,
            "image_std": _CLIP_STD,
        },
        geometry=_shortest_or_exact_geometry("BitImageProcessor"),
        has_center_crop=True,
        model_types=("bit", "dinov2"),
    )
)
_register(
    ImageProcessorRule(
        name="ConvNextImageProcessor",
        defaults={**_COMMON, "size": {"shortest_edge": 384}, "crop_pct": 224 / 256, "resample": 2},
        geometry=_convnext_geometry,
        has_center_crop=False,  # its crop is part of resize (crop_pct), not a do_center_crop step
        model_types=("convnext", "convnextv2", "resnet", "regnet", "van", "cvt"),
    )
)
_register(
    ImageProcessorRule(
        name="EfficientNetImageProcessor",
        defaults={
            **_COMMON,
            "size": {"height": 346, "width": 346},
            "resample": 0,
            "do_center_crop": False,
            "crop_size": {"height": 289, "width": 289},
            "rescale_offset": False,
            "include_top": True,
        },
        geometry=_exact_geometry("EfficientNetImageProcessor"),
        has_center_crop=True,
        model_types=("efficientnet",),
        reads_rescale_offset=True,
        include_top=True,
    )
)


def image_processor_rule(cfg: Mapping[str, Any], model_config: Mapping[str, Any]) -> ImageProcessorRule:
    """The rule for the processor class a config names (``...Fast`` and old ``...FeatureExtractor`` included)."""
    declared = cfg.get("image_processor_type") or cfg.get("feature_extractor_type")
    if declared:
        # The Fast variants need torchvision; without it transformers itself falls back to the slow (PIL) class,
        # whose rules these are. Old configs name the FeatureExtractor alias of the same class.
        name = str(declared).removesuffix("Fast").replace("FeatureExtractor", "ImageProcessor")
        if name in IMAGE_PROCESSORS:
            return IMAGE_PROCESSORS.get(name)
        raise UnsupportedModelError(
            f"the image processor {declared} has no preprocessing rules in the edgekit runtime; its resize, crop"
            " and normalization steps would be guessed",
            hint=f"supported processors: {', '.join(IMAGE_PROCESSORS.names())}; or export the graph to ONNX"
            " yourself and pass image_settings=ImageSettings(...) with the .onnx file",
        )
    model_type = model_config.get("model_type")
    for rule in IMAGE_PROCESSORS:
        if model_type in rule.model_types:
            return rule
    raise UnsupportedModelError(
        f"no image processor is recorded for the model type {model_type!r} (preprocessor_config.json has no"
        " image_processor_type)",
        hint="save the model's image processor next to it with processor.save_pretrained(model_dir)",
    )


# ------------------------------------------------------------------------------------------ pixels


def load_image(source: str | Path | bytes | np.ndarray | Any) -> Any:
    """Decode an image file or bytes with Pillow; arrays and PIL images pass through."""
    if isinstance(source, np.ndarray) or hasattr(source, "convert"):
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


def _to_pil(img: Any, channels: int) -> Any:
    from PIL import Image

    if isinstance(img, np.ndarray):
        img = Image.fromarray(_uint8_pixels(img))
    # An RGB model gets RGB whatever the file holds (grey, palette, RGBA drop to RGB as Pillow converts them).
    return img.convert("RGB" if channels == 3 else "L")


def _uint8_pixels(arr: np.ndarray) -> np.ndarray:
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise InvalidInputError(f"an image array must be HxW or HxWxC (C = 1, 3 or 4), got shape {list(arr.shape)}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind in "iuf" and arr.size and np.all(arr == np.round(arr)) and arr.min() >= 0 and arr.max() <= 255:
        return arr.astype(np.uint8)
    raise InvalidInputError(
        f"an image array must hold pixel values 0..255 (got dtype {arr.dtype})",
        hint="pass uint8 pixels, as decoded from an image file",
    )


def _resize(img: Any, s: ImageSettings) -> Any:
    if s.resize_mode == "none":
        return img
    if s.resize_mode == "exact":
        h, w = s.resize_height or s.height, s.resize_width or s.width
    else:  # transformers' get_resize_output_image_size(default_to_square=False): the long side is truncated
        w0, h0 = img.size
        short, long = (w0, h0) if w0 <= h0 else (h0, w0)
        new_short, new_long = int(s.resize_shortest or 0), int(int(s.resize_shortest or 0) * long / short)
        h, w = (new_long, new_short) if w0 <= h0 else (new_short, new_long)
    return img.resize((w, h), resample=s.resample)


def _center_crop(arr: np.ndarray, h: int, w: int) -> np.ndarray:
    """transformers' center_crop on HxWxC: floor offsets; zero padding (centred, ceil) when the image is smaller."""
    oh, ow = arr.shape[:2]
    if oh < h or ow < w:
        nh, nw = max(h, oh), max(w, ow)
        padded = np.zeros((nh, nw, arr.shape[2]), arr.dtype)
        top_pad, left_pad = -(-(nh - oh) // 2), -(-(nw - ow) // 2)
        padded[top_pad : top_pad + oh, left_pad : left_pad + ow] = arr
        top, left = (oh - h) // 2 + top_pad, (ow - w) // 2 + left_pad
        return padded[max(0, top) : min(nh, top + h), max(0, left) : min(nw, left + w)]
    top, left = (oh - h) // 2, (ow - w) // 2
    return arr[top : top + h, left : left + w]


def preprocess_image(source: Any, settings: ImageSettings) -> np.ndarray:
    """One image -> float32 CHW, step by step as the recorded HF processor does it."""
    img = _resize(_to_pil(load_image(source), settings.channels), settings)
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if settings.center_crop:
        arr = _center_crop(arr, settings.height, settings.width)
    x = (arr.astype(np.float64) * settings.rescale_factor).astype(np.float32)
    if settings.rescale_offset:
        x = x - np.float32(settings.rescale_offset)
    mean = np.asarray(settings.mean[: settings.channels], np.float32)
    std = np.asarray(settings.std[: settings.channels], np.float32)
    x = (x - mean) / std
    return x.transpose(2, 0, 1)


def preprocess_images(images: list[Any], settings: ImageSettings) -> np.ndarray:
    """Images -> float32 NCHW; every image must come out the same size to share a batch."""
    out = [preprocess_image(src, settings) for src in images]
    shapes = {a.shape for a in out}
    if len(shapes) > 1:
        raise InvalidInputError(
            f"these images preprocess to different sizes {sorted(shapes)} (the processor keeps the aspect ratio"
            " without a crop), so they cannot share a batch",
            hint="classify them one at a time",
        )
    return np.ascontiguousarray(np.stack(out).astype(np.float32))
