"""Estimating latency and memory on a device profile: a roofline per node (host: calibrated; others: fitted).

Per node, with the rates of the device (below)::

    t_node = max(FLOPs / compute_rate(kind, precision), bytes_moved / bandwidth) + dispatch_overhead
    latency = run_overhead + sum(t_node over the graph ONNX Runtime runs)

On ``host`` the rates are the ones the calibration suite just measured (:mod:`.calibration`), so the host
estimate is a prediction that the measurement beside it checks. There a blocked (NCHWc) fp32 convolution's
compute also pays a cost per output row (``row_ns``) or per activation byte (``conv_activation_gbps``), whichever
the calibration found to fit, and a fused activation other than Relu a second pass over
its output (``IN_KERNEL_ACTIVATIONS``): how MLAS's NCHWc kernels run; and an op with a calibrated rate of its
own (``op_gflops``: QuickGelu, MLAS's logistic kernel) runs at it. On any other device the rates come from its
profile and :mod:`.kernels` alone, never from the host (whose load would otherwise move them):

- compute: per kind of work (dense / small-channel / grouped / depthwise convolution, GEMM, vector; fp32 and
  int8), the peak of the cores the profile's ``default_threads`` take, fastest first (big.LITTLE), each
  thread beyond the first at ``DEVICE_MODEL.thread_efficiency`` of a core, times the share of that peak the
  ISA class's kernels reach (``KERNEL_EFFICIENCY``);
- bandwidth: the profile's DRAM bandwidth times ``DEVICE_MODEL.bandwidth_efficiency``;
- dispatch: a fitted cost per node at 1 GHz, divided by the fastest core's clock (x2 on in-order cores);
- a per-device factor where the device has published rows, and the class's held-out error band
  (:mod:`.validation`), carried by every estimate.

Memory = runtime overhead + weights x resident bytes per weight byte (by kind of weight, calibrated) + the
peak activation memory. A device "fits" when that is within its ``app_memory_budget_mb``. A profile field
listed as ``unverified`` that the estimate uses is named in the estimate, which inherits its doubt.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from edgekit.devices import DeviceKind, DeviceProfile
from edgekit.errors import CalibrationError
from edgekit.profiler import kernels, validation
from edgekit.profiler.calibration import HostEfficiency, MemoryCalibration, is_copy, is_parallel
from edgekit.profiler.kernels import WorkKind
from edgekit.profiler.layout import NCHWC_FLOAT_BYTES
from edgekit.profiler.static import NodeCost, NodeKind, StaticAnalysis

__all__ = [
    "KIND_RATES",
    "DeviceRates",
    "PhaseEstimate",
    "device_rates",
    "estimate_latency",
    "estimate_memory_mb",
]

ASSUMED_CACHE_BYTES = 4 << 20
_IN_ORDER_CORES = ("Cortex-A53", "Cortex-A55", "Cortex-A510", "Cortex-A520", "Cortex-A35", "Cortex-A7")

# The profile fields an estimate rests on, so a doubt about any of them carries over.
ESTIMATE_FIELDS = (
    "cpu_clusters",
    "peak_fp32_gflops",
    "peak_fp16_gflops",
    "peak_int8_gops",
    "memory_bandwidth_gbps",
    "app_memory_budget_mb",
    "default_threads",
)


@dataclass(frozen=True, kw_only=True)
class DeviceRates:
    device: str
    threads: int
    gemm_gflops: Mapping[str, float]  # fp32, fp16, int8
    conv_gflops: Mapping[str, float]
    vector_gflops: float
    normalization_gflops: float
    lrn_gflops: float
    bandwidth_gbps: float  # activations (cache-sized working sets)
    dram_bandwidth_gbps: float  # weights, when they do not fit in cache_bytes
    cache_bytes: int
    # host only: what an fp32 GEMM pays per MB of weights from DRAM on top of its in-cache time, where the
    # model's weights outgrow cache_bytes (calibration's gemm_fp32_dram case); 0: max(compute, memory) alone
    streamed_gemm_us_per_mb: float = 0.0
    conv_half_reduction: float  # conv rate = conv_gflops x r / (r + this), r = C/group x kernel
    # host only: a blocked fp32 convolution's cost per output row (NodeCost.output_rows) by kind of work
    # (dense, depthwise), solved with its rate; MLAS's NCHWc kernels run a row of a channel block per call
    row_ns: Mapping[WorkKind, float] = field(default_factory=dict)
    # host only: ... or, where the calibration found that fits better, a dense one's activation bytes moved at
    # this rate on top of its compute (0: no such term)
    conv_activation_gbps: float = 0.0
    attention_gflops: Mapping[str, float]  # attention on projected Q/K/V, by precision
    # host only: bidirectional GroupQueryAttention (NodeCost.bidirectional), fp32; 0: attention_gflops
    bidirectional_attention_gflops: float = 0.0
    bidirectional_attention_call_us: float = 0.0  # host only: its call cost, instead of attention_core's
    call_overhead_us: Mapping[NodeKind, float]  # fixed cost per call beyond dispatch (conv, gemm, attention_core)
    node_overhead_us: float
    parallel_node_overhead_us: float
    run_overhead_ms: float
    io_overhead_us: float
    basis: str
    assumptions: tuple[str, ...] = ()
    # kind of work (kernels.WORK_KINDS) -> precision -> GFLOP/s; where a kind is listed it wins over the
    # per-node-kind rates above (devices: every kind; host: depthwise convolutions, calibrated apart)
    work_gflops: Mapping[WorkKind, Mapping[str, float]] = field(default_factory=dict)
    isa_class: str = ""
    # host only: convolutions its NCHWc pass left in NCHW (NodeCost.nchw_on_host), rate and cost per group
    nchw_conv_gflops: float = 0.0
    nchw_group_us: float = 0.0
    nchw_pool_gflops: float = 0.0  # host only: MaxPool / AveragePool its NCHWc pass left in NCHW
    # host only: op types whose bytes move at their own calibrated bandwidth (Pad: a row-by-row copy)
    op_bandwidth_gbps: Mapping[str, float] = field(default_factory=dict)
    # host only: op types computing at their own calibrated rate (QuickGelu: MLAS's logistic kernel)
    op_gflops: Mapping[str, float] = field(default_factory=dict)
    copy_gbps: float = 0.0  # host only: bandwidth of copy ops (calibration.is_copy); 0: the streaming rate
    # host only: nodes moving at most small_bytes stream at this rate (calibration: stream_small); 0: unset
    small_bandwidth_gbps: float = 0.0
    small_bytes: int = 0
    # host only: the bandwidth of the second pass a blocked convolution makes over its output for a fused
    # activation its kernel does not apply (IN_KERNEL_ACTIVATIONS); 0: no such pass (other devices' tables
    # were fitted on published whole-model times, which hold it)
    activation_pass_gbps: float = 0.0
    error_band: validation.ErrorBand | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "isa_class": self.isa_class or None,
            "work_gflops": {str(k): dict(v) for k, v in self.work_gflops.items()},
            "error_band": self.error_band.to_dict() if self.error_band else None,
            "gemm_gflops": dict(self.gemm_gflops),
            "conv_gflops": dict(self.conv_gflops),
            "vector_gflops": self.vector_gflops,
            "normalization_gflops": self.normalization_gflops,
            "lrn_gflops": self.lrn_gflops,
            "conv_half_reduction": self.conv_half_reduction,
            "attention_gflops": dict(self.attention_gflops),
            "bidirectional_attention_gflops": self.bidirectional_attention_gflops or None,
            "bidirectional_attention_call_us": self.bidirectional_attention_call_us or None,
            "call_overhead_us": {str(k): v for k, v in self.call_overhead_us.items()},
            "bandwidth_gbps": self.bandwidth_gbps,
            "dram_bandwidth_gbps": self.dram_bandwidth_gbps,
            "cache_bytes": self.cache_bytes,
            "streamed_gemm_us_per_mb": self.streamed_gemm_us_per_mb,
            "node_overhead_us": self.node_overhead_us,
            "parallel_node_overhead_us": self.parallel_node_overhead_us,
            "run_overhead_ms": self.run_overhead_ms,
            "io_overhead_us": self.io_overhead_us,
            "row_ns": {str(k): v for k, v in self.row_ns.items()},
            "conv_activation_gbps": self.conv_activation_gbps,
            "nchw_pool_gflops": self.nchw_pool_gflops,
            "op_bandwidth_gbps": dict(self.op_bandwidth_gbps),
            "op_gflops": dict(self.op_gflops),
            "copy_gbps": self.copy_gbps,
            "small_bandwidth_gbps": self.small_bandwidth_gbps,
            "small_bytes": self.small_bytes,
            "activation_pass_gbps": self.activation_pass_gbps,
            "basis": self.basis,
            "assumptions": list(self.assumptions),
        }


@dataclass(frozen=True, kw_only=True)
class PhaseEstimate:
    phase: str
    latency_ms: float
    compute_ms: float  # time in nodes whose compute term won the max
    memory_ms: float  # time in nodes whose bandwidth term won
    overhead_ms: float  # dispatch and run overheads
    by_op_ms: Mapping[str, float] = field(default_factory=dict)
    error_band: validation.ErrorBand | None = None  # from the held-out validation of the device's class

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "latency_ms": self.latency_ms,
            "error_band": self.error_band.to_dict() if self.error_band else None,
            "compute_bound_ms": self.compute_ms,
            "memory_bound_ms": self.memory_ms,
            "overhead_ms": self.overhead_ms,
            "by_op_ms": dict(sorted(self.by_op_ms.items(), key=lambda kv: -kv[1])[:12]),
        }


def _fastest_cluster(profile: DeviceProfile) -> Any:
    return max(profile.cpu_clusters, key=lambda c: (c.max_ghz * c.fp32_flops_per_cycle, c.max_ghz))


def device_rates(
    profile: DeviceProfile, host: HostEfficiency | None, host_profile: DeviceProfile | None
) -> DeviceRates:
    """The roofline's rates for ``profile``: measured ones on the host; elsewhere the profile's and the kernel
    table's, ``host`` and ``host_profile`` unused (they may be None)."""
    if profile.kind != DeviceKind.HOST:
        # Another device: its profile and the fitted kernel table only, so the host's load cannot move it.
        return _table_rates(profile)
    # the host: the calibration suite's live rates
    if host is None or host_profile is None:
        raise CalibrationError(
            "the host's estimate needs the calibration measured beside it",
            hint="profile with devices=['host'] through edgekit.profile, which runs the calibration suite",
        )
    fp16_over_fp32 = host_profile.peak_fp16_gflops / host_profile.peak_fp32_gflops
    g32 = host.gemm_gflops["fp32"]
    c32 = host.conv_peak_gflops or host.conv_gflops["fp32"]
    a32 = host.attention_gflops or g32
    return DeviceRates(
        device=profile.name,
        threads=host.threads,
        gemm_gflops={"fp32": g32, "fp16": g32 * fp16_over_fp32, "int8": host.gemm_gflops["int8"]},
        conv_gflops={"fp32": c32, "fp16": c32 * fp16_over_fp32, "int8": c32 * host.gemm_gflops["int8"] / g32},
        vector_gflops=host.vector_gflops,
        normalization_gflops=host.normalization_gflops or host.vector_gflops,
        lrn_gflops=host.lrn_gflops,
        bandwidth_gbps=host.bandwidth_gbps,
        dram_bandwidth_gbps=host.dram_bandwidth_gbps,
        cache_bytes=host.cache_bytes,
        streamed_gemm_us_per_mb=getattr(host, "streamed_gemm_us_per_mb", 0.0),
        conv_half_reduction=host.conv_half_reduction,
        attention_gflops={"fp32": a32, "fp16": a32 * fp16_over_fp32},
        bidirectional_attention_gflops=getattr(host, "bidirectional_attention_gflops", 0.0),
        bidirectional_attention_call_us=getattr(host, "bidirectional_attention_call_us", 0.0),
        call_overhead_us=dict(host.call_overhead_us),
        node_overhead_us=host.node_overhead_us,
        parallel_node_overhead_us=host.parallel_node_overhead_us,
        run_overhead_ms=host.run_overhead_ms,
        io_overhead_us=host.io_overhead_us,
        nchw_conv_gflops=getattr(host, "nchw_conv_gflops", 0.0),
        nchw_group_us=getattr(host, "nchw_group_us", 0.0),
        row_ns=_host_rows(host),
        conv_activation_gbps=getattr(host, "conv_activation_gbps", 0.0),
        nchw_pool_gflops=getattr(host, "nchw_pool_gflops", 0.0),
        op_bandwidth_gbps={"Pad": host.pad_gbps} if getattr(host, "pad_gbps", 0.0) > 0 else {},
        op_gflops={"QuickGelu": host.quick_gelu_gflops} if getattr(host, "quick_gelu_gflops", 0.0) > 0 else {},
        copy_gbps=getattr(host, "copy_gbps", 0.0),
        small_bandwidth_gbps=getattr(host, "small_bandwidth_gbps", 0.0),
        small_bytes=getattr(host, "small_bytes", 0),
        activation_pass_gbps=getattr(host, "activation_pass_gbps", 0.0) or host.bandwidth_gbps,
        basis="measured: the calibration suite run beside the measurement on this host",
        work_gflops=_host_work(host),
    )


def _host_work(host: HostEfficiency) -> dict[str, dict[str, float]]:
    """Depthwise convolutions and the RGB stem on the host at their own calibrated rates (the dense-conv curve
    overstates both)."""
    work = {}
    for kind, rate in (
        (WorkKind.CONV_DEPTHWISE, getattr(host, "depthwise_gflops", 0.0)),
        (WorkKind.CONV_SMALL, getattr(host, "stem_gflops", 0.0)),
    ):
        if rate > 0:
            work[kind] = {"fp32": rate, "fp16": rate, "int8": rate}
    return work


def _host_rows(host: HostEfficiency) -> dict[WorkKind, float]:
    """Dense and depthwise blocked convolutions' calibrated cost per output row, where the fit found one."""
    rows = {
        WorkKind.CONV_DENSE: getattr(host, "conv_row_ns", 0.0),
        WorkKind.CONV_DEPTHWISE: getattr(host, "depthwise_row_ns", 0.0),
    }
    return {kind: ns for kind, ns in rows.items() if ns > 0}


def _scaled_peak(profile: DeviceProfile, precision: str, threads: int, thread_efficiency: float) -> float:
    """The peak of ``threads`` cores taken fastest first (ONNX Runtime's pool lands on the big cores of a
    big.LITTLE CPU), each thread beyond the first counted at ``thread_efficiency`` of its core."""
    per_core = sorted(
        (c.peak_gops(precision) / c.cores for c in profile.cpu_clusters for _ in range(c.cores)), reverse=True
    )
    taken = per_core[: max(1, threads)]
    return taken[0] + thread_efficiency * sum(taken[1:])


def _table_rates(
    profile: DeviceProfile, *, threads: int | None = None, model: kernels.DeviceModel | None = None
) -> DeviceRates:
    """A device's rates from its profile and the kernel-efficiency table alone (never from the host)."""
    model = model or kernels.DEVICE_MODEL
    threads = threads or profile.default_threads
    isa = kernels.isa_class(profile.isa_features)
    peak = {p: _scaled_peak(profile, p, threads, model.thread_efficiency) for p in ("fp32", "int8")}

    work = {}
    for w in kernels.WORK_KINDS:
        e = kernels.efficiency(isa, w)
        e32, e8 = e.fp32, e.int8
        # ONNX Runtime's CPU provider runs fp16 graphs' heavy ops in fp32 (casts around them): the fp32 rate
        work[w] = {"fp32": peak["fp32"] * e32, "fp16": peak["fp32"] * e32, "int8": peak["int8"] * e8}
    band = validation.error_band(profile.name, isa)
    # the per-device adaptation: every rate divided, every overhead multiplied, so the latency scales by it
    factor = band.device_factor
    work = {w: {p: r / factor for p, r in rates.items()} for w, rates in work.items()}
    fast = _fastest_cluster(profile)
    per_ghz = (
        factor * (model.in_order_factor if fast.core_type.split(" ")[0] in _IN_ORDER_CORES else 1.0) / fast.max_ghz
    )
    node_us = model.node_overhead_us_ghz * per_ghz
    bandwidth = profile.memory_bandwidth_gbps * model.bandwidth_efficiency / factor
    return DeviceRates(
        device=profile.name,
        threads=threads,
        gemm_gflops=dict(work[WorkKind.GEMM]),
        conv_gflops=dict(work[WorkKind.CONV_DENSE]),
        vector_gflops=work[WorkKind.VECTOR]["fp32"],
        normalization_gflops=work[WorkKind.VECTOR]["fp32"],
        lrn_gflops=work[WorkKind.VECTOR]["fp32"],
        conv_half_reduction=0.0,
        attention_gflops=dict(work[WorkKind.GEMM]),
        call_overhead_us={},
        bandwidth_gbps=bandwidth,
        dram_bandwidth_gbps=bandwidth,
        cache_bytes=ASSUMED_CACHE_BYTES,
        node_overhead_us=node_us,
        parallel_node_overhead_us=node_us * (1.5 if threads > 1 else 1.0),
        run_overhead_ms=model.run_overhead_us_ghz * per_ghz / 1e3,
        io_overhead_us=node_us,
        work_gflops=work,
        isa_class=isa,
        basis=f"derived: the profile's peaks and bandwidth x the kernel-efficiency table for {isa} "
        "(edgekit/profiler/kernels.py); independent of this host",
        assumptions=(
            f"kernel efficiencies of the {isa} class, fitted on published measurements (benchmarks/devices.py)",
            f"threads on the fastest cores first, each beyond the first at {model.thread_efficiency:.0%} of a core",
            f"streaming kernels at {model.bandwidth_efficiency:.0%} of the DRAM bandwidth",
            f"per-device factor x{factor:.2f} from its published rows" if factor != 1.0 else "no per-device factor",
            "CPU execution provider: accelerators are shown as coverage, not timed",
        ),
        error_band=band,
    )


def _by_precision(table: Mapping[str, float], precision: str) -> float:
    return table.get(precision, table["fp32"])


def _conv_rate(rates: DeviceRates, node: NodeCost, precision: str) -> float:
    rate = _by_precision(rates.conv_gflops, precision)
    if rates.conv_half_reduction > 0 and node.reduction > 0:
        # the fitted curve, scaled from its fp32 peak to this precision's
        rate *= node.reduction / (node.reduction + rates.conv_half_reduction)
    return rate


def _attention_rate(rates: DeviceRates, node: NodeCost, precision: str) -> float:
    if node.bidirectional and rates.bidirectional_attention_gflops > 0 and precision == "fp32":
        return rates.bidirectional_attention_gflops
    return _by_precision(rates.attention_gflops, precision)


def _vector_rate(rates: DeviceRates, node: NodeCost, precision: str) -> float:
    return rates.vector_gflops


# Node kind (static.OP_COSTS' ``kind``) -> its GFLOP/s on a device, where no per-work-kind rate
# (``DeviceRates.work_gflops``) applies; a kind not listed runs at the vector rate. A new kind is one entry.
KIND_RATES: Mapping[NodeKind, Callable[[DeviceRates, NodeCost, str], float]] = MappingProxyType(
    {
        NodeKind.GEMM: lambda rates, node, precision: _by_precision(rates.gemm_gflops, precision),
        NodeKind.ATTENTION: lambda rates, node, precision: _by_precision(rates.gemm_gflops, precision),
        NodeKind.ATTENTION_CORE: _attention_rate,
        NodeKind.CONV: _conv_rate,
        NodeKind.LRN: lambda rates, node, precision: rates.lrn_gflops,
        NodeKind.NORMALIZATION: lambda rates, node, precision: rates.normalization_gflops,
    }
)
# The per-call costs a node pays beyond dispatch, by its kind: fused attention is a QKV projection GEMM and
# then attention on the projected heads, so it pays both kernels' (the other kinds are their own key).
_CALL_COST_KINDS: Mapping[NodeKind, tuple[NodeKind, ...]] = MappingProxyType(
    {NodeKind.ATTENTION: (NodeKind.GEMM, NodeKind.ATTENTION_CORE)}
)


def call_cost_us(node: NodeCost, rates: DeviceRates) -> float:
    if node.bidirectional and rates.bidirectional_attention_call_us > 0:
        return rates.bidirectional_attention_call_us
    return sum(rates.call_overhead_us.get(k, 0.0) for k in _CALL_COST_KINDS.get(node.kind, (node.kind,)))


def _attention_split(node: NodeCost) -> tuple[dict[str, int], str, int]:
    """A fused attention's FLOPs without its attention core, the core's precision and the core's FLOPs."""
    flops = dict(node.flops)
    fp = "fp16" if "fp16" in flops else "fp32"
    core = min(node.attention_flops, flops.get(fp, 0)) if node.kind == NodeKind.ATTENTION else 0
    if core:
        flops[fp] -= core
    return flops, fp, core


def _node_time_s(node: NodeCost, rates: DeviceRates, *, streamed: bool = False) -> tuple[float, str]:
    if node.kind == NodeKind.VIEW:
        return 0.0, "overhead"
    if node.nchw_on_host and node.kind != NodeKind.CONV and rates.nchw_pool_gflops > 0:  # a pool left in NCHW
        compute = node.total_flops / (rates.nchw_pool_gflops * 1e9)
        memory = node.bytes_moved / (rates.bandwidth_gbps * 1e9)
        return (compute, "compute") if compute >= memory else (memory, "memory")
    if node.nchw_on_host and node.kind == NodeKind.CONV and rates.nchw_conv_gflops > 0:
        compute = node.total_flops / (rates.nchw_conv_gflops * 1e9) + node.groups * rates.nchw_group_us / 1e6
        memory = node.bytes_moved / (rates.bandwidth_gbps * 1e9)
        return (compute, "compute") if compute >= memory else (memory, "memory")
    kind = kernels.work_kind(node)
    work = rates.work_gflops.get(kind) if rates.work_gflops else None
    flops_by_precision, fp, core = _attention_split(node)
    # the attention after a fused projection runs at the attention rate (the GEMM's on devices: their table
    # has one row for both)
    compute = core / (_by_precision(rates.attention_gflops, fp) * 1e9) if core else 0.0
    for precision, flops in flops_by_precision.items():
        if node.op_type in rates.op_gflops:
            rate = rates.op_gflops[node.op_type]
        elif work is not None and node.kind != NodeKind.ATTENTION_CORE:
            rate = work.get(precision, work["fp32"])
        else:
            rate = KIND_RATES.get(node.kind, _vector_rate)(rates, node, precision)
        compute += flops / (rate * 1e9)
    if "fp32" in node.flops and kind in rates.row_ns:  # the NCHWc kernels are float32 only
        compute += node.output_rows * rates.row_ns[kind] / 1e9
    if "fp32" in node.flops and kind == WorkKind.CONV_DENSE and rates.conv_activation_gbps > 0:
        compute += node.activation_bytes / (rates.conv_activation_gbps * 1e9)
    bandwidth = _bandwidth_gbps(node, rates)
    if streamed:  # the model's weights do not fit in cache: they come from DRAM on every run
        memory = node.activation_bytes / (bandwidth * 1e9) + node.weight_bytes / (rates.dram_bandwidth_gbps * 1e9)
        compute = _streamed_gemm_s(node, compute, rates)
    else:
        memory = node.bytes_moved / (bandwidth * 1e9)
    if compute >= memory:
        return compute + _activation_pass_s(node, rates), "compute"
    return memory + _activation_pass_s(node, rates), "memory"


def _streamed_gemm_s(node: NodeCost, compute: float, rates: DeviceRates) -> float:
    """An fp32 GEMM's compute term when its weights come from DRAM: its compute plus what the stream adds per
    byte (``streamed_gemm_us_per_mb``, host only), which the kernels do not hide behind the FLOPs (57 MB of
    distinct weights ran 16-24 us per MB slower than one cached set at 1-64 rows on Zen 4). The stream replaces
    the in-cache reads rather than adding to them, so a GEMV (one row) stays decided by its max with the
    DRAM-bound memory term: with the in-cache reads counted too, AlexNet's and VGG's classifier GEMVs read
    1.4x their time on the Xeon (31 us per MB there against 13.8 on Zen 4). Other nodes: ``compute`` unchanged."""
    if rates.streamed_gemm_us_per_mb <= 0 or node.kind != NodeKind.GEMM or "fp32" not in node.flops:
        return compute
    return compute + node.weight_bytes * rates.streamed_gemm_us_per_mb * 1e-12


# MLAS's NCHWc convolution kernels apply these in registers (MLAS_CONV_KERNEL_FLAG_RELU_ACTIVATION); any other
# fused activation (Clip, HardSigmoid, LeakyRelu, Sigmoid, Tanh: MLAS_CONV_KERNEL_FLAG_OTHER_ACTIVATION) runs
# as MlasActivation over each output block after the kernel. MobileNet-v2 here (Zen 4, 1 thread, interleaved):
# its 35 Clip convolutions turned Relu ran 0.63-0.72 ms (8-9 %) faster, their 24 MB of outputs moved twice at
# 68-77 GB/s, the streaming case's bandwidth.
IN_KERNEL_ACTIVATIONS = frozenset({"", "Relu"})


def _activation_pass_s(node: NodeCost, rates: DeviceRates) -> float:
    if rates.activation_pass_gbps <= 0 or node.kind != NodeKind.CONV or node.activation in IN_KERNEL_ACTIVATIONS:
        return 0.0
    return 2 * node.output_elements * NCHWC_FLOAT_BYTES / (rates.activation_pass_gbps * 1e9)


def _bandwidth_gbps(node: NodeCost, rates: DeviceRates) -> float:
    """The rate a memory-bound node moves its bytes at: its op's own (Pad), the copy ops', the small nodes'
    (host: stream_small's), else the streaming rate."""
    if node.op_type in rates.op_bandwidth_gbps:
        return rates.op_bandwidth_gbps[node.op_type]
    if rates.copy_gbps > 0 and is_copy(node):
        return rates.copy_gbps
    if rates.small_bandwidth_gbps > 0 and node.bytes_moved <= rates.small_bytes:
        return rates.small_bandwidth_gbps
    return rates.bandwidth_gbps


def estimate_latency(phase: str, analysis: StaticAnalysis, rates: DeviceRates) -> PhaseEstimate:
    """The roofline sum over the nodes of one phase's runtime graph, plus the per-run costs."""
    compute = memory = 0.0
    io = len(analysis.input_shapes) + analysis.output_count
    overhead = rates.run_overhead_ms / 1e3 + io * rates.io_overhead_us / 1e6
    by_op: dict[str, float] = defaultdict(float)
    streamed = analysis.weight_bytes > rates.cache_bytes
    for node in analysis.nodes:
        t, bound = _node_time_s(node, rates, streamed=streamed)
        dispatch = rates.parallel_node_overhead_us if is_parallel(node, rates.threads) else rates.node_overhead_us
        dispatch += call_cost_us(node, rates)
        dispatch /= 1e6
        overhead += dispatch
        if bound == "compute":
            compute += t
        else:
            memory += t
        by_op[node.op_type] += (t + dispatch) * 1e3
    return PhaseEstimate(
        phase=phase,
        latency_ms=(compute + memory + overhead) * 1e3,
        compute_ms=compute * 1e3,
        memory_ms=memory * 1e3,
        overhead_ms=overhead * 1e3,
        by_op_ms=dict(by_op),
        error_band=rates.error_band,
    )


def estimate_memory_mb(
    stored: StaticAnalysis, runtime: Sequence[StaticAnalysis], memory: MemoryCalibration
) -> dict[str, float]:
    """Weights as ONNX Runtime keeps them resident, plus the largest activation peak, plus its overhead."""
    weights = sum(
        nbytes * memory.bytes_per_weight_byte.get(use, 1.0) for use, nbytes in stored.weight_bytes_by_use.items()
    )
    activations = max((a.peak_activation_bytes for a in runtime), default=stored.peak_activation_bytes)
    return {
        "total_mb": memory.runtime_overhead_mb + (weights + activations) / 1e6,
        "weights_mb": weights / 1e6,
        "activations_mb": activations / 1e6,
        "runtime_overhead_mb": memory.runtime_overhead_mb,
    }


def inherited_doubts(profile: DeviceProfile) -> list[str]:
    """The profile's unverified fields that this estimate uses."""
    return [f for f in profile.unverified if f in ESTIMATE_FIELDS]


def derived_fields(profile: DeviceProfile) -> list[str]:
    return [f for f in ESTIMATE_FIELDS if str(profile.sources.get(f, "")).startswith("derived")]
