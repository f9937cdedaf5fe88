"""Which branch of a top-level ``If`` the static analysis follows: the one the measured feeds take.

Why: the analysis walks one flat graph (:func:`edgekit.onnx_graph.inline_ifs`); an ``If`` left as one node would
count none of its branches' work (int8 MiniLM's padding branch, exporters/unpad_branch.py, holds every layer).
The branch is a run-time choice, so it is decided the way ONNX Runtime decides it for the phase's feeds: the
condition's producers (a few mask casts and a reduction) are evaluated with ``onnx.reference`` on those feeds.
Without feeds, or when the condition needs more than :data:`MAX_CONDITION_NODES` nodes or an op outside the
ONNX domain, the branch with more nodes is followed: the estimate is then an upper bound.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

MAX_CONDITION_NODES = 16


def _larger(node: Any) -> str:
    sizes = {a.name: len(a.g.node) for a in node.attribute if a.HasField("g")}
    return max(("then_branch", "else_branch"), key=lambda k: sizes.get(k, 0))


def _condition_nodes(model: Any, tensor: str) -> list[Any] | None:
    """The nodes ``tensor`` depends on, in graph order, or None when they are too many or not ONNX-domain."""
    producer = {o: n for n in model.graph.node for o in n.output if o}
    needed: dict[int, Any] = {}
    stack = [tensor]
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in needed:
            continue
        if node.domain not in ("", "ai.onnx") or len(needed) >= MAX_CONDITION_NODES:
            return None
        needed[id(node)] = node
        stack.extend(i for i in node.input if i)
    return [n for n in model.graph.node if id(n) in needed]


def _evaluate(model: Any, tensor: str, feeds: Mapping[str, Any]) -> bool | None:
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    nodes = _condition_nodes(model, tensor)
    if nodes is None:
        return None
    read = {i for n in nodes for i in n.input}
    inputs = [v for v in model.graph.input if v.name in read]
    if any(v.name not in feeds for v in inputs):
        return None
    inits = [t for t in model.graph.initializer if t.name in read]
    out = helper.make_tensor_value_info(tensor, 0, None)
    g = helper.make_graph(nodes, "condition", inputs, [out], inits)
    cond = helper.make_model(g, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    try:
        (value,) = ReferenceEvaluator(cond).run(None, {v.name: feeds[v.name] for v in inputs})
    except Exception:  # an op the reference runtime lacks: fall back to the larger branch
        return None
    return bool(value.reshape(-1)[0]) if value.size else None


def taken_branch(model: Any, feeds: Mapping[str, Any] | None) -> Callable[[Any], str]:
    """``choose(node)`` for :func:`edgekit.onnx_graph.inline_ifs`: the branch ``feeds`` take, else the larger."""

    def choose(node: Any) -> str:
        value = _evaluate(model, node.input[0], feeds) if feeds is not None else None
        if value is None:
            return _larger(node)
        return "then_branch" if value else "else_branch"

    return choose
