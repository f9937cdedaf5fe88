"""Conversion and quantization: source model -> validated, quantized ONNX model package."""

from edgekit.tasks import TASKS
from exporters.api import ExportOptions, ExportResult, export, export_torch, quantize
from exporters.recipes import RECIPES
from exporters.sources import TorchSource, torch_source_from_spec

__all__ = [
    "RECIPES",
    "TASKS",
    "ExportOptions",
    "ExportResult",
    "TorchSource",
    "export",
    "export_torch",
    "quantize",
    "torch_source_from_spec",
]
