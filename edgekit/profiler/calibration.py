"""Calibrating the estimator's efficiency factors on this host, against measurement of a fixed suite.

The roofline needs to know how fast ONNX Runtime's kernels really run here, per kind of work. It learns
that from small graphs built in code, never from the models being profiled, so the host estimate stays a
prediction that measurement can check:

==================  ===========================================  ====================================
case                graph                                        fits
==================  ===========================================  ====================================
run                 one tiny MatMul                              fixed cost of one ``session.run``
nodes               Shape/Gather/Unsqueeze/Concat/Expand/Add     per-node dispatch cost
                    blocks on a dynamic dim (80 nodes)
io                  8 inputs -> 8 tiny Adds -> 8 outputs         cost per graph input / output
stream_small/large  Add/Mul chains on 16 K / 256 K floats        per-node cost of a threaded kernel,
                                                                 bandwidth of elementwise kernels,
                                                                 and of small nodes on one thread
vector              4 Erf on 64 K floats                         rate of transcendental elementwise work
quick_gelu          4 QuickGelu (alpha 1) on 64 K floats         rate of QuickGelu (EfficientNet's Swish
                                                                 as ONNX Runtime fuses it): MLAS's
                                                                 logistic kernel, not Erf's
lrn                 one LRN (size 5) on 64x56x56                 rate of LRN (classic CNNs)
gemm_fp32           a transformer FFN's MatMuls, 32 tokens,      fp32 GEMM rate
                    hidden 384, inner 1536
gemm_int8           8 such blocks, quantized dynamically (int8,  int8 GEMM rate (DynamicQuantizeMatMul)
                    10.6 MB: beyond L2, as int8 models' weights)
conv_fp32           a ResNet bottleneck at 28x28 (256/64 ch)     fp32 convolution rate and cost per
conv_wide           one 3x3 conv 256->256 at 14x14               output row (least squares over the
conv_narrow         3 convs 1x1 32->32 at 56x56                  four; or per byte of activations,
conv_expand         1x1 24->144->24 at 56x56 (MobileNet-v2)      whichever fits them better; else a
                                                                 curve of the reduction)
conv_expand_relu6   the same with Clip 0..6 (Relu6)              rate of the pass MLAS makes over a
                                                                 conv's output for a fused Clip
conv_tiny/gemm_tiny 4 convs 16->16 at 8x8 / 8 MatMuls 1x64x64   fixed cost per conv / GEMM call
conv_depthwise      3 depthwise 3x3 convs, 144 ch at 56x56       depthwise rate and cost per row
                    (MobileNet-v2's second block)                (MobileNet/EfficientNet: far below the
conv_depthwise_     3 depthwise 3x3 convs, 384 ch at 14x14       dense-conv curve at r = 9; a small map
small               (MobileNet-v2's 14x14 blocks)                runs at ~2/3 of a large one's rate)
conv_stem           one 3x3 conv 3->32, stride 2, at 224x224,    rate of the RGB stem (reduction 27:
                    then a GlobalAveragePool (no reorder)
                                                                 the dense curve overstates it)
pad                 one Pad (1 row, 1 column) of 96 ch at 56x56  bandwidth of Pad (EfficientNet's
                                                                 "same" padding), a row-by-row copy
copy_large/small    3 ShuffleNet v2 units without convs (Split,  bandwidth of copy ops (COPY_OPS:
                    Concat, Reshape, Transpose 0,2,1,3,4,        strided copies, far below the
                    Reshape) at 116x28x28 / 464x7x7              elementwise streaming rate)
pool_nchw           one MaxPool 3x3 / 2 of 58 ch at 56x56        rate of pooling left in NCHW (58 is
                                                                 a multiple of neither block): far
                                                                 below the blocked pooling kernel
conv_nchw           3 1x1 convs 58->58 at 28x28                  convolutions the host's NCHWc pass
conv_nchw_dw        3 depthwise 3x3 convs, 58 ch at 28x28        leaves in NCHW (58 is a multiple of
                    (ShuffleNet v2's channel count)              neither block, 8 or 16): a rate and a
                                                                 cost per group, solved from the two
weights_dram        12-40 MatMuls 1x1024x1024 (4x the reported   DRAM bandwidth for streamed weights;
                    last-level cache, 48-168 MB of weights)      caps the cache where it streamed
gemm_fp32_dram      4-14 gemm_fp32 blocks of weights of their    what fp32 GEMMs over weights from
                    own (~1.25x the reported last-level cache)   DRAM pay per byte beyond their
gemm_fp32_cached    the same blocks over one block's weights     in-cache time (not hidden by compute):
                                                                 the pair's difference per weight byte
normalization       8 LayerNormalization / SkipSimplified-       rate of normalization kernels (row-
                    LayerNormalization on 64 x 128               wise, far below the vector rate)
attention_prefill   4 GroupQueryAttention (rotary, 4 / 2 heads   attention on projected inputs: a
                    of 16) on a 64-token prompt                  fixed cost per call and a rate,
attention_decode    the same, one token over 64 cached ones      the two solved from the two cases
attention_encoder   4 GroupQueryAttention, causal=0, 12 heads    bidirectional attention (the encoders'
                    of 32 on 64 tokens (MiniLM's shape)          rewrite): its own kernel path, a rate
attention_encoder_  the same on 16 tokens                        and a call cost solved from the two
short                                                            cases
probe               2 convs 64->64 3x3 at 14x14, Relu            not fitted: the speed of the moment
                                                                 every sample is normalised by
==================  ===========================================  ====================================

The timing cases run in the model's own timing process, one pass after each block of the model's timed runs,
because this host is shared and its speed is bimodal: the factors must describe the same machine state as the
measurement they predict. A speed probe (the ``probe`` case, never fitted) is timed around every block and
every pass, and each case's samples are normalised by it to the speed the model ran at before their first
quartile is taken (:mod:`.speed`). A case is called once untimed and then timed, once a pass; the
microsecond cases the fixed costs come from (``HOT_CASES``) are timed ``HOT_CALLS`` calls in a row, each a
sample, like the model's back-to-back runs.

Memory is calibrated apart, each graph in a fresh process: the resident memory ONNX Runtime itself adds (its
environment, thread pool and a session), and the resident bytes per stored weight byte of convolution
weights (stored in the model or constant-folded) and 8-bit GEMM weights, measured on a graph of each
(``RESIDENT_CASES``: on x86 ONNX Runtime reorders every convolution weight to NCHWc blocks, and a stored
initializer keeps its parsed copy beside the session's, about 3.3 copies against 2.1 for folded ones); float
GEMM weights and embeddings count once (``RESIDENT_COPIES``).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgekit.profiler import layout, speed
from edgekit.profiler.static import NodeCost, NodeKind, StaticAnalysis, analyze, runtime_graph

__all__ = [
    "HostEfficiency",
    "suite",
    "MemoryCalibration",
    "SuiteCase",
    "build_suite",
    "fit",
    "is_parallel",
    "memory_calibration",
]

# 22: the fixed-cost cases (HOT_CASES) timed HOT_CALLS calls in a row a pass; 21: the stem case ends in a GlobalAveragePool (no reorder of its map); 20: dense convs at a rate plus a cost per row or per activation byte, whichever fits (conv_expand), the Clip pass measured (conv_expand_relu6); 19: QuickGelu at its own rate (quick_gelu); 18: fp32 GEMMs over weights beyond the last-level cache against the same over one block (gemm_fp32_dram / _cached); 17: the int8 GEMM case over 8 blocks of weights (beyond L2); 16: dense convolutions' cost per output row (conv_narrow); 15: depthwise cost per output row, not per call; 14: the int8 GEMM case quantized per channel, as the int8-dynamic recipe stores it; 10: small nodes at stream_small's rate; 9: copy ops (copy_large / copy_small), the cache capped by weights_dram; 8: depthwise cost per call, the stem,
# Pad and NCHW pooling cases; 7: samples normalised by the speed probe (speed.py);
# 6: convolutions left in NCHW (conv_nchw cases)
SUITE_VERSION = 22
# A case's time: this quantile of its samples, each normalised to the reference speed by the probe timed
# beside it (speed.py); the model's check figure is the same quantile of its own normalised runs.
CASE_QUANTILE = speed.SPEED_QUANTILE
PROBE_CASE = "probe"

# A node is "threaded" when ONNX Runtime splits it over the intra-op pool; those pay a synchronization cost
# on top of the dispatch. The thresholds are where MLAS / ORT's cost model start to parallelize.
_PARALLEL_FLOPS = 200_000
_PARALLEL_BYTES = 64 * 1024


# Ops that only copy bytes, with their own strided kernels: on tensors of tens of kB and more they move them well
# below the elementwise streaming rate. The shape Concats of a transformer are plain dispatch (the ``nodes``
# case); Reshape and the other views move nothing. The NCHWc reorders are not among them: counted as copies
# they moved the conv fit (their cases' edges) and put MobileNet-v2 at -26 % instead of -12 % here.
COPY_OPS = frozenset({"Transpose", "Concat", "Split"})


def is_parallel(node: NodeCost, threads: int) -> bool:
    return threads > 1 and (node.total_flops >= _PARALLEL_FLOPS or node.bytes_moved >= _PARALLEL_BYTES)


def is_copy(node: NodeCost) -> bool:
    """A copy op (:data:`COPY_OPS`) on tensors large enough to move at the copy rate, not at dispatch cost."""
    return node.op_type in COPY_OPS and node.bytes_moved >= _PARALLEL_BYTES


@dataclass(frozen=True, kw_only=True)
class SuiteCase:
    name: str
    path: Path
    feeds_file: Path
    budget_s: float
    analysis: StaticAnalysis  # of the graph ONNX Runtime runs (its own optimizations applied)
    # the speed probe (:mod:`.speed`): timed beside every block of runs to normalise the rest, never fitted
    probe: bool = False
    # calls timed back to back in each suite pass, each call a sample (HOT_CASES)
    calls: int = 1


@dataclass(frozen=True, kw_only=True)
class HostEfficiency:
    """Achieved rates on this host at measurement time; the estimator's calibrated factors."""

    run_overhead_ms: float
    io_overhead_us: float  # per graph input or output bound in a run
    node_overhead_us: float
    parallel_node_overhead_us: float
    bandwidth_gbps: float  # elementwise kernels on cache-sized tensors, bytes read + written
    # ... and on nodes moving at most small_bytes (stream_small's rate): above bw on one thread, where
    # stream_large's nodes outgrow the core's L2; equal to it on more
    small_bandwidth_gbps: float = 0.0
    small_bytes: int = 0
    dram_bandwidth_gbps: float  # weights streamed from memory (a GEMV over 48-168 MB of weights)
    cache_bytes: int  # last-level cache: models with more weights stream them from DRAM every run
    vector_gflops: float  # transcendental elementwise work, FLOPs as static analysis counts them
    # QuickGelu (x * sigmoid(alpha x): EfficientNet's Swish once ONNX Runtime fuses it) runs MLAS's logistic
    # kernel, not Erf's polynomial: at the vector rate 49 of them in EfficientNet-B0 read 2.2 ms against 1.3
    # measured (Xeon, 2 threads); 0: the vector rate
    quick_gelu_gflops: float = 0.0
    lrn_gflops: float  # LRN (classic CNNs): scalar pow per element, far slower than vectorized kernels
    gemm_gflops: Mapping[str, float]  # by precision: fp32, int8
    # what an fp32 GEMM pays per MB (10^6 bytes) of weights from DRAM on top of its in-cache time, where the
    # model's weights outgrow cache_bytes (the gemm_fp32_dram case); 0: max(compute, memory) alone
    streamed_gemm_us_per_mb: float = 0.0
    conv_gflops: Mapping[str, float]  # the bottleneck case's average (reported; the fit below is used)
    # A dense blocked convolution: FLOPs at conv_peak_gflops plus conv_row_ns per output row (NodeCost.output_rows),
    # fitted on CONV_FIT_CASES (ConvFit); where no positive row cost fits, a rate curve of the reduction length
    # r = C/group x kernel instead: conv_peak_gflops x r / (r + conv_half_reduction)
    conv_peak_gflops: float = 0.0
    conv_half_reduction: float = 0.0
    conv_row_ns: float = 0.0
    # ... or, where that fits the cases better (ConvFit), plus its activation bytes at this rate (0: not that term)
    conv_activation_gbps: float = 0.0
    # the second pass over a blocked convolution's output for a fused activation its kernel does not apply (Clip:
    # MobileNet-v2's Relu6), bytes read + written per second; 0: at bandwidth_gbps. On the Xeon the pass ran ~98
    # GB/s (MobileNet-v2 with its Clips made Relu: 0.49 ms faster for 48 MB) against 52-62 for the streaming case
    activation_pass_gbps: float = 0.0
    # Attention on already-projected Q/K/V (GroupQueryAttention, MultiHeadAttention): per-head products too
    # small for GEMM rates, plus rotary, masking and softmax, so it gets its own rate (and its own call cost).
    attention_gflops: float = 0.0
    # ... and GroupQueryAttention with causal=0 (encoders, exporters/encoder_attention.py): no rotary, no KV
    # cache, its own kernel path (58-67 GFLOP/s against the decoder cases' ~13 here); 0: the attention rate
    bidirectional_attention_gflops: float = 0.0
    bidirectional_attention_call_us: float = 0.0  # its call cost per node (~17 us against the decoder cases' ~3 here)
    normalization_gflops: float = 0.0  # LayerNorm and its fused variants, FLOPs as static analysis counts them
    # Depthwise convolutions (C/group == 1): MLAS runs them with a dedicated kernel bound by loads, not FMAs;
    # the dense-conv curve at their reduction (9) would be a guess, so they get their own measured rate.
    depthwise_gflops: float = 0.0
    # ... plus this cost per output row (solved with the rate from a large and a small map): on a 14x14 map the
    # blocked depthwise kernel ran at ~2/3 of its 56x56 rate here (MLAS runs it a row of a channel block at a
    # time), which a single rate from the large map did not see
    depthwise_row_ns: float = 0.0
    # The RGB stem (3 input channels, 3x3, stride 2): MLAS's NCHW-input conv kernel, measured on its own (the
    # dense-conv curve at its reduction of 27 ran it ~1.5x too fast here)
    stem_gflops: float = 0.0
    # Pad (EfficientNet's "same" padding before its strided convs): ONNX Runtime copies row by row, far below
    # the streaming rate of elementwise kernels; bytes read + written per second
    pad_gbps: float = 0.0
    # Copy ops (is_copy: Transpose, Concat, Split), bytes read + written per second, from
    # the copy_large and copy_small cases: on the 2-vCPU Xeon ~46 GB/s against ~80 GB/s for elementwise
    # kernels (ShuffleNet's 5-D channel-shuffle Transpose: ~40 GB/s on two threads, ~65 GB/s on one)
    copy_gbps: float = 0.0
    # MaxPool / AveragePool the NCHWc pass leaves in NCHW (static.NodeCost.nchw_on_host; ShuffleNet's 24-channel
    # stem pool on AVX-512): MLAS's NCHW pooling ran ~3x slower per output than the vector rate here
    nchw_pool_gflops: float = 0.0
    # Convolutions the NCHWc pass leaves in NCHW on this host (static.NodeCost.nchw_on_host): im2col + one
    # GEMM per group, at this rate plus this cost per group (solved from conv_nchw and conv_nchw_dw).
    nchw_conv_gflops: float = 0.0
    nchw_group_us: float = 0.0
    # Fixed cost per call of a convolution or GEMM kernel beyond plain dispatch (packing, layout, threading
    # setup): what makes a tiny conv cost tens of microseconds whatever its FLOPs.
    call_overhead_us: Mapping[NodeKind, float] = field(default_factory=dict)
    threads: int
    timings_ms: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_overhead_ms": self.run_overhead_ms,
            "io_overhead_us": self.io_overhead_us,
            "node_overhead_us": self.node_overhead_us,
            "parallel_node_overhead_us": self.parallel_node_overhead_us,
            "bandwidth_gbps": self.bandwidth_gbps,
            "small_bandwidth_gbps": self.small_bandwidth_gbps,
            "small_bytes": self.small_bytes,
            "dram_bandwidth_gbps": self.dram_bandwidth_gbps,
            "cache_bytes": self.cache_bytes,
            "vector_gflops": self.vector_gflops,
            "quick_gelu_gflops": self.quick_gelu_gflops,
            "lrn_gflops": self.lrn_gflops,
            "gemm_gflops": dict(self.gemm_gflops),
            "streamed_gemm_us_per_mb": self.streamed_gemm_us_per_mb,
            "conv_gflops": dict(self.conv_gflops),
            "conv_peak_gflops": self.conv_peak_gflops,
            "conv_half_reduction": self.conv_half_reduction,
            "conv_row_ns": self.conv_row_ns,
            "conv_activation_gbps": self.conv_activation_gbps,
            "activation_pass_gbps": self.activation_pass_gbps,
            "attention_gflops": self.attention_gflops,
            "bidirectional_attention_gflops": self.bidirectional_attention_gflops,
            "bidirectional_attention_call_us": self.bidirectional_attention_call_us,
            "normalization_gflops": self.normalization_gflops,
            "depthwise_gflops": self.depthwise_gflops,
            "depthwise_row_ns": self.depthwise_row_ns,
            "stem_gflops": self.stem_gflops,
            "pad_gbps": self.pad_gbps,
            "copy_gbps": self.copy_gbps,
            "nchw_pool_gflops": self.nchw_pool_gflops,
            "nchw_conv_gflops": self.nchw_conv_gflops,
            "nchw_group_us": self.nchw_group_us,
            "call_overhead_us": {str(k): v for k, v in self.call_overhead_us.items()},
            "threads": self.threads,
            "suite_timings_ms": dict(self.timings_ms),
            "suite_version": SUITE_VERSION,
        }


@dataclass(frozen=True, kw_only=True)
class MemoryCalibration:
    runtime_overhead_mb: float
    bytes_per_weight_byte: Mapping[str, float]  # "other" (GEMM, embeddings), "conv", "folded"

    def for_other_devices(self) -> MemoryCalibration:
        """The same overhead with the prior copies: the measured ones are this host's layout (x86 NCHWc
        reorders every convolution weight), not another CPU's, and a device's estimate must not move with them."""
        return replace(self, bytes_per_weight_byte=dict(RESIDENT_COPIES))

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime_overhead_mb": self.runtime_overhead_mb,
            "resident_bytes_per_weight_byte": dict(self.bytes_per_weight_byte),
        }


# ----------------------------------------------------------------------------------------- the graphs


def _save(nodes: list, inputs: list, outputs: list, inits: list, path: Path, *, contrib: bool = False) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, outputs, inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if contrib else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _vi(name: str, shape: Sequence[int], elem: int | None = None) -> Any:
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, elem or TensorProto.FLOAT, list(shape))


def _chain(path: Path, op_cycle: Sequence[str], n: int, shape: Sequence[int], seed: int) -> Path:
    """x -> op(x, c_i) -> ... n times; constants are distinct so no pass can merge them."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "x"
    for i in range(n):
        op = op_cycle[i % len(op_cycle)]
        out = "y" if i == n - 1 else f"t{i}"
        if op in ("Erf", "Relu", "Tanh"):
            nodes.append(helper.make_node(op, [prev], [out]))
        elif op == "QuickGelu":  # alpha 1: x * sigmoid(x), the Swish ONNX Runtime fuses out of Sigmoid + Mul
            nodes.append(helper.make_node(op, [prev], [out], domain="com.microsoft", alpha=1.0))
        else:
            c = numpy_helper.from_array(np.asarray(rng.uniform(0.9, 1.1, (1,)), np.float32), f"c{i}")
            inits.append(c)
            nodes.append(helper.make_node(op, [prev, f"c{i}"], [out]))
        prev = out
    contrib = "QuickGelu" in op_cycle
    return _save(nodes, [_vi("x", shape)], [_vi("y", shape)], inits, path, contrib=contrib)


def _matmuls(path: Path, m: int, k: int, n_layers: int, seed: int) -> Path:
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "x"
    for i in range(n_layers):
        w = (rng.standard_normal((k, k)) / math.sqrt(k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "y" if i == n_layers - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [out], name=f"mm{i}"))
        prev = out
    return _save(nodes, [_vi("x", [m, k])], [_vi("y", [m, k])], inits, path)


def _convs(
    path: Path, channels: int, size: int, n_layers: int, seed: int, *, folded: bool = False, batchnorm: bool = False
) -> Path:
    """3x3 convolutions with Relu; ``folded`` builds each weight with ConstantOfShape as the light_* models do."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = "x"
    for i in range(n_layers):
        wshape = [channels, channels, 3, 3]
        if folded:
            inits.append(numpy_helper.from_array(np.asarray(wshape, np.int64), f"w{i}_shape"))
            nodes.append(
                helper.make_node(
                    "ConstantOfShape",
                    [f"w{i}_shape"],
                    [f"w{i}"],
                    value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.01 * (i + 1)]),
                )
            )
        else:
            w = (rng.standard_normal(wshape) / math.sqrt(9 * channels)).astype(np.float32)
            inits.append(numpy_helper.from_array(w, f"w{i}"))
        conv_out = f"c{i}"
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [conv_out], pads=[1, 1, 1, 1], name=f"conv{i}"))
        if batchnorm:
            for nm, val in (("s", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0)):
                inits.append(numpy_helper.from_array(np.full((channels,), val, np.float32), f"bn{i}_{nm}"))
            nodes.append(helper.make_node("BatchNormalization", [conv_out] + [f"bn{i}_{x}" for x in "sbmv"], [f"n{i}"]))
            conv_out = f"n{i}"
        out = "y" if i == n_layers - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [conv_out], [out]))
        prev = out
    shape = [1, channels, size, size]
    return _save(nodes, [_vi("x", shape)], [_vi("y", shape)], inits, path)


def _depthwise(path: Path, channels: int, size: int, n_layers: int, seed: int, *, group: int = 0, k: int = 3) -> Path:
    """Grouped kxk convolutions with Relu; by default depthwise 3x3 (group = channels), as in MobileNet-v2's
    inverted residuals."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    group = group or channels
    nodes, inits, prev = [], [], "x"
    pad = k // 2
    for i in range(n_layers):
        w = (rng.standard_normal((channels, channels // group, k, k)) / k).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[pad] * 4, group=group, name=f"dw{i}"))
        out = "y" if i == n_layers - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"c{i}"], [out]))
        prev = out
    shape = [1, channels, size, size]
    return _save(nodes, [_vi("x", shape)], [_vi("y", shape)], inits, path)


def _stem(path: Path, out_channels: int, size: int, seed: int) -> Path:
    """An RGB stem: one 3x3 convolution 3 -> ``out_channels``, stride 2, padding 1, with Relu (MobileNet-v2's,
    ShuffleNet's), then a GlobalAveragePool, so its output stays blocked as in a model: ended by the stem, the
    graph reordered the 1.6 MB map back to NCHW at ~25 GB/s (Xeon), and what the estimate's streaming rate left
    of that (~70 us) was put on the stem: 139 GFLOP/s against the 273 its kernel ran in ORT's profile."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((out_channels, 3, 3, 3)) / math.sqrt(27)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4, strides=[2, 2], name="stem"),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["y"]),
    ]
    out = [1, out_channels, 1, 1]
    return _save(nodes, [_vi("x", [1, 3, size, size])], [_vi("y", out)], [numpy_helper.from_array(w, "w")], path)


def _pad(path: Path, channels: int, size: int) -> Path:
    """One Pad of a row and a column at the end (EfficientNet's "same" padding of a stride-2 conv)."""
    from onnx import helper, numpy_helper

    pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "pads")
    node = helper.make_node("Pad", ["x", "pads"], ["y"], name="pad")
    shape = [1, channels, size, size]
    return _save([node], [_vi("x", shape)], [_vi("y", [1, channels, size + 1, size + 1])], [pads], path)


def _shuffle_units(path: Path, channels: int, size: int, blocks: int) -> Path:
    """ShuffleNet v2's data movement without its convolutions, ``blocks`` times: Split into halves, Concat them
    swapped, then the channel shuffle (Reshape to 2 groups, Transpose 0,2,1,3,4, Reshape back)."""
    from onnx import helper, numpy_helper

    half = channels // 2
    inits = [
        numpy_helper.from_array(np.array([half, half], np.int64), "halves"),
        numpy_helper.from_array(np.array([1, 2, half, size, size], np.int64), "groups"),
        numpy_helper.from_array(np.array([1, channels, size, size], np.int64), "flat"),
    ]
    nodes, prev = [], "x"
    for i in range(blocks):
        out = "y" if i == blocks - 1 else f"s{i}"
        nodes += [
            helper.make_node("Split", [prev, "halves"], [f"a{i}", f"b{i}"], axis=1, name=f"split{i}"),
            helper.make_node("Concat", [f"b{i}", f"a{i}"], [f"c{i}"], axis=1, name=f"concat{i}"),
            helper.make_node("Reshape", [f"c{i}", "groups"], [f"g{i}"], name=f"group{i}"),
            helper.make_node("Transpose", [f"g{i}"], [f"t{i}"], perm=[0, 2, 1, 3, 4], name=f"shuffle{i}"),
            helper.make_node("Reshape", [f"t{i}", "flat"], [out], name=f"ungroup{i}"),
        ]
        prev = out
    shape = [1, channels, size, size]
    return _save(nodes, [_vi("x", shape)], [_vi("y", shape)], inits, path)


def _maxpool(path: Path, channels: int, size: int) -> Path:
    """One MaxPool 3x3, stride 2, padding 1 (the stem pool of ResNet and ShuffleNet)."""
    from onnx import helper

    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4, name="pool")
    out = [1, channels, size // 2, size // 2]
    return _save([node], [_vi("x", [1, channels, size, size])], [_vi("y", out)], [], path)


def _quantized(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # int8 weights with a scale per output channel: what edgekit's int8-dynamic recipe stores on every CPU
    # (pair-safe scales on x86 without VNNI), so MLAS runs its u8s8 kernel here as in the models; uint8
    # weights run ~15% slower on AVX2, and per-tensor scales ran 4-5 % faster than the models' (Zen 4, M = 18
    # and 32, 1 thread)
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    return dst


def _ffn(path: Path, m: int, hidden: int, inner: int, seed: int, *, blocks: int = 1, shared: bool = False) -> Path:
    """A transformer block's GEMMs at sentence length: hidden x hidden, hidden x inner, inner x hidden, for
    ``blocks`` blocks of weights of their own, or (``shared``) all blocks over the first block's weights."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    dims = [(hidden, hidden), (hidden, inner), (inner, hidden)] * blocks
    nodes, inits = [], []
    prev = "x"
    for i, (k, n) in enumerate(dims):
        weight = f"w{i % 3 if shared else i}"
        if not shared or i < 3:
            w = (rng.standard_normal((k, n)) / math.sqrt(k)).astype(np.float32)
            inits.append(numpy_helper.from_array(w, weight))
        out = "y" if i == len(dims) - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, weight], [out], name=f"mm{i}"))
        prev = out
    return _save(nodes, [_vi("x", [m, hidden])], [_vi("y", [m, hidden])], inits, path)


def _bottleneck(path: Path, size: int, wide: int, narrow: int, seed: int) -> Path:
    """A ResNet bottleneck without the shortcut: 1x1 wide->narrow, 3x3 narrow->narrow, 1x1 narrow->wide."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    layers = [(narrow, wide, 1), (narrow, narrow, 3), (wide, narrow, 1)]
    nodes, inits = [], []
    prev = "x"
    for i, (cout, cin, k) in enumerate(layers):
        w = (rng.standard_normal((cout, cin, k, k)) / math.sqrt(cin * k * k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[k // 2] * 4, name=f"conv{i}"))
        out = "y" if i == len(layers) - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"c{i}"], [out]))
        prev = out
    shape = [1, wide, size, size]
    return _save(nodes, [_vi("x", shape)], [_vi("y", shape)], inits, path)


def _pointwise_pair(path: Path, narrow: int, wide: int, size: int, seed: int, *, relu6: bool = False) -> Path:
    """An inverted residual's 1x1 convolutions without the depthwise one: narrow -> wide -> narrow, with Relu,
    or with MobileNet-v2's Relu6 (Clip 0..6) when ``relu6``."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    if relu6:
        inits += [numpy_helper.from_array(np.asarray(v, np.float32), name) for name, v in (("lo", 0.0), ("hi", 6.0))]
    for i, (cin, cout) in enumerate(((narrow, wide), (wide, narrow))):
        w = (rng.standard_normal((cout, cin, 1, 1)) / math.sqrt(cin)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"pw{i}"))
        out = "y" if i == 1 else f"r{i}"
        act = (
            helper.make_node("Clip", [f"c{i}", "lo", "hi"], [out])
            if relu6
            else helper.make_node("Relu", [f"c{i}"], [out])
        )
        nodes.append(act)
        prev = out
    shape = [1, narrow, size, size]
    return _save(nodes, [_vi("x", shape)], [_vi("y", shape)], inits, path)


def _shape_ops(path: Path, blocks: int) -> Path:
    """Blocks of the small ops exported transformers are full of (Shape, Gather, Unsqueeze, Concat, Expand,
    Add) on a dynamic dim, in a pattern no ONNX Runtime fusion removes: the typical cost of a node."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array(0, np.int64), "i0"),
        numpy_helper.from_array(np.array(1, np.int64), "i1"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
    ]
    nodes = []
    prev = "x"
    for i in range(blocks):
        inits.append(numpy_helper.from_array(np.asarray(1.0 + i / 100, np.float32), f"c{i}"))
        nodes += [
            helper.make_node("Shape", [prev], [f"s{i}"]),
            helper.make_node("Gather", [f"s{i}", "i0"], [f"g{i}a"], axis=0),
            helper.make_node("Gather", [f"s{i}", "i1"], [f"g{i}b"], axis=0),
            helper.make_node("Unsqueeze", [f"g{i}a", "axis0"], [f"u{i}a"]),
            helper.make_node("Unsqueeze", [f"g{i}b", "axis0"], [f"u{i}b"]),
            helper.make_node("Concat", [f"u{i}a", f"u{i}b"], [f"shape{i}"], axis=0),
            helper.make_node("Expand", [f"c{i}", f"shape{i}"], [f"e{i}"]),
            helper.make_node("Add", [prev, f"e{i}"], ["y" if i == blocks - 1 else f"a{i}"]),
        ]
        prev = f"a{i}"
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _many_io(path: Path, n: int) -> Path:
    """n inputs, n outputs, one tiny Add each: the cost of binding a graph input or output per run."""
    from onnx import helper, numpy_helper

    nodes = [helper.make_node("Add", [f"x{i}", f"c{i}"], [f"y{i}"]) for i in range(n)]
    inits = [numpy_helper.from_array(np.asarray([float(i)], np.float32), f"c{i}") for i in range(n)]
    return _save(nodes, [_vi(f"x{i}", [1, 4]) for i in range(n)], [_vi(f"y{i}", [1, 4]) for i in range(n)], inits, path)


def _gqa(
    path: Path, q_len: int, past_len: int, n_nodes: int, seed: int, *, heads: int = 4, kv_heads: int = 2, head: int = 16
) -> tuple[Path, dict[str, np.ndarray]]:
    """``n_nodes`` GroupQueryAttention nodes (rotary on, as edgekit's decoder fusion emits) on one packed QKV
    input, summed. Each has its own ``scale`` so that no pass merges them as duplicates."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    positions = q_len + past_len
    angles = rng.uniform(0, 3, (positions, head // 2))
    inits = [
        numpy_helper.from_array(np.cos(angles).astype(np.float32), "cos_cache"),
        numpy_helper.from_array(np.sin(angles).astype(np.float32), "sin_cache"),
    ]
    inputs = ["qkv", "", "", "past_key", "past_value", "seqlens_k", "total_len", "cos_cache", "sin_cache"]
    nodes, prev = [], ""
    for i in range(n_nodes):
        out = "y" if n_nodes == 1 else f"a{i}"
        nodes.append(
            helper.make_node(
                "GroupQueryAttention",
                inputs,
                [out, f"present_key{i}", f"present_value{i}"],
                domain="com.microsoft",
                name=f"gqa{i}",
                num_heads=heads,
                kv_num_heads=kv_heads,
                do_rotary=1,
                scale=(1 + i / 100) / math.sqrt(head),
            )
        )
        if i == 1:
            prev = "y" if n_nodes == 2 else "s1"
            nodes.append(helper.make_node("Add", ["a0", "a1"], [prev]))
        elif i > 1:
            nxt = "y" if i == n_nodes - 1 else f"s{i}"
            nodes.append(helper.make_node("Add", [prev, out], [nxt]))
            prev = nxt
    qkv_width = (heads + 2 * kv_heads) * head
    kv_shape = (1, kv_heads, past_len, head)
    feeds = {
        "qkv": rng.standard_normal((1, q_len, qkv_width)).astype(np.float32),
        "past_key": rng.standard_normal(kv_shape).astype(np.float32),
        "past_value": rng.standard_normal(kv_shape).astype(np.float32),
        # GroupQueryAttention's convention: total length - 1 per row, and the total as a scalar
        "seqlens_k": np.array([positions - 1], np.int32),
        "total_len": np.array(positions, np.int32),
    }
    graph_inputs = [
        _vi("qkv", feeds["qkv"].shape),
        _vi("past_key", kv_shape),
        _vi("past_value", kv_shape),
        _vi("seqlens_k", [1], TensorProto.INT32),
        _vi("total_len", [], TensorProto.INT32),
    ]
    path = _save(nodes, graph_inputs, [_vi("y", (1, q_len, heads * head))], inits, path, contrib=True)
    return path, feeds


def _encoder_gqa(
    path: Path, tokens: int, n_nodes: int, seed: int, *, heads: int = 12, head: int = 32
) -> tuple[Path, dict[str, np.ndarray]]:
    """``n_nodes`` bidirectional GroupQueryAttention nodes (causal=0, no rotary, no KV cache: the encoder rewrite
    of exporters/encoder_attention.py) on one packed QKV input, summed; distinct scales keep them apart."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes, outs = [], []
    for i in range(n_nodes):
        outs.append("y" if n_nodes == 1 else f"a{i}")
        nodes.append(
            helper.make_node(
                "GroupQueryAttention",
                ["qkv", "", "", "", "", "seqlens_k", "total_len"],
                [outs[-1]],
                domain="com.microsoft",
                name=f"gqa{i}",
                num_heads=heads,
                kv_num_heads=heads,
                causal=0,
                scale=(1 + i / 100) / math.sqrt(head),
            )
        )
    if n_nodes > 1:
        nodes.append(helper.make_node("Sum", outs, ["y"]))
    feeds = {
        "qkv": rng.standard_normal((1, tokens, 3 * heads * head)).astype(np.float32),
        "seqlens_k": np.array([tokens - 1], np.int32),
        "total_len": np.array(tokens, np.int32),
    }
    graph_inputs = [
        _vi("qkv", feeds["qkv"].shape),
        _vi("seqlens_k", [1], TensorProto.INT32),
        _vi("total_len", [], TensorProto.INT32),
    ]
    return _save(nodes, graph_inputs, [_vi("y", (1, tokens, heads * head))], [], path, contrib=True), feeds


def _norms(path: Path, rows: int, hidden: int, n_nodes: int) -> Path:
    """Alternating LayerNormalization and SkipSimplifiedLayerNormalization (the BERT and Llama kinds)."""
    from onnx import helper, numpy_helper

    shape = [1, rows, hidden]
    inits, nodes, prev = [], [], "x"
    for i in range(n_nodes):
        inits.append(numpy_helper.from_array(np.full(hidden, 1 + i / 100, np.float32), f"g{i}"))
        out = "y" if i == n_nodes - 1 else f"h{i}"
        if i % 2:
            nodes.append(
                helper.make_node(
                    "SkipSimplifiedLayerNormalization",
                    [prev, "x", f"g{i}"],
                    [out],
                    domain="com.microsoft",
                    epsilon=1e-6,
                )
            )
        else:
            inits.append(numpy_helper.from_array(np.zeros(hidden, np.float32), f"b{i}"))
            nodes.append(helper.make_node("LayerNormalization", [prev, f"g{i}", f"b{i}"], [out], axis=-1))
        prev = out
    return _save(nodes, [_vi("x", shape)], [_vi("y", shape)], inits, path, contrib=True)


def _lrn(path: Path, channels: int, size: int) -> Path:
    from onnx import helper

    shape = [1, channels, size, size]
    node = helper.make_node("LRN", ["x"], ["y"], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    return _save([node], [_vi("x", shape)], [_vi("y", shape)], [], path)


_SUITE_CACHE: dict[str, list[SuiteCase]] = {}


def suite() -> list[SuiteCase]:
    """The timing suite, built once per process in a temporary directory removed at exit."""
    if "suite" not in _SUITE_CACHE:
        import atexit
        import shutil
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="edgekit-calibration-"))
        atexit.register(shutil.rmtree, work, True)
        _SUITE_CACHE["suite"] = build_suite(work)
    return _SUITE_CACHE["suite"]


def _conv_graphs(work: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """The suite's convolution cases (dense, Clip pass, call cost, depthwise, stem): name -> (graph, feed shapes)."""
    return {
        "conv_fp32": (_bottleneck(work / "cal_conv_fp32.onnx", 28, 256, 64, 6), {"x": (1, 256, 28, 28)}),
        "conv_wide": (_convs(work / "cal_conv_wide.onnx", 256, 14, 1, 10), {"x": (1, 256, 14, 14)}),
        # many output rows per FLOP (MobileNet's narrow pointwise convs): separates the cost per row from the rate
        "conv_narrow": (
            _depthwise(work / "cal_conv_narrow.onnx", 32, 56, 3, 27, group=1, k=1),
            {"x": (1, 32, 56, 56)},
        ),
        # MobileNet-v2's 24 <-> 144 expand / project pair at 56x56: equal FLOPs and bytes, 6x the rows one way,
        # so it tells a cost per row from a cost per byte of activations
        "conv_expand": (_pointwise_pair(work / "cal_conv_expand.onnx", 24, 144, 56, 30), {"x": (1, 24, 56, 56)}),
        # the same with Relu6: MLAS applies Clip in a second pass over each output block; the pair's difference
        # is that pass's rate
        "conv_expand_relu6": (
            _pointwise_pair(work / "cal_conv_expand_relu6.onnx", 24, 144, 56, 30, relu6=True),
            {"x": (1, 24, 56, 56)},
        ),
        "conv_tiny": (_convs(work / "cal_conv_tiny.onnx", 16, 8, 4, 11), {"x": (1, 16, 8, 8)}),
        "conv_depthwise": (_depthwise(work / "cal_conv_depthwise.onnx", 144, 56, 3, 16), {"x": (1, 144, 56, 56)}),
        "conv_depthwise_small": (
            _depthwise(work / "cal_conv_depthwise_small.onnx", 384, 14, 3, 23),
            {"x": (1, 384, 14, 14)},
        ),
        "conv_stem": (_stem(work / "cal_conv_stem.onnx", 32, 224, 24), {"x": (1, 3, 224, 224)}),
    }


# The cases the per-run, per-binding, per-node and per-call costs come from last microseconds, and a call of
# one made once after the other cases' runs is slower than the model's back-to-back runs. On the 2-vCPU Xeon a bare
# one-Relu graph was estimated at 7.3 us from such calls and measured at 4.6 us, and the digits CNN (7 nodes,
# ~14 us) at +25..+31 % in four benchmark runs (suite v21). Each pass times HOT_CALLS calls of them in a row, each
# call one sample, as the model's runs are: +10..+17 % in six runs (v22).
HOT_CASES = frozenset({"run", "nodes", "io", "conv_tiny", "gemm_tiny"})
HOT_CALLS = 8


# A pass over the suite takes some 10-20 ms here; one runs after every block of timed runs of the model.
def build_suite(work: Path) -> list[SuiteCase]:
    """Write the timing suite's graphs and feeds under ``work`` and analyse what ONNX Runtime will run."""
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = {
        "run": (_matmuls(work / "cal_run.onnx", 1, 4, 1, 0), {"x": (1, 4)}),
        "nodes": (_shape_ops(work / "cal_nodes.onnx", 10), {"x": (1, 16)}),
        "io": (_many_io(work / "cal_io.onnx", 8), {f"x{i}": (1, 4) for i in range(8)}),
        "stream_small": (_chain(work / "cal_stream_small.onnx", ["Add", "Mul"], 16, [1, 16384], 2), {"x": (1, 16384)}),
        "stream_large": (_chain(work / "cal_stream_large.onnx", ["Add", "Mul"], 8, [1, 262144], 3), {"x": (1, 262144)}),
        "vector": (_chain(work / "cal_vector.onnx", ["Erf"], 4, [1, 65536], 4), {"x": (1, 65536)}),
        "quick_gelu": (_chain(work / "cal_quick_gelu.onnx", ["QuickGelu"], 4, [1, 65536], 29), {"x": (1, 65536)}),
        # GoogLeNet's first LRN (0.8 MB): ORT's LRN ran 1.23 GFLOP/s on 32x28x28, 1.13-1.14 on 64 and 192 x 56x56
        # here (2 threads); the small case put AlexNet's and Inception-v1's LRNs at -12..-13 %
        "lrn": (_lrn(work / "cal_lrn.onnx", 64, 56), {"x": (1, 64, 56, 56)}),
        "gemm_fp32": (_ffn(work / "cal_gemm_fp32.onnx", 32, 384, 1536, 5), {"x": (32, 384)}),
        # the same GEMMs over weights beyond the last-level cache and over one block's weights: their difference
        # is what the stream costs, apart from the gemm_fp32 rate and the run's overheads
        "gemm_fp32_dram": (
            _ffn(work / "cal_gemm_fp32_dram.onnx", 32, 384, 1536, 28, blocks=streamed_gemm_blocks()),
            {"x": (32, 384)},
        ),
        "gemm_fp32_cached": (
            _ffn(work / "cal_gemm_fp32_cached.onnx", 32, 384, 1536, 28, blocks=streamed_gemm_blocks(), shared=True),
            {"x": (32, 384)},
        ),
        **_conv_graphs(work),
        "pad": (_pad(work / "cal_pad.onnx", 96, 56), {"x": (1, 96, 56, 56)}),
        # ShuffleNet v2's stage-2 and stage-4 shapes: the bandwidth of copy ops
        "copy_large": (_shuffle_units(work / "cal_copy_large.onnx", 116, 28, 3), {"x": (1, 116, 28, 28)}),
        "copy_small": (_shuffle_units(work / "cal_copy_small.onnx", 464, 7, 3), {"x": (1, 464, 7, 7)}),
        "pool_nchw": (_maxpool(work / "cal_pool_nchw.onnx", 58, 56), {"x": (1, 58, 56, 56)}),
        # 58 channels (ShuffleNet v2's), a multiple of neither NCHWc block (8, 16): the host runs these in NCHW
        "conv_nchw": (_depthwise(work / "cal_conv_nchw.onnx", 58, 28, 3, 17, group=1, k=1), {"x": (1, 58, 28, 28)}),
        "conv_nchw_dw": (_depthwise(work / "cal_conv_nchw_dw.onnx", 58, 28, 3, 18), {"x": (1, 58, 28, 28)}),
        # the speed probe (speed.py): ~0.1-0.2 ms of blocked convolution and Relu on the model's thread pool
        PROBE_CASE: (_convs(work / "cal_probe.onnx", 64, 14, 2, 19), {"x": (1, 64, 14, 14)}),
        "gemm_tiny": (_matmuls(work / "cal_gemm_tiny.onnx", 1, 64, 8, 12), {"x": (1, 64)}),
        # 4x the last-level cache of weights, one row through them: beyond it, bound by DRAM bandwidth
        "weights_dram": (_matmuls(work / "cal_weights_dram.onnx", 1, 1024, dram_layers(), 13), {"x": (1, 1024)}),
        "normalization": (_norms(work / "cal_normalization.onnx", 64, 128, 8), {"x": (1, 64, 128)}),
        "attention_prefill": _gqa(work / "cal_attention_prefill.onnx", 64, 0, 4, 14),
        "attention_decode": _gqa(work / "cal_attention_decode.onnx", 1, 64, 4, 15),
        "attention_encoder": _encoder_gqa(work / "cal_attention_encoder.onnx", 64, 4, 20),
        "attention_encoder_short": _encoder_gqa(work / "cal_attention_encoder_short.onnx", 16, 4, 21),
    }
    # int8 weights of INT8_GEMM_BLOCKS blocks (10.6 MB at 8): beyond a core's L2, as an int8 model's are. FFN
    # GEMMs over 1.2 MB of int8 weights ran 1.19-1.31x faster than the same over 9.4 MB (Zen 4, 1 MB of L2 per
    # core, M = 32), and a one-block case had put MiniLM int8's 10.6 MB of GEMMs 13-20 % too fast.
    int8_src = _ffn(work / "cal_gemm_int8_src.onnx", 32, 384, 1536, 25, blocks=INT8_GEMM_BLOCKS)
    paths["gemm_int8"] = (_quantized(int8_src, work / "cal_gemm_int8.onnx"), {"x": (32, 384)})
    cases = []
    for name, (path, shapes) in paths.items():
        feeds = {
            k: v if isinstance(v, np.ndarray) else rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()
        }
        feeds_file = work / f"cal_{name}.npz"
        np.savez(feeds_file, **feeds)
        portable = runtime_graph(path, work / f"cal_{name}.runtime.onnx")
        analysis = analyze(portable, feeds=feeds)
        # the host's NCHWc reorders are timed apart (as in the models), not folded into the conv rates
        (reorders,) = layout.host_layout_nodes(path, work / f"cal_{name}.host.onnx", [analysis], portable=portable)
        cases.append(
            SuiteCase(
                name=name,
                path=path,
                feeds_file=feeds_file,
                budget_s=0.0,
                analysis=layout.with_layout(analysis, reorders),
                probe=name == PROBE_CASE,
                calls=HOT_CALLS if name in HOT_CASES else 1,
            )
        )
    return cases


def suite_job_entries(cases: Sequence[SuiteCase]) -> list[dict[str, Any]]:
    return [
        {
            "name": c.name,
            "path": str(c.path),
            "feeds_file": str(c.feeds_file),
            "budget_s": c.budget_s,
            "probe": c.probe,
            "calls": c.calls,
        }
        for c in cases
    ]


# ------------------------------------------------------------------------------------------ fitting


def _positive(value: float, floor: float) -> float:
    return value if math.isfinite(value) and value > floor else floor


# The weights_dram case's size: four times the reported last-level cache, within these bounds. Why: weights that
# fit the cache stream at its rate even when the case runs right after the model's runs (on the 2-vCPU Xeon here,
# 1024 x 1024 fp32 MatMuls alone: 44 GB/s at 50 MB, 40 at 101 MB, 27-29 at 168 MB, 25 at 201-268 MB; the 48 MB
# case read 25-29 GB/s interleaved, so AlexNet's 244 MB of weights moved 10-20 % between runs). The floor keeps
# small hosts' case as it was (4 MB caches: 48 MB), the ceiling its session's memory in bounds on a VM whose
# sysfs reports the socket's 480 MiB.
DRAM_CASE_BYTES = (48 << 20, 168 << 20)
INT8_GEMM_BLOCKS = 8
_DRAM_LAYER_BYTES = 1024 * 1024 * 4


# The gemm_fp32_dram case's gemm_fp32 blocks of weights (5.3 MB each): ~1.25x the reported last-level cache,
# within these counts. Why past the cache and no further: on Zen 4 (32 MB L3, 2 threads, M = 32) distinct FFN
# weights of 9 / 14 / 28 / 42 / 56 / 75 MB ran 1.06 / 1.14 / 1.24 / 1.24 / 1.29 / 1.28x one 4.7 MB set, level
# from about the cache's size on; the ceiling keeps the pass short where a VM reports the socket's 480 MiB.
STREAMED_GEMM_BLOCKS = (4, 14)
_FFN_BLOCK_BYTES = (384 * 384 + 2 * 384 * 1536) * 4


def streamed_gemm_blocks() -> int:
    """How many blocks of FFN weights the gemm_fp32_dram case holds (see STREAMED_GEMM_BLOCKS)."""
    low, high = STREAMED_GEMM_BLOCKS
    return min(max(math.ceil(1.25 * last_level_cache_bytes() / _FFN_BLOCK_BYTES), low), high)


def dram_layers() -> int:
    """How many 1024 x 1024 fp32 weights the weights_dram case streams (see DRAM_CASE_BYTES)."""
    low, high = DRAM_CASE_BYTES
    return min(max(4 * last_level_cache_bytes(), low), high) // _DRAM_LAYER_BYTES


def last_level_cache_bytes(default: int = 8 << 20) -> int:
    """The largest CPU cache Linux reports (sysfs), else ``default``."""
    best = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            best = max(best, int(digits) * scale)
    return best or default


def case_times(
    samples_ms: Mapping[str, Sequence[float]],
    probes_ms: Mapping[str, Sequence[float]] | None = None,
    reference_ms: float = 0.0,
) -> dict[str, float]:
    """Each case's time (ms): ``CASE_QUANTILE`` of its samples, each at the reference speed (``speed.normalised``:
    x reference / the probe timed beside it) when probes are given."""
    probes_ms = probes_ms or {}
    return {
        k: speed.quantile(speed.normalised(v, probes_ms.get(k, ()), reference_ms), CASE_QUANTILE)
        for k, v in samples_ms.items()
        if v
    }


def _fixed_costs(t: Mapping[str, float], by: Mapping[str, SuiteCase]) -> tuple[float, float, float]:
    """Per-node dispatch, the fixed cost of a run and of binding one graph input or output, in seconds."""
    n_chain = max(1, len(by["nodes"].analysis.nodes))
    n_run = max(1, len(by["run"].analysis.nodes))
    node_s = _positive((t["nodes"] - t["run"]) / 1e3 / max(1, n_chain - n_run), 1e-7)
    run_s = _positive(t["run"] / 1e3 - n_run * node_s, 1e-6)
    # binding one more graph input or output: the io case has 16 of them, the run case 2
    io_case = by["io"].analysis
    io_count = len(io_case.input_shapes) + io_case.output_count
    io_s = _positive((t["io"] - t["run"]) / 1e3 - (len(io_case.nodes) - n_run) * node_s, 0.0) / max(1, io_count - 2)
    return node_s, max(run_s - 2 * io_s, 1e-6), io_s


@dataclass(frozen=True, kw_only=True)
class _Solver:
    """The case timings and the factors solved so far; each method solves one more from them."""

    by: Mapping[str, SuiteCase]
    t: Mapping[str, float]  # seconds per case are t[name] / 1e3
    threads: int
    node_s: float
    run_s: float
    io_s: float
    bw: float = 0.0
    par_s: float = 0.0
    small_bw: float = 0.0  # bytes per second of nodes moving up to small_bytes (stream_small's rate)
    small_bytes: int = 0

    def nodes(self, name: str) -> tuple[NodeCost, ...]:
        return self.by[name].analysis.nodes

    def streamed(self) -> _Solver:
        """Threaded elementwise: T = run + n * (c_par + bytes / bw) at two sizes -> bw, c_par."""
        small, large = self.nodes("stream_small"), self.nodes("stream_large")
        b_small = sum(n.bytes_moved for n in small) / max(1, len(small))
        b_large = sum(n.bytes_moved for n in large) / max(1, len(large))
        per_small = (self.t["stream_small"] / 1e3 - self.run_s) / max(1, len(small))
        per_large = (self.t["stream_large"] / 1e3 - self.run_s) / max(1, len(large))
        bw = _positive((b_large - b_small) / max(per_large - per_small, 1e-9), 1e8)
        par_s = max(self.node_s, per_small - b_small / bw) if self.threads > 1 else self.node_s
        par_s = min(par_s, 50 * self.node_s + 20e-6)  # a preempted sample can not make every node cost a time slice
        # The small case at its own rate: on one thread a stream_large node's 2 MB outgrow the core's L2 and bw
        # is the L3's (~24 GB/s here) while 128 kB stay in L2; on more threads par_s takes up the difference
        # and the two rates agree. Never below bw: a smaller working set is not slower.
        dispatch = sum(par_s if is_parallel(n, self.threads) else self.node_s for n in small) / max(1, len(small))
        small_bw = max(bw, b_small / max(per_small - dispatch, 1e-9))
        small_bytes = int(math.sqrt(b_small * b_large))  # nodes nearer the small case's size than the large one's
        return replace(self, bw=bw, par_s=par_s, small_bw=small_bw, small_bytes=small_bytes)

    def overhead(self, ns: Sequence[NodeCost]) -> float:
        return sum(self.par_s if is_parallel(n, self.threads) else self.node_s for n in ns)

    def rate(self, name: str, kinds: set[NodeKind], precision: str | None = None) -> float:
        ns = self.nodes(name)
        target = [n for n in ns if n.kind in kinds]
        others = [n for n in ns if n.kind not in kinds]
        flops = sum((n.flops.get(precision, 0) if precision else n.total_flops) for n in target)
        # the non-target nodes (the quantizer of the int8 case, Relu...) are memory-bound by the model so far
        rest = sum(n.bytes_moved / self.bw for n in others)
        remainder = self.t[name] / 1e3 - self.run_s - self.overhead(ns) - rest
        floor = flops / (self.t[name] / 1e3)  # the rate if nothing else took time: a hard lower bound
        ceiling = floor * 4  # overheads cannot explain more than three quarters of a compute case
        return min(_positive(flops / max(remainder, 1e-9), floor), ceiling) / 1e9

    def call_cost(self, name: str, kind: NodeKind, seconds_per_flop: Any) -> float:
        """A kernel's fixed cost per call beyond plain dispatch, from a case of tiny ones (0 if noise hides it)."""
        ns = self.nodes(name)
        target = [n for n in ns if n.kind == kind]
        rest = sum(n.bytes_moved / self.bw for n in ns if n.kind != kind)
        work = sum(seconds_per_flop(n) for n in target)
        left = self.t[name] / 1e3 - self.run_s - 2 * self.io_s - self.overhead(ns) - rest - work
        return max(0.0, left / max(1, len(target)))

    def nchw_convs(self, conv_call_s: float) -> dict[str, float]:
        """The rate and per-group cost of convolutions left in NCHW: T = flops / R + groups x g in a dense and
        a depthwise case; none (the usual conv rates apply) on a host that runs even the dense-conv case in NCHW
        (no NCHWc kernels: every conv is NCHW there, and the conv curve describes them), or if the two do not
        separate."""
        if any(n.nchw_on_host for n in self.nodes("conv_fp32")):
            return {}
        rows = []
        for name in ("conv_nchw", "conv_nchw_dw"):
            if name not in self.t:
                return {}
            ns = self.nodes(name)
            convs = [n for n in ns if n.nchw_on_host]
            if not convs:
                return {}
            rest = sum(n.bytes_moved / self.bw for n in ns if n not in convs)
            left = self.t[name] / 1e3 - self.run_s - 2 * self.io_s - self.overhead(ns) - rest - conv_call_s * len(convs)
            rows.append((sum(n.total_flops for n in convs), sum(n.groups for n in convs), left))
        solved = _solve2(*rows)
        if solved is None or solved[0] <= 0:
            return {}
        inv_rate, group_s = solved
        return {"nchw_conv_gflops": 1.0 / inv_rate / 1e9, "nchw_group_us": max(0.0, group_s) * 1e6}

    def left_s(self, name: str, target: Sequence[NodeCost], per_call_s: float = 0.0) -> float:
        """A case's time minus its run, binding, dispatch and non-target nodes (memory-bound) and the target
        nodes' known cost per call: what the targets' own work took."""
        ns = self.nodes(name)
        rest = sum(n.bytes_moved / self.bw for n in ns if n not in target)
        return self.t[name] / 1e3 - self.run_s - 2 * self.io_s - self.overhead(ns) - rest - per_call_s * len(target)

    def depthwise(self, conv_call_s: float) -> dict[str, float]:
        """Depthwise rate and cost per output row, T = flops / R + rows x c, from a large and a small map; one
        rate from the large map alone (c = 0) when the small case is missing or the two do not separate.

        Per row, not per call: MLAS runs a depthwise convolution one output row of one channel block at a time.
        Chains of 20 on Zen 4 (1 thread) ran 131 / 26 / 34 / 12.6 / 6.6 us per conv at 144x56x56, 96x28x28,
        384x14x14, 116x14x14 and 232x7x7; a fixed cost per call fitted on the first and third put the last two at
        2-3x their time, the cost per row within -14..+17 %."""
        if "conv_depthwise" not in self.t:
            return {}
        single = {"depthwise_gflops": self.rate("conv_depthwise", {NodeKind.CONV}, "fp32")}
        rows = []
        for name in ("conv_depthwise", "conv_depthwise_small"):
            if name not in self.t:
                return single
            convs = [n for n in self.nodes(name) if n.kind == NodeKind.CONV]
            left = self.left_s(name, convs, conv_call_s)
            rows.append((sum(n.total_flops for n in convs), sum(n.output_rows for n in convs), left))
        solved = _solve2(*rows)  # (1 / R, c)
        if solved is None or solved[0] <= 0 or solved[1] < 0:
            return single
        return {"depthwise_gflops": 1.0 / solved[0] / 1e9, "depthwise_row_ns": solved[1] * 1e9}

    def own_rate(
        self, name: str, wanted: Callable[[NodeCost], bool], amount: Callable[[NodeCost], int], per_call_s: float = 0.0
    ) -> float:
        """Giga-units (``amount``: flops or bytes) per second of case ``name``'s ``wanted`` nodes, from the time
        left to them (:meth:`left_s`); 0 without the case or without such nodes."""
        if name not in self.t:
            return 0.0
        targets = [n for n in self.nodes(name) if wanted(n)]
        if not targets:
            return 0.0
        total = sum(amount(n) for n in targets)
        floor = total / (self.t[name] / 1e3)  # the rate if nothing else took time
        return _positive(total / max(self.left_s(name, targets, per_call_s), 1e-9), floor) / 1e9

    def stem(self, conv_call_s: float) -> float:
        """GFLOP/s of the RGB stem case's convolution."""
        return self.own_rate("conv_stem", lambda n: n.kind == NodeKind.CONV, lambda n: n.total_flops, conv_call_s)

    def pad(self) -> float:
        """GB/s (read + written) of the Pad case."""
        return self.own_rate("pad", lambda n: n.op_type == "Pad", lambda n: n.bytes_moved)

    def copy_bandwidth(self) -> float:
        """Bytes per second of copy ops over both shuffle cases (the time left after run, binding and dispatch;
        Reshape moves nothing); 0 without them (copies then stream at the elementwise rate). No other case has
        copy ops of that size, so the fits before and after it take every memory-bound node at the stream rate."""
        if "copy_large" not in self.t or "copy_small" not in self.t:
            return 0.0
        moved = left = 0.0
        for name in ("copy_large", "copy_small"):
            ns = self.nodes(name)
            moved += sum(n.bytes_moved for n in ns if is_copy(n))
            left += self.t[name] / 1e3 - self.run_s - 2 * self.io_s - self.overhead(ns)
        floor = moved / ((self.t["copy_large"] + self.t["copy_small"]) / 1e3)
        return _positive(moved / max(left, 1e-9), floor)

    def nchw_pool(self) -> float:
        """GFLOP/s of the pooling case where this host leaves it in NCHW (0 where the case's pool is blocked:
        no separate rate there)."""
        return self.own_rate("pool_nchw", lambda n: n.nchw_on_host, lambda n: n.total_flops)

    def effective_cache_bytes(self, reported: int, weights_bw: float) -> int:
        """The cache a model's weights stay in between runs: the reported last-level cache, unless the
        weights_dram case's weights fit in it yet streamed at under half the L2-resident rate. A VM's
        sysfs gives the whole socket's L3 (480 MiB on the 2-vCPU Xeon here, where a 48 MB case of weights
        ran at ~26 GB/s against ~75 GB/s in cache): its share is smaller than the case, so the case's size caps it."""
        case_bytes = sum(n.weight_bytes for n in self.nodes("weights_dram")) if "weights_dram" in self.t else 0
        cached_bw = max(self.small_bw, self.bw)  # L2-resident streaming: on one thread bw is already the L3's
        if 0 < case_bytes <= reported and weights_bw < 0.5 * cached_bw:
            return case_bytes
        return reported

    def activation_pass(self) -> float:
        """GB/s of the pass a blocked convolution makes over its output for an activation its kernel does not
        apply (Clip): the Relu6 expand pair's time over the Relu one's, per byte read and written; 0 when the
        pair is not timed or the difference is noise."""
        if "conv_expand" not in self.t or "conv_expand_relu6" not in self.t:
            return 0.0
        passes = [n for n in self.nodes("conv_expand_relu6") if n.kind == NodeKind.CONV and n.activation == "Clip"]
        moved = sum(2 * n.output_elements * layout.NCHWC_FLOAT_BYTES for n in passes)
        extra_s = (self.t["conv_expand_relu6"] - self.t["conv_expand"]) / 1e3
        # slower than the streaming rate / 4 or faster than 8x it: not a measurement of the pass
        if moved == 0 or not self.bw / 4 <= moved / max(extra_s, 1e-12) <= 8 * self.bw:
            return 0.0
        return moved / extra_s / 1e9

    def streamed_gemm(self) -> float:
        """Microseconds per MB (10^6 bytes) of weights an fp32 GEMM pays on top of its in-cache time when they
        come from DRAM: gemm_fp32_dram's time less gemm_fp32_cached's (the same GEMMs over one block's weights),
        per byte of the former's weights; 0 without the pair or where the stream ran no slower.

        Added, not max(compute, memory): at M = 1..64 rows, 57 MB of distinct 384x1536 / 1536x384 weights
        ran 0.9-1.4 ms slower than one 4.7 MB set repeated (Zen 4, 2 threads), 16-24 us per MB whatever the
        compute, near 1 / DRAM bandwidth - 1 / cache bandwidth: the kernels do not hide the stream. A pair,
        not the gemm_fp32 rate: fitted against that rate the excess came out at 3.5-9 us per MB in the suite."""
        if "gemm_fp32_dram" not in self.t or "gemm_fp32_cached" not in self.t:
            return 0.0
        excess_s = (self.t["gemm_fp32_dram"] - self.t["gemm_fp32_cached"]) / 1e3
        weight_bytes = sum(n.weight_bytes for n in self.nodes("gemm_fp32_dram") if n.kind == NodeKind.GEMM)
        return max(0.0, excess_s) / max(1, weight_bytes) * 1e12

    def dram_bandwidth(self) -> float:
        """Bytes per second of weights streamed from DRAM (the weights_dram case), the rest at cache bandwidth."""
        dram = self.nodes("weights_dram")
        weight_bytes = sum(n.weight_bytes for n in dram)
        dram_s = (
            self.t["weights_dram"] / 1e3
            - self.run_s
            - 2 * self.io_s
            - self.overhead(dram)
            - sum(n.activation_bytes / self.bw for n in dram)
        )
        return _positive(weight_bytes / max(dram_s, 1e-9), 1e8)


def fit(
    cases: Sequence[SuiteCase],
    samples_ms: Mapping[str, Sequence[float]],
    threads: int,
    *,
    probes_ms: Mapping[str, Sequence[float]] | None = None,
    reference_ms: float = 0.0,
) -> HostEfficiency:
    """Solve the factors one case at a time, each from the cases before it (see the module table).

    Each case's time is ``case_times``': its samples, taken between the model's own timed runs, normalised to
    the reference speed by the probe beside each (``reference_ms``: the median probe over the model's runs),
    then their ``CASE_QUANTILE``. The factors then describe this host at the speed the model's check figure is
    normalised to.
    """
    by = {c.name: c for c in cases if not c.probe}
    t = {k: v for k, v in case_times(samples_ms, probes_ms, reference_ms).items() if k in by}
    node_s, run_s, io_s = _fixed_costs(t, by)
    sv = _Solver(by=by, t=t, threads=threads, node_s=node_s, run_s=run_s, io_s=io_s).streamed()
    conv = _conv_fit({name: sv.nodes(name) for name in CONV_FIT_CASES if name in t}, t, run_s, sv.overhead, sv.bw)
    gemm32 = sv.rate("gemm_fp32", {NodeKind.GEMM}, "fp32")
    conv_call = sv.call_cost("conv_tiny", NodeKind.CONV, conv.seconds)
    dram_bw = sv.dram_bandwidth()
    gemm_call = sv.call_cost("gemm_tiny", NodeKind.GEMM, lambda n: n.total_flops / (gemm32 * 1e9))
    att_rate, att_call = _attention_fit(
        by["attention_prefill"].analysis, by["attention_decode"].analysis, t, run_s, io_s, sv.overhead, sv.bw, gemm32
    )
    bi_rate, bi_call = _attention_fit(
        by["attention_encoder"].analysis,
        by["attention_encoder_short"].analysis,
        t,
        run_s,
        io_s,
        sv.overhead,
        sv.bw,
        att_rate,
        names=("attention_encoder", "attention_encoder_short"),
    )
    return HostEfficiency(
        run_overhead_ms=run_s * 1e3,
        io_overhead_us=io_s * 1e6,
        node_overhead_us=node_s * 1e6,
        parallel_node_overhead_us=sv.par_s * 1e6,
        bandwidth_gbps=sv.bw / 1e9,
        small_bandwidth_gbps=sv.small_bw / 1e9,
        small_bytes=sv.small_bytes,
        dram_bandwidth_gbps=dram_bw / 1e9,
        cache_bytes=sv.effective_cache_bytes(last_level_cache_bytes(), dram_bw),
        vector_gflops=sv.rate("vector", {NodeKind.ELEMENTWISE, NodeKind.OTHER, NodeKind.NORMALIZATION}),
        quick_gelu_gflops=sv.rate("quick_gelu", {NodeKind.ELEMENTWISE}) if "quick_gelu" in t else 0.0,
        lrn_gflops=sv.rate("lrn", {NodeKind.LRN}),
        normalization_gflops=sv.rate("normalization", {NodeKind.NORMALIZATION}),
        **sv.depthwise(conv_call),
        stem_gflops=sv.stem(conv_call),
        pad_gbps=sv.pad(),
        copy_gbps=sv.copy_bandwidth() / 1e9,
        nchw_pool_gflops=sv.nchw_pool(),
        **sv.nchw_convs(conv_call),
        gemm_gflops={"fp32": gemm32, "int8": sv.rate("gemm_int8", {NodeKind.GEMM}, "int8")},
        conv_gflops={"fp32": sv.rate("conv_fp32", {NodeKind.CONV}, "fp32")},
        conv_peak_gflops=conv.peak_gflops,
        conv_half_reduction=conv.half_reduction,
        conv_row_ns=conv.row_ns,
        conv_activation_gbps=conv.activation_gbps,
        activation_pass_gbps=sv.activation_pass(),
        streamed_gemm_us_per_mb=sv.streamed_gemm(),
        attention_gflops=att_rate,
        bidirectional_attention_gflops=bi_rate,
        bidirectional_attention_call_us=bi_call * 1e6,
        call_overhead_us={
            NodeKind.CONV: conv_call * 1e6,
            NodeKind.GEMM: gemm_call * 1e6,
            NodeKind.ATTENTION_CORE: att_call * 1e6,
        },
        threads=threads,
        timings_ms=dict(t),
    )


def _solve2(row1: Sequence[float], row2: Sequence[float]) -> tuple[float, float] | None:
    """(x, y) with a x + b y = t for both rows (a, b, t); None when the two cases do not separate them."""
    a1, b1, t1 = row1
    a2, b2, t2 = row2
    det = a1 * b2 - a2 * b1
    if det == 0:
        return None
    return (t1 * b2 - t2 * b1) / det, (a1 * t2 - a2 * t1) / det


CONV_FIT_CASES = ("conv_fp32", "conv_wide", "conv_narrow", "conv_expand")


def _least_squares2(rows: Sequence[Sequence[float]]) -> tuple[float, float] | None:
    """(x, y) minimising the sum of ((a x + b y - t) / t)^2 over the rows (a, b, t): each case weighs by its
    relative error, so a long case does not outvote a short one; None when the rows do not separate x and y."""
    if len(rows) == 2:
        return _solve2(rows[0], rows[1])
    scaled = [(a / t, b / t) for a, b, t in rows if t > 0]
    saa = sum(a * a for a, _ in scaled)
    sab = sum(a * b for a, b in scaled)
    sbb = sum(b * b for _, b in scaled)
    return _solve2((saa, sab, sum(a for a, _ in scaled)), (sab, sbb, sum(b for _, b in scaled)))


@dataclass(frozen=True)
class ConvFit:
    """A dense blocked convolution's time: FLOPs at ``peak_gflops`` x r / (r + ``half_reduction``), plus
    ``row_ns`` per output row, plus its activation bytes at ``activation_gbps`` (0: no such term)."""

    peak_gflops: float
    half_reduction: float = 0.0
    row_ns: float = 0.0
    activation_gbps: float = 0.0

    def seconds(self, n: NodeCost) -> float:
        r = n.reduction or 1.0
        compute = n.total_flops / (self.peak_gflops * 1e9) * (1 + self.half_reduction / r)
        traffic = n.activation_bytes / (self.activation_gbps * 1e9) if self.activation_gbps > 0 else 0.0
        return compute + n.output_rows * self.row_ns / 1e9 + traffic

    def relative_rms(self, cases: Sequence[tuple[Sequence[NodeCost], float]]) -> float:
        """The fit's rms relative error over (convs, seconds) cases."""
        errs = [(sum(self.seconds(n) for n in ns) - ts) / ts for ns, ts in cases if ts > 0]
        return math.sqrt(sum(e * e for e in errs) / max(1, len(errs)))


class _ConvCase(NamedTuple):
    """One conv fit case's dense convolutions, summed, and the time left to them (seconds)."""

    convs: list[NodeCost]
    flops: float
    per_reduction: float  # sum of flops / reduction: the curve's second term
    rows: float
    activation_bytes: float
    seconds: float


# Chains of 24 shapes on Zen 4 (1x1 C -> C and MobileNet's expand/project pairs, 16-960 channels at 7x7-112x112,
# 3x3 at 7x7-56x56; 2 threads, one interleaved process): a rate and a cost per output row fitted all of them
# with an rms error of 14 % (18 of 24 within 10 %), a rate curve of the reduction length 26 % (7 of 24): the
# curve overstated 3x3 convolutions on large maps by 18-25 % and understated 14x14 and 7x7 ones by 20-48 %.
# On the Xeon (AMX, 2 threads, 50 convolutions of 19 shapes, ORT's kernel times) the cost went by the bytes of
# activations, not the rows: 24 -> 144 and 144 -> 24 at 56x56 (6x the rows, equal FLOPs and bytes) ran
# 118-128 and 116 us. Fitted on the four cases, rate + cost per row put the 50 at 22 % rms, rate + activation
# bytes (43 us per M elements) at 11.5 %; so both are fitted and the one that fits the cases better is kept.
def _conv_fit(
    cases: Mapping[str, Sequence[NodeCost]], t: Mapping[str, float], run_s: float, overhead: Any, bw: float
) -> ConvFit:
    """Fit the dense-convolution time to the cases (``CONV_FIT_CASES``) by least squares: T = flops / R plus
    rows x c or plus activation bytes / B, whichever fits the cases better; where neither has a sensible
    solution (noise), the curve rate(r) = R x r / (r + r0); else one rate."""

    def sums(ns: Sequence[NodeCost], name: str) -> _ConvCase:
        convs = [n for n in ns if n.kind == NodeKind.CONV and n.reduction > 0]
        rest = sum(n.bytes_moved / bw for n in ns if n.kind != NodeKind.CONV)
        return _ConvCase(
            convs=convs,
            flops=sum(n.total_flops for n in convs),
            per_reduction=sum(n.total_flops / n.reduction for n in convs),
            rows=sum(n.output_rows for n in convs),
            activation_bytes=sum(n.activation_bytes for n in convs),
            seconds=t[name] / 1e3 - run_s - overhead(ns) - rest,
        )

    rows = [sums(ns, name) for name, ns in cases.items()]
    timed = [(r.convs, r.seconds) for r in rows]
    if len(rows) >= 2:
        fits = []
        by_rows = _least_squares2([(r.flops, r.rows, r.seconds) for r in rows])  # (1 / R, c)
        if by_rows is not None and by_rows[0] > 0 and by_rows[1] >= 0:
            fits.append(ConvFit(peak_gflops=1 / by_rows[0] / 1e9, row_ns=by_rows[1] * 1e9))
        by_bytes = _least_squares2([(r.flops, r.activation_bytes, r.seconds) for r in rows])  # (1 / R, 1 / B)
        if by_bytes is not None and by_bytes[0] > 0 and by_bytes[1] > 0:
            fits.append(ConvFit(peak_gflops=1 / by_bytes[0] / 1e9, activation_gbps=1 / by_bytes[1] / 1e9))
        if fits:
            return min(fits, key=lambda fit: fit.relative_rms(timed))
        curve = _least_squares2([(r.flops, r.per_reduction, r.seconds) for r in rows])  # (1 / R, r0 / R)
        if curve is not None and curve[0] > 0 and curve[1] >= 0:
            return ConvFit(peak_gflops=1 / curve[0] / 1e9, half_reduction=curve[1] / curve[0])
    total_f, total_t = sum(r.flops for r in rows), max(sum(r.seconds for r in rows), 1e-9)
    return ConvFit(peak_gflops=total_f / total_t / 1e9)


def _attention_fit(
    first: StaticAnalysis,
    second: StaticAnalysis,
    t: Mapping[str, float],
    run_s: float,
    io_s: float,
    overhead: Any,
    bw: float,
    fallback_gflops: float,
    names: tuple[str, str] = ("attention_prefill", "attention_decode"),
) -> tuple[float, float]:
    """Solve time = calls x c + flops / R over two attention cases (``names``, timed in ``t``) for the call cost c
    and the rate R.

    A decode step is nearly all call cost, a prompt mostly work, so the two pin both (the bidirectional pair: 16
    and 64 tokens). Without a sensible solution (noise), R falls back to ``fallback_gflops`` and c takes what is
    left, averaged over the calls.
    """

    def sums(a: StaticAnalysis, name: str) -> tuple[int, float, float]:
        att = [n for n in a.nodes if n.kind == NodeKind.ATTENTION_CORE]
        rest = sum(n.bytes_moved / bw for n in a.nodes if n.kind != NodeKind.ATTENTION_CORE)
        io = (len(a.input_shapes) + a.output_count) * io_s
        return len(att), sum(n.total_flops for n in att), t[name] / 1e3 - run_s - io - overhead(a.nodes) - rest

    n1, f1, t1 = sums(first, names[0])
    n2, f2, t2 = sums(second, names[1])
    solved = _solve2((n1, f1, t1), (n2, f2, t2))  # (c, 1 / R)
    if solved is not None and solved[0] >= 0 and solved[1] > 0:
        return 1 / solved[1] / 1e9, solved[0]
    c = max(0.0, (t1 + t2 - (f1 + f2) / (fallback_gflops * 1e9)) / max(1, n1 + n2))
    return fallback_gflops, c


# ------------------------------------------------------------------------------------------- memory

_MEMORY_CACHE: dict[int, MemoryCalibration] = {}

# Resident copies ONNX Runtime keeps per weight byte once a session is ready, where the measurement below
# fails: convolution weights twice (the initializer and the reordered NCHWc or BatchNorm-fused copy made at
# load), 8-bit GEMM weights likewise (MLAS's packed copy), float GEMM weights once (packed in its place).
RESIDENT_COPIES = {"conv": 2.0, "folded_conv": 2.0, "quantized_gemm": 2.0, "other": 1.0}
# The copies depend on the build and the CPU (ONNX Runtime's x86 NCHWc layout reorders every convolution
# weight; an initializer stored in the model keeps its parsed copy beside it, a constant-folded one does not),
# so each kind of weight that gets copied is measured: one graph of it alone, loaded in a fresh process. The
# graphs hold 4-19 MB of weights on 7x7 activations, so weights dominate what the session adds (smaller
# graphs, a few hundred KB per tensor, give ratios of 3-4 from allocator slack alone). Float GEMM weights
# ("other") keep the prior: their one copy is exact for the 10-100 MB classifier weights of AlexNet / VGG
# (mapped and returned whole), while a graph of 1 MB ones measures glibc's slack (1.2).
RESIDENT_CASES = ("conv", "folded_conv", "quantized_gemm")
RESIDENT_BOUNDS = (1.0, 5.0)  # a ratio outside these is a failed measurement, not a copy count


def _resident_graphs(work: Path) -> dict[str, Path]:
    """One graph per kind of weight (``RESIDENT_CASES``): 3x3 convolutions 256->256 stored or folded (19 MB),
    and 512x512 MatMuls quantized dynamically (4 MB of int8)."""
    gemm = _matmuls(work / "mem_gemm.onnx", 1, 512, 16, 22)
    return {
        "conv": _convs(work / "mem_conv.onnx", 256, 7, 8, 20),
        "folded_conv": _convs(work / "mem_folded_conv.onnx", 256, 7, 8, 21, folded=True),
        "quantized_gemm": _quantized(gemm, work / "mem_quantized_gemm.onnx"),
    }


def resident_ratio(model_mb: float | None, weight_bytes: int, use: str) -> float:
    """Resident bytes per stored weight byte from one case's measured rise; the prior when it is unusable."""
    if model_mb is None or weight_bytes <= 0:
        return RESIDENT_COPIES[use]
    ratio = model_mb * 1e6 / weight_bytes
    lo, hi = RESIDENT_BOUNDS
    return ratio if lo * 0.9 <= ratio <= hi else RESIDENT_COPIES[use]


def _memory_run(path: Path, threads: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "edgekit.profiler.measure", "--memory", str(path), str(threads)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_child_env(),
    )
    for line in reversed(proc.stdout.splitlines()):
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "result":
            return event
    return {}


def _child_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def memory_calibration(work: Path, threads: int) -> MemoryCalibration:
    """ONNX Runtime's own resident memory (a tiny session in a fresh process), and the resident bytes it keeps
    per weight byte of each kind (``RESIDENT_CASES``, each in a fresh process, run side by side: memory does
    not depend on the load). Cached for the life of this Python process: it depends on the build, not on load.
    """
    if threads in _MEMORY_CACHE:
        return _MEMORY_CACHE[threads]
    work.mkdir(parents=True, exist_ok=True)
    from concurrent.futures import ThreadPoolExecutor

    graphs = {"tiny": _matmuls(work / "mem_tiny.onnx", 1, 4, 1, 7), **_resident_graphs(work)}
    with ThreadPoolExecutor(max_workers=len(graphs)) as pool:
        events = dict(zip(graphs, pool.map(lambda p: _memory_run(p, threads), graphs.values()), strict=True))
    tiny = events["tiny"]
    copies = dict(RESIDENT_COPIES)
    for use in RESIDENT_CASES:
        stored = analyze(graphs[use]).weight_bytes_by_use.get(use, 0)
        copies[use] = resident_ratio(events[use].get("model_mb"), stored, use)
    result = MemoryCalibration(
        runtime_overhead_mb=float(tiny.get("overhead_mb") or 0.0) + float(tiny.get("model_mb") or 0.0),
        bytes_per_weight_byte=copies,
    )
    _MEMORY_CACHE[threads] = result
    return result
