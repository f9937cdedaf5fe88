"""Static analysis of an ONNX graph at one concrete input shape.

What it computes, per node and in total: FLOPs (a multiply-add counts 2) split by the precision that does
the work (``fp32``, ``fp16``, ``int8``), MACs, bytes moved (every input read once, every output written
once; views such as Reshape move nothing), and which tensors are weights. Over the graph: parameter count,
weight bytes by dtype, the op histogram, and the peak activation memory by liveness over the topological
order (a tensor is live from the node that writes it to the last node that reads it; graph outputs live to
the end).

Shapes come from ONNX shape inference after the symbolic input dims are bound to concrete values. ONNX
does not know the ``com.microsoft`` ops ONNX Runtime's fusions produce (Attention, SkipLayerNormalization,
QAttention, ...), so values it leaves without a shape are read from one run of the graph in ONNX Runtime
with every optimization off (the "probe"): exact for any op, data-dependent shapes included.

Nodes whose inputs are all constant (initializers, ``Constant`` outputs) are folded by ONNX Runtime when
the session is created; they cost nothing per inference and their outputs count as weights. The
``light_*`` models the onnx package ships build every weight with ``ConstantOfShape`` this way.

Op costs live in :data:`OP_COSTS`, a registry keyed ``domain:op_type``: a new op is one entry.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from edgekit import onnx_graph
from edgekit.errors import CorruptModelError, MissingDependencyError, UsageError
from edgekit.onnx_graph import value_info_dims
from edgekit.ort_policy import disabled_optimizers
from edgekit.registry import Registry

__all__ = [
    "OP_COSTS",
    "NodeCost",
    "NodeKind",
    "OpCost",
    "StaticAnalysis",
    "analyze",
    "analyze_model",
    "graph_input_specs",
    "load_onnx",
    "unbound_dims",
]

# A tensor is "small" when shape inference needs its values (shapes, axes, scales): larger initializers are
# handed to shape inference as typed graph inputs, so a 500 MB model is analysed without copying its weights.
_SMALL_INITIALIZER = 4096

INPUT_SHAPE_HINT = "--input-shape NAME=1x128 (Python: input_shapes={'NAME': (1, 128)})"


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError.for_extra("onnx", "profile") from exc
    return onnx


# ---------------------------------------------------------------------------------------------- records


class NodeKind(str, Enum):
    """The roofline class of a node, as ``OP_COSTS`` assigns it: which rate of ``estimate.KIND_RATES`` and
    which calibration case time it, and (through ``kernels.work_kind``) which row of the device table. A str
    enum, so the JSON keeps the plain names and comparisons with a name still hold."""

    GEMM = "gemm"
    CONV = "conv"
    ATTENTION = "attention"  # fused with its QKV projection
    ATTENTION_CORE = "attention_core"  # on projected Q/K/V
    ELEMENTWISE = "elementwise"
    NORMALIZATION = "normalization"
    LRN = "lrn"
    DATA = "data"
    VIEW = "view"
    OTHER = "other"

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__  # f"{kind}" is the name on every Python version


@dataclass(frozen=True, kw_only=True)
class NodeCost:
    """One node at the bound shapes. ``flops`` is keyed by the precision doing the arithmetic."""

    name: str
    op_type: str
    domain: str
    kind: NodeKind
    flops: Mapping[str, int]
    macs: int
    bytes_read: int
    bytes_written: int
    weight_bytes: int  # the part of bytes_read that is constant (weights read once per inference)
    shape_known: bool = True
    output_elements: int = 0  # of the first output: macs / output_elements is the reduction length
    # Convolutions only: the ``group`` attribute. Depthwise (C/group == 1) and grouped convolutions run other
    # kernels than dense ones (no GEMM, far less reuse per loaded byte), so the estimator tells them apart.
    groups: int = 1
    channels_per_group: int = 0  # C/group, from the weight's shape (0 when unknown)
    kernel_elems: int = 0  # kh x kw of a convolution (0 when unknown): 3x3 stride-1 ones may run as Winograd
    unit_stride: bool = True
    # Fused Attention / QAttention only: the part of ``flops`` (in the float precision) that is attention on
    # the projected Q/K/V (per-head products and softmax), which runs at the attention rate, not the GEMM's.
    attention_flops: int = 0
    # Host only (layout.py): a convolution this host's NCHWc pass left in NCHW (channels not a multiple of
    # the vector block, or grouped but not depthwise). MLAS runs it as im2col + one GEMM per group, far below
    # the blocked kernels' rates, so it gets the rate and per-group cost of the ``conv_nchw`` cases.
    nchw_on_host: bool = False
    # GroupQueryAttention with causal=0 (an encoder's, exporters/encoder_attention.py): ORT's bidirectional path,
    # no rotary and no KV cache, ~5x the decoder cases' attention rate here; it gets the rate of its own cases
    bidirectional: bool = False
    # FusedConv only: its fused activation (ONNX op name, "" for none). Host only (estimate.py): MLAS's NCHWc
    # kernels apply Relu in the kernel and any other one as a second pass over the output
    activation: str = ""
    # Convolutions only: output elements / output width (N x C x H of a 2-D map; 0 when unknown). MLAS's
    # NCHWc kernels run one output row of one channel block per call, so their fixed cost goes by rows.
    output_rows: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", NodeKind(self.kind))  # a name ("conv") from a test or a JSON file

    @property
    def reduction(self) -> float:
        """Multiply-adds per output element (C/group x kernel for a convolution, K for a GEMM)."""
        return self.macs / self.output_elements if self.output_elements else 0.0

    @property
    def conv_class(self) -> str:
        """``depthwise`` / ``grouped`` / ``small`` (reduction under ``SMALL_REDUCTION``) / ``dense``; "" if not a conv."""
        if self.kind != NodeKind.CONV:
            return ""
        if self.groups > 1 and self.channels_per_group == 1:
            return "depthwise"
        if self.groups > 1:
            return "grouped"
        return "small" if 0 < self.reduction < SMALL_REDUCTION else "dense"

    @property
    def total_flops(self) -> int:
        return sum(self.flops.values())

    @property
    def bytes_moved(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def activation_bytes(self) -> int:
        """Bytes moved that are not weights: the activations read and written."""
        return max(0, self.bytes_moved - self.weight_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op_type": self.op_type,
            "domain": self.domain or "ai.onnx",
            "kind": str(self.kind),
            "flops": self.total_flops,
            "flops_by_precision": dict(self.flops),
            "macs": self.macs,
            "bytes_moved": self.bytes_moved,
            "weight_bytes_read": self.weight_bytes,
            "shape_known": self.shape_known,
        }


@dataclass(frozen=True, kw_only=True)
class StaticAnalysis:
    """The whole graph at ``input_shapes``. ``nodes`` excludes the nodes folded at session creation."""

    input_shapes: Mapping[str, tuple[int, ...]]
    bound_dims: Mapping[str, int]
    parameter_count: int
    weight_bytes_by_dtype: Mapping[str, int]
    folded_nodes: int  # constant subgraphs ONNX Runtime evaluates once when the session is created
    op_histogram: Mapping[str, int]
    nodes: tuple[NodeCost, ...]
    peak_activation_bytes: int
    peak_at_node: str | None
    shape_source: str  # "onnx" or "onnx+onnxruntime-probe"
    unknown_shape_nodes: int = 0
    node_count: int = 0  # nodes in the graph as stored, folded ones included
    output_count: int = 0  # graph outputs (each is bound, and copied out, on every run)
    # Weight bytes by how ONNX Runtime keeps them: "conv" (convolution weights, fused and prepacked at load),
    # "folded_conv" (convolution weights made by constant folding at load), "quantized_gemm" (8-bit GEMM
    # weights, prepacked at load), "other" (float GEMM weights, embeddings, ...).
    weight_bytes_by_use: Mapping[str, int] = field(default_factory=dict)
    # For the coverage check: every value's shape at the bound inputs, and what constant folding produces.
    value_shapes: Mapping[str, tuple[int, ...] | None] = field(default_factory=dict, repr=False)
    folded_outputs: frozenset[str] = frozenset()
    dynamic_inputs: frozenset[str] = frozenset()  # inputs whose dims are symbolic in the model as stored

    @property
    def weight_bytes(self) -> int:
        return sum(self.weight_bytes_by_dtype.values())

    @property
    def flops(self) -> int:
        return sum(n.total_flops for n in self.nodes)

    @property
    def macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    @property
    def bytes_moved(self) -> int:
        return sum(n.bytes_moved for n in self.nodes)

    def flops_by_precision(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for n in self.nodes:
            out.update(n.flops)
        return dict(out)

    def top_nodes(self, k: int = 10) -> list[NodeCost]:
        return sorted(self.nodes, key=lambda n: (n.total_flops, n.bytes_moved), reverse=True)[:k]

    def to_dict(self, *, top_k: int = 10) -> dict[str, Any]:
        return {
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
            "bound_dims": dict(self.bound_dims),
            "parameter_count": self.parameter_count,
            "weight_bytes": self.weight_bytes,
            "weight_bytes_by_dtype": dict(self.weight_bytes_by_dtype),
            "weight_bytes_by_use": dict(self.weight_bytes_by_use),
            "node_count": self.node_count,
            "folded_node_count": self.folded_nodes,
            "op_histogram": dict(self.op_histogram),
            "flops": self.flops,
            "flops_by_precision": self.flops_by_precision(),
            "macs": self.macs,
            "bytes_moved": self.bytes_moved,
            "peak_activation_bytes": self.peak_activation_bytes,
            "peak_activation_at_node": self.peak_at_node,
            "shape_source": self.shape_source,
            "unknown_shape_node_count": self.unknown_shape_nodes,
            "top_nodes_by_flops": [n.to_dict() for n in self.top_nodes(top_k)],
        }


# ------------------------------------------------------------------------------------------- op costs


@dataclass(frozen=True)
class Tensor:
    """What a cost function sees of one input or output: dtype name, shape (None when unknown), constness."""

    name: str
    dtype: str
    shape: tuple[int, ...] | None
    constant: bool = False

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE.get(self.dtype, 4)

    @property
    def numel(self) -> int:
        return math.prod(self.shape) if self.shape is not None else 0

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize


@dataclass(frozen=True)
class NodeView:
    op_type: str
    domain: str
    inputs: tuple[Tensor | None, ...]  # None for an omitted optional input
    outputs: tuple[Tensor, ...]
    attrs: Mapping[str, Any]

    def inp(self, i: int) -> Tensor | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def out_numel(self) -> int:
        return self.outputs[0].numel if self.outputs else 0

    def float_precision(self) -> str:
        """The precision float arithmetic runs in: the dtype of the first float input or output."""
        for t in (*self.inputs, *self.outputs):
            if t is not None and t.dtype in ("float16", "bfloat16"):
                return "fp16"
            if t is not None and t.dtype in ("float32", "float64"):
                return "fp32"
        return "fp32"


Cost = tuple[dict[str, int], int]  # (flops by precision, macs)


@dataclass(frozen=True, kw_only=True)
class OpCost:
    """How to count one op: its kind (which roofline class it falls in) and a cost function."""

    kind: NodeKind
    cost: Callable[[NodeView], Cost]
    view: bool = False  # output aliases the input buffer: no bytes move, no new memory
    # Inputs that are lookup tables (Gather's data, embedding tables): only the rows looked up are read,
    # at most as many bytes as the output holds.
    tables: tuple[int, ...] = ()


OP_COSTS: Registry[OpCost] = Registry("op cost")


def _elementwise(flops_per_element: float) -> Callable[[NodeView], Cost]:
    def cost(v: NodeView) -> Cost:
        return {v.float_precision(): int(v.out_numel() * flops_per_element)}, 0

    return cost


def _no_flops(v: NodeView) -> Cost:
    return {}, 0


def _shape(t: Tensor | None) -> tuple[int, ...] | None:
    return None if t is None else t.shape


def _matmul_macs(a: tuple[int, ...] | None, out: tuple[int, ...] | None, *, trans_a: bool = False) -> int:
    if a is None or out is None or not a:
        return 0
    k = a[-2] if trans_a and len(a) >= 2 else a[-1]
    return math.prod(out) * k


def _matmul(precision: str | None = None) -> Callable[[NodeView], Cost]:
    def cost(v: NodeView) -> Cost:
        macs = _matmul_macs(_shape(v.inp(0)), v.outputs[0].shape, trans_a=bool(v.attrs.get("transA", 0)))
        return {precision or v.float_precision(): 2 * macs}, macs

    return cost


def _gemm(v: NodeView) -> Cost:
    a, out = _shape(v.inp(0)), v.outputs[0].shape
    macs = _matmul_macs(a, out, trans_a=bool(v.attrs.get("transA", 0)))
    extra = v.out_numel() if v.inp(2) is not None else 0  # bias add
    return {v.float_precision(): 2 * macs + extra}, macs


def _matmul_nbits(v: NodeView) -> Cost:
    a = _shape(v.inp(0))
    k, n = int(v.attrs.get("K", 0)), int(v.attrs.get("N", 0))
    macs = (math.prod(a[:-1]) if a else 0) * k * n
    # accuracy_level 4 runs the product in int8 after quantizing the activations; below it, in float.
    precision = "int8" if int(v.attrs.get("accuracy_level", 0)) >= 4 else v.float_precision()
    return {precision: 2 * macs}, macs


def _conv(weight_index: int, precision: str | None = None) -> Callable[[NodeView], Cost]:
    def cost(v: NodeView) -> Cost:
        w, out = _shape(v.inp(weight_index)), v.outputs[0].shape
        if w is None or out is None or len(w) < 2:
            return {}, 0
        # out = [N, M, *spatial], w = [M, C/group, *kernel]: each output element is C/group x kernel MACs.
        macs = math.prod(out) * math.prod(w[1:])
        return {precision or v.float_precision(): 2 * macs}, macs

    return cost


def _conv_transpose(v: NodeView) -> Cost:
    x, w = _shape(v.inp(0)), _shape(v.inp(1))
    if x is None or w is None or len(w) < 2:
        return {}, 0
    # each input element scatters into M/group x kernel outputs
    macs = math.prod(x) * math.prod(w[1:])
    return {v.float_precision(): 2 * macs}, macs


def _attention_core(batch: int, heads: int, q_len: int, kv_len: int, head_size: int) -> int:
    # QK^T and softmax(QK^T)V: two products of q_len x kv_len x head_size per head.
    return 2 * batch * heads * q_len * kv_len * head_size


def _fused_attention_parts(v: NodeView) -> tuple[int, int, int] | None:
    """(projection MACs, attention-core MACs, softmax FLOPs) of a com.microsoft Attention / QAttention."""
    x, w = _shape(v.inp(0)), _shape(v.inp(1))
    out = v.outputs[0].shape if v.outputs else None
    if x is None or w is None or out is None or len(x) != 3:
        return None
    b, s, hidden_in = x
    heads = max(1, int(v.attrs.get("num_heads", 1)))
    past = v.inp(8 if v.op_type == "QAttention" else 4)
    past_len = past.shape[3] if past is not None and past.shape is not None and len(past.shape) == 5 else 0
    core = _attention_core(b, heads, s, s + past_len, out[-1] // heads)
    return b * s * hidden_in * w[-1], core, 5 * b * heads * s * (s + past_len)


def fused_attention_flops(v: NodeView) -> int:
    """The FLOPs a fused Attention / QAttention spends after its QKV projection (0 when shapes are unknown)."""
    parts = _fused_attention_parts(v)
    return 0 if parts is None else 2 * parts[1] + parts[2]


def _attention(projection_precision: str | None) -> Callable[[NodeView], Cost]:
    """com.microsoft Attention / QAttention: the fused QKV projection, then attention per head."""

    def cost(v: NodeView) -> Cost:
        parts = _fused_attention_parts(v)
        if parts is None:
            return {}, 0
        proj, core, softmax = parts
        fp = v.float_precision()
        flops: Counter[str] = Counter({projection_precision or fp: 2 * proj})
        flops[fp] += 2 * core + softmax
        return dict(flops), proj + core

    return cost


def _mha(v: NodeView) -> Cost:
    """MultiHeadAttention / GroupQueryAttention: the inputs are already projected."""
    q, out = _shape(v.inp(0)), v.outputs[0].shape
    if q is None or out is None or len(q) != 3:
        return {}, 0
    b, s, d = q
    heads = max(1, int(v.attrs.get("num_heads", 1)))
    kv_len = s
    present = v.outputs[1].shape if len(v.outputs) > 1 else None
    if present is not None and len(present) == 4:
        kv_len = present[2]
    else:
        k = _shape(v.inp(1))
        if k is not None and len(k) >= 3:
            kv_len = k[1] if len(k) == 3 else k[2]
    # the output is heads x head_size wide; the query may be packed QKV (GroupQueryAttention without key/value)
    head_size = (out[-1] if len(out) == 3 and isinstance(out[-1], int) else d) // heads
    core = _attention_core(b, heads, s, kv_len, head_size)
    return {v.float_precision(): 2 * core + 5 * b * heads * s * kv_len}, core


def _pool(v: NodeView) -> Cost:
    kernel = list(v.attrs.get("kernel_shape") or ())
    x = _shape(v.inp(0))
    if x is not None and len(x) >= 2 + len(kernel):
        # a window larger than the (padded) input reads only the input: transformers' EfficientNet pools 7x7 with
        # a 1280-wide kernel (ceil_mode), which would otherwise count 1280^2 reads per output
        pads = list(v.attrs.get("pads") or [0] * 2 * len(kernel))
        kernel = [min(k, x[2 + i] + pads[i] + pads[i + len(kernel)]) for i, k in enumerate(kernel)]
    return {v.float_precision(): v.out_numel() * max(1, math.prod(kernel))}, 0


def _global_pool(v: NodeView) -> Cost:
    x = v.inp(0)
    return {v.float_precision(): x.numel if x is not None else 0}, 0


def _reduce(v: NodeView) -> Cost:
    x = v.inp(0)
    return {v.float_precision(): x.numel if x is not None else 0}, 0


def _lrn(v: NodeView) -> Cost:
    return {v.float_precision(): v.out_numel() * (2 * int(v.attrs.get("size", 1)) + 4)}, 0


def _register(names: Sequence[str], entry: OpCost) -> None:
    for name in names:
        OP_COSTS.add(name if ":" in name else f"ai.onnx:{name}", entry)


_MS = "com.microsoft"
_register(["MatMul"], OpCost(kind=NodeKind.GEMM, cost=_matmul()))
_register(["Gemm", f"{_MS}:FusedGemm"], OpCost(kind=NodeKind.GEMM, cost=_gemm))
_register([f"{_MS}:FusedMatMul"], OpCost(kind=NodeKind.GEMM, cost=_matmul()))
_register(
    ["MatMulInteger", "QLinearMatMul", f"{_MS}:MatMulIntegerToFloat", f"{_MS}:DynamicQuantizeMatMul"],
    OpCost(kind=NodeKind.GEMM, cost=_matmul("int8")),
)
_register([f"{_MS}:MatMulNBits"], OpCost(kind=NodeKind.GEMM, cost=_matmul_nbits))
_register(
    ["Conv", f"{_MS}:FusedConv", f"{_MS}:NhwcConv", f"{_MS}:NhwcFusedConv"], OpCost(kind=NodeKind.CONV, cost=_conv(1))
)
_register(["ConvInteger"], OpCost(kind=NodeKind.CONV, cost=_conv(1, "int8")))
_register(["QLinearConv", f"{_MS}:QLinearConv"], OpCost(kind=NodeKind.CONV, cost=_conv(3, "int8")))
_register(["ConvTranspose"], OpCost(kind=NodeKind.CONV, cost=_conv_transpose))
_register([f"{_MS}:Attention"], OpCost(kind=NodeKind.ATTENTION, cost=_attention(None)))
_register([f"{_MS}:QAttention"], OpCost(kind=NodeKind.ATTENTION, cost=_attention("int8")))
_register(
    [f"{_MS}:MultiHeadAttention", f"{_MS}:GroupQueryAttention", "Attention"],
    OpCost(kind=NodeKind.ATTENTION_CORE, cost=_mha),
)
_register(["MaxPool", "AveragePool", "LpPool"], OpCost(kind=NodeKind.ELEMENTWISE, cost=_pool))
_register(["GlobalAveragePool", "GlobalMaxPool"], OpCost(kind=NodeKind.ELEMENTWISE, cost=_global_pool))
_register(
    ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare", "ArgMax"],
    OpCost(kind=NodeKind.ELEMENTWISE, cost=_reduce),
)
_register(["LRN"], OpCost(kind=NodeKind.LRN, cost=_lrn))
# Normalizations: mean, variance, scale and shift per element, about 8 FLOPs.
_register(
    [
        "LayerNormalization",
        "RMSNormalization",
        "GroupNormalization",
        "InstanceNormalization",
        f"{_MS}:SkipLayerNormalization",
        f"{_MS}:SimplifiedLayerNormalization",
        f"{_MS}:SkipSimplifiedLayerNormalization",
        f"{_MS}:LayerNormalization",
    ],
    OpCost(kind=NodeKind.NORMALIZATION, cost=_elementwise(8)),
)
# input ids, segment ids, then the word, position and segment embedding tables
_register(
    [f"{_MS}:EmbedLayerNormalization", f"{_MS}:QEmbedLayerNormalization"],
    OpCost(kind=NodeKind.NORMALIZATION, cost=_elementwise(8), tables=(2, 3, 4)),
)
_register(["BatchNormalization"], OpCost(kind=NodeKind.ELEMENTWISE, cost=_elementwise(2)))
_register(["Softmax", "LogSoftmax"], OpCost(kind=NodeKind.ELEMENTWISE, cost=_elementwise(5)))
# Transcendental activations: a polynomial of roughly this many FLOPs per element in MLAS.
_register(
    ["Gelu", f"{_MS}:Gelu", f"{_MS}:BiasGelu", f"{_MS}:FastGelu", f"{_MS}:QuickGelu", "Erf", "Tanh", "Mish"],
    OpCost(kind=NodeKind.ELEMENTWISE, cost=_elementwise(10)),
)
_register(
    [
        "Sigmoid",
        "Exp",
        "Log",
        "Softplus",
        "HardSigmoid",
        "HardSwish",
        "Swish",
        "Sin",
        "Cos",
        "Sqrt",
        f"{_MS}:RotaryEmbedding",
        "RotaryEmbedding",
    ],
    OpCost(kind=NodeKind.ELEMENTWISE, cost=_elementwise(4)),
)
_register(
    [
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Clip",
        "Max",
        "Min",
        "Sum",
        "Mean",
        "Neg",
        "Abs",
        "Where",
        "Equal",
        "Less",
        "Greater",
        "LessOrEqual",
        "GreaterOrEqual",
        "And",
        "Or",
        "Not",
        "IsNaN",
        "IsInf",
        "Reciprocal",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "Elu",
        "Selu",
        "Mod",
        "BitShift",
        "Dropout",
        f"{_MS}:BiasAdd",
        f"{_MS}:BiasSplitGelu",
    ],
    OpCost(kind=NodeKind.ELEMENTWISE, cost=_elementwise(1)),
)
_register(
    [
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        f"{_MS}:QuantizeLinear",
        f"{_MS}:DequantizeLinear",
        f"{_MS}:DynamicQuantizeLSTM",
    ],
    OpCost(kind=NodeKind.ELEMENTWISE, cost=_elementwise(3)),
)
# Data movement: no arithmetic, but every byte is read and written.
_register(
    [
        "Transpose",
        "Concat",
        "Split",
        "Slice",
        "Pad",
        "Expand",
        "Tile",
        "Cast",
        "CastLike",
        "Resize",
        "Upsample",
        "DepthToSpace",
        "SpaceToDepth",
        "ScatterND",
        "ScatterElements",
        "Trilu",
        "OneHot",
        "TopK",
        "CumSum",
        "NonZero",
        "Range",
        "ConstantOfShape",
        f"{_MS}:ReorderInput",
        f"{_MS}:ReorderOutput",
        f"{_MS}:Trilu",
    ],
    OpCost(kind=NodeKind.DATA, cost=_no_flops),
)
_register(
    ["Gather", "GatherElements", "GatherND", f"{_MS}:GatherBlockQuantized"],
    OpCost(kind=NodeKind.DATA, cost=_no_flops, tables=(0,)),
)
# Views: ONNX Runtime hands the input buffer on; only the dispatch costs time.
_register(
    ["Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Shape", "Size", "Constant"],
    OpCost(kind=NodeKind.VIEW, cost=_no_flops, view=True),
)

_UNKNOWN_OP = OpCost(kind=NodeKind.OTHER, cost=_elementwise(1))
_GEMM_KINDS = (NodeKind.GEMM, NodeKind.ATTENTION, NodeKind.ATTENTION_CORE)
# A dense convolution with fewer multiply-adds per output than this (a stem's 3x3x3 = 27) cannot fill MLAS's
# GEMM tiles: it runs well below the dense rate.
SMALL_REDUCTION = 64


def _kernel_elems(op_type: str, ins: Sequence[Tensor | None]) -> int:
    index = 3 if op_type == "QLinearConv" else 1
    w = ins[index] if len(ins) > index else None
    return math.prod(w.shape[2:]) if w is not None and w.shape is not None and len(w.shape) > 2 else 0


def _channels_per_group(op_type: str, ins: Sequence[Tensor | None]) -> int:
    """C/group of a convolution, read from its weight ([M, C/group, *kernel]); 0 when unknown."""
    index = 3 if op_type == "QLinearConv" else 1
    w = ins[index] if len(ins) > index else None
    return int(w.shape[1]) if w is not None and w.shape is not None and len(w.shape) >= 2 else 0


def op_cost(domain: str, op_type: str) -> OpCost:
    key = f"{domain or 'ai.onnx'}:{op_type}"
    return OP_COSTS.get(key) if key in OP_COSTS else _UNKNOWN_OP


# ------------------------------------------------------------------------------------------ loading


_ITEMSIZE = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float64": 8,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "uint16": 2,
    "uint32": 4,
    "uint64": 8,
    "bool": 1,
    "int4": 1,
    "uint4": 1,
}


def _dtype_name(elem_type: int) -> str:
    onnx = _onnx()
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def load_onnx(path: str | Path, *, load_weights: bool = True) -> Any:
    """Read an ONNX file, turning onnx's decode errors into :class:`CorruptModelError` naming the file."""
    onnx = _onnx()
    p = Path(path)
    if not p.is_file():
        from edgekit.errors import SourceNotFoundError

        raise SourceNotFoundError(f"ONNX file not found: {p}", hint="check the path")
    try:
        model = onnx.load(str(p), load_external_data=load_weights)
    except Exception as exc:  # protobuf raises DecodeError, onnx OSError/ValueError: all mean "unreadable"
        raise CorruptModelError(
            f"{p} is not a readable ONNX model ({type(exc).__name__}: {str(exc).strip()[:200]})",
            hint="the file is corrupt or truncated: export it again",
        ) from None
    if not model.graph.node:
        raise CorruptModelError(f"{p} has an empty graph or is not an ONNX model", hint="export the model again")
    return model


def graph_input_specs(model: Any) -> dict[str, tuple[str, list[int | str | None]]]:
    """Graph inputs that are not initializers: name -> (dtype, dims with symbolic names or None)."""
    inits = {i.name for i in model.graph.initializer}
    used = _consumed(model.graph)
    out: dict[str, tuple[str, list[int | str | None]]] = {}
    for vi in model.graph.input:
        # Inputs no node reads are left over from older exporters (IR < 4 listed every weight as an input).
        if vi.name in inits or vi.name not in used:
            continue
        out[vi.name] = (_dtype_name(vi.type.tensor_type.elem_type), value_info_dims(vi))
    return out


def _consumed(graph: Any) -> set[str]:
    names = {i for n in graph.node for i in n.input}
    names.update(o.name for o in graph.output)
    for n in graph.node:  # names read inside If / Loop bodies count too
        for a in n.attribute:
            if a.HasField("g"):
                names |= _consumed(a.g)
    return names


def unbound_dims(
    specs: Mapping[str, tuple[str, Sequence[int | str | None]]], input_shapes: Mapping[str, Sequence[int]]
) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """Bind every graph input to a concrete shape, or raise naming what is still symbolic.

    A dim name bound through one input (``input_ids=1x128`` binds ``batch_size`` and ``sequence_length``)
    binds the same name in the other inputs, as it means the same length there.
    """
    unknown = sorted(set(input_shapes) - set(specs))
    if unknown:
        raise UsageError(
            f"--input-shape names {', '.join(repr(u) for u in unknown)}, which the model does not take;"
            f" its inputs are {', '.join(repr(s) for s in specs)}",
            param="input_shapes",
        )
    names: dict[str, int] = {}
    for name, shape in input_shapes.items():
        dims = specs[name][1]
        if len(dims) != len(shape):
            raise UsageError(
                f"--input-shape {name}={'x'.join(map(str, shape))} has {len(shape)} dims; the model's input "
                f"{name!r} has {len(dims)} ({_fmt_dims(dims)})",
                param="input_shapes",
            )
        for d, v in zip(dims, shape, strict=True):
            if isinstance(d, int) and d != v:
                raise UsageError(
                    f"--input-shape {name}={'x'.join(map(str, shape))} conflicts with the fixed dims of {name!r}"
                    f" ({_fmt_dims(dims)})",
                    param="input_shapes",
                )
            if isinstance(d, str):
                names.setdefault(d, int(v))
    bound: dict[str, tuple[int, ...]] = {}
    missing: dict[str, list[str]] = {}
    for name, (_, dims) in specs.items():
        if name in input_shapes:
            bound[name] = tuple(int(v) for v in input_shapes[name])
            continue
        shape: list[int] = []
        for i, d in enumerate(dims):
            if isinstance(d, int):
                shape.append(d)
            elif isinstance(d, str) and d in names:
                shape.append(names[d])
            else:
                missing.setdefault(name, []).append(d if isinstance(d, str) else f"dim {i}")
        if name not in missing:
            bound[name] = tuple(shape)
    if missing:
        parts = [f"{name} ({', '.join(dims)})" for name, dims in missing.items()]
        example = next(iter(missing))
        ex_shape = "x".join(str(d) if isinstance(d, int) else "1" for d in specs[example][1])
        raise UsageError(
            f"the model has dynamic dims that are not bound: {'; '.join(parts)}",
            hint=f"give the shape to profile at, e.g. --input-shape {example}={ex_shape} "
            f"(Python: input_shapes={{{example!r}: ({ex_shape.replace('x', ', ')})}})",
            param="input_shapes",
        )
    return bound, names


def _fmt_dims(dims: Sequence[int | str | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


# ---------------------------------------------------------------------------------------- shape inference


def _light_copy(model: Any, shapes: Mapping[str, tuple[int, ...]]) -> Any:
    """The graph without its large weights (they become typed inputs), inputs fixed to ``shapes``."""
    onnx = _onnx()
    light = onnx.ModelProto()
    light.ir_version = max(model.ir_version, 4)  # initializers need not be graph inputs
    light.opset_import.extend(model.opset_import)
    g = light.graph
    g.name = model.graph.name
    g.node.extend(model.graph.node)
    g.output.extend(model.graph.output)
    inits = {i.name for i in model.graph.initializer}
    used = _consumed(model.graph)
    for vi in model.graph.input:
        if vi.name in inits or vi.name not in used:
            continue
        new = g.input.add()
        new.CopyFrom(vi)
        if vi.name in shapes:
            tt = new.type.tensor_type
            del tt.shape.dim[:]
            for v in shapes[vi.name]:
                tt.shape.dim.add().dim_value = int(v)
    for init in model.graph.initializer:
        if math.prod(init.dims) <= _SMALL_INITIALIZER and init.data_location != onnx.TensorProto.EXTERNAL:
            g.initializer.append(init)
        else:
            g.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    for f in model.functions:
        light.functions.append(f)
    return light


def _collect(model: Any) -> dict[str, tuple[str, tuple[int, ...] | None]]:
    out: dict[str, tuple[str, tuple[int, ...] | None]] = {}
    for vi in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            continue
        dims = value_info_dims(vi)
        known = tt.HasField("shape") and all(isinstance(d, int) for d in dims)
        dtype = _dtype_name(tt.elem_type) if tt.elem_type else "float32"
        prev = out.get(vi.name)
        if known or prev is None or prev[1] is None:
            out[vi.name] = (dtype, tuple(dims) if known else None)
    for init in model.graph.initializer:
        out[init.name] = (_dtype_name(init.data_type), tuple(int(d) for d in init.dims))
    return out


def _infer(light: Any) -> dict[str, tuple[str, tuple[int, ...] | None]]:
    onnx = _onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # shape inference gives up on some exotic graphs: the probe below covers them
        inferred = light
    return _collect(inferred)


def _probe(model: Any, names: Sequence[str], feeds: Mapping[str, Any]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Run the graph once in ONNX Runtime (no optimizations) with ``names`` as extra outputs; read their shapes."""
    import onnxruntime as ort

    onnx = _onnx()
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    used = _consumed(probe.graph)
    kept = [vi for vi in probe.graph.input if vi.name in used]
    del probe.graph.input[:]
    probe.graph.input.extend(kept)
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4  # a failed probe run is handled here (its fallback), not printed by ORT
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = [o.name for o in session.get_outputs() if o.name in set(names)]
    values = session.run(wanted, dict(feeds))
    return {name: (str(v.dtype), tuple(int(d) for d in v.shape)) for name, v in zip(wanted, values, strict=True)}


def _zero_feeds(specs: Mapping[str, tuple[str, Sequence[Any]]], shapes: Mapping[str, tuple[int, ...]]) -> dict:
    import numpy as np

    return {name: np.zeros(shapes[name], dtype=np.dtype(dtype)) for name, (dtype, _) in specs.items()}


# -------------------------------------------------------------------------------------------- analysis


def _attrs(node: Any) -> dict[str, Any]:
    onnx = _onnx()
    out: dict[str, Any] = {}
    for a in node.attribute:
        if a.type in (
            onnx.AttributeProto.INT,
            onnx.AttributeProto.FLOAT,
            onnx.AttributeProto.STRING,
            onnx.AttributeProto.INTS,
            onnx.AttributeProto.FLOATS,
        ):
            v = onnx.helper.get_attribute_value(a)
            out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _fold_constants(ordered: Sequence[Any], const: set[str]) -> list[Any]:
    """The nodes with only constant inputs, which ONNX Runtime folds at session creation; their outputs join
    ``const``."""
    folded: list[Any] = []
    for node in ordered:
        ins = [i for i in node.input if i]
        if (
            node.op_type not in ("RandomNormal", "RandomUniform")
            and all(i in const for i in ins)
            and not any(a.HasField("g") for a in node.attribute)
        ):
            folded.append(node)
            const.update(node.output)
    return folded


def _probe_missing_shapes(
    model: Any,
    ordered: Sequence[Any],
    values: dict[str, Any],
    *,
    probe: bool,
    feeds: Mapping[str, Any] | None,
    specs: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
) -> str:
    """Fill the shapes ONNX's inference left unknown by running the model once; returns the shape source."""
    missing = [o for n in ordered for o in n.output if o and (o not in values or values[o][1] is None)]
    if not (missing and probe):
        return "onnx"
    try:
        values.update(_probe(model, missing, feeds or _zero_feeds(specs, shapes)))
    except Exception:  # the probe is best effort (models over 2 GB, ops ORT lacks): costs stay unknown
        return "onnx (probe failed)"
    return "onnx+onnxruntime-probe"


def _tensor_lookup(values: Mapping[str, Any], const: set[str]) -> Callable[[str], Tensor | None]:
    def tensor(name: str) -> Tensor | None:
        if not name:
            return None
        dtype, shape = values.get(name, ("float32", None))
        return Tensor(name, dtype, shape, constant=name in const)

    return tensor


@dataclass(frozen=True, kw_only=True)
class _Weights:
    by_dtype: dict[str, int]
    by_use: dict[str, int]
    params: int


def _weights(
    live_nodes: Sequence[Any],
    folded_outputs: set[str],
    const: set[str],
    init_by_name: Mapping[str, Any],
    tensor: Callable[[str], Tensor | None],
) -> _Weights:
    """Weights: initializers plus the outputs of folded nodes that live nodes read, by dtype and by use."""
    used_consts = {i for n in live_nodes for i in n.input if i in const}
    conv_inputs = {i for n in live_nodes if op_cost(n.domain, n.op_type).kind == NodeKind.CONV for i in n.input}
    gemm_inputs = {i for n in live_nodes if op_cost(n.domain, n.op_type).kind in _GEMM_KINDS for i in n.input}
    by_dtype: Counter[str] = Counter()
    by_use: Counter[str] = Counter()
    params = 0
    roles = onnx_graph.weight_roles(live_nodes, init_by_name)  # counted as the manifest counts them
    for name in sorted(used_consts):
        if name in init_by_name:
            init = init_by_name[name]
            dtype, numel = _dtype_name(init.data_type), math.prod(init.dims)
        else:
            t = tensor(name)
            if t is None or t.shape is None:
                continue
            dtype, numel = t.dtype, t.numel
        nbytes = numel * _ITEMSIZE.get(dtype, 4)
        by_dtype[onnx_graph.weight_dtype(dtype, roles.get(name))] += nbytes
        use = "other"
        if name in conv_inputs:
            use = "folded_conv" if name in folded_outputs else "conv"
        elif name in gemm_inputs and dtype in ("int8", "uint8"):
            use = "quantized_gemm"
        by_use[use] += nbytes
        params += onnx_graph.parameter_count(dtype, numel, roles.get(name))
    return _Weights(by_dtype=dict(by_dtype), by_use=dict(by_use), params=int(params))


def _node_cost(node: Any, index: int, tensor: Callable[[str], Tensor | None]) -> NodeCost:
    """One live node's work and traffic (``index`` names an unnamed node)."""
    entry = op_cost(node.domain, node.op_type)
    ins = tuple(tensor(i) for i in node.input)
    outs = tuple(tensor(o) or Tensor(o, "float32", None) for o in node.output if o)
    known = all(t.shape is not None for t in outs) and all(t is None or t.shape is not None for t in ins)
    view = NodeView(node.op_type, node.domain, ins, outs, _attrs(node))
    flops, macs = entry.cost(view) if known else ({}, 0)
    if entry.view:
        read = written = weight = 0
    else:
        out_bytes = outs[0].nbytes if outs and outs[0].shape is not None else 0

        def read_bytes(i: int, t: Tensor, out_bytes: int = out_bytes, tables: tuple = entry.tables) -> int:
            return min(t.nbytes, out_bytes) if i in tables else t.nbytes

        read = sum(read_bytes(i, t) for i, t in enumerate(ins) if t is not None and t.shape is not None)
        weight = sum(
            read_bytes(i, t) for i, t in enumerate(ins) if t is not None and t.constant and t.shape is not None
        )
        written = sum(t.nbytes for t in outs if t.shape is not None)
    return NodeCost(
        name=node.name or f"{node.op_type}_{index}",
        op_type=node.op_type,
        domain=node.domain,
        kind=entry.kind,
        flops={k: int(v) for k, v in flops.items() if v},
        macs=int(macs),
        bytes_read=int(read),
        bytes_written=int(written),
        weight_bytes=int(weight),
        shape_known=known,
        output_elements=outs[0].numel if outs and outs[0].shape is not None else 0,
        groups=int(view.attrs.get("group", 1) or 1) if entry.kind == NodeKind.CONV else 1,
        channels_per_group=_channels_per_group(node.op_type, ins) if entry.kind == NodeKind.CONV else 0,
        kernel_elems=_kernel_elems(node.op_type, ins) if entry.kind == NodeKind.CONV else 0,
        unit_stride=all(int(x) == 1 for x in view.attrs.get("strides", []) or []),
        attention_flops=fused_attention_flops(view) if known and entry.kind == NodeKind.ATTENTION else 0,
        bidirectional=node.op_type == "GroupQueryAttention" and int(view.attrs.get("causal", 1)) == 0,
        activation=_activation(view.attrs) if entry.kind == NodeKind.CONV else "",
        output_rows=_rows(outs[0]) if entry.kind == NodeKind.CONV and outs else 0,
    )


def _rows(t: Tensor | None) -> int:
    if t is None or t.shape is None or len(t.shape) < 3 or not t.shape[-1]:
        return 0
    return t.numel // int(t.shape[-1])


def _activation(attrs: Mapping[str, Any]) -> str:
    value = attrs.get("activation") or ""
    return value.decode() if isinstance(value, bytes) else str(value)


def analyze_model(
    model: Any,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    feeds: Mapping[str, Any] | None = None,
    probe: bool = True,
) -> StaticAnalysis:
    """Analyse a loaded ``ModelProto`` at ``input_shapes`` (every dynamic dim must end up bound)."""
    from edgekit.profiler.branches import taken_branch

    model = onnx_graph.inline_ifs(model, taken_branch(model, feeds))  # the If branch the feeds take, inlined
    specs = graph_input_specs(model)
    if feeds is not None and not input_shapes:
        input_shapes = {k: tuple(v.shape) for k, v in feeds.items() if k in specs}
    shapes, names = unbound_dims(specs, dict(input_shapes or {}))
    light = _light_copy(model, shapes)
    values = _infer(light)
    for name, shape in shapes.items():
        values[name] = (specs[name][0], shape)

    graph = model.graph
    const: set[str] = {i.name for i in graph.initializer}
    init_by_name = {i.name: i for i in graph.initializer}
    ordered = onnx_graph.topological(list(graph.node), set(specs) | const)
    folded = _fold_constants(ordered, const)
    folded_ids = {id(n) for n in folded}
    live_nodes = [n for n in ordered if id(n) not in folded_ids]
    shape_source = _probe_missing_shapes(model, ordered, values, probe=probe, feeds=feeds, specs=specs, shapes=shapes)
    tensor = _tensor_lookup(values, const)
    folded_outputs = {o for n in folded for o in n.output}
    weights = _weights(live_nodes, folded_outputs, const, init_by_name, tensor)
    costs = tuple(_node_cost(node, index, tensor) for index, node in enumerate(live_nodes))

    peak, peak_node = _peak_activations(live_nodes, specs, graph, const, tensor)
    return StaticAnalysis(
        input_shapes=shapes,
        bound_dims=names,
        parameter_count=weights.params,
        weight_bytes_by_dtype=weights.by_dtype,
        folded_nodes=len(folded),
        op_histogram=dict(Counter(n.op_type for n in graph.node).most_common()),
        nodes=costs,
        peak_activation_bytes=peak,
        peak_at_node=peak_node,
        shape_source=shape_source,
        unknown_shape_nodes=sum(not c.shape_known for c in costs),
        node_count=len(graph.node),
        output_count=len(graph.output),
        weight_bytes_by_use=weights.by_use,
        value_shapes={k: v[1] for k, v in values.items()},
        folded_outputs=frozenset(folded_outputs),
        dynamic_inputs=frozenset(k for k, (_, dims) in specs.items() if any(not isinstance(d, int) for d in dims)),
    )


def _peak_activations(
    nodes: Sequence[Any],
    specs: Mapping[str, Any],
    graph: Any,
    const: set[str],
    tensor: Callable[[str], Tensor | None],
) -> tuple[int, str | None]:
    """Peak bytes of live non-constant tensors, walking the nodes in order.

    Graph inputs are live from the start, graph outputs to the end. A node's inputs and outputs are live
    together while it runs; a tensor is freed after its last reader. View outputs (Reshape, ...) share their
    input's buffer, which then lives until the view's last reader.
    """
    root: dict[str, str] = {}

    def base(name: str) -> str:
        while name in root:
            name = root[name]
        return name

    for node in nodes:
        if op_cost(node.domain, node.op_type).view and node.input and node.input[0] and node.input[0] not in const:
            for o in node.output:
                if o:
                    root[o] = node.input[0]
    last_use: dict[str, int] = {}
    end = len(nodes)
    for i, node in enumerate(nodes):
        for name in node.input:
            if name and name not in const:
                last_use[base(name)] = i
    for o in graph.output:
        last_use[base(o.name)] = end

    def size(name: str) -> int:
        t = tensor(name)
        return t.nbytes if t is not None and t.shape is not None else 0

    live: dict[str, int] = {name: size(name) for name in specs}
    current = sum(live.values())
    peak, peak_at = current, None
    for i, node in enumerate(nodes):
        for o in node.output:
            if o and base(o) == o and o not in live:
                live[o] = size(o)
                current += live[o]
        if current > peak:
            peak, peak_at = current, node.name or node.op_type
        for name in list(live):
            if last_use.get(name, -1) <= i:
                current -= live.pop(name)
    return int(peak), peak_at


def runtime_graph(src: str | Path, dst: str | Path, *, host_layout: bool = False) -> Path:
    """The graph ONNX Runtime's CPU provider will run: its portable optimizations applied and saved.

    Level "extended" (constant folding, Conv+BatchNorm+activation, GEMM, attention and layer-norm fusions,
    less the ones edgekit's sessions turn off: :mod:`edgekit.ort_policy`) and not "all": the NCHWc layout pass of "all" is specific to the host's vector width, while the estimate
    is for other CPUs too. ``host_layout`` saves level "all" instead, this host's own graph (only its layout
    conversions are read from it: :mod:`edgekit.profiler.layout`). Large weights go to an external file
    beside ``dst``.
    """
    import onnxruntime as ort

    dst = Path(dst)
    options = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_ALL if host_layout else level.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    options.log_severity_level = 4  # a failed probe run is handled here (its fallback), not printed by ORT
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", dst.name + ".data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1048576")
    try:
        ort.InferenceSession(
            str(src), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled_optimizers()
        )
    except Exception as exc:  # ORT's errors are pybind classes without a common public base
        raise CorruptModelError(
            f"ONNX Runtime cannot load {src}: {str(exc).strip().splitlines()[0][:300]}",
            hint="check the model with `edgekit inspect`; export it again if it is damaged",
        ) from None
    return dst


def analyze(
    path: str | Path,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    feeds: Mapping[str, Any] | None = None,
    probe: bool = True,
) -> StaticAnalysis:
    """Load ``path`` and analyse it; see :func:`analyze_model`."""
    return analyze_model(load_onnx(path), input_shapes, feeds=feeds, probe=probe)
