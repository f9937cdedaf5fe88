"""Which Add nodes int8-static keeps in float: all but the merges of two branches that feed no normalization.

A CNN's residual Adds (MobileNetV2, ResNet) merge two convolution branches and feed convolutions: QLinearAdd
keeps the int8 chain unbroken there. Two other kinds of Add lose accuracy in int8 for no speed:
- the residual stream ahead of a normalization: a transformer's stream carries a few outlier channels, and one
  per-tensor uint8 scale flattens the ordinary ones (tiny DeiT, worst-sample cosine 0.9996 -> 0.92 with every
  Add quantized);
- an Add of a constant (a bias after MatMul, GELU's ``erf(x) + 1``): the constant would be rounded to the
  activation's grid, and the float op costs one round trip at most.
"""

from __future__ import annotations

from typing import Any

NORMALIZATIONS = frozenset({"LayerNormalization", "ReduceMean", "SimplifiedLayerNormalization"})


def float_adds(model: Any) -> list[str]:
    """Names of the Add nodes to keep in float: those with a constant input or in a normalization's stream."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {out for n in model.graph.node if n.op_type == "Constant" for out in n.output}
    kept = {n.name for n in model.graph.node if n.op_type == "Add" and any(i in constants for i in n.input)}
    kept |= _norm_stream_adds(model)
    return [n.name for n in model.graph.node if n.name in kept]


def _norm_stream_adds(model: Any) -> set[str]:
    """The Add nodes whose output flows into a normalization through Add nodes only."""
    kept: set[str] = set()
    producers = {out: node for node in model.graph.node for out in node.output}
    frontier = [n for n in model.graph.node if n.op_type in NORMALIZATIONS]
    while frontier:
        node = frontier.pop()
        for name in node.input:
            src = producers.get(name)
            if src is not None and src.op_type == "Add" and src.name not in kept:
                kept.add(src.name)
                frontier.append(src)
    return kept
