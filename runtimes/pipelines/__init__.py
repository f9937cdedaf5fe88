"""Pipelines: what a package's task adds on top of ``run`` — embed, classify, generate / stream.

One registry entry per task: the methods it provides and a factory that builds the pipeline from the loaded
session and the package's manifest. A new task is one ``PIPELINES.add``; the model object dispatches by the
entry, never by if-chains on task names. Factories import their module when called, so loading an
embedding package never imports the generation code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.manifest import Manifest
from edgekit.registry import Registry
from runtimes.session import RuntimeSession


@dataclass(frozen=True)
class PipelineContext:
    session: RuntimeSession
    manifest: Manifest | None
    root: Path | None  # the package directory (tokenizer and preprocessor files)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return dict(self.manifest.preprocessing) if self.manifest else {}


@dataclass(frozen=True, kw_only=True)
class PipelineSpec:
    task: str
    methods: tuple[str, ...]  # model methods the pipeline serves, besides ``run``
    factory: Callable[[PipelineContext], Any] | None = None  # None: ``run`` only
    description: str = ""


PIPELINES: Registry[PipelineSpec] = Registry("task")


def _embed(ctx: PipelineContext) -> Any:
    from runtimes.pipelines.embed import EmbedPipeline

    return EmbedPipeline(ctx)


def _text_classify(ctx: PipelineContext) -> Any:
    from runtimes.pipelines.classify import TextClassifyPipeline

    return TextClassifyPipeline(ctx)


def _image_classify(ctx: PipelineContext) -> Any:
    from runtimes.pipelines.classify import ImageClassifyPipeline

    return ImageClassifyPipeline(ctx)


def _audio_classify(ctx: PipelineContext) -> Any:
    from runtimes.pipelines.classify import AudioClassifyPipeline

    return AudioClassifyPipeline(ctx)


def _generate(ctx: PipelineContext) -> Any:
    from runtimes.pipelines.generate import GeneratePipeline

    return GeneratePipeline(ctx)


for _spec in (
    PipelineSpec(
        task="feature-extraction",
        methods=("embed",),
        factory=_embed,
        description="tokenize, batch with dynamic padding, pool, L2-normalize",
    ),
    PipelineSpec(
        task="text-classification",
        methods=("classify",),
        factory=_text_classify,
        description="tokenize, softmax, top-k labels",
    ),
    PipelineSpec(
        task="image-classification",
        methods=("classify",),
        factory=_image_classify,
        description="decode, resize, crop, normalize, top-k labels",
    ),
    PipelineSpec(
        task="audio-classification",
        methods=("classify",),
        factory=_audio_classify,
        description="read WAV or array, resample, normalize, top-k labels",
    ),
    PipelineSpec(
        task="text-generation",
        methods=("generate", "stream"),
        factory=_generate,
        description="prefill + KV-cache decode loop, sampling, streaming text",
    ),
    PipelineSpec(task="tensor", methods=(), description="named arrays in, named arrays out"),
):
    PIPELINES.add(_spec.task, _spec)
del _spec
