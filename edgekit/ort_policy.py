"""ONNX Runtime session choices that edgekit's runtime, profiler and exporters share.

``SkipLayerNormFusion``: at session load ONNX Runtime fuses ``Add`` + ``LayerNormalization`` into the contrib
``SkipLayerNormalization``. With the CPU execution provider (onnxruntime 1.32) that kernel is 1.5-4x slower
than the two nodes it replaces: measured here at hidden 64 / 256 / 384 / 768 on 18 and 512 rows, e.g. 12 nodes
at 184 x 384 in 2.9 ms against 1.05 ms. edgekit's exporters therefore keep the two apart, and every session
edgekit creates keeps ONNX Runtime from fusing them back. GPU providers have fused kernels of their own, so
the fusion stays on when one of them is in use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["CPU_DISABLED_OPTIMIZERS", "disabled_optimizers"]

CPU_DISABLED_OPTIMIZERS: tuple[str, ...] = ("SkipLayerNormFusion",)

_GPU_PROVIDERS = frozenset(
    {
        "CUDAExecutionProvider",
        "TensorrtExecutionProvider",
        "ROCMExecutionProvider",
        "MIGraphXExecutionProvider",
        "DmlExecutionProvider",
        "WebGpuExecutionProvider",
    }
)


def disabled_optimizers(providers: Sequence[Any] = ("CPUExecutionProvider",)) -> list[str]:
    """The ``disabled_optimizers`` for an ``InferenceSession`` on ``providers`` (names or (name, options) pairs)."""
    names = {p if isinstance(p, str) else p[0] for p in providers}
    return [] if names & _GPU_PROVIDERS else list(CPU_DISABLED_OPTIMIZERS)
