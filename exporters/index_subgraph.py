"""Find the nodes that compute gather indices from positions and shapes, which static quantization must skip.

MPNet (and T5-style models) bucket relative positions in float: ``log(|i - j| / max_exact)`` then a cast to
an integer index into a bias table. Calibrating that chain sees ``log(0) = -inf``, the QDQ scale becomes
infinite, and the quantized chain yields garbage indices. Such nodes carry no learned data, so keeping them
in float costs nothing.

The rule is structural, not a list of names: a node is an *index node* when (1) an index input of a
Gather-family op depends on it, and (2) its value does not depend on the model's data — float graph inputs
or weight tensors — only on integer inputs, shapes and scalar constants. Rule (2) keeps a data-dependent
index (a mixture-of-experts router's TopK) quantizable.
"""

from __future__ import annotations

from typing import Any

from edgekit.onnx_graph import producers

# Op -> positions of its inputs that hold indices.
INDEX_INPUTS: dict[str, tuple[int, ...]] = {"Gather": (1,), "GatherElements": (1,), "GatherND": (1,)}
# Ops whose output depends on an input's shape only, never its values.
SHAPE_ONLY = frozenset({"Shape", "Size"})
# onnx.TensorProto's FLOAT, FLOAT16, DOUBLE, BFLOAT16 (numbers, so importing this module stays light).
_FLOATS = (1, 10, 11, 16)


def _data_tensors(model: Any) -> set[str]:
    """Tensors whose values depend on float graph inputs or on weights (float initializers with > 1 value)."""
    data = {i.name for i in model.graph.input if i.type.tensor_type.elem_type in _FLOATS}
    for init in model.graph.initializer:
        size = 1
        for d in init.dims:
            size *= d
        if size > 1 and init.data_type in _FLOATS:
            data.add(init.name)
    for node in model.graph.node:  # nodes are topologically sorted in a valid ONNX graph
        if node.op_type in SHAPE_ONLY:
            continue
        if any(name in data for name in node.input if name):
            data.update(o for o in node.output if o)
    return data


def index_nodes(model: Any) -> list[str]:
    """Names of the non-data nodes that feed a Gather-family index input, in graph order."""
    producer = producers(model.graph)
    data = _data_tensors(model)
    stack = [
        node.input[pos]
        for node in model.graph.node
        for pos in INDEX_INPUTS.get(node.op_type, ())
        if pos < len(node.input) and node.input[pos]
    ]
    seen: set[str] = set()
    found: set[int] = set()
    while stack:
        tensor = stack.pop()
        if tensor in seen or tensor in data:
            continue
        seen.add(tensor)
        node = producer.get(tensor)
        if node is None:
            continue
        found.add(id(node))
        if node.op_type not in SHAPE_ONLY:
            stack.extend(name for name in node.input if name)
    # Constants hold no computation the quantizer could touch; leaving them out keeps the record short.
    return [n.name for n in model.graph.node if id(n) in found and n.name and n.op_type != "Constant"]
