"""Padding removal for fused BERT-style encoders: the per-token work runs on the real tokens only.

Why: a padded batch spends every projection GEMM, GELU, LayerNorm and residual Add on pad rows whose results
nobody reads (sentence embeddings mean-pool under the attention mask). Batch 8 of the export benchmark is 139
real tokens padded to 184: a quarter of that work is padding. ONNX Runtime removes padding on CUDA only
(``PackedAttention``); on CPU the graph has to do it.

What: after the fusions, the hidden state between the fused ``Attention`` nodes is kept *packed*, shape
``[tokens, hidden]``: ``NonZero`` of the attention mask gives the real tokens' (batch, position) pairs and
``GatherND`` packs. Where a fused ``Attention`` (which needs the padded layout and the mask) reads it, one
``Gather`` by the *inverse* index unpacks it to ``[batch, seq, hidden]``: ``CumSum(mask) - 1`` is a real token's
packed row, and a pad position gets some real token's row (the attention mask hides pad keys, and the next pack
drops pad queries, so what the pad rows hold changes no real row: the outputs are bit-identical to unpacking into
zeros). At the graph's outputs the same ``Gather`` times the mask makes the pad rows zeros. Only nodes that work
row by row may sit between (``ROW_WISE``: MatMul by a constant 2-D weight, elementwise ops with per-channel
constants, LayerNormalization over the last axis, GELU); any other node leaves the graph as it was.

Effect on outputs: rows of real tokens are unchanged (the same per-row arithmetic); rows of pad tokens in the
outputs are zeros instead of the model's values for the pad token (which carry no meaning: every pooling reads
them through the mask). Position (0, 0) is always packed, so a hand-made batch whose attention mask is all zeros
runs too (its outputs are all zeros) instead of failing in ONNX Runtime on an empty Gather.

Cost: two small nodes per layer (GatherND to pack, Gather to unpack) and about ten once, so an unpadded batch
(batch 1) pays a little. Measured on the AVX-512 VNNI host (MiniLM int8, x fp32 ONNX, wall / CPU time, one
interleaved run each, load 4-6): batch 1 0.371 / 0.387 against 0.338 / 0.373 without the step; the first version
(per layer ``ScatterND`` into zeros + ``Reshape`` to unpack, ``Reshape`` + ``Gather`` to pack) ran 0.394 / 0.408
there, the Gather unpack with the Reshape + Gather pack 0.384 / 0.402; at batch 8 the step gains ~10% (0.283 /
0.312 against 0.329 / 0.357 without it). Packing with ``Compress`` by the mask instead measured the same as
Gather. An ``If`` per pack costs more than the pack. Unpadded feeds do not pay the step in the shipped recipe:
after quantization one ``If`` around the whole packed region runs it without the pack nodes when the mask has
no 0 (exporters/unpad_branch.py, which also has the measurements: both branches share the int8 weights, and ONNX
Runtime 1.32 pre-packs them once). Every node this step adds is named under :data:`PREFIX` for that step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporters import graph

ROW_WISE = frozenset(
    {"MatMul", "Add", "Sub", "Mul", "Div", "LayerNormalization", "BiasGelu", "Gelu", "FastGelu", "Relu", "Tanh"}
)
_MASK_INPUT = 7  # EmbedLayerNormalization's mask input (its row sums are the sequence lengths)
# Nodes that read the hidden state in the padded [batch, seq, hidden] layout (input 0) and write it (output 0):
# the fused Attention, and the bidirectional GroupQueryAttention that replaces it (exporters/encoder_attention.py).
PADDED_LAYOUT_OPS = frozenset({"Attention", "GroupQueryAttention"})
# Every node the rewrite adds is named under PREFIX, so a later step (:func:`branch_on_padding`, after quantization
# renamed the tensors around them) finds them in the graph it reads back.
PREFIX = "unpad/"
PACK, UNPACK, ZERO_PADS = f"{PREFIX}pack/", f"{PREFIX}unpack/", f"{PREFIX}zero_pads/"


@dataclass
class _Region:
    """The tensors that become packed, the roots that get a ``Gather``, the Attention inputs to unpack."""

    rows: set[str] = field(default_factory=set)
    roots: list[str] = field(default_factory=list)
    unpack: set[str] = field(default_factory=set)


def _row_wise_ok(node: Any, tensor: str, rows: set[str], inits: dict[str, Any]) -> bool:
    """Whether ``node`` treats each row of ``tensor`` alone (so it may run on the packed rows)."""
    if node.op_type not in ROW_WISE or node.domain not in ("", "ai.onnx", "com.microsoft"):
        return False
    if node.op_type == "LayerNormalization":
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        return axis == -1 and node.input[0] == tensor and all(i in inits for i in node.input[1:] if i)
    if node.op_type == "MatMul":
        w = inits.get(node.input[1])
        return node.input[0] == tensor and w is not None and len(w.dims) == 2
    # elementwise: every other input is packed too (checked once the region is complete: ``rows`` grows),
    # or a constant of at most one (channel) dimension
    return all(i not in inits or len(inits[i].dims) <= 1 for i in node.input if i)


def find_region(model: Any) -> tuple[Any, _Region] | str:
    """The embedding node and the region to pack, or why the graph does not qualify."""
    nodes = model.graph.node
    embeds = [n for n in nodes if n.op_type == "EmbedLayerNormalization"]
    if len(embeds) != 1 or len(embeds[0].input) <= _MASK_INPUT or not embeds[0].input[_MASK_INPUT]:
        return "needs one fused EmbedLayerNormalization with an attention mask input"
    inits = {t.name: t for t in model.graph.initializer}
    uses: dict[str, list[Any]] = {}
    for n in nodes:
        for i in n.input:
            uses.setdefault(i, []).append(n)
    region, queue = _Region(roots=[embeds[0].output[0]]), deque([embeds[0].output[0]])
    seen_attention = 0
    while queue:
        t = queue.popleft()
        region.rows.add(t)
        for n in uses.get(t, []):
            if _padded_layout(n):
                if list(n.input).count(t) != 1 or n.input[0] != t:
                    return f"{n.name or n.op_type} reads the hidden state other than as its input"
                if t not in region.roots:
                    region.unpack.add(t)
                if n.output[0] not in region.roots:
                    seen_attention += 1
                    region.roots.append(n.output[0])
                    queue.append(n.output[0])
            elif _row_wise_ok(n, t, region.rows, inits):
                queue.extend(o for o in n.output if o and o not in region.rows)
            else:
                return f"{n.op_type} node {n.name!r} does not work row by row"
    if not seen_attention:
        return "no fused Attention reads the embeddings"
    for n in nodes:  # an elementwise node in the region must read nothing but packed tensors and constants
        if any(i in region.rows for i in n.input) and not _padded_layout(n):
            stray = [i for i in n.input if i and i not in region.rows and i not in inits]
            if stray:
                return f"{n.op_type} node {n.name!r} mixes the hidden state with {stray[0]!r}"
    return embeds[0], region


def _padded_layout(node: Any) -> bool:
    return node.op_type in PADDED_LAYOUT_OPS and node.domain == "com.microsoft"


def _attention_widths(model: Any, region: _Region, inits: dict[str, Any]) -> list[tuple[int, ...]]:
    """The weight shape of every fused Attention the region feeds (``()`` when it is not a constant)."""
    return [
        tuple(int(d) for d in inits[n.input[1]].dims) if n.input[1] in inits else ()
        for n in model.graph.node
        if n.op_type == "Attention" and n.domain == "com.microsoft" and n.input[0] in region.rows | region.unpack
    ]


def _const(name: str, values: list[int] | int) -> Any:
    import numpy as np
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def remove_padding(model: Any) -> dict[str, Any]:
    """Rewrite ``model`` in place (see the module doc); returns details, with ``reason`` when nothing changed."""

    found = find_region(model)
    if isinstance(found, str):
        return {"reason": found}
    embed, region = found
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    hidden = int(inits[embed.input[5]].dims[0]) if embed.input[5] in inits else -1
    if hidden <= 0:
        return {"reason": "the embedding LayerNorm weight is not a constant: hidden size unknown"}
    widths = _attention_widths(model, region, inits)
    if any(w != (hidden, 3 * hidden) for w in widths):
        # the rewrite was validated on one row width; an embedding projection (ELECTRA: embedding 16 -> hidden
        # 32) or unequal Q/K/V widths is left as it was
        return {"reason": f"Attention weight shapes {sorted(set(widths))} differ from the embedding width {hidden}"}
    if _opset(model) < 12:  # the index nodes use Max on int64 (opset 12) and Pad with its pads as input
        return {"reason": f"opset {_opset(model)} < 12"}
    p = PREFIX
    out_names = {o.name for o in g.output}
    packed_outputs = [t for t in region.rows if t in out_names]
    g.initializer.extend([_const(p + "flat", [-1]), _const(p + "axis0", 0), _const(p + "one", 1)])
    g.initializer.extend([_const(p + "one_11", [[1]]), _const(p + "ones_2", [1, 1]), _const(p + "zeros_2", [0, 0])])
    head = _index_nodes(embed.input[_MASK_INPUT], p, with_float_mask=bool(packed_outputs), opset=_opset(model))
    new_nodes: list[Any] = []
    rename: dict[str, str] = {t: f"{t}/packed" for t in region.roots}  # row-wise readers of a root read it packed
    for t in packed_outputs:
        rename[t] = f"{t}/packed"
    for n in list(g.node):
        is_attention = _padded_layout(n)
        for k, name in enumerate(n.input):
            if is_attention and k == 0 and name in region.unpack:
                n.input[k] = f"{name}/unpadded"
            elif not is_attention and name in rename:
                n.input[k] = rename[name]
        if not is_attention:
            for k, name in enumerate(n.output):
                if name in packed_outputs:
                    n.output[k] = rename[name]
        new_nodes.append(n)
        for o in n.output:
            new_nodes.extend(_after(o, region, packed_outputs, rename, p))
    del g.node[:]
    # index nodes right after the embedding, which produces the tensors they read
    at = next(i for i, n in enumerate(new_nodes) if n is embed) + 1
    g.node.extend(new_nodes[:at] + head + new_nodes[at:])
    keep = [v for v in g.value_info if v.name not in region.rows]
    del g.value_info[:]
    g.value_info.extend(keep)
    return {"packed_tensors": len(region.rows), "attention_nodes": len(region.roots) - 1, "hidden": hidden}


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def _index_nodes(mask: str, p: str, *, with_float_mask: bool, opset: int) -> list[Any]:
    """Once per run: the real rows ``idx`` (to pack), the inverse ``inv`` ``[batch, seq]`` (to unpack), the mask.

    The mask goes through bool so NonZero and the CumSum agree on any mask values.
    """
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", [mask], [p + "mask_bool"], name=p + "mask_bool", to=TensorProto.BOOL),
        helper.make_node("Cast", [p + "mask_bool"], [p + "mask_in"], name=p + "mask_in", to=TensorProto.INT64),
        # Position (0, 0) is always packed: a batch whose mask is all zeros would otherwise pack no row, and the
        # first unpack would Gather from an empty tensor (ORT: index out of range). With right padding (0, 0)
        # is [CLS], real anyway; where it is a pad, the Attention mask still hides it and the outputs zero it.
        helper.make_node("Shape", [p + "mask_in"], [p + "mshape"], name=p + "mshape"),
        helper.make_node("Sub", [p + "mshape", p + "ones_2"], [p + "pad_hi"], name=p + "pad_hi"),
        helper.make_node("Concat", [p + "zeros_2", p + "pad_hi"], [p + "pads"], name=p + "pads", axis=0),
        helper.make_node("Pad", [p + "one_11", p + "pads"], [p + "first"], name=p + "first"),
        helper.make_node("Max", [p + "mask_in", p + "first"], [p + "mask01"], name=p + "mask01"),
        helper.make_node("Reshape", [p + "mask01", p + "flat"], [p + "mask_flat"], name=p + "mask_flat"),
        # (batch, position) of each real token, for GatherND
        helper.make_node("NonZero", [p + "mask01"], [p + "nz"], name=p + "nonzero"),
        helper.make_node("Transpose", [p + "nz"], [p + "idx"], name=p + "idx", perm=[1, 0]),
        # a real token's packed row is the number of real tokens up to it, minus one
        helper.make_node("CumSum", [p + "mask_flat", p + "axis0"], [p + "csum_flat"], name=p + "csum_flat"),
        helper.make_node("Reshape", [p + "csum_flat", p + "mshape"], [p + "csum"], name=p + "csum"),
        helper.make_node("Sub", [p + "csum", p + "one"], [p + "inv"], name=p + "inv"),
    ]
    if with_float_mask:
        nodes.append(helper.make_node("Cast", [p + "mask_bool"], [p + "maskf"], name=p + "maskf", to=TensorProto.FLOAT))
        if opset >= 13:
            nodes.append(helper.make_node("Unsqueeze", [p + "maskf", p + "flat"], [p + "mask3d"], name=p + "mask3d"))
        else:
            nodes.append(helper.make_node("Unsqueeze", [p + "maskf"], [p + "mask3d"], name=p + "mask3d", axes=[-1]))
    return nodes


def _after(tensor: str, region: _Region, packed_outputs: list[str], rename: dict[str, str], p: str) -> list[Any]:
    """Nodes that follow the producer of ``tensor``: pack a root, unpack an Attention input or a graph output."""
    from onnx import helper

    out: list[Any] = []
    if tensor in region.roots:
        out.append(helper.make_node("GatherND", [tensor, p + "idx"], [rename[tensor]], name=f"{PACK}{tensor}"))
    if tensor in region.unpack:  # pad positions read some real row: the attention mask hides them
        out.append(helper.make_node("Gather", [tensor, p + "inv"], [f"{tensor}/unpadded"], name=f"{UNPACK}{tensor}"))
    original = next((t for t in packed_outputs if rename[t] == tensor), None)
    if original is not None:  # a graph output: pad rows become zeros
        out += [
            helper.make_node("Gather", [tensor, p + "inv"], [f"{original}/pads"], name=f"{UNPACK}{original}"),
            helper.make_node("Mul", [f"{original}/pads", p + "mask3d"], [original], name=f"{ZERO_PADS}{original}"),
        ]
    return out


def step_unpad(src: Path, dst: Path, cfg: Any, ctx: Any) -> tuple[bool, dict[str, Any]]:
    """The recipe step: reads ``remove_padding`` (bool, default True) from the recipe config."""
    model = graph.load_model(src, check=False)
    # written back through save_model either way, so a graph with external weights keeps them
    details = remove_padding(model) if getattr(cfg, "remove_padding", True) else {"reason": "remove_padding is off"}
    graph.save_model(model, dst)
    return "reason" not in details, details
