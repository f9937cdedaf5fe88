"""The one ONNX graph reader: loading with clear errors, IO specs, dtype names, weight and parameter counts,
producer / consumer indexes and node attributes.

Used by the exporters (the manifest's ``weights``), the profiler (``static.analyze_model``) and ``edgekit
inspect``, so the three agree on what a model holds. Core: it imports nothing above :mod:`edgekit.errors` and
:mod:`edgekit.manifest`, and ``onnx`` only inside the functions that need it (``import edgekit.onnx_graph`` is
free on a device install; :func:`value_info_dims` and the indexes read proto fields and work without onnx).

What counts as a parameter (one rule for every reader):

- every constant with more than one element, except int64 ones (shape vectors, axes, indices);
- a ``MatMulNBits`` packed weight (uint8 holding ``bits``-bit values) counts its *logical* elements ``N * K``
  from the node's attributes, and its bytes are reported under ``int{bits}`` (4-bit: ``int4``);
- what quantized ops read as scales, zero points or group indexes is bookkeeping, not parameters (so an int8
  or int4 model has the parameter count of its fp32 source); the bytes of all of them still count.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import CorruptModelError, SourceNotFoundError
from edgekit.manifest import TensorSpec, WeightsInfo

__all__ = [
    "WeightRole",
    "all_nodes",
    "consumers",
    "elem_dtype",
    "inline_ifs",
    "io_specs",
    "load_model",
    "node_attr",
    "op_histogram",
    "opset",
    "parameter_count",
    "producers",
    "topological",
    "value_info_dims",
    "weight_dtype",
    "weight_roles",
    "weight_stats",
]

Dim = int | str | None

# Nodes whose uint8 initializer at input 1 holds packed low-bit weights (com.microsoft contrib ops).
_NBITS_OPS = frozenset({"MatMulNBits"})


def _onnx() -> Any:
    import onnx

    return onnx


def load_model(path: str | Path, *, load_weights: bool = True, check: bool = True) -> Any:
    """Load (and by default check) an ONNX file, turning onnx's errors into ones that name the file and the fix."""
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
            _check(onnx, p, model, load_weights=load_weights)
        except Exception as exc:  # the checker raises ValidationError and, for external data, OSError
            raise CorruptModelError(
                f"{p} fails the ONNX checker: {str(exc).strip().splitlines()[0]}",
                hint="the file is corrupt or was produced by a broken exporter: export it again",
            ) from None
    if not model.graph.node:
        raise CorruptModelError(f"{p} has an empty graph", hint="export the model again")
    return model


# Ops ONNX Runtime registers in the *ONNX* domain although ONNX has no such schema: ORT's transformer fusions
# (decoder fusion of Llama-family models) emit them there, and onnx's checker rejects them as unknown ops.
_ORT_ONNX_DOMAIN_OPS = frozenset({"SimplifiedLayerNormalization"})
_ORT_DOMAIN = "com.microsoft"


def _check(onnx: Any, path: Path, model: Any, *, load_weights: bool) -> None:
    """Run onnx's checker; ORT-only ops of the ONNX domain are checked as contrib ops (whose schemas it skips)."""
    moved = [n for n in model.graph.node if n.domain in ("", "ai.onnx") and n.op_type in _ORT_ONNX_DOMAIN_OPS]
    if not moved:
        # The path form handles models over 2 GB and checks external data references.
        onnx.checker.check_model(str(path) if load_weights else model)
        return
    # Re-label those nodes for the check only (in place, undone below) so the rest of the graph is still
    # checked in full, instead of skipping the checker for every fused graph.
    domains = [n.domain for n in moved]
    added = not any(o.domain == _ORT_DOMAIN for o in model.opset_import)
    if added:
        model.opset_import.append(onnx.helper.make_opsetid(_ORT_DOMAIN, 1))
    try:
        for n in moved:
            n.domain = _ORT_DOMAIN
        onnx.checker.check_model(model)
    finally:
        for n, d in zip(moved, domains, strict=True):
            n.domain = d
        if added:
            model.opset_import.pop()


def elem_dtype(elem_type: int) -> str:
    """numpy's name for an ONNX element type (``float32``, ``int8``), else onnx's own lower-cased name."""
    onnx = _onnx()
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def value_info_dims(value_info: Any) -> list[Dim]:
    """Each dim as an int (fixed), its symbolic name, or None (unknown); reads proto fields only."""
    dims: list[Dim] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def _spec(value_info: Any) -> TensorSpec:
    t = value_info.type.tensor_type
    return TensorSpec(name=value_info.name, dtype=elem_dtype(t.elem_type), shape=value_info_dims(value_info))


def io_specs(model: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs (initializers excluded: IR < 4 listed every weight as an input) and outputs."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [_spec(v) for v in model.graph.input if v.name not in inits]
    outputs = [_spec(v) for v in model.graph.output]
    return inputs, outputs


def opset(model: Any) -> int:
    """The default-domain opset, or 0 when the model imports none."""
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
    """Op type -> count over the top-level graph, most common first."""
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def all_nodes(graph: Any) -> list[Any]:
    """Every node of ``graph`` and of the subgraphs its nodes hold (If branches, Loop bodies), depth first."""
    out: list[Any] = []
    for n in graph.node:
        out.append(n)
        for a in n.attribute:
            if a.HasField("g"):
                out.extend(all_nodes(a.g))
    return out


def inline_ifs(model: Any, choose: Any) -> Any:
    """A copy of ``model`` whose top-level ``If`` nodes are replaced by one branch each: a flat graph to analyse.

    ``choose(node)`` returns ``"then_branch"`` or ``"else_branch"``. The branch's nodes read the outer graph's
    tensors by name as before; the tensors that were the branch outputs take the ``If`` outputs' names.
    """
    onnx = _onnx()
    if not any(n.op_type == "If" for n in model.graph.node):
        return model
    flat = onnx.ModelProto()
    flat.CopyFrom(model)
    nodes: list[Any] = []
    for n in flat.graph.node:
        if n.op_type != "If" or n.domain not in ("", "ai.onnx"):
            nodes.append(n)
            continue
        branch = next(a.g for a in n.attribute if a.name == choose(n))
        made = {o for inner in branch.node for o in inner.output}
        rename = {o.name: outer for o, outer in zip(branch.output, n.output, strict=True) if outer and o.name in made}
        for inner in branch.node:
            inner.output[:] = [rename.get(o, o) for o in inner.output]
            inner.input[:] = [rename.get(i, i) for i in inner.input]
            nodes.append(inner)
        for o, outer in zip(branch.output, n.output, strict=True):  # a branch that returns an outer tensor as is
            if outer and o.name not in made:
                nodes.append(onnx.helper.make_node("Identity", [o.name], [outer], name=f"{n.name}/{outer}"))
        flat.graph.value_info.extend(branch.value_info)
    del flat.graph.node[:]
    flat.graph.node.extend(nodes)
    return flat


def producers(graph: Any) -> dict[str, Any]:
    """Tensor name -> the node that writes it (top-level graph)."""
    return {o: n for n in graph.node for o in n.output if o}


def topological(nodes: Sequence[Any], available: Iterable[str]) -> list[Any]:
    """``nodes`` in Kahn's order, given the tensors ``available`` before them (graph inputs, initializers).

    ONNX requires a sorted graph and ONNX Runtime sorts one that is not, but tools that walk it in stored order
    (ORT's usability checker, a liveness walk) do not: onnxruntime's fp16 converter appends its input Casts at
    the end. A cycle or a dangling input keeps the stored order for the rest."""
    produced = set(available)
    remaining = list(nodes)
    ordered: list[Any] = []
    while remaining:
        ready = [n for n in remaining if all(not i or i in produced for i in n.input)]
        if not ready:
            ordered.extend(remaining)
            break
        ready_ids = {id(n) for n in ready}
        for n in ready:
            ordered.append(n)
            produced.update(n.output)
        remaining = [n for n in remaining if id(n) not in ready_ids]
    return ordered


def consumers(graph: Any) -> dict[str, list[Any]]:
    """Tensor name -> the nodes that read it, in graph order (top-level graph)."""
    out: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            if i:
                out.setdefault(i, []).append(n)
    return out


@dataclass(frozen=True, kw_only=True)
class WeightRole:
    """What a quantized op reads a constant as: a packed low-bit weight (``packed_bits`` per value, ``elements``
    logical values) or quantization bookkeeping (scales, zero points, group indexes: ``elements=0``)."""

    packed_bits: int | None = None
    elements: int = 0


# Input positions that quantized ops read as scales / zero points / group indexes, not as weights.
_BOOKKEEPING_INPUTS: dict[str, tuple[int, ...]] = {
    "MatMulNBits": (2, 3, 4),
    "DequantizeLinear": (1, 2),
    "QuantizeLinear": (1, 2),
    "MatMulInteger": (2, 3),
    "ConvInteger": (2, 3),
    "DynamicQuantizeMatMul": (2, 3),
    "MatMulIntegerToFloat": (2, 3, 4, 5),
    "QLinearMatMul": (1, 2, 4, 5, 6, 7),
    "QLinearConv": (1, 2, 4, 5, 6, 7),
}
_BOOKKEEPING = WeightRole()


def _int_attr(node: Any, name: str) -> int | None:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return None


def _packed(node: Any, init: Any) -> WeightRole:
    bits = _int_attr(node, "bits") or 4
    rows, cols = _int_attr(node, "N"), _int_attr(node, "K")
    if rows and cols:
        return WeightRole(packed_bits=bits, elements=rows * cols)
    # Attributes missing (a malformed node): as many values as the packed bytes hold.
    return WeightRole(packed_bits=bits, elements=math.prod(init.dims) * 8 // bits)


def weight_roles(nodes: Iterable[Any], initializers: Mapping[str, Any]) -> dict[str, WeightRole]:
    """The constants the ``nodes`` read in a quantized op's special positions, by name (others: plain weights)."""
    nodes = list(nodes)
    # Dynamic int8 quantization multiplies the activation's runtime scale by the weight's scale in a plain Mul.
    runtime_scales = {n.output[1] for n in nodes if n.op_type == "DynamicQuantizeLinear" and len(n.output) > 1}
    out: dict[str, WeightRole] = {}
    for n in nodes:
        positions = _BOOKKEEPING_INPUTS.get(n.op_type, ())
        if n.op_type == "Mul" and runtime_scales.intersection(n.input):
            positions = tuple(range(len(n.input)))
        for i in positions:
            if i < len(n.input) and n.input[i]:
                out[n.input[i]] = _BOOKKEEPING
        if n.op_type in _NBITS_OPS and len(n.input) > 1 and n.input[1] in initializers:
            out[n.input[1]] = _packed(n, initializers[n.input[1]])
    return out


def weight_dtype(dtype: str, role: WeightRole | None = None) -> str:
    """The dtype a constant's bytes are reported under: ``int4`` for 4-bit packed weights, else its own."""
    return f"int{role.packed_bits}" if role is not None and role.packed_bits else dtype


def parameter_count(dtype: str, numel: int, role: WeightRole | None = None) -> int:
    """How many parameters a constant tensor holds (the rule in the module docstring)."""
    if role is not None:
        return role.elements
    # Scalars and shape vectors are bookkeeping, not parameters.
    return numel if numel > 1 and dtype != "int64" else 0


def _itemsize(data_type: int) -> int:
    onnx = _onnx()
    try:
        return int(onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize)
    except (KeyError, ValueError, TypeError):
        return 1


def weight_stats(model: Any) -> WeightsInfo:
    """Parameter count and weight bytes by dtype over every initializer of the top-level graph."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    roles = weight_roles(all_nodes(graph), inits)  # If branches read the outer graph's weights and scales
    by_dtype: Counter[str] = Counter()
    params = 0
    for init in graph.initializer:
        numel = math.prod(init.dims)
        dtype = elem_dtype(init.data_type)
        role = roles.get(init.name)
        by_dtype[weight_dtype(dtype, role)] += numel * _itemsize(init.data_type)
        params += parameter_count(dtype, numel, role)
    return WeightsInfo(parameter_count=int(params), bytes_by_dtype=dict(by_dtype))
