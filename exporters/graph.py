"""ONNX graphs on the export side: the reading is :mod:`edgekit.onnx_graph` (one reader for the exporters, the
profiler and ``inspect``), re-exported here for the export steps; writing (:func:`save_model`) lives here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.onnx_graph import (
    consumers,
    elem_dtype,
    io_specs,
    load_model,
    node_attr,
    op_histogram,
    opset,
    producers,
    value_info_dims,
    weight_stats,
)

__all__ = [
    "consumers",
    "elem_dtype",
    "io_specs",
    "load_model",
    "node_attr",
    "op_histogram",
    "opset",
    "producers",
    "save_model",
    "value_info_dims",
    "weight_stats",
]


def save_model(model: Any, path: str | Path, *, external_data_threshold_bytes: int = 1_800_000_000) -> None:
    """Save, with the weights in a ``.data`` file beside the graph only when protobuf's 2 GB limit needs it."""
    import onnx

    large = model.ByteSize() > external_data_threshold_bytes
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=Path(path).name + ".data",
    )
