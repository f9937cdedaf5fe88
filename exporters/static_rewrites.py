"""Exact float rewrites int8-static makes before calibrating, and which Sigmoid / Mul nodes it quantizes.

SiLU / squeeze-excite CNNs (EfficientNet) ran *slower* in int8 than in fp32 (benchmarks/cnn_int8.py, AMD EPYC
Zen 5, 2 threads: 1.41x) because Sigmoid and Mul stayed float: every SiLU cost two DequantizeLinear, a float
Sigmoid, a float Mul and a QuantizeLinear (141 DQ / 71 Q left after ORT's fusions). Four changes, each measured:

- **Whole-input AveragePool -> GlobalAveragePool.** transformers' EfficientNet pools with
  ``AvgPool2d(hidden_dim, ceil_mode=True)``: a 1280-wide window over a 7x7 map. ONNX Runtime's float AveragePool
  averages the cells inside the input (the same as GlobalAveragePool: 0.0 apart), but its fused
  QLinearAveragePool divides by the whole window and returns exactly 0 — the "collapse to 0" once blamed on
  QLinearMul. As GlobalAveragePool it is exact in float and runs as QLinearGlobalAveragePool.
- **SiLU (``x * Sigmoid(x)``) -> com.microsoft QuickGelu(alpha=1)**, when ``silu="float"`` (the default): the
  node ONNX Runtime itself fuses the fp32 graph's SiLU into. Between the int8 convolutions it costs one
  DequantizeLinear, one vectorized float kernel and one QuantizeLinear; QLinearSigmoid (a scalar table lookup)
  plus QLinearMul cost more on this CPU (EfficientNet-B0, one thread, CPU time vs fp32: 0.81x against 0.96x).
  ``silu="int8"`` keeps Sigmoid + Mul as QDQ (for providers that take only QDQ graphs).
- **Zero Pad -> the next Conv's pads.** transformers' EfficientNet pads before its stride-2 depthwise convs with
  an explicit ZeroPad2d and a VALID conv, which ORT's PadFusion leaves alone: 5 Pad nodes, ~4 % of the int8 run.
  A constant-0 Pad of the spatial dims only is the same as the Conv's own (asymmetric) zero padding.
- **Gates in int8**: a Mul fed by a Sigmoid (squeeze-excite's channel gate, a SiLU left as is) and the Sigmoids
  that only feed such Muls are quantized, so ORT fuses them to QLinearSigmoid / QLinearMul. Every other Mul and
  Sigmoid stays float as before: GELU's ``x * 0.5`` and scale Muls round a constant to the activation's grid.
"""

from __future__ import annotations

from typing import Any

from edgekit.onnx_graph import consumers, node_attr, producers, value_info_dims

MS_DOMAIN = "com.microsoft"


def _spatial_dims(model: Any) -> dict[str, list[Any]]:
    infos = [*model.graph.value_info, *model.graph.input, *model.graph.output]
    return {vi.name: value_info_dims(vi) for vi in infos}


def _covers_input(node: Any, dims: list[Any] | None) -> bool:
    """An AveragePool whose window, unpadded, spans its whole static input: one output cell per channel."""
    if dims is None or len(dims) < 3 or not all(isinstance(d, int) and d > 0 for d in dims[2:]):
        return False
    kernel = node_attr(node, "kernel_shape") or []
    pads = node_attr(node, "pads") or [0] * (2 * len(kernel))
    auto_pad = node_attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID") or any(pads) or len(kernel) != len(dims) - 2:
        return False
    if any(d > 1 for d in (node_attr(node, "dilations") or [])):
        return False
    return all(k >= d for k, d in zip(kernel, dims[2:], strict=True))


def global_average_pools(model: Any) -> list[str]:
    """Turn each AveragePool whose window covers its whole input into GlobalAveragePool; the names rewritten."""
    dims = _spatial_dims(model)
    rewritten = []
    for node in model.graph.node:
        if (
            node.op_type == "AveragePool"
            and node.domain in ("", "ai.onnx")
            and _covers_input(node, dims.get(node.input[0]))
        ):
            node.op_type = "GlobalAveragePool"
            del node.attribute[:]
            rewritten.append(node.name)
    return rewritten


def _constant(model: Any, name: str) -> Any:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    return None


def _spatial_zero_pads(model: Any, pad: Any) -> list[int] | None:
    """A constant-mode, zero-valued Pad's [begin..., end...] for the spatial dims, when it pads nothing else."""
    mode = node_attr(pad, "mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant" or len(pad.input) < 2 or len(pad.input) > 3:
        return None
    pads = _constant(model, pad.input[1])
    value = _constant(model, pad.input[2]) if len(pad.input) == 3 and pad.input[2] else 0.0
    if pads is None or value is None or float(value) != 0.0 or pads.ndim != 1 or len(pads) < 6:
        return None
    rank = len(pads) // 2
    begin, end = [int(v) for v in pads[:rank]], [int(v) for v in pads[rank:]]
    if any(begin[:2]) or any(end[:2]) or min(begin + end) < 0:
        return None
    return begin[2:] + end[2:]


def fold_pads(model: Any) -> list[str]:
    """Move each zero Pad that feeds one Conv (explicit or VALID padding) into that Conv's pads; the Pads folded."""
    from onnx import helper

    read_by = consumers(model.graph)
    graph_outputs = {o.name for o in model.graph.output}
    folded = []
    for pad in [n for n in model.graph.node if n.op_type == "Pad" and n.domain in ("", "ai.onnx")]:
        readers = read_by.get(pad.output[0], [])
        extra = _spatial_zero_pads(model, pad)
        if extra is None or len(readers) != 1 or pad.output[0] in graph_outputs:
            continue
        conv = readers[0]
        auto_pad = node_attr(conv, "auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if conv.op_type != "Conv" or conv.input[0] != pad.output[0] or auto_pad not in ("NOTSET", "VALID"):
            continue
        own = node_attr(conv, "pads") or [0] * len(extra)
        if len(own) != len(extra):
            continue
        kept = [a for a in conv.attribute if a.name not in ("pads", "auto_pad")]
        del conv.attribute[:]
        conv.attribute.extend([*kept, helper.make_attribute("pads", [a + b for a, b in zip(own, extra, strict=True)])])
        conv.input[0] = pad.input[0]
        model.graph.node.remove(pad)
        folded.append(pad.name)
    _drop_unused_initializers(model)
    return folded


def _drop_unused_initializers(model: Any) -> None:
    """Initializers no node reads any more (a folded Pad's pads and value), so ORT has none to warn about."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)


def _silu_input(mul: Any, made_by: dict[str, Any], read_by: dict[str, list[Any]]) -> tuple[str, Any] | None:
    """(x, the Sigmoid) when ``mul`` is ``x * Sigmoid(x)`` and the Sigmoid feeds nothing else."""
    if mul.op_type != "Mul" or len(mul.input) != 2:
        return None
    for a, b in ((0, 1), (1, 0)):
        sig = made_by.get(mul.input[b])
        silu = sig is not None and sig.op_type == "Sigmoid" and sig.input[0] == mul.input[a]
        if silu and len(read_by.get(sig.output[0], [])) == 1:
            return mul.input[a], sig
    return None


def fuse_silu(model: Any) -> int:
    """Replace each ``x * Sigmoid(x)`` by one com.microsoft QuickGelu(alpha=1) node; how many were fused."""
    from onnx import helper

    made_by, read_by = producers(model.graph), consumers(model.graph)
    fused: dict[str, Any] = {}
    dropped: set[int] = set()
    for node in model.graph.node:
        found = _silu_input(node, made_by, read_by)
        if found is None:
            continue
        x, sig = found
        fused[node.output[0]] = helper.make_node(
            "QuickGelu", [x], [node.output[0]], name=f"{node.name}/silu", domain=MS_DOMAIN, alpha=1.0
        )
        dropped.add(id(sig))
    if not fused:
        return 0
    nodes = [fused.get(n.output[0], n) if n.op_type == "Mul" else n for n in model.graph.node if id(n) not in dropped]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(fused)


def float_sigmoid_muls(model: Any) -> list[str]:
    """Names of the Sigmoid and Mul nodes to keep float: all but gates (a Mul with a Sigmoid input) and the
    Sigmoids that feed gates only."""
    made_by, read_by = producers(model.graph), consumers(model.graph)

    def is_gate(node: Any) -> bool:
        return node.op_type == "Mul" and any(
            (src := made_by.get(i)) is not None and src.op_type == "Sigmoid" for i in node.input
        )

    kept = []
    for node in model.graph.node:
        if node.op_type == "Mul" and not is_gate(node):
            kept.append(node.name)
        elif node.op_type == "Sigmoid":
            readers = read_by.get(node.output[0], [])
            if not readers or not all(is_gate(r) for r in readers):
                kept.append(node.name)
    return kept
