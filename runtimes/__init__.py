"""edgekit's on-device runtime: load a model package and call it — run, embed, classify, generate, stream.

This package is what goes on a device: it needs onnxruntime, numpy and tokenizers, never torch or
transformers. Importing it is cheap; onnxruntime and the pipelines load when ``load`` is called.

    >>> import runtimes
    >>> model = runtimes.load("pkg/", device="pixel-8")          # doctest: +SKIP
    >>> model.generate("Once upon a time", max_tokens=32).text   # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtimes.model import Model
    from runtimes.pipelines.generate import GenerationConfig, GenerationResult, GenerationStream, Usage

__all__ = ["GenerationConfig", "GenerationResult", "GenerationStream", "Model", "Usage", "load"]

_LAZY = {
    "Model": "runtimes.model",
    "GenerationConfig": "runtimes.pipelines.generate",
    "GenerationResult": "runtimes.pipelines.generate",
    "GenerationStream": "runtimes.pipelines.generate",
    "Usage": "runtimes.pipelines.generate",
}


def load(package: Any, **kwargs: Any) -> Model:
    """Load a package for inference; see :func:`runtimes.model.load` for the options."""
    from runtimes.model import load as _load

    return _load(package, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'runtimes' has no attribute {name!r}")
