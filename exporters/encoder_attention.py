"""Fused encoder ``Attention`` -> a projection ``MatMul`` + ``Add`` and a bidirectional ``GroupQueryAttention``.

Why: ORT's transformer optimizer fuses a BERT layer's self-attention into one ``com.microsoft.Attention`` (int8:
``QAttention``), whose CPU kernel runs the softmax(QK')V part at ~20 us per (sequence, head) pair of MiniLM's
batch 8 (23 positions, 12 heads of 32): 2.9 ms of the int8 model's ~10 ms, more than its three other GEMMs. ORT's
CPU ``GroupQueryAttention`` with ``causal=0`` (bidirectional) computes the same attention over each row's valid
keys in 1.1 ms for the same six layers (onnxruntime 1.32, Intel Xeon AVX-512, 2 threads). It reads a row's
length from ``seqlens_k`` (length - 1), exactly what the fused graph's 1-D ``mask_index`` (the
EmbedLayerNormalization's row sums) says: right padding, as before.

What: each qualifying ``Attention(x, W, b, mask_index)`` becomes ``MatMul(x, W)``, ``Add(b)`` and
``GroupQueryAttention(qkv, seqlens_k, total_sequence_length; num_heads = kv_num_heads, causal=0)``: the packed
QKV layout (Q, K, V along the last axis) is the one Attention's weight already has. ``seqlens_k`` and the
total length are computed once from the mask. The projection is then an ordinary MatMul: padding removal
(exporters/unpad.py) runs it on the real tokens only, and int8 quantizes it like the other projections (with
its own activation scale instead of QAttention's).

Measured (MiniLM int8-dynamic, the export benchmark's batches, Intel Xeon AVX-512 VNNI + AMX, 2 threads, onnxruntime
1.32, one process, spinning off as in benchmarks/export.py, 25 interleaved rounds): batch 8 (139 real tokens padded
to 184) 0.410x -> 0.376x of the fp32 ONNX export; batch 1 (18 tokens) 0.415x -> 0.445x: at 18 tokens the separate
projection (36 us) and GroupQueryAttention (36 us) cost what QAttention did (63 us + 8 us for its input's
quantization), and the extra parallel section pays a thread wake-up without spinning. With ORT's default spinning,
each model in its own process: batch 1 +4 %, batch 8 -7 %. fp32 package: batch 1 0.975x, batch 8 0.942x of the fused
graph.

Which: an ``Attention`` with a constant (hidden, 3 x hidden) weight and bias, the embedding's ``mask_index``,
and no past, relative bias, ``unidirectional`` or per-part widths; any other is left fused and the reason is
recorded. The rewrite is checked before it is kept: the rewritten and original graphs run on a padded batch
of two rows and must agree on the real rows (:func:`preflight`), or the original graph is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.onnx_graph import node_attr
from exporters import graph

PREFIX = "gqa_encoder/"
_ALLOWED_ATTRS = frozenset({"num_heads", "mask_filter_value", "scale"})
_MASK_INDEX = 3  # Attention's mask input
_EMBED_MASK_INDEX_OUT = 1  # EmbedLayerNormalization's mask_index output (row sums of the mask)
# The preflight's agreement on real rows: float32 reorderings of the same sums, far below any accuracy check.
PREFLIGHT_ATOL = 1e-4


@dataclass(frozen=True)
class _Site:
    """One Attention to rewrite: the node, its head count and scale."""

    node: Any
    num_heads: int
    scale: float | None


def _site(node: Any, inits: dict[str, Any], mask_index: str | None) -> _Site | str:
    """The rewrite of ``node``, or why it stays fused."""
    extra = sorted({a.name for a in node.attribute} - _ALLOWED_ATTRS)
    if extra:
        return f"attributes {extra}"
    ins = list(node.input)
    if len(node.output) != 1 or any(ins[4:]):
        return "past / present or relative bias inputs"
    if len(ins) <= _MASK_INDEX or not ins[_MASK_INDEX] or ins[_MASK_INDEX] != mask_index:
        return "its mask is not the embedding's mask_index"
    w, b = inits.get(ins[1]), inits.get(ins[2]) if len(ins) > 2 else None
    if w is None or b is None or len(w.dims) != 2 or w.dims[1] != 3 * w.dims[0] or list(b.dims) != [w.dims[1]]:
        return "its weight is not a constant (hidden, 3 x hidden) with a bias"
    heads = int(node_attr(node, "num_heads", 0))
    if heads <= 0 or w.dims[0] % heads:
        return f"num_heads {heads} does not divide hidden {w.dims[0]}"
    scale = node_attr(node, "scale")
    return _Site(node, heads, float(scale) if scale else None)


def _length_nodes(mask: str, mask_index: str) -> tuple[list[Any], list[Any]]:
    """``seqlens_k`` = max(mask_index - 1, 0) as int32 and the padded length as an int32 scalar, once."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    p = PREFIX
    inits = [
        numpy_helper.from_array(np.array(1, dtype=np.int32), p + "one"),
        numpy_helper.from_array(np.array(0, dtype=np.int32), p + "zero"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), p + "seq_axis"),
    ]
    nodes = [
        # an all-zero mask row would give -1, which the kernel rejects; its outputs are pad rows either way
        helper.make_node("Sub", [mask_index, p + "one"], [p + "lengths_m1"], name=p + "lengths_m1"),
        helper.make_node("Max", [p + "lengths_m1", p + "zero"], [p + "seqlens_k"], name=p + "seqlens_k"),
        helper.make_node("Shape", [mask], [p + "mask_shape"], name=p + "mask_shape"),
        helper.make_node("Gather", [p + "mask_shape", p + "seq_axis"], [p + "total_i64"], name=p + "total_i64"),
        helper.make_node("Cast", [p + "total_i64"], [p + "total"], name=p + "total", to=TensorProto.INT32),
    ]
    return nodes, inits


def _replacement(site: _Site, k: int) -> list[Any]:
    from onnx import helper

    n, p = site.node, f"{PREFIX}{k}/"
    x, w, b, _ = n.input[:4]
    attrs: dict[str, Any] = {"num_heads": site.num_heads, "kv_num_heads": site.num_heads, "causal": 0}
    if site.scale is not None:
        attrs["scale"] = site.scale
    return [
        helper.make_node("MatMul", [x, w], [p + "qkv_nobias"], name=p + "qkv_proj"),
        helper.make_node("Add", [p + "qkv_nobias", b], [p + "qkv"], name=p + "qkv_bias"),
        helper.make_node(
            "GroupQueryAttention",
            [p + "qkv", "", "", "", "", PREFIX + "seqlens_k", PREFIX + "total"],
            [n.output[0]],
            name=p + "attention",
            domain="com.microsoft",
            **attrs,
        ),
    ]


def rewrite(model: Any) -> dict[str, Any]:
    """Rewrite ``model`` in place (see the module doc); returns details, with ``reason`` when nothing changed."""
    g = model.graph
    embeds = [n for n in g.node if n.op_type == "EmbedLayerNormalization" and n.domain == "com.microsoft"]
    if len(embeds) != 1 or len(embeds[0].output) <= _EMBED_MASK_INDEX_OUT or len(embeds[0].input) < 8:
        return {"reason": "needs one fused EmbedLayerNormalization with an attention mask"}
    embed = embeds[0]
    mask, mask_index = embed.input[7], embed.output[_EMBED_MASK_INDEX_OUT]
    if not mask or not mask_index:
        return {"reason": "the embedding has no attention mask"}
    inits = {t.name: t for t in g.initializer}
    sites, kept = [], {}
    for n in g.node:
        if n.op_type == "Attention" and n.domain == "com.microsoft":
            found = _site(n, inits, mask_index)
            if isinstance(found, str):
                kept[n.name or n.output[0]] = found
            else:
                sites.append(found)
    if not sites:
        return {"reason": "no fused Attention qualifies", "kept": kept}
    length_nodes, length_inits = _length_nodes(mask, mask_index)
    by_node = {id(s.node): k for k, s in enumerate(sites)}
    new_nodes: list[Any] = []
    for n in g.node:
        new_nodes.extend(_replacement(sites[by_node[id(n)]], by_node[id(n)]) if id(n) in by_node else [n])
        if n is embed:
            new_nodes.extend(length_nodes)
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(length_inits)
    return {"rewritten": len(sites), "kept": kept}


def preflight(original: Path, rewritten: Path) -> str | None:
    """None when both graphs agree on the real rows of a padded batch; else what went wrong."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        a, b = (ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for p in (original, rewritten))
        feeds = _padded_feeds(a)
        outs_a, outs_b = a.run(None, feeds), b.run(None, feeds)
    except Exception as exc:  # the kernel refused the rewritten graph: keep the fused one
        return f"onnxruntime: {str(exc).splitlines()[0][:200]}"
    real = feeds["attention_mask"].astype(bool) if "attention_mask" in feeds else None
    for x, y in zip(outs_a, outs_b, strict=True):
        if x.shape != y.shape:
            return f"output shape {y.shape} differs from {x.shape}"
        if real is not None and x.ndim == 3 and x.shape[:2] == real.shape:
            x, y = x[real], y[real]
        if not np.all(np.isfinite(y)) or not np.allclose(x, y, atol=PREFLIGHT_ATOL, rtol=1e-3):
            return f"outputs differ by up to {float(np.nanmax(np.abs(x - y))):.3g}"
    return None


def _padded_feeds(session: Any) -> dict[str, Any]:
    """Two rows of 7 positions, the second right-padded after 4: ids 1..5 repeating, 0 at the pads, one token type."""
    import numpy as np

    mask = np.array([[1] * 7, [1] * 4 + [0] * 3], dtype=np.int64)
    feeds: dict[str, Any] = {}
    for i in session.get_inputs():
        dtype = np.int32 if "int32" in i.type else np.int64
        if "mask" in i.name:
            feeds[i.name] = mask.astype(dtype)
        elif "type" in i.name:
            feeds[i.name] = np.zeros_like(mask, dtype=dtype)
        else:
            feeds[i.name] = ((np.arange(7)[None, :] % 5 + 1) * mask).astype(dtype)
    return feeds


def step_encoder_attention(src: Path, dst: Path, cfg: Any, ctx: Any) -> tuple[bool, dict[str, Any]]:
    """The recipe step: reads ``encoder_gqa`` (bool, default True) from the recipe config."""
    model = graph.load_model(src, check=False)
    if not getattr(cfg, "encoder_gqa", True):
        details: dict[str, Any] = {"reason": "encoder_gqa is off"}
    else:
        details = rewrite(model)
    graph.save_model(model, dst)
    if "reason" in details:
        return False, details
    problem = preflight(src, dst)
    if problem is not None:
        graph.save_model(graph.load_model(src, check=False), dst)
        return False, {"reason": f"the rewritten graph failed its check ({problem}); Attention kept fused"}
    return True, details
