"""Reading a tensor's dims from an ONNX value_info, without importing onnx (only proto fields are read)."""

from __future__ import annotations

from typing import Any

Dim = int | str | None


def value_info_dims(value_info: Any) -> list[Dim]:
    """Each dim as an int (fixed), its symbolic name, or None (unknown)."""
    dims: list[Dim] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims
