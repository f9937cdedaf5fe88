"""Sibling projections as one MatMul: a decoder's gate and up projections read the same normalized activation.

A SwiGLU MLP (llama, mistral, qwen, gemma, ...) computes ``silu(x @ Wg) * (x @ Wu)``: two MatMuls over one ``x``
with constant weights of the same reduction length. They become one MatMul over ``[Wg | Wu]`` and a Split
into the two original outputs, so every consumer reads exactly what it read before; a family whose Q, K and V
projections the decoder fusions left apart merges the same way. Each output column is the same dot product
over the same K, so the outputs are bit-identical (tests/test_merge_projections.py).

Why in the int4 recipe only: MatMulNBits then quantizes the shared input once per step instead of once per
projection, and one call twice as wide splits better over the threads. Measured on AMD EPYC Zen 4
(AVX-512 VNNI, 2 threads, spinning off, interleaved decode steps at 64 cached tokens, the ~32M Llama of
benchmarks/runtime.py): int4 0.955-0.973x the step time of the unmerged graph, logits identical; the tiny Llama
0.98-1.00x. At fp32 the Split's extra node costs more than the wider GEMM gains on the tiny model (1.03-1.05x),
and the ~32M one gained 1.3 %, so fp32 graphs keep their projections apart.

Not merged: MatMuls named in ``nodes_to_exclude`` (the user asked for those by name), weights another node
also reads (the merged copy would duplicate them), non-constant or non-2-D weights, and groups whose weights
differ in dtype or reduction length.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporters import graph
from exporters.decoder_fusions import GENERATION_KIND

__all__ = ["MergedGroup", "merge_sibling_matmuls", "step_merge_projections"]


@dataclass(frozen=True)
class MergedGroup:
    """One merged set of projections: the activation they share, the MatMuls replaced and their widths."""

    input: str
    nodes: tuple[str, ...]
    widths: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "nodes": list(self.nodes), "widths": list(self.widths)}


def _mergeable(node: Any, inits: dict[str, Any], readers: dict[str, list[Any]], exclude: Collection[str]) -> bool:
    if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or node.name in exclude:
        return False
    w = inits.get(node.input[1])
    return w is not None and len(w.dims) == 2 and len(readers.get(node.input[1], ())) == 1


def sibling_groups(model: Any, exclude: Collection[str] = ()) -> list[list[Any]]:
    """MatMuls (2 or more) that read one activation with constant weights of one dtype and reduction length."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    readers = graph.consumers(g)
    by_input: dict[tuple[str, int, int], list[Any]] = {}
    for n in g.node:
        if _mergeable(n, inits, readers, exclude):
            w = inits[n.input[1]]
            by_input.setdefault((n.input[0], int(w.dims[0]), int(w.data_type)), []).append(n)
    return [group for group in by_input.values() if len(group) > 1]


def _merged_nodes(model: Any, inits: dict[str, Any], group: Sequence[Any], k: int) -> tuple[list[Any], MergedGroup]:
    """The MatMul over the concatenated weights and the Split back into the group's outputs."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    weights = [numpy_helper.to_array(inits[n.input[1]]) for n in group]
    widths = tuple(int(w.shape[1]) for w in weights)
    name = f"merged_projections/{k}"
    g.initializer.append(numpy_helper.from_array(np.concatenate(weights, axis=1), f"{name}/weight"))
    outputs = [n.output[0] for n in group]
    matmul = helper.make_node("MatMul", [group[0].input[0], f"{name}/weight"], [f"{name}/output"], name=name)
    if graph.opset(model) >= 13:  # Split takes its sizes as an input from opset 13 on
        g.initializer.append(numpy_helper.from_array(np.array(widths, dtype=np.int64), f"{name}/split"))
        split = helper.make_node("Split", [f"{name}/output", f"{name}/split"], outputs, name=f"{name}/Split", axis=-1)
    else:
        split = helper.make_node("Split", [f"{name}/output"], outputs, name=f"{name}/Split", axis=-1, split=widths)
    return [matmul, split], MergedGroup(group[0].input[0], tuple(n.name or n.output[0] for n in group), widths)


def merge_sibling_matmuls(model: Any, exclude: Collection[str] = ()) -> list[MergedGroup]:
    """Merge every sibling group of ``model`` in place (see the module docstring); the groups merged."""
    groups = sibling_groups(model, exclude)
    if not groups:
        return []
    g = model.graph
    replaced = {id(n) for group in groups for n in group}
    old_weights = {n.input[1] for group in groups for n in group}
    # The merged pair goes where the group's first MatMul was: its input exists there, and every reader of any
    # member's output comes after that member, so after the first one too.
    inits = {i.name: i for i in g.initializer}
    at_first: dict[int, list[Any]] = {}
    merged = []
    for k, group in enumerate(groups):
        nodes, record = _merged_nodes(model, inits, group, k)
        at_first[id(group[0])] = nodes
        merged.append(record)
    new_nodes = []
    for n in g.node:
        new_nodes += at_first.get(id(n), [])
        if id(n) not in replaced:
            new_nodes.append(n)
    kept = [i for i in g.initializer if i.name not in old_weights]
    del g.node[:]
    g.node.extend(new_nodes)
    del g.initializer[:]
    g.initializer.extend(kept)
    return merged


def step_merge_projections(src: Path, dst: Path, cfg: Any, ctx: Any) -> tuple[bool, dict[str, Any]]:
    """A recipe step (int4): merge a decoder's sibling projections; other graphs pass through unchanged."""
    model = graph.load_model(src, check=False)
    if not getattr(cfg, "merge_projections", True):
        reason = "merge_projections switched off in the recipe options"
    elif ctx.task_kind != GENERATION_KIND:
        reason = f"projections are merged in decoders, not for {ctx.task_kind}"
    else:
        reason = ""
    merged = [] if reason else merge_sibling_matmuls(model, exclude=set(getattr(cfg, "nodes_to_exclude", ())))
    graph.save_model(model, dst)
    details: dict[str, Any] = {"merged": [m.to_dict() for m in merged]}
    if reason or not merged:
        details["skipped"] = reason or "no MatMuls share an input with constant weights"
    return bool(merged), details
