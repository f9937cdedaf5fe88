"""Unpadded feeds skip padding removal: one ``If`` chooses the packed graph or the same graph without packing.

Why: padding removal (exporters/unpad.py) packs the hidden state to the real tokens with about ten index nodes
once and a ``GatherND`` / ``Gather`` pair per layer. A feed without padding (batch 1, or equal-length batches)
packs nothing, yet pays those ~30 nodes: at batch 1 they are 5-7% of the int8 MiniLM's run. No node elides a
copy by its data, so the only way to not pay them is not to run them.

What: after quantization, the nodes from the first pack on (the *region*) move into the two branches of one
``If`` on "no position of the attention mask is 0": the else branch is the region as padding removal wrote it,
the then branch the same nodes with every pack / unpack / pad-zeroing node taken out (each reads its input
instead) and no index nodes. Both branches read the weights from the outer graph: the package holds them once,
and ONNX Runtime 1.32 pre-packs each once per session (measured below). The mask's two casts that the
condition needs are hoisted out of the padded branch, so it runs two nodes fewer.

Effect on outputs: none. Without padding, every pack and unpack is the identity and the pad-zeroing multiplies
by 1.0, so the then branch computes the same floats (bit-identical; tests/test_export_unpad.py).

Measured on the AVX-512 VNNI host (2 vCPU AMD EPYC Zen 4, helper run 2026-12-02; MiniLM int8-dynamic, 2 threads;
the same weights with and without the ``If``; median of per-round ratios, wall / CPU time, one interleaved run):
quiet (load 0.0-0.4, 150 rounds) batch 1 0.977 / 0.980 of the flat graph's time, the region without packing and
no ``If`` (valid for unpadded feeds only: the floor) 0.928 / 0.946; 8 equal-length sentences 0.970 / 0.970; batch 8
padded 0.995 / 0.976 (kept). Loaded (load 5.4, 150 rounds): batch 1 0.973 / 0.964, the floor 0.928 / 0.973. So the
``If`` takes a third to a half of what not packing can give at batch 1; the rest is the ``If``'s own cost
(executing a subgraph), not traced further. Memory (heap in use after load and one run, ``mallinfo2``): 24.2 MB
flat, 25.5 MB with the ``If``, 47.0 MB with a second session on the unpacked graph; a 16 MB int8 weight read by a
``DynamicQuantizeMatMul`` in both branches of an ``If`` takes 16.1 MB in the session (not 32), and both branches
run at pre-packed speed (8.6 / 8.0 ms at 18 x 4096, against 17 ms with pre-packing off). ONNX Runtime's Python API
has no pre-packed weights container (``CreateSessionWithPrepackedWeightsContainer`` is C API only), so two
sessions cannot share theirs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from exporters import graph
from exporters.unpad import PACK, PREFIX, UNPACK, ZERO_PADS

IF_NAME = f"{PREFIX}if"
# The mask casts padding removal computes first: the condition reads them, so they run before the If.
_HOISTED = (f"{PREFIX}mask_bool", f"{PREFIX}mask_in")
_PASS_THROUGH = (PACK, UNPACK, ZERO_PADS)  # data input 0 -> output 0: the identity on an unpadded feed
_UNPADDED = f"{PREFIX}unpadded/"  # the then branch's tensor and node names (unique across the model)


def _region(nodes: list[Any]) -> list[Any]:
    """The padding removal nodes that are not hoisted and every node that depends on one, in graph order."""
    tainted: set[str] = set()
    out = []
    for n in nodes:
        added = n.name.startswith(PREFIX) and n.name not in _HOISTED
        if added or any(i in tainted for i in n.input):
            out.append(n)
            tainted.update(o for o in n.output if o)
    return out


def _unpadded_branch(region: list[Any], outputs: list[str]) -> Any:
    """The region without packing: pass-through nodes dropped (readers read their input), index nodes dropped."""
    from onnx import TensorProto, helper

    alias: dict[str, str] = {}
    for n in region:
        if n.name.startswith(_PASS_THROUGH):
            alias[n.output[0]] = n.input[0]

    def source(t: str) -> str:
        while t in alias:
            t = alias[t]
        return t

    kept = [copy.deepcopy(n) for n in region if not n.name.startswith(PREFIX)]
    inner = {o for n in kept for o in n.output if o}

    def name(t: str) -> str:
        t = source(t)
        return _UNPADDED + t if t in inner else t

    for n in kept:
        n.name = _UNPADDED + n.name
        n.input[:] = [name(i) if i else i for i in n.input]
        n.output[:] = [name(o) if o else o for o in n.output]
    outs = [helper.make_tensor_value_info(name(o), TensorProto.FLOAT, None) for o in outputs]
    return helper.make_graph(kept, "unpadded", [], outs)


def _padded_branch(region: list[Any], outputs: list[str]) -> Any:
    """The region as padding removal wrote it; a branch output needs a name of its own."""
    from onnx import TensorProto, helper

    nodes = [copy.deepcopy(n) for n in region]
    renamed = {o: f"{PREFIX}padded/{o}" for o in outputs}
    for n in nodes:
        n.output[:] = [renamed.get(o, o) for o in n.output]
    outs = [helper.make_tensor_value_info(renamed[o], TensorProto.FLOAT, None) for o in outputs]
    return helper.make_graph(nodes, "padded", [], outs)


def branch_on_padding(model: Any) -> dict[str, Any]:
    """Rewrite ``model`` in place (see the module doc); returns details, with ``reason`` when nothing changed."""
    from onnx import TensorProto, helper

    g = model.graph
    nodes = list(g.node)
    if any(n.name == IF_NAME for n in nodes):
        return {"reason": "the graph already branches on padding"}
    if not all(any(n.name == h for n in nodes) for h in _HOISTED):
        return {"reason": "no padding removal in this graph"}
    region = _region(nodes)
    in_region = {id(n) for n in region}
    produced = {o for n in region for o in n.output}
    outputs = [o.name for o in g.output if o.name in produced]
    float_outputs = all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in g.output if o.name in produced)
    if not outputs or not float_outputs:
        return {"reason": "the packed region does not end in float graph outputs"}
    cond = [
        helper.make_node("ReduceMin", [_HOISTED[1]], [f"{PREFIX}mask_min"], name=f"{PREFIX}mask_min", keepdims=0),
        helper.make_node(
            "Cast", [f"{PREFIX}mask_min"], [f"{PREFIX}unpadded"], name=f"{PREFIX}unpadded", to=TensorProto.BOOL
        ),
    ]
    branch = helper.make_node(
        "If",
        [f"{PREFIX}unpadded"],
        outputs,
        name=IF_NAME,
        then_branch=_unpadded_branch(region, outputs),
        else_branch=_padded_branch(region, outputs),
    )
    common = [n for n in nodes if id(n) not in in_region]
    del g.node[:]
    g.node.extend([*common, *cond, branch])
    keep = [v for v in g.value_info if v.name not in produced]  # region tensors now live inside the branches
    del g.value_info[:]
    g.value_info.extend(keep)
    then_nodes = next(len(a.g.node) for a in branch.attribute if a.name == "then_branch")
    return {"top_level_nodes": len(g.node), "unpadded_branch_nodes": then_nodes, "padded_branch_nodes": len(region)}


def step_unpad_branch(src: Path, dst: Path, cfg: Any, ctx: Any) -> tuple[bool, dict[str, Any]]:
    """The step's body (int8-dynamic's quantize step runs it last): ``remove_padding`` and ``unpadded_branch``
    (both default True) in the config turn it on."""
    model = graph.load_model(src, check=False)
    if not getattr(cfg, "remove_padding", True):
        details: dict[str, Any] = {"reason": "remove_padding is off"}
    elif not getattr(cfg, "unpadded_branch", True):
        details = {"reason": "unpadded_branch is off"}
    else:
        details = branch_on_padding(model)
    graph.save_model(model, dst)
    return "reason" not in details, details
