"""One record per task (edgekit.tasks): every lazy reference resolves to the code the layers above use."""

from __future__ import annotations

import inspect

import pytest

from edgekit.registry import resolve
from edgekit.tasks import TASKS


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_reference_resolves(name: str) -> None:
    task = TASKS.get(name)
    maker = task.sample_maker()
    assert maker.__module__ == "runtimes.samples" and list(inspect.signature(maker).parameters) == ["ctx", "n"]
    metric = task.metric_fn()
    assert metric.__module__ == "exporters.validate" and len(inspect.signature(metric).parameters) == 4
    phases = task.phase_maker()
    assert phases.__module__ == "edgekit.profiler.feeds" and len(inspect.signature(phases).parameters) == 3
    pipeline = task.pipeline_class()
    if pipeline is None:
        assert task.methods == ()  # a task without a pipeline serves `run` only
    else:
        assert pipeline.__module__.startswith("runtimes.pipelines.")
        for method in task.methods:
            assert callable(getattr(pipeline, method)), (name, method)


def test_the_runtime_pipelines_are_a_view_of_the_task_records() -> None:
    from runtimes.pipelines import PIPELINES

    assert PIPELINES.names() == TASKS.names()
    for task in TASKS:
        spec = PIPELINES.get(task.name)
        assert spec.methods == task.methods and spec.description == task.pipeline_description
        assert (spec.factory is None) == (task.pipeline is None)


def test_sample_makers_follow_the_task_records() -> None:
    from runtimes.samples import task_for

    assert task_for("generation", "text").name == "text-generation"
    assert task_for("classification", "audio").name == "audio-classification"
    assert task_for("embedding", "text").name == "feature-extraction"
    with pytest.raises(ValueError, match="no task of kind 'embedding' and modality 'audio'"):
        task_for("embedding", "audio")


def test_a_bad_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="not a 'module:attr' reference"):
        resolve("runtimes.samples.text_samples")
    with pytest.raises(AttributeError):
        resolve("runtimes.samples:no_such_maker")
