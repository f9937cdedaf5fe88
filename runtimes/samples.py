"""Sample inputs per task: for export-time validation and calibration (when the user gives none), and for
profiling a package on realistic inputs. Runtime-side (numpy + the runtime's preprocessing), so a device
install can profile without the exporters' dependencies.

The text set is deliberately varied: long and short sentences, one-word and punctuation-only inputs,
numbers and a few non-English lines, since quantization error concentrates in the unusual ones.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.manifest import GenerationSpec, TensorSpec
from runtimes.decoder_feeds import attention_feeds
from runtimes.preprocess import AudioSettings, ImageSettings, TextEncoder, audio_batch, preprocess_images

_BASE_SENTENCES = [
    "Hello world",
    "a",
    "!",
    "?!...",
    "ok",
    "Yes.",
    "The quick brown fox jumps over the lazy dog.",
    "Edge devices run small quantized models locally so the data never leaves the phone.",
    "1234 5678 90",
    "3.14159 is approximately pi, and e is about 2.71828.",
    "Call me at 555-0123 before 9:30 pm on 2024-05-17.",
    "Le chat est assis sur la table de la cuisine.",
    "Das Wetter ist heute sehr schön, aber morgen wird es regnen.",
    "El modelo se ejecuta en el teléfono sin conexión a internet.",
    "これはテストの文です。",
    "Привет, как дела?",
    "What is the capital of France?",
    "I love this product, it works perfectly!",
    "This is the worst experience I have ever had with customer support.",
    "The meeting has been moved to Thursday afternoon.",
    "Quantization reduces model size by storing weights in eight bits instead of thirty-two.",
    "She sells sea shells by the sea shore.",
    "Transformers use attention to relate every token to every other token in the sequence.",
    "#hashtag @mention https://example.com/path?q=1",
    "   spaces   around   words   ",
    "UPPER CASE SENTENCE WITH SHOUTING",
    "emoji 🙂 and symbols © ® ™",
    "Please turn off the lights in the living room.",
    "The patient reported mild headaches and fatigue over the past two weeks.",
    "Stock prices fell sharply after the quarterly earnings report was released.",
    (
        "In a long paragraph that keeps going, we describe how a small embedding model is exported to ONNX,"
        " quantized to eight-bit integers with per-channel scales, validated against the original floating"
        " point model on a varied set of sentences, and finally profiled on a handful of devices ranging from"
        " a Raspberry Pi to a flagship phone, reporting latency percentiles and peak memory for each."
    ),
]
_SUBJECTS = ["The engineer", "My cat", "A small robot", "The old library", "Our team", "The river", "This phone"]
_VERBS = ["quietly measures", "always forgets", "carefully builds", "never trusts", "slowly reads", "paints"]
_OBJECTS = [
    "the latency numbers",
    "a red bicycle",
    "twelve tiny models",
    "the morning news",
    "every sensor",
    "42 apples",
]


def sentences(n: int = 120, *, offset: int = 0) -> list[str]:
    """``n`` deterministic, varied sentences (the fixed set first, then generated ones).

    ``offset`` > 0 gives generated sentences only, disjoint from the first ``offset`` ones: calibration
    data that never overlaps the validation set.
    """
    if offset:
        return _calibration_sentences(n, offset)
    out = list(_BASE_SENTENCES)
    i = 0
    while len(out) < n:
        s, v, o = _SUBJECTS[i % 7], _VERBS[(i // 7) % 6], _OBJECTS[(i // 42 + i) % 6]
        out.append(f"{s} {v} {o}." if i % 3 else f"{s} {v} {o} when nobody is looking, twice a day.")
        i += 1
    return out[:n]


_CAL_WORDS = [
    ["Yesterday", "In the lab,", "Honestly,", "At 7 am", "Meanwhile", "Hmm,", "Q:", "Note:"],
    ["a farmer", "the new drone", "our cheap sensor", "Mia", "the kernel", "three students", "Berlin"],
    ["uploaded", "measured", "ignored", "translated", "compressed", "won't stop", "asked about"],
    ["the logs!", "50 photos.", "everything...", "une petite maison.", "die Daten.", "it?", "¿qué pasó?"],
]


def _calibration_sentences(n: int, offset: int) -> list[str]:
    """Sentences built from their own vocabulary, so they never coincide with :func:`sentences`."""
    out = []
    for i in range(offset, offset + n):
        words = [group[(i * (k + 3) + k) % len(group)] for k, group in enumerate(_CAL_WORDS)]
        out.append(" ".join(words) if i % 5 else words[1])
    return out


# ---------------------------------------------------------------------------------------- sample makers

SampleMaker = Callable[["SampleContext", int], list[dict[str, np.ndarray]]]


class SampleContext:
    def __init__(
        self,
        *,
        inputs: list[TensorSpec],
        preprocessing: dict[str, Any],
        asset_dir: Path | None,
        generation: GenerationSpec | None,
        seed: int = 0,
        offset: int = 0,
    ) -> None:
        self.inputs = inputs
        self.preprocessing = preprocessing
        self.asset_dir = asset_dir
        self.generation = generation
        self.seed = seed
        self.offset = offset  # text samples start past the validation set (calibration never overlaps it)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def text_encoder(self) -> TextEncoder:
        assert self.asset_dir is not None
        return TextEncoder(
            self.asset_dir / self.preprocessing.get("tokenizer_file", "tokenizer.json"),
            max_length=self.preprocessing.get("max_length"),
        )


def text_samples(ctx: SampleContext, n: int) -> list[dict[str, np.ndarray]]:
    enc = ctx.text_encoder()
    return [enc.encode_batch([s]).feeds(ctx.input_names) for s in sentences(n, offset=ctx.offset)]


def generation_samples(ctx: SampleContext, n: int) -> list[dict[str, np.ndarray]]:
    enc = ctx.text_encoder()
    gen = ctx.generation
    assert gen is not None
    return [generation_feeds(prompt_ids(enc, s, gen), gen, ctx.inputs) for s in sentences(n, offset=ctx.offset)]


def prompt_ids(enc: TextEncoder, text: str, gen: GenerationSpec) -> np.ndarray:
    """A (1, s) prompt that leaves room for one generated token within the context window."""
    ids = enc.encode(text, add_special_tokens=False)[: max(1, gen.max_context_tokens - 1)]
    return np.asarray([ids or [0]], np.int64)


def generation_feeds(ids: np.ndarray, gen: GenerationSpec, inputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """Prefill feeds with an empty KV cache, as the runtime's first step sends them."""
    b, s = ids.shape
    feeds = {gen.input_ids_name: ids, **attention_feeds(gen, np.ones((b, s), np.int64))}
    if gen.position_ids_name:
        feeds[gen.position_ids_name] = np.tile(np.arange(s, dtype=np.int64), (b, 1))
    if gen.with_kv_cache:
        dtype = np.dtype(gen.kv_dtype)
        for layer in range(gen.num_layers):
            for tmpl in (gen.past_key_template, gen.past_value_template):
                assert tmpl is not None
                feeds[tmpl.format(layer=layer)] = np.zeros((b, gen.num_kv_heads, 0, gen.head_size), dtype)
    return feeds


def decode_step_feeds(gen: GenerationSpec, *, past: int, token: int = 1) -> dict[str, np.ndarray]:
    """One decode step: a single new token over ``past`` cached tokens (the call a generation loop repeats)."""
    feeds: dict[str, np.ndarray] = {gen.input_ids_name: np.asarray([[token]], np.int64)}
    feeds.update(attention_feeds(gen, np.ones((1, past + 1), np.int64)))
    if gen.position_ids_name:
        feeds[gen.position_ids_name] = np.asarray([[past]], np.int64)
    rng = np.random.default_rng(0)
    dtype = np.dtype(gen.kv_dtype)
    for layer in range(gen.num_layers):
        for tmpl in (gen.past_key_template, gen.past_value_template):
            assert tmpl is not None
            shape = (1, gen.num_kv_heads, past, gen.head_size)
            feeds[tmpl.format(layer=layer)] = (rng.standard_normal(shape) * 0.5).astype(dtype)
    return feeds


def image_samples(ctx: SampleContext, n: int) -> list[dict[str, np.ndarray]]:
    """Synthetic photos at odd sizes around the model's (smaller, larger, non-square), through the package's
    own resize / crop / normalize: the samples exercise the steps a real image goes through. A package without
    image preprocessing (a bare ONNX file) gets tensor samples."""
    if "image" not in ctx.preprocessing:
        return tensor_samples(ctx, n)
    settings = ImageSettings.from_dict(ctx.preprocessing["image"])
    rng = np.random.default_rng(ctx.seed)
    name = ctx.input_names[0]
    out = []
    for i in range(n):
        # Without a crop an aspect-keeping resize makes the tensor follow the image: keep those samples square.
        keeps_aspect = settings.resize_mode != "exact" and not settings.center_crop
        scale_h, scale_w = (1.0, 1.0) if keeps_aspect else (0.75 + 0.15 * (i % 5), 0.8 + 0.35 * (i % 3))
        if settings.resize_mode == "none":
            scale_h = scale_w = 1.0  # the image keeps its size: it must already be the model's
        h, w = max(1, round(settings.height * scale_h)), max(1, round(settings.width * scale_w))
        # Smooth gradients plus noise: closer to natural image statistics than pure noise.
        yy, xx = np.mgrid[0:h, 0:w]
        base = (np.sin(xx / (3 + i % 5)) + np.cos(yy / (2 + i % 7))) * 60 + 128
        img = np.clip(base[..., None] + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
        out.append({name: preprocess_images([img], settings)})
    return out


def audio_samples(ctx: SampleContext, n: int) -> list[dict[str, np.ndarray]]:
    """One-second tones plus noise, as the package's own feature extractor turns them into model inputs."""
    settings = AudioSettings.from_dict(ctx.preprocessing["audio"])
    rng = np.random.default_rng(ctx.seed)
    names = ctx.input_names
    sr = settings.sampling_rate
    t = np.arange(sr) / sr
    out = []
    for i in range(n):
        tone = np.sin(2 * np.pi * (200 + 40 * i) * t) * (0.2 + 0.1 * (i % 4))
        clip = tone + rng.normal(0, 0.05, t.size)
        out.append(audio_batch([clip.astype(np.float32)], settings).feeds(names))
    return out


def tensor_samples(ctx: SampleContext, n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(ctx.seed)
    out = []
    for _ in range(n):
        feeds = {}
        for spec in ctx.inputs:
            shape = bind_shape(spec, {})
            dtype = np.dtype(spec.dtype)
            if dtype.kind == "f":
                feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
            elif dtype.kind in "iu":
                feeds[spec.name] = rng.integers(0, 2, shape).astype(dtype)
            else:
                feeds[spec.name] = np.zeros(shape, dtype)
        out.append(feeds)
    return out


def bind_shape(spec: TensorSpec, bindings: dict[str, int], default: int = 1) -> tuple[int, ...]:
    """Concrete shape for a spec: symbolic dims from ``bindings`` (batch-like ones default to 1)."""
    shape = []
    for d in spec.shape:
        if isinstance(d, int) and d > 0:
            shape.append(d)
        elif isinstance(d, str) and d in bindings:
            shape.append(int(bindings[d]))
        else:
            shape.append(default)
    return tuple(shape)


def make_samples(ctx: SampleContext, *, kind: str, modality: str, n: int) -> list[dict[str, np.ndarray]]:
    """``n`` sample feeds for a task of ``kind`` and ``modality``, from the task record's sample maker."""
    return task_for(kind, modality).sample_maker()(ctx, n)


def task_for(kind: str, modality: str) -> Any:
    """The task record (``edgekit.tasks``) of a kind and modality; generation is one task whatever the modality."""
    from edgekit.tasks import TASKS

    for spec in TASKS:
        if spec.kind == kind and (spec.modality == modality or kind == "generation"):
            return spec
    known = sorted({(t.kind, t.modality) for t in TASKS})
    raise ValueError(f"no task of kind {kind!r} and modality {modality!r}; known: {known}")


def sample_feeds_for(package_dir: str | Path, n: int = 8) -> list[dict[str, np.ndarray]]:
    """Generated sample inputs for a package, through its own preprocessing (the profiler's realistic inputs)."""
    from edgekit.package import read_manifest
    from edgekit.tasks import TASKS

    root = Path(package_dir)
    manifest = read_manifest(root)
    spec = TASKS.get(manifest.task)
    ctx = SampleContext(
        inputs=manifest.inputs, preprocessing=manifest.preprocessing, asset_dir=root, generation=manifest.generation
    )
    return spec.sample_maker()(ctx, n)
