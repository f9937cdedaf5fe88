"""The layout conversions ONNX Runtime adds on this host: the NCHWc reorders around blocked convolutions.

On x86 (and wherever MLAS has NCHWc kernels) level "all" runs convolutions, pooling and their elementwise
neighbours on channel-blocked tensors (8 or 16 channels per block, the vector width), and converts at the
edges of those regions: ``ReorderInput`` (NCHW -> NCHWc) before, ``ReorderOutput`` after, around every op
the pass leaves in NCHW (EfficientNet's fused Swish, ``Pad``, the squeeze-excite ``Mul``, a graph output).
Each reads and writes the whole tensor with a strided copy. The portable graph the estimate runs on
(level "extended", the same for every device) has none of them, so the host's estimate adds them: read
from the graph this host's ONNX Runtime saves at level "all", each a memory-bound node of the size of its
NCHW side (known from the portable graph's shapes). Other devices never get them: their graph and layout
are not this host's.

A blocked convolution also computes whole blocks: the pass pads its weight's output (and input) channels up to
the block (MobileNet-v2's 24-channel projections hold 32 x 96 weights on AVX-512), so its work is that of the
padded channel counts, read from the level-"all" graph's weight shapes (``padded_convs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from edgekit.profiler.static import NodeCost, NodeKind, StaticAnalysis, load_onnx, runtime_graph

__all__ = [
    "NCHWC_DOMAIN",
    "NCHWC_FLOAT_BYTES",
    "REORDERS",
    "host_layout_nodes",
    "nchw_convs",
    "nchw_pools",
    "padded_convs",
    "reorder_nodes",
    "with_layout",
]

NCHWC_DOMAIN = "com.microsoft.nchwc"
# reorder op -> whether its NCHW side is its input (ReorderInput) or its output (ReorderOutput)
REORDERS = {"ReorderInput": "input", "ReorderOutput": "output"}
NCHWC_FLOAT_BYTES = 4  # MLAS's NCHWc kernels are float32 only


def reorder_nodes(host_model: object, analysis: StaticAnalysis) -> tuple[NodeCost, ...]:
    """The reorder nodes of ``host_model`` (a level-"all" graph), sized by ``analysis`` (the portable one)."""
    out = []
    for index, node in enumerate(host_model.graph.node):  # type: ignore[attr-defined]
        side = REORDERS.get(node.op_type) if node.domain == NCHWC_DOMAIN else None
        if side is None:
            continue
        name = node.input[0] if side == "input" else node.output[0]
        shape = analysis.value_shapes.get(name)
        if not shape:
            continue  # a tensor the portable graph does not have: its size is unknown, so it is not guessed
        numel = 1
        for d in shape:
            numel *= int(d)
        nbytes = numel * NCHWC_FLOAT_BYTES
        out.append(
            NodeCost(
                name=node.name or f"{node.op_type}_{index}",
                op_type=node.op_type,
                domain=NCHWC_DOMAIN,
                kind=NodeKind.DATA,
                flops={},
                macs=0,
                bytes_read=nbytes,
                bytes_written=nbytes,
                weight_bytes=0,
                output_elements=numel,
            )
        )
    return tuple(out)


_CONV_OPS = frozenset({"Conv", "FusedConv"})


def nchw_convs(host_model: object, analysis: StaticAnalysis) -> tuple[NodeCost, ...]:
    """``analysis``' convolutions that ``host_model`` (level "all") runs outside the NCHWc domain, marked
    ``nchw_on_host`` (on a host without NCHWc kernels that is every one: the calibration then leaves the NCHW
    rate unset, and the dense-conv rates apply to them)."""
    graph = host_model.graph.node  # type: ignore[attr-defined]
    names = {n.name for n in graph if n.op_type in _CONV_OPS and n.domain != NCHWC_DOMAIN}
    return tuple(replace(n, nchw_on_host=True) for n in analysis.nodes if n.kind == NodeKind.CONV and n.name in names)


_POOL_OPS = frozenset({"MaxPool", "AveragePool"})


def nchw_pools(host_model: object, analysis: StaticAnalysis) -> tuple[NodeCost, ...]:
    """``analysis``' MaxPool / AveragePool nodes that ``host_model`` (level "all") runs outside the NCHWc domain
    (ShuffleNet's 24-channel stem pool, pools on channel counts not a multiple of the block), marked
    ``nchw_on_host``: MLAS's NCHW pooling kernel is far slower per output than its blocked one."""
    graph = host_model.graph.node  # type: ignore[attr-defined]
    names = {n.name for n in graph if n.op_type in _POOL_OPS and n.domain != NCHWC_DOMAIN}
    return tuple(replace(n, nchw_on_host=True) for n in analysis.nodes if n.op_type in _POOL_OPS and n.name in names)


def _weight_dims(model: object) -> dict[str, tuple[int, ...]]:
    return {i.name: tuple(i.dims) for i in model.graph.initializer}  # type: ignore[attr-defined]


def padded_convs(host_model: object, portable_model: object, analysis: StaticAnalysis) -> tuple[NodeCost, ...]:
    """``analysis``' blocked convolutions whose weights ``host_model`` pads to whole channel blocks, with their
    FLOPs and MACs scaled to the padded output x input channels (the reduction by the padded input channels).

    A blocked conv is named after its portable output plus ``_nchwc``; its weight is ``[out, in / group, kh,
    kw]`` rounded up to the block. Convs ``portable_model`` does not name, or whose weights do not grow, are left
    alone."""
    host_dims, portable_dims = _weight_dims(host_model), _weight_dims(portable_model)
    by_output = {n.output[0]: n for n in portable_model.graph.node if n.output}  # type: ignore[attr-defined]
    growth: dict[str, tuple[float, float]] = {}
    for node in host_model.graph.node:  # type: ignore[attr-defined]
        if node.domain != NCHWC_DOMAIN or node.op_type not in _CONV_OPS or len(node.input) < 2:
            continue
        source = by_output.get(node.name.removesuffix("_nchwc"))
        padded = host_dims.get(node.input[1])
        plain = portable_dims.get(source.input[1]) if source is not None and len(source.input) > 1 else None
        if not padded or not plain or len(padded) < 2 or len(plain) < 2 or min(plain[:2]) <= 0:
            continue
        out_x, in_x = padded[0] / plain[0], padded[1] / plain[1]
        if out_x * in_x > 1.0:
            growth[source.name] = (out_x, in_x)
    out = []
    for n in analysis.nodes:
        if n.kind != NodeKind.CONV or n.name not in growth:
            continue
        out_x, in_x = growth[n.name]
        out.append(
            replace(
                n,
                flops={p: round(f * out_x * in_x) for p, f in n.flops.items()},
                macs=round(n.macs * out_x * in_x),
                output_elements=round(n.output_elements * out_x),
            )
        )
    return tuple(out)


def host_layout_nodes(
    src: str | Path, dst: Path, analyses: Sequence[StaticAnalysis], *, portable: str | Path | None = None
) -> list[tuple[NodeCost, ...]]:
    """Per analysis (one per phase) of ``src``'s portable graph, the reorders this host adds (its level-"all"
    graph is saved at ``dst``), its convolutions left in NCHW and, given the ``portable`` graph the analyses
    are of, its blocked convolutions padded to whole channel blocks; none, and no second session, for a graph
    without convolutions, which the NCHWc pass leaves alone."""
    if not any(n.kind == NodeKind.CONV or n.op_type in _POOL_OPS for a in analyses for n in a.nodes):
        return [() for _ in analyses]
    host_model = load_onnx(runtime_graph(src, dst, host_layout=True), load_weights=False)
    portable_model = load_onnx(portable, load_weights=False) if portable is not None else None
    out = []
    for a in analyses:
        padded = padded_convs(host_model, portable_model, a) if portable_model is not None else ()
        out.append(reorder_nodes(host_model, a) + nchw_convs(host_model, a) + nchw_pools(host_model, a) + padded)
    return out


def with_layout(analysis: StaticAnalysis, layout_nodes: tuple[NodeCost, ...]) -> StaticAnalysis:
    """``analysis`` with this host's layout: its convolutions left in NCHW or padded to whole blocks replaced by
    their host copies (``nchw_convs``, ``padded_convs``), the reorders added to the nodes it runs."""
    if not layout_nodes:
        return analysis
    names = {n.name for n in analysis.nodes}
    marked = {n.name: n for n in layout_nodes if n.name in names}
    added = tuple(n for n in layout_nodes if n.name not in names)
    return replace(analysis, nodes=tuple(marked.get(n.name, n) for n in analysis.nodes) + added)
