"""Quantization recipes: a registry of typed configs and the steps that apply them.

A recipe is a composition of steps; each step takes an ONNX file and writes another, and its result
(what it did, how long it took, whether it changed the graph) lands in the report and the manifest.
A new recipe is one ``RECIPES.add`` entry.

Step order matters: transformer fusions (ORT's optimizer) run before dynamic int8 so the fused
Attention / SkipLayerNorm graph is what gets quantized (the fused int8 graph is the fastest on CPU), and
``DefaultTensorType`` lets the quantizer type contrib-op outputs that shape inference cannot. Static QDQ
skips fusions: its consumers are NPUs (QNN, NNAPI) that take standard ops only.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgekit import limits
from edgekit.config import require, to_dict
from edgekit.errors import CalibrationError, ConfigError, CorruptModelError, UnsupportedModelError
from edgekit.onnx_graph import topological
from edgekit.recipe_names import RECIPE_DESCRIPTIONS
from edgekit.registry import Registry
from exporters import graph, index_subgraph, static_ops, static_rewrites
from exporters.decoder_fusions import step_decoder_fusions
from exporters.encoder_attention import step_encoder_attention
from exporters.isa import isa_choices
from exporters.merge_projections import step_merge_projections
from exporters.ort_guard import guarded
from exporters.smoothing import step_smooth
from exporters.unpad import step_unpad
from exporters.unpad_branch import step_unpad_branch

# HF model_type -> ORT transformer optimizer model_type, for the families ORT fuses.
FUSION_FAMILIES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "distilbert": "bert",
    "electra": "bert",
    "camembert": "bert",
    "mpnet": "bert",
    "vit": "vit",
}
# Fusions are for encoders; a KV-cache decoder's fused graph is a different contract for the runtime.
FUSION_TASK_KINDS = {"embedding", "classification"}


# ------------------------------------------------------------------------------------------- configs


# A fused decoder takes GroupQueryAttention's seqlens_k / total_sequence_length as inputs in place of its
# attention mask, where nothing else reads the mask (six nodes fewer a step, runtimes/decoder_feeds.py);
# false keeps the attention_mask input (the graph computes the lengths), for callers that feed the mask.
LENGTH_INPUTS_DEFAULT = True


@dataclass(frozen=True, kw_only=True)
class Fp32Config:
    fusions: bool = True
    length_inputs: bool = LENGTH_INPUTS_DEFAULT
    # The fused encoder Attention as a projection MatMul + bidirectional GroupQueryAttention, whose CPU kernel
    # runs the attention itself faster (exporters/encoder_attention.py).
    encoder_gqa: bool = True


@dataclass(frozen=True, kw_only=True)
class Fp16Config:
    fusions: bool = True
    keep_io_types: bool = True  # callers keep feeding float32; casts sit at the graph's edges
    op_block_list: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Int8DynamicConfig:
    per_channel: bool = True
    # auto: int8 weights where the CPU has int8 dot products (VNNI, Arm dotprod); on x86 without VNNI,
    # int8 with pair-safe scales: MLAS's u8s8 kernel (vpmaddubsw) adds pairs of products in int16 and
    # saturates with plain int8 scales, and its u8u8 kernel is ~15% slower (exporters/smoothing.py).
    # The export host's ISA record decides (exporters/isa.py).
    weight_type: Literal["auto", "int8", "uint8", "int8-pair-safe"] = "auto"
    fusions: bool = True
    # The fused encoder Attention as a projection MatMul + bidirectional GroupQueryAttention
    # (exporters/encoder_attention.py): the attention runs ~2.5x faster than QAttention's, and the projection
    # joins padding removal and the int8 MatMuls.
    encoder_gqa: bool = True
    # GELU kernel of the fused graph: exact (erf, BiasGelu) or tanh (FastGelu); auto: the ISA record's, tanh
    # where it was measured faster at unchanged accuracy (AVX-512).
    gelu: Literal["auto", "exact", "tanh"] = "auto"
    op_types: tuple[str, ...] = ("MatMul", "Attention", "Gemm", "EmbedLayerNormalization", "Gather")
    nodes_to_exclude: tuple[str, ...] = ()
    # SmoothQuant-style migration of activation outliers into the weights (exporters/smoothing.py):
    # per-tensor run-time activation scales otherwise lose the ordinary channels to one outlier channel.
    smoothing: bool = True
    smoothing_alpha: float | None = None  # None: searched per layer
    smoothing_samples: int = 32
    # Per-token work on the real tokens only (exporters/unpad.py): padded batches skip the pad rows' GEMMs;
    # pad rows of the outputs become zeros.
    remove_padding: bool = True
    # With remove_padding: one If runs the graph without the pack / unpack nodes when no position of the mask is
    # 0 (exporters/unpad_branch.py); batch 1 then pays nothing for padding removal. Off: one flat graph.
    unpadded_branch: bool = True

    def __post_init__(self) -> None:
        require(bool(self.op_types), "int8-dynamic", "op_types", "must name at least one op type")
        known = dynamic_op_types()
        unknown = [t for t in self.op_types if t not in known]
        require(
            not unknown,
            "int8-dynamic",
            "op_types",
            f"names op types dynamic int8 cannot quantize: {', '.join(map(repr, unknown))};"
            f" it quantizes {', '.join(sorted(known))}",
        )
        alpha_ok = self.smoothing_alpha is None or 0 < self.smoothing_alpha < 1
        require(alpha_ok, "int8-dynamic", "smoothing_alpha", "must be in (0, 1) or null")
        require(self.smoothing_samples >= 1, "int8-dynamic", "smoothing_samples", "must be >= 1")


# The multiply-accumulate ops, plus the ops ORT's QDQ fusion (level EXTENDED and up) folds into integer
# kernels or passes int8 through, so no float round trip sits between two quantized convs: Relu / Clip vanish
# into the preceding QLinearConv's output range, Add -> QLinearAdd (residuals), GlobalAveragePool ->
# QLinearGlobalAveragePool, Concat -> QLinearConcat, Sigmoid / Mul gates -> QLinearSigmoid / QLinearMul, pooling
# and shape ops carry int8 unchanged. Measured (tests/test_int8_static_vision.py; benchmarks/cnn_int8.py):
# MobileNetV2's level-ALL graph goes from 36 to 1 DequantizeLinear. Of Sigmoid and Mul only gates are quantized
# (exporters/static_rewrites.py); other Muls, Softmax and the normalizations stay float.
STATIC_OP_TYPES = (
    "Conv",
    "MatMul",
    "Gemm",
    "Relu",
    "Clip",
    "Add",
    "GlobalAveragePool",
    "Concat",
    "MaxPool",
    "AveragePool",
    "Resize",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Pad",
    "Sigmoid",
    "Mul",
)


@dataclass(frozen=True, kw_only=True)
class Int8StaticConfig:
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = 99.999
    per_channel: bool = True
    activation_type: Literal["uint8", "int8"] = "uint8"
    # int8 weights (stored 7-bit by default, see reduce_range) run MLAS's u8s8 kernels: VNNI's vpdpbusd where the
    # CPU has it, AVX2's vpmaddubsw pairs otherwise, where 7-bit weights cannot saturate the int16 pair sum.
    # uint8 weights run the u8u8 kernel, which widens to 16 bits first: it cannot saturate either, but it made
    # every CNN slower than fp32. Measured on AVX-512 VNNI (Zen 4, 2 threads, benchmarks/cnn_int8.py), time vs
    # fp32: MobileNetV2 uint8 1.29x, int8 0.46x; ResNet-18 0.72x / 0.43x.
    weight_type: Literal["int8", "uint8"] = "int8"
    max_calibration_samples: int = 128
    nodes_to_exclude: tuple[str, ...] = ()
    # Of Sigmoid and Mul only gates (a Mul fed by a Sigmoid: squeeze-excite) are quantized; DeiT's quantized
    # Softmax / LayerNorm / GELU cost its worst-sample cosine 0.82 -> 0.99, so those stay float.
    op_types: tuple[str, ...] = STATIC_OP_TYPES
    # SiLU (x * Sigmoid(x)): "float" fuses it to ORT's QuickGelu kernel between int8 convs (fastest on ORT's CPU
    # provider: EfficientNet-B0 0.81x fp32 against 0.96x, one thread); "int8" keeps Sigmoid + Mul as QDQ
    # (QLinearSigmoid / QLinearMul), for providers that take QDQ graphs only (exporters/static_rewrites.py).
    silu: Literal["float", "int8"] = "float"
    # 7-bit weights (None: for int8 weights only). Without VNNI, MLAS's u8s8 kernel (vpmaddubsw) sums uint8 x
    # int8 pairs in int16 and saturates with 8-bit int8 weights (tiny MobileNetV2, worst cosine 0.54 fused vs
    # 0.94 unfused). The package runs on CPUs the exporter never sees: not chosen from the build host's flags.
    reduce_range: bool | None = None

    @property
    def weights_7bit(self) -> bool:
        return self.weight_type == "int8" if self.reduce_range is None else self.reduce_range

    def __post_init__(self) -> None:
        require(0 < self.percentile <= 100, "int8-static", "percentile", "must be in (0, 100]")
        require(bool(self.op_types), "int8-static", "op_types", "must name at least one op type")
        known = static_op_types()
        unknown = [t for t in self.op_types if t not in known]
        require(
            not unknown,
            "int8-static",
            "op_types",
            f"names op types static int8 cannot quantize: {', '.join(map(repr, unknown))};"
            f" it quantizes {', '.join(sorted(known))}",
        )
        limits.check("max_calibration_samples", self.max_calibration_samples, option="max_calibration_samples")


@dataclass(frozen=True, kw_only=True)
class Int4Config:
    block_size: int = 32
    symmetric: bool = True
    # 4 = int8 compute of the int4 weights (fastest on CPU with int8 dot products); None = fp32 compute.
    accuracy_level: int | None = 4
    nodes_to_exclude: tuple[str, ...] = ()
    fusions: bool = True  # decoder fusions (GroupQueryAttention) before quantizing; false keeps optimum's graph
    length_inputs: bool = LENGTH_INPUTS_DEFAULT  # as Fp32Config's
    # A decoder's gate and up projections (and any Q/K/V left apart) as one MatMulNBits + Split: one input
    # quantization per step instead of one per projection (exporters/merge_projections.py).
    merge_projections: bool = True

    def __post_init__(self) -> None:
        ok = self.block_size >= 16 and (self.block_size & (self.block_size - 1)) == 0
        require(ok, "int4", "block_size", f"must be a power of two >= 16, got {self.block_size}")
        require(self.accuracy_level in (None, 0, 1, 2, 3, 4), "int4", "accuracy_level", "must be 0-4 or null")


def dynamic_op_types() -> frozenset[str]:
    """Op types ``quantize_dynamic`` has an integer kernel for, plus Gemm (smoothed with pair-safe scales)."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    return frozenset(IntegerOpsRegistry) | {"Gemm"}


def static_op_types() -> frozenset[str]:
    """Op types ``quantize_static`` can wrap in QuantizeLinear / DequantizeLinear pairs."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return frozenset(QDQRegistry) | frozenset(QLinearOpsRegistry)


# The steps whose options name ops or nodes: checked against the graph they are about to rewrite.
_OPTION_CHECKED_STEPS = frozenset({"quantize", "fp16"})
# Shown in a refusal at most: a graph may have thousands of nodes.
_MAX_NAMES_SHOWN = 8


def check_graph_options(model_path: Path, cfg: Any, recipe: str) -> None:
    """Refuse options naming nodes or op types the graph about to be quantized lacks.

    Otherwise ORT ignores them: a misspelt ``nodes_to_exclude`` was recorded as "kept in float" while it was
    quantized, and ``op_types=["Conv"]`` on a MatMul model wrote an "int8" package that is all float32.
    """
    import difflib

    model = graph.load_model(model_path, load_weights=False, check=False)
    names = [n.name for n in model.graph.node if n.name]
    present = {n.op_type for n in model.graph.node}
    known = set(names)
    for node in getattr(cfg, "nodes_to_exclude", ()):
        if node not in known:
            # Fusions rename what they absorb ("fc1" -> "fc1/MatMulAddFusion"): prefixes are candidates too.
            close = [n for n in names if n.startswith(node)][:3] or difflib.get_close_matches(
                node, names, n=3, cutoff=0.5
            )
            guess = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            shown = ", ".join(names[:_MAX_NAMES_SHOWN]) + (", ..." if len(names) > _MAX_NAMES_SHOWN else "")
            raise ConfigError(
                f"recipe {recipe}: nodes_to_exclude names {node!r}, which the graph being quantized does not have"
                f" (after the steps before quantization).{guess}",
                hint=f"name nodes of that graph ({len(names)} nodes: {shown}); `edgekit inspect` lists op types",
                param="nodes_to_exclude",
            )
    _check_block_list(getattr(cfg, "op_block_list", ()), present, recipe)
    wanted = tuple(getattr(cfg, "op_types", ()))
    default = type(cfg)().op_types if wanted else ()
    if wanted and wanted != default and not present.intersection(wanted):
        quantizable = sorted(present & dynamic_op_types())
        raise ConfigError(
            f"recipe {recipe}: op_types {list(wanted)} match no node of the graph; it has"
            f" {', '.join(quantizable) or 'no quantizable op'} among {len(present)} op types",
            hint=f"use op_types among {quantizable}" if quantizable else "this graph has nothing int8 can quantize",
            param="op_types",
        )


def _check_block_list(block: tuple[str, ...], present: set[str], recipe: str) -> None:
    """fp16's ``op_block_list``: a name that is no ONNX op and not in the graph is a typo that blocks nothing."""
    import difflib

    from onnx import defs

    for op in block:
        if op not in present and not defs.has(op):
            close = difflib.get_close_matches(op, sorted(present), n=3, cutoff=0.5)
            guess = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(
                f"recipe {recipe}: op_block_list names {op!r}, which is no ONNX op type and not in the graph.{guess}",
                hint=f"the graph's op types: {', '.join(sorted(present))}",
                param="op_block_list",
            )


def _changed_ops(src: Path, dst: Path) -> tuple[bool, dict[str, int]]:
    """Whether quantization rewrote any node (the op-type histograms differ), and the new histogram."""
    before = graph.op_histogram(graph.load_model(src, load_weights=False, check=False))
    after = graph.op_histogram(graph.load_model(dst, load_weights=False, check=False))
    return before != after, after


# ------------------------------------------------------------------------------------- steps and context


@dataclass(kw_only=True)
class RecipeContext:
    work: Path
    task_kind: str
    model_type: str | None
    calibration: list[dict[str, Any]] | None = None
    samples: list[dict[str, Any]] | None = None  # the task's generated samples, when no calibration is given
    log: Callable[[str], None] = lambda msg: None


@dataclass(kw_only=True)
class StepResult:
    name: str
    changed: bool
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "changed": self.changed, "seconds": round(self.seconds, 3), "details": self.details}


Step = Callable[[Path, Path, Any, RecipeContext], tuple[bool, dict[str, Any]]]


def _timed(name: str, step: Step, src: Path, dst: Path, cfg: Any, ctx: RecipeContext) -> StepResult:
    t0 = time.perf_counter()
    ctx.log(f"{name}…")
    changed, details = step(src, dst, cfg, ctx)
    if not changed and "reason" not in details:
        # A step that changed nothing says so: the report must not read as if it had done its work.
        details = {**details, "reason": details.get("skipped") or "the step found nothing to change in this graph"}
    return StepResult(name=name, changed=changed, seconds=time.perf_counter() - t0, details=details)


def step_fusions(src: Path, dst: Path, cfg: Any, ctx: RecipeContext) -> tuple[bool, dict[str, Any]]:
    family = FUSION_FAMILIES.get(ctx.model_type or "")
    if not getattr(cfg, "fusions", False) or family is None or ctx.task_kind not in FUSION_TASK_KINDS:
        return _ort_basic(src, dst)
    import logging

    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    options = FusionOptions(family)
    # Add + LayerNormalization stay apart: on CPU they beat the fused SkipLayerNormalization (edgekit.ort_policy)
    options.enable_skip_layer_norm = False
    # num_heads/hidden_size 0: detected from the graph. opt_level 0: our fusions only; ORT's own
    # graph optimizations then run in the device's session, for the device's provider.
    opt = optimize_model(
        str(src), model_type=family, num_heads=0, hidden_size=0, opt_level=0, optimization_options=options
    )
    stats = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    model = opt.model
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        import onnx

        # Contrib ops need their domain declared, or shape inference (and the quantizer) rejects them.
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    graph.save_model(model, dst)
    details: dict[str, Any] = {"family": family, "fused": stats}
    if not stats:
        details["reason"] = f"no {family} fusion pattern matched this graph"
    return bool(stats), details


def _ort_basic(src: Path, dst: Path) -> tuple[bool, dict[str, Any]]:
    """Constant folding and redundant-node elimination only: the result stays portable to every EP."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(dst)
    so.log_severity_level = 3
    try:
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise CorruptModelError(
            f"ONNX Runtime cannot load the model: {str(exc).strip().splitlines()[-1][:300]}",
            hint="the graph is inconsistent (types or shapes between nodes disagree): re-export it from its source",
        ) from None
    before = len(graph.load_model(src, check=False).graph.node)
    optimized = graph.load_model(dst, check=False)
    # A zero Pad ahead of a VALID Conv (transformers' EfficientNet), which ORT's PadFusion leaves, moves into the
    # Conv's pads: exact, and EfficientNet-B0's fp32 graph runs ~15 % faster (exporters/static_rewrites.py).
    pads = static_rewrites.fold_pads(optimized)
    if pads:
        graph.save_model(optimized, dst)
    after = len(optimized.graph.node)
    details: dict[str, Any] = {"level": "basic", "nodes_before": before, "nodes_after": after, "pads_folded": pads}
    if before == after:
        details["reason"] = "constant folding and redundant-node elimination found nothing to remove"
    return before != after, details


def step_fp16(src: Path, dst: Path, cfg: Fp16Config, ctx: RecipeContext) -> tuple[bool, dict[str, Any]]:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = graph.load_model(src, check=False)
    # Ops ORT's CPU provider has no fp16 kernel for stay fp32 rather than gaining casts around each.
    block = list(cfg.op_block_list) or None
    model = convert_float_to_float16(model, keep_io_types=cfg.keep_io_types, op_block_list=block)
    # the converter appends its graph-input Casts after their readers; ONNX requires a sorted graph
    g = model.graph
    ordered = topological(list(g.node), {i.name for i in g.input} | {t.name for t in g.initializer})
    del g.node[:]
    g.node.extend(ordered)
    graph.save_model(model, dst)
    return True, {"keep_io_types": cfg.keep_io_types}


def resolve_weight_type(requested: str, *, machine: str | None = None, cpu_flags: str | None = None) -> tuple[str, str]:
    """The int8 weight type for this CPU (or the given ``machine`` / ``cpu_flags``), and why."""
    if requested != "auto":
        return requested, "requested"
    choice = isa_choices(machine=machine, cpu_flags=cpu_flags)
    return choice.weight_type, choice.weight_reason


def resolve_gelu(requested: str, *, machine: str | None = None, cpu_flags: str | None = None) -> tuple[str, str]:
    """The GELU kernel for this CPU (``exact``: BiasGelu / Gelu, ``tanh``: FastGelu), and why."""
    if requested != "auto":
        return requested, "requested"
    choice = isa_choices(machine=machine, cpu_flags=cpu_flags)
    return ("tanh" if choice.gelu == "FastGelu" else "exact"), choice.gelu_reason


# The fused exact GELUs (ORT's bert fusions) and the inputs FastGelu takes in their place: (X[, bias]).
_EXACT_GELUS = frozenset({"BiasGelu", "Gelu"})


def step_gelu(src: Path, dst: Path, cfg: Any, ctx: RecipeContext) -> tuple[bool, dict[str, Any]]:
    """``gelu`` tanh: the fused exact GELUs become ``FastGelu`` (same inputs: X and the optional bias)."""
    model = graph.load_model(src, check=False)
    kind, reason = resolve_gelu(getattr(cfg, "gelu", "exact"))
    details: dict[str, Any] = {"gelu": kind, "gelu_reason": reason}
    nodes = [n for n in model.graph.node if n.op_type in _EXACT_GELUS and n.domain == "com.microsoft"]
    if kind == "tanh":
        for n in nodes:
            n.op_type = "FastGelu"
        details["converted"] = len(nodes)
        if not nodes:
            details["reason"] = "no fused BiasGelu / Gelu in this graph"
    else:
        details["reason"] = f"exact GELU kept ({reason})"
    graph.save_model(model, dst)
    return kind == "tanh" and bool(nodes), details


def step_int8_dynamic(src: Path, dst: Path, cfg: Int8DynamicConfig, ctx: RecipeContext) -> tuple[bool, dict[str, Any]]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from exporters.smoothing import pair_safe_overrides

    wtype, reason = resolve_weight_type(cfg.weight_type)
    extra: dict[str, Any] = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    if wtype == "int8-pair-safe":
        extra["TensorQuantOverrides"] = pair_safe_overrides(
            src, op_types=cfg.op_types, exclude=cfg.nodes_to_exclude, per_channel=cfg.per_channel
        )
    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=cfg.per_channel,
        weight_type=QuantType.QUInt8 if wtype == "uint8" else QuantType.QInt8,
        op_types_to_quantize=list(cfg.op_types),
        nodes_to_exclude=list(cfg.nodes_to_exclude),
        extra_options=extra,
    )
    changed, _ = _changed_ops(src, dst)
    details: dict[str, Any] = {
        "weight_type": wtype,
        "weight_type_reason": reason,
        "nodes_kept_float": list(cfg.nodes_to_exclude),
    }
    if not changed:
        details["reason"] = f"no node of op types {list(cfg.op_types)} could be quantized; the graph stays float32"
    return changed, details


def step_int8_dynamic_branched(
    src: Path, dst: Path, cfg: Int8DynamicConfig, ctx: RecipeContext
) -> tuple[bool, dict[str, Any]]:
    """Quantize, then branch on padding (exporters/unpad_branch.py) on the quantized graph.

    After quantization, so both branches read the one set of int8 weights; one step, so the accuracy search's
    re-quantization (the recipe's last step) and the CLI's check of that step see the quantizer's result.
    """
    quantized = dst.with_name(f"{dst.stem}.unbranched.onnx")
    changed, details = step_int8_dynamic(src, quantized, cfg, ctx)
    _, branch = step_unpad_branch(quantized, dst, cfg, ctx)
    return changed, {**details, "unpad_branch": branch}


class _ListReader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, samples: list[dict[str, Any]]) -> None:
        self._it = iter(samples)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - only some calibrators call it
        pass


def step_preprocess(src: Path, dst: Path, cfg: Any, ctx: RecipeContext) -> tuple[bool, dict[str, Any]]:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # ORT's symbolic shape inference drops a debug model into the current directory when it gives up;
    # keep that in the work dir, not the user's project.
    with _cwd(ctx.work):
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=False, auto_merge=True)
            details: dict[str, Any] = {"symbolic_shape_inference": True}
        except Exception as exc:  # it does not know every op; quantization still works without it
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
            details = {"symbolic_shape_inference": False, "reason": str(exc).splitlines()[0][:200]}
    return True, {**details, **_float_rewrites(dst, cfg)}


def _float_rewrites(path: Path, cfg: Any) -> dict[str, Any]:
    """The exact float rewrites int8 needs on SiLU / squeeze-excite CNNs (exporters/static_rewrites.py)."""
    model = graph.load_model(path, check=False)
    pools = static_rewrites.global_average_pools(model)
    pads = static_rewrites.fold_pads(model)
    silus = static_rewrites.fuse_silu(model) if getattr(cfg, "silu", "float") == "float" else 0
    if pools or pads or silus:
        graph.save_model(model, path)
    return {"global_average_pools": pools, "pads_folded": pads, "silu_fused": silus}


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def step_int8_static(src: Path, dst: Path, cfg: Int8StaticConfig, ctx: RecipeContext) -> tuple[bool, dict[str, Any]]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not ctx.calibration:
        raise CalibrationError(
            "int8-static needs calibration data",
            hint="pass --calibration DATA (.npz of named arrays, a folder of images or WAV clips, or a .txt file of lines)",
        )
    samples = ctx.calibration[: cfg.max_calibration_samples]
    shapes = {tuple(sorted((k, tuple(v.shape)) for k, v in s.items())) for s in samples}
    if cfg.method != "minmax" and len(shapes) > 1:
        # ORT's histogram calibrators stack every sample's activations into one array per tensor.
        raise CalibrationError(
            f"int8-static's {cfg.method} calibration needs samples of one shape; these come in {len(shapes)}"
            " shapes (e.g. texts of different lengths)",
            hint="use method minmax (the default), or give an .npz whose samples share one shape",
            param="method",
        )
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[cfg.method]
    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    # Position-bucket / index chains (MPNet's log-bucketed relative positions) stay float: log(0) = -inf
    # would give their QDQ an infinite scale (exporters/index_subgraph.py).
    model = graph.load_model(src, check=False)
    index_nodes = [n for n in index_subgraph.index_nodes(model) if n not in cfg.nodes_to_exclude]
    float_adds = [n for n in static_ops.float_adds(model) if n not in cfg.nodes_to_exclude]
    float_adds = float_adds if "Add" in cfg.op_types else []
    float_gates = [n for n in static_rewrites.float_sigmoid_muls(model) if n not in cfg.nodes_to_exclude]
    ctx.log(f"calibrating on {len(samples)} samples ({cfg.method})…")
    guarded(
        lambda: quantize_static(
            str(src),
            str(dst),
            _ListReader(samples),
            quant_format=QuantFormat.QDQ,
            per_channel=cfg.per_channel,
            activation_type=qtype[cfg.activation_type],
            weight_type=qtype[cfg.weight_type],
            calibrate_method=method,
            op_types_to_quantize=list(cfg.op_types),
            reduce_range=cfg.weights_7bit,
            nodes_to_exclude=[*cfg.nodes_to_exclude, *index_nodes, *float_adds, *float_gates],
            extra_options={"CalibPercentile": cfg.percentile, "CalibTensorRangeSymmetric": False},
        ),
        during="int8-static calibration",
        hint="check the calibration data fits the model (lengths within preprocessing max_length)",
    )
    return True, {
        "calibration_samples": len(samples),
        "method": cfg.method,
        "nodes_kept_float": list(cfg.nodes_to_exclude),
        "index_nodes_kept_float": index_nodes,
        "adds_kept_float": len(float_adds),
        "sigmoid_muls_kept_float": len(float_gates),
        "op_types_quantized": list(cfg.op_types),
        "why_other_ops_float": "Softmax, normalizations and non-gate Muls lose accuracy in ORT's integer kernels",
        "weight_type": cfg.weight_type,
        "reduce_range": cfg.weights_7bit,
    }


def step_int4(src: Path, dst: Path, cfg: Int4Config, ctx: RecipeContext) -> tuple[bool, dict[str, Any]]:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = graph.load_model(src, check=False)
    matmuls = sum(1 for n in model.graph.node if n.op_type == "MatMul")
    if not matmuls:
        raise UnsupportedModelError(
            "int4 quantizes MatMul weights, and this graph has no MatMul", hint="use int8-dynamic"
        )
    q = MatMulNBitsQuantizer(
        model,
        bits=4,
        block_size=cfg.block_size,
        is_symmetric=cfg.symmetric,
        accuracy_level=cfg.accuracy_level,
        nodes_to_exclude=list(cfg.nodes_to_exclude),
    )
    q.process()
    out = q.model.model
    converted = sum(1 for n in out.graph.node if n.op_type == "MatMulNBits")
    graph.save_model(out, dst)
    return converted > 0, {"matmuls": matmuls, "converted_to_matmulnbits": converted}


# ----------------------------------------------------------------------------------------------- recipes


@dataclass(frozen=True, kw_only=True)
class Recipe:
    name: str
    description: str
    config_cls: type
    steps: tuple[tuple[str, Step], ...]
    # Whether nodes can be kept in float (``nodes_to_exclude``), which the accuracy search needs.
    supports_float_fallback: bool = False
    needs_calibration: bool = False
    # A quantizing recipe must beat the fp32 graph of its own export on the host (exporters.speed).
    speed_checked: bool = False

    def run(self, src: Path, cfg: Any, ctx: RecipeContext) -> tuple[Path, list[StepResult]]:
        results = []
        current = src
        for i, (name, step) in enumerate(self.steps):
            if name in _OPTION_CHECKED_STEPS:
                check_graph_options(current, cfg, self.name)
            dst = ctx.work / f"{self.name}.{i}.{name}.onnx"
            results.append(_timed(name, step, current, dst, cfg, ctx))
            current = dst
        return current, results


RECIPES: Registry[Recipe] = Registry("recipe")
# Decoder fusions come first: after ORT's own optimizations the rotary pattern no longer matches.
RECIPES.add(
    "fp32",
    Recipe(
        name="fp32",
        description=RECIPE_DESCRIPTIONS["fp32"],
        config_cls=Fp32Config,
        steps=(
            ("decoder_fusions", step_decoder_fusions),
            ("optimize", step_fusions),
            ("encoder_attention", step_encoder_attention),
        ),
    ),
)
RECIPES.add(
    "fp16",
    Recipe(
        name="fp16",
        description=RECIPE_DESCRIPTIONS["fp16"],
        speed_checked=True,
        config_cls=Fp16Config,
        steps=(("optimize", step_fusions), ("fp16", step_fp16)),
    ),
)
RECIPES.add(
    "int8-dynamic",
    Recipe(
        name="int8-dynamic",
        description=RECIPE_DESCRIPTIONS["int8-dynamic"],
        speed_checked=True,
        config_cls=Int8DynamicConfig,
        steps=(
            ("optimize", step_fusions),
            ("gelu", step_gelu),
            ("encoder_attention", step_encoder_attention),
            ("unpad", step_unpad),
            ("smooth", step_smooth),
            ("quantize", step_int8_dynamic_branched),
        ),
        supports_float_fallback=True,
    ),
)
RECIPES.add(
    "int8-static",
    Recipe(
        name="int8-static",
        description=RECIPE_DESCRIPTIONS["int8-static"],
        speed_checked=True,
        config_cls=Int8StaticConfig,
        steps=(("preprocess", step_preprocess), ("quantize", step_int8_static)),
        supports_float_fallback=True,
        needs_calibration=True,
    ),
)
RECIPES.add(
    "int4",
    Recipe(
        name="int4",
        description=RECIPE_DESCRIPTIONS["int4"],
        speed_checked=True,
        config_cls=Int4Config,
        # No optimize step first: ORT's basic level fuses MatMul+Add into Gemm, which
        # MatMulNBits cannot take; the device session optimizes the int4 graph instead.
        steps=(
            ("decoder_fusions", step_decoder_fusions),
            ("merge_projections", step_merge_projections),
            ("quantize", step_int4),
        ),
    ),
)

# The CLI lists recipes from the core names without importing this module; a recipe added here only would be
# missing from its help, one listed there only would fail at export.
if RECIPES.names() != list(RECIPE_DESCRIPTIONS):
    raise RuntimeError(
        f"exporters.recipes {RECIPES.names()} and edgekit.recipe_names {list(RECIPE_DESCRIPTIONS)} differ"
    )


def resolved_options(cfg: Any) -> dict[str, Any]:
    return to_dict(cfg)
