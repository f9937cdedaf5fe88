"""The task registry: what a task exports to, which pipeline serves it, how its accuracy is compared.

Core data (the exporters, the runtime's sample inputs and the profiler read it). A new task is one
``TASKS.add`` entry: one record holding its facts and, as lazy ``"module:attr"`` references resolved with
:func:`edgekit.registry.resolve`, the code for it in the layers above — the runtime pipeline that serves the
package (``runtimes.pipelines``), the maker of sample inputs for validation, calibration and profiling
(``runtimes.samples``), the accuracy metrics validation records (``exporters.validate``) and the phases
the profiler measures on (``edgekit.profiler.feeds``). The references are
strings, so core imports none of them; ``tests/test_tasks.py`` resolves every one. ``optimum_task`` is the
name optimum's exporter takes for HF dirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgekit.registry import Registry, resolve


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    name: str
    kind: str  # embedding | classification | generation | tensor
    modality: str  # text | image | audio | tensor
    optimum_task: str | None
    description: str
    # The metric whose drop ``--max-accuracy-drop`` bounds, named as in the validation report.
    primary_metric: str
    # "module:attr" of the pipeline class built from a ``PipelineContext``; None: the package serves ``run`` only.
    pipeline: str | None
    methods: tuple[str, ...]  # model methods the pipeline serves, besides ``run``
    pipeline_description: str
    samples: str  # "module:attr" of ``(SampleContext, n) -> list of feeds``
    metrics: str  # "module:attr" of ``(feeds, refs, news, labels) -> metrics dict``
    profile_phases: str  # "module:attr" of the profiler's ``(Target, shapes, specs) -> phases``

    def pipeline_class(self) -> Any:
        return resolve(self.pipeline) if self.pipeline else None

    def sample_maker(self) -> Any:
        return resolve(self.samples)

    def metric_fn(self) -> Any:
        return resolve(self.metrics)

    def phase_maker(self) -> Any:
        return resolve(self.profile_phases)


TASKS: Registry[TaskSpec] = Registry("task")

for _spec in (
    TaskSpec(
        name="feature-extraction",
        kind="embedding",
        modality="text",
        optimum_task="feature-extraction",
        description="sentence / token embeddings (mean pooling + L2 normalization in the runtime)",
        primary_metric="embedding_cosine_min",  # the worst sentence, not the average, is what users meet
        pipeline="runtimes.pipelines.embed:EmbedPipeline",
        methods=("embed",),
        pipeline_description="tokenize, batch with dynamic padding, pool, L2-normalize",
        samples="runtimes.samples:text_samples",
        profile_phases="edgekit.profiler.feeds:text_phases",
        metrics="exporters.validate:embedding_metrics",
    ),
    TaskSpec(
        name="text-classification",
        kind="classification",
        modality="text",
        optimum_task="text-classification",
        description="sequence classification with labels from the model config",
        primary_metric="top1_agreement",
        pipeline="runtimes.pipelines.classify:TextClassifyPipeline",
        methods=("classify",),
        pipeline_description="tokenize, softmax, top-k labels",
        samples="runtimes.samples:text_samples",
        profile_phases="edgekit.profiler.feeds:text_phases",
        metrics="exporters.validate:classification_metrics",
    ),
    TaskSpec(
        name="image-classification",
        kind="classification",
        modality="image",
        optimum_task="image-classification",
        description="image classification; preprocessing from the image processor config",
        primary_metric="top1_agreement",
        pipeline="runtimes.pipelines.classify:ImageClassifyPipeline",
        methods=("classify",),
        pipeline_description="decode, resize, crop, normalize, top-k labels",
        samples="runtimes.samples:image_samples",
        profile_phases="edgekit.profiler.feeds:packaged_phases",
        metrics="exporters.validate:classification_metrics",
    ),
    TaskSpec(
        name="audio-classification",
        kind="classification",
        modality="audio",
        optimum_task="audio-classification",
        description="raw-waveform audio classification (e.g. keyword spotting)",
        primary_metric="top1_agreement",
        pipeline="runtimes.pipelines.classify:AudioClassifyPipeline",
        methods=("classify",),
        pipeline_description="read WAV or array, resample, normalize, top-k labels",
        samples="runtimes.samples:audio_samples",
        profile_phases="edgekit.profiler.feeds:packaged_phases",
        metrics="exporters.validate:classification_metrics",
    ),
    TaskSpec(
        name="text-generation",
        kind="generation",
        modality="text",
        optimum_task="text-generation",
        description="causal LM; exported with a KV cache unless with_kv_cache=False",
        primary_metric="next_token_top1_agreement",
        pipeline="runtimes.pipelines.generate:GeneratePipeline",
        methods=("generate", "stream"),
        pipeline_description="prefill + KV-cache decode loop, sampling, streaming text",
        samples="runtimes.samples:generation_samples",
        profile_phases="edgekit.profiler.feeds:generation_phases",
        metrics="exporters.validate:generation_metrics",
    ),
    TaskSpec(
        name="tensor",
        kind="tensor",
        modality="tensor",
        optimum_task=None,
        description="any graph: named arrays in, named arrays out",
        primary_metric="output_cosine_mean",
        pipeline=None,
        methods=(),
        pipeline_description="named arrays in, named arrays out",
        samples="runtimes.samples:tensor_samples",
        profile_phases="edgekit.profiler.feeds:tensor_phases",
        metrics="exporters.validate:tensor_metrics",
    ),
):
    TASKS.add(_spec.name, _spec)
