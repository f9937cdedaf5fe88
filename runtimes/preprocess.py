"""Input preprocessing read from the package (tokenizer.json, preprocessing settings), with no transformers.

Shared by the runtime pipelines and by the exporters (validation samples, calibration data), so the
numbers a package is validated on are produced exactly as on the device. Images and audio live in
:mod:`runtimes.image_preprocess` and :mod:`runtimes.audio_preprocess` (re-exported here, imported on first
use: a text package's load does not pay for them, ~0.8 MB resident measured in a fresh process).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import InvalidInputError, MissingDependencyError, PackageError
from edgekit.ort_policy import release_freed_heap
from runtimes.wordpiece import load_tokenizer

if TYPE_CHECKING:
    from runtimes.audio_preprocess import AudioBatch, AudioSettings, audio_batch, preprocess_audio, read_wav
    from runtimes.image_preprocess import ImageSettings, load_image, preprocess_images

# Re-exported names -> the module that defines them, imported when a name is first asked for (PEP 562).
_LAZY = {
    **dict.fromkeys(("AudioBatch", "AudioSettings", "audio_batch", "preprocess_audio", "read_wav"), "audio"),
    **dict.fromkeys(("ImageSettings", "load_image", "preprocess_images"), "image"),
}


def __getattr__(name: str) -> Any:
    kind = _LAZY.get(name)
    if kind is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"runtimes.{kind}_preprocess")
    value = getattr(module, name)
    globals()[name] = value
    return value


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
    """Tokenizes with the package's tokenizer.json; pads to the longest.

    A BERT-style WordPiece file loads as :class:`runtimes.wordpiece.CompactWordPiece` (same ids, ~1/10 of the
    ``tokenizers`` library's resident vocabulary), anything else as the library's own ``Tokenizer``.
    """

    def __init__(self, tokenizer_file: str | Path, *, max_length: int | None = None) -> None:
        try:
            import tokenizers  # noqa: F401  (both tokenizers below need it)
        except ImportError as exc:  # pragma: no cover - tokenizers is a core dependency
            raise MissingDependencyError.for_extra("tokenizers", "core") from exc
        path = Path(tokenizer_file)
        if not path.is_file():
            raise PackageError(
                f"this text model has no tokenizer file ({path.name} is missing from {path.parent})",
                hint="export from a model directory that has tokenizer.json, or copy it into the package",
            )
        self.tokenizer = load_tokenizer(path)
        release_freed_heap()  # the file's bytes and the parse's transients back to the OS (edgekit.ort_policy)
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


__all__ = [
    "AudioBatch",
    "AudioSettings",
    "ImageSettings",
    "TextBatch",
    "TextEncoder",
    "audio_batch",
    "load_image",
    "preprocess_audio",
    "preprocess_images",
    "read_wav",
]
