"""What to profile a model on: its phases (one graph run each) and their inputs, per task modality.

A package's task says what realistic inputs look like, so the profiler makes them the way the device would:

- text (embeddings, classification): real sentences tokenized with the package's tokenizer, filling
  ``DEFAULT_TEXT_TOKENS`` tokens (or the ``--input-shape`` given, e.g. ``input_ids=1x128``);
- generation: a ``prefill`` phase over a prompt of ``DEFAULT_PROMPT_TOKENS`` real tokens with an empty KV
  cache, and a ``decode`` phase: one new token over that cached prompt (without a KV cache, decoding
  recomputes the prompt plus one token);
- image and audio: the package's own preprocessing applied to generated samples
  (``runtimes.samples.sample_feeds_for``), tiled to the batch of ``--input-shape``;
- tensor, and bare ``.onnx`` files: random inputs at the bound shapes. Every dynamic dim must then be bound
  with ``--input-shape``; the error names the unbound ones.

Each task's record (``edgekit.tasks``, ``profile_phases``) names the maker of its phases: a new task is one
entry there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import PackageError, UsageError
from edgekit.manifest import Manifest

__all__ = ["DEFAULT_PROMPT_TOKENS", "DEFAULT_TEXT_TOKENS", "Phase", "Target", "make_phases"]

# A sentence-length input: the common case for embeddings and classification on a device.
DEFAULT_TEXT_TOKENS = 32
DEFAULT_PROMPT_TOKENS = 32
GENERATE_NEW_TOKENS = 16  # for the end-to-end generation figure


@dataclass(frozen=True, kw_only=True)
class Target:
    """One model to profile: a package (with its manifest) or a bare ONNX file."""

    label: str
    model_path: Path
    root: Path | None = None
    manifest: Manifest | None = None

    @property
    def task(self) -> str:
        return self.manifest.task if self.manifest else "tensor"

    @property
    def recipe(self) -> str | None:
        return self.manifest.recipe.name if self.manifest else None


@dataclass(frozen=True, kw_only=True)
class Phase:
    """One graph run to measure and estimate."""

    name: str  # "forward" | "prefill" | "decode"
    feeds: Mapping[str, np.ndarray]
    items_per_run: int
    item: str  # "inputs" or "tokens": the unit of throughput
    description: str

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(int(d) for d in v.shape) for k, v in self.feeds.items()}


FeedMaker = Callable[[Target, Mapping[str, tuple[int, ...]], Any], list[Phase]]


def _corpus_ids(encoder: Any, *, special: bool) -> list[int]:
    from runtimes.samples import sentences

    text = " ".join(sentences(200))
    return encoder.encode(text, add_special_tokens=special)


def _text_encoder(target: Target) -> Any:
    from runtimes.preprocess import TextEncoder

    assert target.root is not None and target.manifest is not None
    tokenizer = target.manifest.preprocessing.get("tokenizer_file", "tokenizer.json")
    return TextEncoder(target.root / tokenizer)


def _given(shapes: Mapping[str, tuple[int, ...]], names: Sequence[str], rank: int) -> tuple[int, ...] | None:
    for name in names:
        if name in shapes and len(shapes[name]) == rank:
            return shapes[name]
    return None


def text_phases(target: Target, shapes: Mapping[str, tuple[int, ...]], specs: Any) -> list[Phase]:
    manifest = target.manifest
    assert manifest is not None
    names = [t.name for t in manifest.inputs]
    max_len = manifest.preprocessing.get("max_length") or 512
    batch, seq = _given(shapes, names, 2) or (1, min(DEFAULT_TEXT_TOKENS, max_len))
    if seq > max_len:
        raise UsageError(
            f"--input-shape asks for {seq} tokens; this model takes at most {max_len}", param="input_shapes"
        )
    from runtimes.samples import sentences

    encoder = _text_encoder(target)
    corpus = sentences(200)
    # Real text longer than the window, truncated by the tokenizer itself (special tokens included).
    rows = [" ".join(corpus[7 * b :]) for b in range(batch)]
    encoder.tokenizer.enable_truncation(seq)
    encoded = encoder.encode_batch(rows)
    feeds = {k: v for k, v in encoded.feeds(names).items()}
    for k, v in feeds.items():  # a short text would leave padding: widen to exactly seq
        if v.shape[1] != seq:
            raise UsageError(f"could not make {seq} tokens of text for {k}", param="input_shapes")
    return [
        Phase(
            name="forward",
            feeds=feeds,
            items_per_run=batch * seq,
            item="tokens",
            description=f"{batch} x {seq} tokens of real text",
        )
    ]


def generation_phases(target: Target, shapes: Mapping[str, tuple[int, ...]], specs: Any) -> list[Phase]:
    from runtimes.decoder_feeds import attention_feeds

    manifest = target.manifest
    assert manifest is not None and manifest.generation is not None
    gen = manifest.generation
    given = _given(shapes, [gen.input_ids_name], 2)
    batch, prompt = given or (1, min(DEFAULT_PROMPT_TOKENS, max(1, gen.max_context_tokens // 2)))
    if prompt + 1 > gen.max_context_tokens:
        raise UsageError(
            f"a {prompt}-token prompt leaves no room to decode in a {gen.max_context_tokens}-token context",
            param="input_shapes",
        )
    encoder = _text_encoder(target)
    corpus = _corpus_ids(encoder, special=False)
    ids = np.asarray([corpus[b * prompt : (b + 1) * prompt] for b in range(batch)], np.int64)
    rng = np.random.default_rng(0)

    def feeds_for(step_ids: np.ndarray, past: int) -> dict[str, np.ndarray]:
        b, s = step_ids.shape
        f: dict[str, np.ndarray] = {
            gen.input_ids_name: step_ids,
            **attention_feeds(gen, np.ones((b, past + s), np.int64)),
        }
        if gen.position_ids_name:
            f[gen.position_ids_name] = np.tile(np.arange(past, past + s, dtype=np.int64), (b, 1))
        if gen.with_kv_cache:
            dtype = np.dtype(gen.kv_dtype)
            for layer in range(gen.num_layers):
                for template in (gen.past_key_template, gen.past_value_template):
                    assert template is not None
                    shape = (b, gen.num_kv_heads, past, gen.head_size)
                    f[template.format(layer=layer)] = rng.standard_normal(shape).astype(dtype) * 0.5
        return f

    next_ids = np.asarray(corpus[batch * prompt : batch * prompt + batch], np.int64).reshape(batch, 1)
    prefill = Phase(
        name="prefill",
        feeds=feeds_for(ids, 0),
        items_per_run=batch * prompt,
        item="tokens",
        description=f"prompt of {batch} x {prompt} tokens, empty KV cache",
    )
    if gen.with_kv_cache:
        decode = Phase(
            name="decode",
            feeds=feeds_for(next_ids, prompt),
            items_per_run=batch,
            item="tokens",
            description=f"one new token over {prompt} cached tokens",
        )
    else:
        decode = Phase(
            name="decode",
            feeds=feeds_for(np.concatenate([ids, next_ids], axis=1), 0),
            items_per_run=batch,
            item="tokens",
            description=f"one new token, recomputing {prompt + 1} tokens (no KV cache)",
        )
    return [prefill, decode]


def packaged_phases(target: Target, shapes: Mapping[str, tuple[int, ...]], specs: Any) -> list[Phase]:
    """Image / audio: the package's own preprocessing on generated samples, tiled to the batch asked for."""
    from runtimes.samples import sample_feeds_for

    feeds = dict(sample_feeds_for(target.root, 1)[0])
    for name, value in list(feeds.items()):
        want = shapes.get(name)
        if want is None:
            continue
        if tuple(want[1:]) != tuple(value.shape[1:]):
            raise UsageError(
                f"--input-shape {name}={'x'.join(map(str, want))} does not match the package's preprocessing, "
                f"which makes {'x'.join(map(str, value.shape))}; only the batch (first) dim can change",
                param="input_shapes",
            )
        feeds[name] = np.repeat(value, want[0], axis=0)
    batch = next(iter(feeds.values())).shape[0] if feeds else 1
    return [
        Phase(
            name="forward",
            feeds=feeds,
            items_per_run=batch,
            item="inputs",
            description=f"batch of {batch} preprocessed {target.task.split('-')[0]} input(s)",
        )
    ]


def tensor_phases(target: Target, shapes: Mapping[str, tuple[int, ...]], specs: Any) -> list[Phase]:
    from edgekit.profiler.static import unbound_dims

    bound, _ = unbound_dims(specs, shapes)
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    for name, shape in bound.items():
        dtype = np.dtype(specs[name][0])
        if dtype.kind == "f":
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        else:  # zeros are a valid index, mask or id for any integer input
            feeds[name] = np.zeros(shape, dtype)
    batch = next(iter(bound.values()))[0] if bound and next(iter(bound.values())) else 1
    return [
        Phase(
            name="forward",
            feeds=feeds,
            items_per_run=max(1, batch),
            item="inputs",
            description="random inputs at " + ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in bound.items()),
        )
    ]


def _maker(target: Target) -> FeedMaker:
    """The task record's phase maker (``edgekit.tasks``: ``profile_phases``); random tensors when the package
    lacks what it needs (a bare ``.onnx`` file, a decoder without generation facts, images without
    preprocessing)."""
    if target.manifest is None or target.root is None:
        return tensor_phases
    from edgekit.tasks import TASKS

    spec = TASKS.get(target.task)
    if spec.kind == "generation" and target.manifest.generation is None:
        return tensor_phases
    if spec.modality == "image" and "image" not in target.manifest.preprocessing:
        return tensor_phases
    return spec.phase_maker()


def make_phases(target: Target, input_shapes: Mapping[str, Sequence[int]] | None, specs: Any) -> list[Phase]:
    """The phases to profile ``target`` on. ``specs`` are its graph inputs (``static.graph_input_specs``)."""
    shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    unknown = sorted(set(shapes) - set(specs))
    if unknown:
        raise UsageError(
            f"--input-shape names {', '.join(repr(u) for u in unknown)}, which {target.label} does not take;"
            f" its inputs are {', '.join(repr(s) for s in specs)}",
            param="input_shapes",
        )
    try:
        return _maker(target)(target, shapes, specs)
    except (OSError, KeyError) as exc:
        raise PackageError(
            f"cannot make inputs for {target.label}: {exc}",
            hint="check the package's tokenizer and preprocessing files",
        ) from None


def save_feeds(phase: Phase, path: Path) -> Path:
    np.savez(path, **{k: np.ascontiguousarray(v) for k, v in phase.feeds.items()})
    return path
