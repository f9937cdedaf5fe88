"""Which nodes each execution provider of a device profile can take, and how many partitions that makes.

A provider that takes only part of a graph splits it into partitions with copies between them; more than
two partitions usually cost more than the accelerator saves. The count comes from ONNX Runtime's own mobile
usability checker (``onnxruntime.tools.mobile_helpers.usability_checker.check_partitioning``, the Python
replica of ORT's partitioner), fed with a per-provider rule:

- NNAPI and CoreML: the supported-op lists ONNX Runtime ships beside that checker
  (``nnapi_supported_ops.md``, ``coreml_supported_mlprogram_ops.md``; CoreML limited to rank 5);
- XNNPACK: its documented op list (ONNX Runtime docs, Xnnpack-ExecutionProvider.md: 2D conv / pool /
  GEMM, Softmax on the last axis, bilinear Resize) plus the elementwise and activation ops its node support
  checker accepts in recent releases;
- QNN: the documented op list of the QNN EP (onnxruntime-qnn, QNN-ExecutionProvider.md);
- the CPU provider takes every node.

A profile entry's constraints then narrow the rule: ``static_shapes`` (every input of a node must have a
fixed shape: counted both at the profiled shapes and with the model's own dynamic dims), ``qdq_only`` (only
nodes in QDQ groups, i.e. reading a DequantizeLinear output or feeding a QuantizeLinear, and the Q/DQ nodes
themselves), ``float_only`` (no quantized ops). Nodes folded into constants at load are left out, as ONNX
Runtime does before partitioning. Providers without a known op list are reported as unknown, never guessed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit import onnx_graph
from edgekit.devices import DeviceProfile
from edgekit.registry import Registry

__all__ = [
    "COVERAGE_RULES",
    "DeviceCoverage",
    "ProviderCoverage",
    "ProviderRule",
    "device_coverage",
    "node_key",
]

_QUANT_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "QLinearConv",
    "QLinearMatMul",
    "QAttention",
    "QEmbedLayerNormalization",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QLinearAdd",
    "QLinearMul",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearConcat",
    "QLinearSoftmax",
    "MatMulNBits",
    "QGemm",
}
_VIEW_OPS = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Identity"}

# ONNX Runtime docs, Xnnpack-ExecutionProvider.md ("Supported ops"), with the notes that decide a node.
_XNNPACK_DOCUMENTED = {
    "ai.onnx:AveragePool": "Only 2D Pool is supported.",
    "ai.onnx:Conv": "Only 2D Conv is supported. Weights and bias should be constant.",
    "ai.onnx:ConvTranspose": "Only 2D ConvTranspose is supported. Weights and bias should be constant.",
    "ai.onnx:MaxPool": "Only 2D Pool is supported.",
    "ai.onnx:Softmax": "opset 13+ only when the axis is the last dimension",
    "ai.onnx:QLinearConv": "Only 2D Conv is supported. Scales and zero points should be constant.",
    "ai.onnx:Resize": "2D/4D Resize in Bilinear mode",
    "ai.onnx:Gemm": "Only 2D Op is supported",
    "ai.onnx:MatMul": "Only 2D Op is supported",
    "com.microsoft:QLinearAveragePool": "Only 2D Pool is supported.",
    "com.microsoft:QLinearSoftmax": "Scales and zero points should be constant.",
    "com.microsoft:QLinearConvTranspose": "Scales and zero points should be constant.",
}
# onnxruntime/core/providers/xnnpack/detail/node_support_checker.cc (recent releases): elementwise and
# activation ops, plus Relu/Clip fused into a preceding Conv or pool.
_XNNPACK_CHECKER = [
    "GlobalAveragePool",
    "Transpose",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Abs",
    "Round",
    "Ceil",
    "Floor",
    "Sqrt",
    "Neg",
    "Max",
    "Min",
    "Elu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "HardSwish",
    "Relu",
    "Clip",
]

# The QNN EP's documented operators (onnxruntime-qnn, docs/execution_providers/QNN-ExecutionProvider.md).
_QNN_OPS = [
    "Abs",
    "Add",
    "And",
    "ArgMax",
    "ArgMin",
    "Asin",
    "Atan",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "CastLike",
    "Ceil",
    "Clip",
    "Concat",
    "Conv",
    "ConvInteger",
    "ConvTranspose",
    "Cos",
    "CumSum",
    "DepthToSpace",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "Div",
    "Einsum",
    "Elu",
    "Equal",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "GatherElements",
    "GatherND",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Greater",
    "GreaterOrEqual",
    "GridSample",
    "GRU",
    "GroupNormalization",
    "HardSigmoid",
    "HardSwish",
    "If",
    "Identity",
    "InstanceNormalization",
    "Inverse",
    "IsInf",
    "IsNaN",
    "LRN",
    "LSTM",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "LpPool",
    "MatMul",
    "MatMulInteger",
    "Max",
    "MaxPool",
    "Mean",
    "Min",
    "Mod",
    "Mul",
    "Neg",
    "NonMaxSuppression",
    "NonZero",
    "Not",
    "Or",
    "OneHot",
    "PRelu",
    "Pad",
    "Pow",
    "QLinearMatMul",
    "QuantizeLinear",
    "RandomNormalLike",
    "RandomUniformLike",
    "Range",
    "Reciprocal",
    "ReduceL2",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "Relu",
    "RMSNormalization",
    "Reshape",
    "Resize",
    "RoiAlign",
    "Round",
    "RotaryEmbedding",
    "STFT",
    "ScatterElements",
    "ScatterND",
    "Selu",
    "Shape",
    "Sigmoid",
    "Sign",
    "Sin",
    "Slice",
    "Softmax",
    "Softplus",
    "SpaceToDepth",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Tile",
    "TopK",
    "Transpose",
    "Unsqueeze",
    "Upsample",
    "Where",
    "Xor",
]
_QNN_MS_OPS = [
    "DequantizeLinear",
    "FusedMatMul",
    "Gelu",
    "GatherBlockQuantized",
    "GroupQueryAttention",
    "MatMulNBits",
    "QuantizeLinear",
    "RMSNormalization",
    "QuickGelu",
    "RotaryEmbedding",
    "SimplifiedLayerNormalization",
]


# ------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class ProviderCoverage:
    provider: str
    known: bool  # False: edgekit has no op list for this provider; the counts are None
    nodes_total: int
    nodes_supported: int | None
    partitions: int | None
    partition_sizes: tuple[int, ...] = ()
    unsupported_ops: tuple[str, ...] = ()
    reasons: Mapping[str, int] = field(default_factory=dict)  # why nodes were refused, by reason
    nodes_supported_as_exported: int | None = None  # static_shapes: with the model's own dynamic dims
    suitability: str | None = None  # ORT's verdict: "yes" | "maybe" | "no"
    constraints: tuple[str, ...] = ()
    source: str = ""
    caveats: tuple[str, ...] = ()
    # Names of the nodes this provider would take (the report's per-node table); not in to_dict: it is
    # as long as the graph.
    taken_nodes: frozenset[str] = frozenset()

    @property
    def share(self) -> float | None:
        return None if self.nodes_supported is None else self.nodes_supported / max(1, self.nodes_total)

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "known": self.known,
            "nodes_total": self.nodes_total,
            "nodes_supported": self.nodes_supported,
            "nodes_supported_share": self.share,
            "partitions": self.partitions,
            "partition_sizes": list(self.partition_sizes),
            "unsupported_ops": list(self.unsupported_ops),
            "reasons": dict(self.reasons),
            "nodes_supported_as_exported": self.nodes_supported_as_exported,
            "suitability": self.suitability,
            "constraints": list(self.constraints),
            "source": self.source,
            "caveats": list(self.caveats),
        }


@dataclass(frozen=True, kw_only=True)
class DeviceCoverage:
    device: str
    providers: tuple[ProviderCoverage, ...]

    @property
    def accelerated(self) -> ProviderCoverage | None:
        """The first provider before the CPU that takes any node (what the summary shows)."""
        for p in self.providers:
            if p.provider != "CPUExecutionProvider" and p.nodes_supported:
                return p
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "providers": [p.to_dict() for p in self.providers]}

    def provider_for(self, node: str) -> str | None:
        """The provider ONNX Runtime would give ``node`` (the first in order that takes it); None: unknown.

        None when a provider before the taker has no known op list: it might claim the node first.
        """
        for p in self.providers:
            if not p.known:
                return None
            if p.provider == "CPUExecutionProvider" or node in p.taken_nodes:
                return p.provider
        return None


# ------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class _Ctx:
    """What a node rule may look at: shapes of the profiled run, producers and consumers of values."""

    shapes: Mapping[str, tuple[int, ...] | None]
    producer_op: Mapping[str, str]
    consumer_ops: Mapping[str, Sequence[str]]
    constants: set[str]

    def rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)


NodeRule = Callable[[Any, _Ctx], str | None]  # None: supported; else the reason it is not


@dataclass(frozen=True, kw_only=True)
class ProviderRule:
    ops: Callable[[], Mapping[str, str]]  # "domain:op" -> note
    source: str
    max_rank: int = 999
    node_rule: NodeRule | None = None


def _usability_checker() -> Any:
    """ONNX Runtime's ``usability_checker`` module, without importing torch.

    ``onnxruntime/tools/__init__.py`` imports torch whenever it is installed (for an export helper the
    checker does not use), which takes seconds. When nothing has imported ``onnxruntime.tools`` yet, the
    package is registered from its location without running that file; its submodules load as usual.
    """
    import importlib
    import importlib.util
    import sys
    import types

    if "onnxruntime.tools" not in sys.modules:
        spec = importlib.util.find_spec("onnxruntime.tools")
        if spec is not None and spec.submodule_search_locations:
            package = types.ModuleType("onnxruntime.tools")
            package.__path__ = list(spec.submodule_search_locations)
            package.__spec__ = spec
            package.__package__ = "onnxruntime.tools"
            sys.modules["onnxruntime.tools"] = package
    return importlib.import_module("onnxruntime.tools.mobile_helpers.usability_checker")


def _md_ops(filename: str) -> Callable[[], Mapping[str, str]]:
    """Read one of the op tables ONNX Runtime ships with its usability checker."""

    def load() -> Mapping[str, str]:
        ops: dict[str, str] = {}
        path = Path(_usability_checker().__file__).parent / filename
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.strip().split("|")
            if len(parts) == 4 and ":" in parts[1]:
                ops[parts[1].strip()] = parts[2].replace("<br/>", " ").strip()
        return ops

    return load


def _xnnpack_ops() -> Mapping[str, str]:
    ops = dict(_XNNPACK_DOCUMENTED)
    for op in _XNNPACK_CHECKER:
        ops.setdefault(f"ai.onnx:{op}", "")
    return ops


def _qnn_ops() -> Mapping[str, str]:
    ops = {f"ai.onnx:{op}": "" for op in _QNN_OPS}
    ops.update({f"com.microsoft:{op}": "" for op in _QNN_MS_OPS})
    return ops


def _xnnpack_rule(node: Any, ctx: _Ctx) -> str | None:
    op = node.op_type
    first = node.input[0] if node.input else ""
    if op in ("Conv", "QLinearConv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool"):
        return None if ctx.rank(first) in (4, None) else "only 2D (NCHW) conv and pooling"
    if op in ("MatMul", "Gemm"):
        return None if all(ctx.rank(i) in (2, None) for i in node.input[:2]) else "only 2D MatMul / Gemm"
    if op == "Resize":
        mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "nearest")
        return None if mode == "linear" else "only bilinear Resize"
    if op in ("Conv", "QLinearConv", "ConvTranspose") and len(node.input) > 1 and node.input[1] not in ctx.constants:
        return "weights must be constant"
    return None


# Each rule is named by its execution provider's record (``runtimes.providers.PROVIDERS``, ``coverage_rule``).
NNAPI_RULE = ProviderRule(
    ops=_md_ops("nnapi_supported_ops.md"),
    source="onnxruntime/tools/mobile_helpers/nnapi_supported_ops.md (shipped with onnxruntime)",
)
COREML_RULE = ProviderRule(
    ops=_md_ops("coreml_supported_mlprogram_ops.md"),
    source="onnxruntime/tools/mobile_helpers/coreml_supported_mlprogram_ops.md (shipped with onnxruntime)",
    max_rank=5,
)
XNNPACK_RULE = ProviderRule(
    ops=_xnnpack_ops,
    source="ONNX Runtime docs, Xnnpack-ExecutionProvider.md (supported ops) and the XNNPACK EP's node support "
    "checker (elementwise and activation ops)",
    node_rule=_xnnpack_rule,
)
QNN_RULE = ProviderRule(
    ops=_qnn_ops,
    source="onnxruntime-qnn docs, QNN-ExecutionProvider.md (supported ONNX operators)",
)


def _coverage_rules() -> Registry[ProviderRule]:
    """A view of the execution-provider records: the EPs whose record names a coverage rule in this module."""
    from runtimes.providers import PROVIDERS

    rules: Registry[ProviderRule] = Registry("coverage rule")
    module = globals()
    for spec in PROVIDERS:
        if spec.coverage_rule:
            ref_module, _, attr = spec.coverage_rule.partition(":")
            # Read from this module's namespace: resolving would re-enter the import still running.
            rules.add(spec.name, module[attr] if ref_module == __name__ else spec.coverage())
    return rules


COVERAGE_RULES: Registry[ProviderRule] = _coverage_rules()


# ---------------------------------------------------------------------------------------- the check


class _Checker:
    """The object ``check_partitioning`` asks ``is_op_supported(node)``: our rule for one provider."""

    def __init__(self, ops: Mapping[str, str], rules: Sequence[NodeRule], ctx: _Ctx) -> None:
        self.ops = ops
        self.rules = rules
        self.ctx = ctx
        self.reasons: Counter[str] = Counter()
        self.seen: set[str] = set()
        self._verdicts: dict[int, bool] = {}  # the partitioner asks again for nodes on a group's border

    def is_op_supported(self, node: Any) -> bool:
        if id(node) not in self._verdicts:
            reason = self._reason(node)
            if reason:
                self.reasons[reason] += 1
            self._verdicts[id(node)] = reason is None
        return self._verdicts[id(node)]

    def _reason(self, node: Any) -> str | None:
        key = f"{node.domain or 'ai.onnx'}:{node.op_type}"
        if key not in self.ops:
            return "op not supported"
        self.seen.add(key)
        for rule in self.rules:
            reason = rule(node, self.ctx)
            if reason:
                return reason
        return None

    def get_caveats(self) -> list[str]:
        return [f"{op}: {self.ops[op]}" for op in sorted(self.seen) if self.ops.get(op)]


def _qdq_rule(node: Any, ctx: _Ctx) -> str | None:
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        return None
    from_dq = any(ctx.producer_op.get(i) == "DequantizeLinear" for i in node.input if i)
    to_q = any("QuantizeLinear" in ctx.consumer_ops.get(o, ()) for o in node.output if o)
    return None if from_dq or to_q else "not in a QDQ group (the accelerator runs quantized QDQ graphs only)"


def _float_rule(node: Any, ctx: _Ctx) -> str | None:
    return "quantized op on a float-only provider" if node.op_type in _QUANT_OPS else None


_CONSTRAINT_RULES: Mapping[str, NodeRule] = {"qdq_only": _qdq_rule, "float_only": _float_rule}


def _graph_for_check(
    model: Any,
    live_nodes: Sequence[Any],
    constants: set[str],
    shapes: Mapping[str, tuple[int, ...] | None],
    dynamic: set[str],
) -> Any:
    """A GraphProto of the live nodes, with value infos fixed (or not) as ``check_partitioning`` reads them."""
    import onnx
    from onnx import helper

    g = onnx.GraphProto()
    g.node.extend(live_nodes)
    for name in sorted(constants):
        g.initializer.append(onnx.TensorProto(name=name))

    def info(name: str) -> Any:
        shape = shapes.get(name)
        if shape is None:
            return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        dims: list[Any] = [f"d{i}" if name in dynamic else int(d) for i, d in enumerate(shape)]
        return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims)

    inputs = [vi.name for vi in model.graph.input if vi.name not in constants]
    g.input.extend(info(name) for name in inputs)
    for name, shape in shapes.items():
        if name not in constants and name not in inputs and shape is not None:
            g.value_info.append(info(name))
    for vi in model.graph.output:
        g.output.append(vi)
    return g


def _dynamic_values(model: Any, live_nodes: Sequence[Any], dynamic_inputs: set[str]) -> set[str]:
    """Values computed (transitively) from an input with dynamic dims: their shapes are not fixed as exported."""
    dynamic = set(dynamic_inputs)
    for node in live_nodes:
        if any(i in dynamic for i in node.input if i):
            dynamic.update(o for o in node.output if o)
    return dynamic


def node_key(node: Any) -> str:
    """A node's name, or its first output's when the graph left it unnamed (names are optional in ONNX)."""
    return node.name or (node.output[0] if node.output else "")


def device_coverage(
    profile: DeviceProfile,
    model: Any,
    shapes: Mapping[str, tuple[int, ...] | None],
    folded_outputs: set[str],
    dynamic_inputs: set[str],
) -> DeviceCoverage:
    """Coverage of the stored graph ``model`` for each provider in ``profile``, in the profile's order."""
    constants = {i.name for i in model.graph.initializer} | set(folded_outputs)
    stored = [n for n in model.graph.node if not (n.output and all(o in folded_outputs for o in n.output if o))]
    # ORT's checker walks nodes in stored order and calls a value read before its producer a missing input
    live = onnx_graph.topological(stored, constants | {i.name for i in model.graph.input})
    producer = {o: n.op_type for n in live for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in live:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    ctx = _Ctx(shapes=shapes, producer_op=producer, consumer_ops=consumers, constants=constants)
    dynamic = _dynamic_values(model, live, dynamic_inputs)
    graphs = {
        "bound": _graph_for_check(model, live, constants, shapes, set()),
        "exported": _graph_for_check(model, live, constants, shapes, dynamic),
    }
    out = [_provider_coverage(entry, live, graphs, ctx) for entry in profile.execution_providers]
    return DeviceCoverage(device=profile.name, providers=tuple(out))


def _provider_coverage(entry: Any, live: Sequence[Any], graphs: Mapping[str, Any], ctx: _Ctx) -> ProviderCoverage:
    """One provider of a device profile: every node on the CPU EP, unknown without a rule, else the check."""
    total = len(live)
    if entry.name == "CPUExecutionProvider":
        return ProviderCoverage(
            provider=entry.name,
            known=True,
            nodes_total=total,
            nodes_supported=total,
            partitions=1 if total else 0,
            partition_sizes=(total,),
            suitability="yes",
            constraints=entry.constraints,
            source="the CPU provider has every kernel",
            taken_nodes=frozenset(node_key(n) for n in live),
        )
    if entry.name not in COVERAGE_RULES:
        return ProviderCoverage(
            provider=entry.name,
            known=False,
            nodes_total=total,
            nodes_supported=None,
            partitions=None,
            constraints=entry.constraints,
            source="edgekit has no op list for this provider",
        )
    return _checked_coverage(entry, COVERAGE_RULES.get(entry.name), total, graphs, ctx)


def _checked_coverage(
    entry: Any, rule: ProviderRule, total: int, graphs: Mapping[str, Any], ctx: _Ctx
) -> ProviderCoverage:
    """ONNX Runtime's own partitioning check run with ``rule`` (and on the graph as exported for static shapes)."""
    check_partitioning = _usability_checker().check_partitioning
    ops = rule.ops()
    rules = [r for r in (rule.node_rule,) if r] + [
        _CONSTRAINT_RULES[c] for c in entry.constraints if c in _CONSTRAINT_RULES
    ]
    fixed = "static_shapes" in entry.constraints
    checker = _Checker(ops, rules, ctx)
    info = check_partitioning(graphs["bound"], checker, fixed, rule.max_rank)
    exported = None
    if fixed:
        exported = check_partitioning(graphs["exported"], _Checker(ops, rules, ctx), True, rule.max_rank)
    reasons = dict(checker.reasons)
    if info.nodes_unsupported_due_to_dynamic_input:
        reasons["dynamic input shape"] = info.nodes_unsupported_due_to_dynamic_input
    if info.num_unsupported_nodes_due_to_rank:
        reasons[f"rank above {rule.max_rank}"] = info.num_unsupported_nodes_due_to_rank
    return ProviderCoverage(
        provider=entry.name,
        known=True,
        # ORT's checker counts the nodes of If / Loop subgraphs as well: the total must count the same nodes,
        # or an unpadding If makes "taken" exceed "total"
        nodes_total=info.num_nodes,
        nodes_supported=info.num_supported_nodes,
        partitions=info.num_partitions,
        partition_sizes=tuple(len(g) for g in info.supported_groups),
        unsupported_ops=tuple(sorted(info.unsupported_ops)),
        reasons=reasons,
        nodes_supported_as_exported=exported.num_supported_nodes if exported is not None else None,
        suitability=info.suitability().name.lower() if info.num_nodes else None,
        constraints=entry.constraints,
        source=rule.source,
        caveats=tuple(checker.get_caveats()[:8]),
        taken_nodes=frozenset(node_key(n) for group in info.supported_groups for n in group),
    )
