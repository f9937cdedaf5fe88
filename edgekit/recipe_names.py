"""The export recipes by name: the one list of their names and one-line descriptions.

The recipes themselves (config classes and steps) live in :mod:`exporters.recipes`, which needs the export
extra; the CLI lists the names without it, so the names live here in core and ``exporters.recipes`` builds each
recipe on its entry (it refuses to load if the two disagree).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["RECIPE_DESCRIPTIONS", "recipe_names"]

# Order is the order the CLI lists them in: float first, then the quantized ones by bit width.
RECIPE_DESCRIPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "fp32": "graph-optimized float32",
        "fp16": "float16 weights and compute (GPU/NPU targets)",
        "int8-dynamic": "int8 weights (per-channel), activations quantized at run time",
        "int8-static": "QDQ int8 weights and activations, calibrated (NPU-friendly)",
        "int4": "4-bit weight-only MatMulNBits (block-wise)",
    }
)


def recipe_names() -> list[str]:
    """Every recipe name, in listing order."""
    return list(RECIPE_DESCRIPTIONS)
