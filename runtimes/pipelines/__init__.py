"""Pipelines: what a package's task adds on top of ``run`` — embed, classify, generate / stream.

One entry per task, built from the task's record in :mod:`edgekit.tasks` (the methods it provides and the
``"module:attr"`` of the pipeline class built from the loaded session and the package's manifest). A new task is
one ``TASKS.add``; the model object dispatches by the entry, never by if-chains on task names. Factories import
their module when called, so loading an embedding package never imports the generation code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.manifest import Manifest
from edgekit.registry import Registry, resolve
from edgekit.tasks import TASKS
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


def _factory(ref: str) -> Callable[[PipelineContext], Any]:
    def build(ctx: PipelineContext) -> Any:
        return resolve(ref)(ctx)  # imports the pipeline's module only now

    return build


def _pipelines() -> Registry[PipelineSpec]:
    """A view of the task records (``edgekit.tasks.TASKS``): the facts live there, one record per task."""
    registry: Registry[PipelineSpec] = Registry("task")
    for task in TASKS:
        factory = _factory(task.pipeline) if task.pipeline else None
        spec = PipelineSpec(
            task=task.name, methods=task.methods, factory=factory, description=task.pipeline_description
        )
        registry.add(task.name, spec)
    return registry


PIPELINES: Registry[PipelineSpec] = _pipelines()
