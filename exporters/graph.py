"""Reading ONNX graphs: load with clear errors, IO specs, weight statistics, op histogram."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from edgekit.errors import CorruptModelError, SourceNotFoundError
from edgekit.manifest import TensorSpec, WeightsInfo
from edgekit.onnx_dims import value_info_dims

# Nodes whose packed uint8 initializer actually holds 4-bit weights.
_NBITS_OPS = {"MatMulNBits"}


def _onnx() -> Any:
    import onnx

    return onnx


def load_model(path: str | Path, *, load_weights: bool = True, check: bool = True) -> Any:
    """Load and check an ONNX file, turning onnx's errors into ones that name the file and the fix."""
    onnx = _onnx()
    p = Path(path)
    if not p.is_file():
        raise SourceNotFoundError(f"ONNX file not found: {p}", hint="check the path")
    try:
        model = onnx.load(str(p), load_external_data=load_weights)
    except Exception as exc:  # onnx raises DecodeError, OSError, ValueError for bad protobufs
        raise CorruptModelError(
            f"{p} is not a readable ONNX model ({type(exc).__name__}: {exc})",
            hint="the file is corrupt or truncated: export or download it again",
        ) from None
    if check:
        try:
            # The path form handles models over 2 GB and checks external data references.
            onnx.checker.check_model(str(p) if load_weights else model)
        except Exception as exc:
            raise CorruptModelError(
                f"{p} fails the ONNX checker: {str(exc).strip().splitlines()[0]}",
                hint="the file is corrupt or was produced by a broken exporter: export it again",
            ) from None
    if not model.graph.node:
        raise CorruptModelError(f"{p} has an empty graph", hint="export the model again")
    return model


def elem_dtype(elem_type: int) -> str:
    onnx = _onnx()
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _spec(value_info: Any) -> TensorSpec:
    t = value_info.type.tensor_type
    return TensorSpec(name=value_info.name, dtype=elem_dtype(t.elem_type), shape=value_info_dims(value_info))


def io_specs(model: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    inits = {i.name for i in model.graph.initializer}
    inputs = [_spec(v) for v in model.graph.input if v.name not in inits]
    outputs = [_spec(v) for v in model.graph.output]
    return inputs, outputs


def opset(model: Any) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def node_attr(node: Any, name: str, default: Any = None) -> Any:
    """The value of a node's attribute ``name``, or ``default`` when the node does not set it."""
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def op_histogram(model: Any) -> dict[str, int]:
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def weight_stats(model: Any) -> WeightsInfo:
    """Parameter count and bytes by dtype; 4-bit packed weights are counted as int4."""
    onnx = _onnx()
    nbits_weights = {n.input[1] for n in model.graph.node if n.op_type in _NBITS_OPS and len(n.input) > 1}
    by_dtype: Counter[str] = Counter()
    params = 0
    for init in model.graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        nbytes = _tensor_bytes(init, n)
        if init.name in nbits_weights:
            by_dtype["int4"] += nbytes
            params += nbytes * 2
            continue
        dtype = elem_dtype(init.data_type)
        by_dtype[dtype] += nbytes
        # Scales and zero points are bookkeeping, not parameters: count only tensors that hold weights.
        if n > 1 and init.data_type != onnx.TensorProto.INT64:
            params += n
    return WeightsInfo(parameter_count=int(params), bytes_by_dtype=dict(by_dtype))


def _tensor_bytes(init: Any, n: int) -> int:
    onnx = _onnx()
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    except (KeyError, ValueError):
        itemsize = 1
    return int(n * itemsize)


def save_model(model: Any, path: str | Path, *, external_data_threshold_bytes: int = 1_800_000_000) -> None:
    """Save, with the weights in a ``.data`` file beside the graph only when protobuf's 2 GB limit needs it."""
    onnx = _onnx()
    large = model.ByteSize() > external_data_threshold_bytes
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=Path(path).name + ".data",
    )
