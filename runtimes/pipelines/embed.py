"""Sentence embeddings: tokenize, batch with dynamic padding, pool, L2-normalize.

Texts are tokenized in one ``encode_batch`` call (the ``tokenizers`` library, in Rust), sorted by length and
cut into batches of ``batch_size``, each padded only to its own longest text, so a batch of short texts does
not pay for one long one; results are put back in the caller's order. Pooling (mean over the attention mask,
the CLS token, or max) and normalization come from the package's ``preprocessing`` settings.

The pipeline feeds ONNX Runtime directly (its arrays are built to the model's input dtypes, so the generic
input validation is skipped) to keep Python's share of each call small.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgekit.errors import ConfigError, InvalidInputError, PackageError, RuntimeBackendError
from edgekit.registry import Registry
from runtimes.pipelines import PipelineContext

_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings")


def _mean(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask.astype(hidden.dtype)
    summed = np.matmul(m[:, None, :], hidden)[:, 0, :]
    return summed / np.maximum(m.sum(axis=1, keepdims=True), 1e-9)


def _cls(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return hidden[:, 0, :]


def _max(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask[:, :, None] > 0, hidden, -np.inf).max(axis=1)


POOLING: Registry[Callable[[np.ndarray, np.ndarray], np.ndarray]] = Registry("pooling")
POOLING.add("mean", _mean)
POOLING.add("cls", _cls)
POOLING.add("max", _max)


class EmbedPipeline:
    def __init__(self, ctx: PipelineContext) -> None:
        from runtimes.preprocess import TextEncoder

        pre = ctx.preprocessing
        if ctx.root is None:
            raise PackageError("an embedding model needs a package directory with its tokenizer")
        self.encoder = TextEncoder(
            ctx.root / pre.get("tokenizer_file", "tokenizer.json"), max_length=pre.get("max_length")
        )
        self.tokenizer = self.encoder.tokenizer
        self.pad_id = self.encoder.pad_id
        self.pool = POOLING.get(str(pre.get("pooling", "mean")))
        self.normalize = bool(pre.get("normalize", True))
        self.session = ctx.session
        inputs = ctx.session.inputs
        extra = [n for n in inputs if n not in _TEXT_INPUTS]
        if extra:
            raise PackageError(
                f"this embedding model takes an input {extra[0]!r} the text pipeline cannot fill."
                f" {ctx.session.expected()}",
                hint="use model.run(...) with the inputs yourself",
            )
        self.input_names = [n for n in _TEXT_INPUTS if n in inputs]
        self.dtypes = {n: inputs[n].dtype for n in self.input_names}
        outputs = ctx.session.output_names
        self.output_name = next((n for n in _TOKEN_OUTPUTS if n in outputs), outputs[0])

    def embed(self, texts: str | Sequence[str], *, batch_size: int = 32, normalize: bool | None = None) -> np.ndarray:
        """One vector per text (float32, ``[n, dim]``; ``[dim]`` for a single string)."""
        single = isinstance(texts, str)
        items = [texts] if single else list(texts) if isinstance(texts, (list, tuple)) else None
        if items is None:
            raise InvalidInputError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
        if not items:
            raise InvalidInputError("no texts were given", hint="pass at least one string")
        for t in items:
            if not isinstance(t, str):
                raise InvalidInputError(f"texts must be strings, got {type(t).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer (got {batch_size!r})", param="batch_size")
        encodings = self.tokenizer.encode_batch(items)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        # Sorting pays off only when there is more than one batch.
        order = np.argsort(lengths, kind="stable") if len(items) > batch_size else np.arange(len(items))
        result: np.ndarray | None = None
        for start in range(0, len(items), batch_size):
            chunk = order[start : start + batch_size]
            pooled = self._run_batch([encodings[i] for i in chunk], int(lengths[chunk].max()))
            if result is None:
                result = np.empty((len(items), pooled.shape[-1]), dtype=np.float32)
            result[chunk] = pooled
        assert result is not None  # items is non-empty, so the loop ran
        if self.normalize if normalize is None else normalize:
            result /= np.maximum(np.linalg.norm(result, axis=1, keepdims=True), 1e-12)
        return result[0] if single else result

    def _run_batch(self, encodings: list[Any], seq: int) -> np.ndarray:
        seq = max(1, seq)
        b = len(encodings)
        ids = np.full((b, seq), self.pad_id, dtype=np.int64)
        mask = np.zeros((b, seq), dtype=np.int64)
        types = np.zeros((b, seq), dtype=np.int64) if "token_type_ids" in self.dtypes else None
        for r, e in enumerate(encodings):
            n = len(e.ids)
            ids[r, :n] = e.ids
            mask[r, :n] = 1
            if types is not None:
                types[r, :n] = e.type_ids
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feeds = {n: arrays[n].astype(self.dtypes[n], copy=False) for n in self.input_names}  # type: ignore[union-attr]
        try:
            hidden = self.session.session.run([self.output_name], feeds)[0]
        except Exception as exc:
            raise RuntimeBackendError(
                f"ONNX Runtime failed while embedding: {str(exc).strip().splitlines()[0]}"
            ) from exc
        if hidden.ndim == 2:  # the graph pools itself
            return hidden.astype(np.float32, copy=False)
        return self.pool(hidden, mask).astype(np.float32, copy=False)
