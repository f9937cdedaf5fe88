"""Kept for importers of the old name: the dims reader is :func:`edgekit.onnx_graph.value_info_dims`."""

from __future__ import annotations

from edgekit.onnx_graph import Dim, value_info_dims

__all__ = ["Dim", "value_info_dims"]
