"""Classification of text, images and audio: preprocess as the package says, softmax, top-k labels.

Labels come from the manifest (``labels``); a package without them reports ``LABEL_<i>``. One input gives a
list of ``{"label", "score", "index"}`` sorted by score; a list of inputs gives one such list per input.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InvalidInputError, PackageError, RuntimeBackendError
from runtimes.pipelines import PipelineContext


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def _no_options(kwargs: dict[str, Any], kind: str) -> None:
    if kwargs:
        raise InvalidInputError(f"unexpected argument {next(iter(kwargs))!r} for {kind} classification")


class _Classifier:
    input_kind = "input"

    def __init__(self, ctx: PipelineContext) -> None:
        self.session = ctx.session
        self.root = ctx.root
        self.pre = ctx.preprocessing
        self.labels = list(ctx.manifest.labels) if ctx.manifest and ctx.manifest.labels else None
        outputs = ctx.session.output_names
        self.output_name = "logits" if "logits" in outputs else outputs[0]

    def classify(self, x: Any, *, top_k: int = 5, **kwargs: Any) -> list[Any]:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InvalidInputError(f"top_k must be a positive integer (got {top_k!r})", param="top_k")
        single, items = self._items(x)
        if not items:
            raise InvalidInputError(f"no {self.input_kind}s were given", hint=f"pass at least one {self.input_kind}")
        feeds = self._feeds(items, **kwargs)
        logits = self.session.run(feeds, [self.output_name])[self.output_name]
        if logits.ndim != 2:
            raise RuntimeBackendError(
                f"the classifier's output {self.output_name!r} has shape {list(logits.shape)}, not [batch, labels]"
            )
        ranked = [self._top(row, top_k) for row in softmax(logits)]
        return ranked[0] if single else ranked

    def _items(self, x: Any) -> tuple[bool, list[Any]]:
        if isinstance(x, (list, tuple)):
            return False, list(x)
        return True, [x]

    def _feeds(self, items: list[Any], **kwargs: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _top(self, probs: np.ndarray, k: int) -> list[dict[str, Any]]:
        k = min(k, probs.shape[0])
        idx = np.argsort(-probs, kind="stable")[:k]
        return [{"label": self._label(int(i)), "score": float(probs[i]), "index": int(i)} for i in idx]

    def _label(self, i: int) -> str:
        return self.labels[i] if self.labels and i < len(self.labels) else f"LABEL_{i}"


class TextClassifyPipeline(_Classifier):
    input_kind = "text"

    def __init__(self, ctx: PipelineContext) -> None:
        super().__init__(ctx)
        from runtimes.preprocess import TextEncoder

        if ctx.root is None:
            raise PackageError("a text classifier needs a package directory with its tokenizer")
        self.encoder = TextEncoder(
            ctx.root / self.pre.get("tokenizer_file", "tokenizer.json"), max_length=self.pre.get("max_length")
        )
        self.input_names = list(ctx.session.inputs)

    def _items(self, x: Any) -> tuple[bool, list[Any]]:
        single, items = super()._items(x)
        for t in items:
            if not isinstance(t, str):
                raise InvalidInputError(f"texts must be strings, got {type(t).__name__}")
        return single, items

    def _feeds(self, items: list[Any], **kwargs: Any) -> dict[str, np.ndarray]:
        _no_options(kwargs, "text")
        return self.encoder.encode_batch(items).feeds(self.input_names)


class ImageClassifyPipeline(_Classifier):
    input_kind = "image"

    def __init__(self, ctx: PipelineContext) -> None:
        super().__init__(ctx)
        from runtimes.preprocess import ImageSettings

        if "image" not in self.pre:
            raise PackageError(
                "this image classifier's manifest has no image preprocessing settings", hint="export it again"
            )
        self.settings = ImageSettings.from_dict(self.pre["image"])
        names = list(ctx.session.inputs)
        self.input_name = "pixel_values" if "pixel_values" in names else names[0]

    def _items(self, x: Any) -> tuple[bool, list[Any]]:
        if isinstance(x, np.ndarray) and x.ndim == 4:
            return False, list(x)
        return super()._items(x)

    def _feeds(self, items: list[Any], **kwargs: Any) -> dict[str, np.ndarray]:
        from runtimes.preprocess import preprocess_images

        _no_options(kwargs, "image")
        for item in items:
            if not isinstance(item, (str, Path, bytes, np.ndarray)) and not hasattr(item, "convert"):
                raise InvalidInputError(
                    f"an image must be a file path, bytes, a PIL image or an HxWxC array, got {type(item).__name__}"
                )
        return {self.input_name: preprocess_images(items, self.settings)}


class AudioClassifyPipeline(_Classifier):
    input_kind = "audio clip"

    def __init__(self, ctx: PipelineContext) -> None:
        super().__init__(ctx)
        from runtimes.preprocess import AudioSettings

        self.settings = AudioSettings.from_dict(self.pre.get("audio", {}))
        self.input_names = list(ctx.session.inputs)

    def _items(self, x: Any) -> tuple[bool, list[Any]]:
        if isinstance(x, np.ndarray):
            if x.ndim == 1:
                return True, [x]
            if x.ndim == 2:
                return False, list(x)
            raise InvalidInputError(f"an audio array must be 1-D (one clip) or 2-D (clips), got shape {list(x.shape)}")
        if isinstance(x, (list, tuple)) and x and all(isinstance(v, (int, float)) for v in x):
            return True, [np.asarray(x, dtype=np.float32)]  # one clip given as a list of samples
        return super()._items(x)

    def _feeds(
        self, items: list[Any], *, sampling_rate: int | Sequence[int] | None = None, **kwargs: Any
    ) -> dict[str, np.ndarray]:
        from runtimes.preprocess import audio_batch

        _no_options(kwargs, "audio")
        rates = None
        if sampling_rate is not None:
            rates = (
                [int(sampling_rate)] * len(items) if isinstance(sampling_rate, int) else [int(r) for r in sampling_rate]
            )
        for item in items:
            if not isinstance(item, (str, Path, np.ndarray, list, tuple)):
                raise InvalidInputError(f"an audio clip must be a WAV path or a float array, got {type(item).__name__}")
        # Features (waveform or log-mel, as the package records) and a mask that is 0 on each clip's padding.
        return audio_batch(items, self.settings, rates=rates).feeds(self.input_names)
