"""The task registry: what a task exports to, which pipeline serves it, how its accuracy is compared.

Core data (the exporters, the runtime's sample inputs and the profiler read it). A new task is one
``TASKS.add`` entry. ``kind`` decides which runtime pipeline serves the package and which
accuracy metrics validation records; ``optimum_task`` is the name optimum's exporter takes for HF dirs.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.registry import Registry


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    name: str
    kind: str  # embedding | classification | generation | tensor
    modality: str  # text | image | audio | tensor
    optimum_task: str | None
    description: str
    # The metric whose drop ``--max-accuracy-drop`` bounds, named as in the validation report.
    primary_metric: str


TASKS: Registry[TaskSpec] = Registry("task")

for _spec in (
    TaskSpec(
        name="feature-extraction",
        kind="embedding",
        modality="text",
        optimum_task="feature-extraction",
        description="sentence / token embeddings (mean pooling + L2 normalization in the runtime)",
        primary_metric="embedding_cosine_min",  # the worst sentence, not the average, is what users meet
    ),
    TaskSpec(
        name="text-classification",
        kind="classification",
        modality="text",
        optimum_task="text-classification",
        description="sequence classification with labels from the model config",
        primary_metric="top1_agreement",
    ),
    TaskSpec(
        name="image-classification",
        kind="classification",
        modality="image",
        optimum_task="image-classification",
        description="image classification; preprocessing from the image processor config",
        primary_metric="top1_agreement",
    ),
    TaskSpec(
        name="audio-classification",
        kind="classification",
        modality="audio",
        optimum_task="audio-classification",
        description="raw-waveform audio classification (e.g. keyword spotting)",
        primary_metric="top1_agreement",
    ),
    TaskSpec(
        name="text-generation",
        kind="generation",
        modality="text",
        optimum_task="text-generation",
        description="causal LM; exported with a KV cache unless with_kv_cache=False",
        primary_metric="next_token_top1_agreement",
    ),
    TaskSpec(
        name="tensor",
        kind="tensor",
        modality="tensor",
        optimum_task=None,
        description="any graph: named arrays in, named arrays out",
        primary_metric="output_cosine_mean",
    ),
):
    TASKS.add(_spec.name, _spec)
