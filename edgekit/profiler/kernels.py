"""What share of a device's theoretical CPU peak each kind of work reaches: one table, per ISA class.

A device's estimate is built from its profile (cores, clocks, per-cycle rates, bandwidth) and this table,
never from the host's calibration, so it does not move with the load of the machine running edgekit.

Each record is one (ISA class, kind of work) pair with the share of the theoretical peak of the cores the
threads run on (fp32 and int8), and why. The shares were first set from how the kernels work (below), then
scaled by one factor per kind of work fitted on published measurements (``benchmarks/devices.py``, the table
in ``edgekit/devices/validation/published.csv``); the scale is folded into the figures here and the fit's
held-out error is each estimate's error band (:mod:`edgekit.profiler.validation`).

Kinds of work, from :meth:`NodeCost.conv_class` and the node kind:

- ``conv_dense``: convolutions with a long reduction (C x k x k >= 64): im2col + GEMM tiles, near GEMM rate;
- ``conv_small``: a stem (3x3x3 = 27 MACs per output): im2col GEMM tiles mostly empty (a 1x1 convolution with
  a short reduction is a plain GEMM and counts as ``conv_dense``);
- ``conv_grouped``: grouped convolutions (ShuffleNet v1, ResNeXt): one small GEMM per group;
- ``conv_depthwise``: one channel per group (MobileNet, EfficientNet): no reuse across channels, bound by
  loads, a few per cent of the FMA peak;
- ``gemm``: MatMul / Gemm (classifier heads, transformers);
- ``vector``: elementwise, pooling, normalization (its share of the fp32 peak at one FLOP per element).

ISA classes: ``arm-neon`` (Armv8.0: A53, A72; int8 by widening multiply-accumulate), ``arm-dotprod``
(Armv8.2 SDOT/UDOT: A55, A76, A78), ``arm-i8mm`` (Armv8.6 SMMLA: X3/X4, A715/A720), ``x86-avx2`` and
``x86-avx512`` (AVX-512 / VNNI).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from edgekit.profiler.static import NodeKind
from edgekit.registry import Registry

__all__ = [
    "DEVICE_MODEL",
    "ISA_CLASSES",
    "KERNEL_EFFICIENCY",
    "WORK_KINDS",
    "DeviceModel",
    "KernelEfficiency",
    "WorkKind",
    "efficiency",
    "isa_class",
    "work_kind",
]


class WorkKind(str, Enum):
    """A row of the kernel-efficiency table: what a node's compute is, as far as a CPU kernel's speed goes.
    A str enum: the JSON (``work_gflops``) keeps the plain names."""

    CONV_DENSE = "conv_dense"
    CONV_SMALL = "conv_small"
    CONV_GROUPED = "conv_grouped"
    CONV_DEPTHWISE = "conv_depthwise"
    GEMM = "gemm"
    VECTOR = "vector"

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


ISA_CLASSES = ("arm-neon", "arm-dotprod", "arm-i8mm", "x86-avx2", "x86-avx512")


@dataclass(frozen=True, kw_only=True)
class KernelEfficiency:
    isa: str
    work: WorkKind
    fp32: float  # share of the fp32 peak of the cores in use
    int8: float  # share of the int8 peak (SDOT / SMMLA / VNNI figure of the profile)
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"isa": self.isa, "work": str(self.work), "fp32": self.fp32, "int8": self.int8, "why": self.why}


@dataclass(frozen=True, kw_only=True)
class DeviceModel:
    """The figures of the device estimate that are not per kind of work (fitted with the table)."""

    thread_efficiency: float  # each thread beyond the first adds this share of a core (sync, shared L2/DRAM)
    bandwidth_efficiency: float  # share of the profile's DRAM bandwidth streaming kernels reach
    node_overhead_us_ghz: float  # dispatch cost of one node at 1 GHz on an out-of-order core
    run_overhead_us_ghz: float  # fixed cost of one run at 1 GHz
    in_order_factor: float = 2.0  # in-order cores (A53, A55) spend about twice the cycles on dispatch code
    basis: str = ""


KERNEL_EFFICIENCY: Registry[KernelEfficiency] = Registry("kernel efficiency")

# Shares before the fit, and the reason for each, per kind of work (arm-neon, arm-dotprod, arm-i8mm, x86-avx2,
# x86-avx512) as (fp32, int8) pairs. In-order A53-class cores and Armv8.0 int8 (no dot product) get less.
_PRIORS: Mapping[WorkKind, tuple[str, tuple[tuple[float, float], ...]]] = {
    WorkKind.CONV_DENSE: (
        "im2col + packed GEMM: MLAS/ncnn reach 60-80% of the FMA peak on long reductions",
        ((0.55, 0.35), (0.70, 0.45), (0.70, 0.40), (0.75, 0.55), (0.75, 0.55)),
    ),
    WorkKind.CONV_SMALL: (
        "reduction 27 (RGB stem): most of each GEMM tile is padding",
        ((0.20, 0.12), (0.25, 0.15), (0.25, 0.15), (0.25, 0.15), (0.20, 0.12)),
    ),
    WorkKind.CONV_GROUPED: (
        "one small GEMM per group: short reductions, poor register reuse",
        ((0.20, 0.12), (0.25, 0.15), (0.25, 0.15), (0.25, 0.15), (0.20, 0.12)),
    ),
    WorkKind.CONV_DEPTHWISE: (
        "9 MACs per output and no reuse across channels: bound by loads, not FMAs",
        ((0.06, 0.04), (0.06, 0.04), (0.05, 0.03), (0.06, 0.04), (0.04, 0.03)),
    ),
    WorkKind.GEMM: (
        "packed SGEMM / QGEMM: the classifier head is a GEMV at batch 1, so well below the GEMM peak",
        ((0.30, 0.20), (0.35, 0.25), (0.35, 0.25), (0.40, 0.30), (0.40, 0.30)),
    ),
    WorkKind.VECTOR: (
        "elementwise and pooling; the FLOP-heavy ones (Sigmoid, Swish, Erf) are FMA polynomials in MLAS, about a "
        "quarter of the FMA peak; the light ones (Add, Relu) are bandwidth-bound whatever this figure",
        ((0.20, 0.20), (0.25, 0.25), (0.25, 0.25), (0.25, 0.25), (0.25, 0.25)),
    ),
}

# The kinds of work, in table order (the fit's arrays index them so).
WORK_KINDS: tuple[WorkKind, ...] = tuple(WorkKind)
if set(_PRIORS) != set(WORK_KINDS):  # a kind without its prior: fail at import, not mid-estimate
    raise RuntimeError(f"kernels: _PRIORS {sorted(_PRIORS)} does not cover the kinds {WORK_KINDS}")

# One factor per kind of work (and one for int8), fitted by benchmarks/devices.py on the published table
# (all rows the estimator models; the held-out, leave-one-model-out error is the error band). 1.0 = the prior.
FITTED_SCALE: Mapping[str, float] = {
    "conv_dense": 1.225,
    "conv_small": 0.842,
    "conv_grouped": 1.0,
    "conv_depthwise": 1.346,
    "gemm": 1.0,
    "vector": 1.016,
    "int8": 1.284,
}

# Fitted on the 119 published CPU rows (benchmarks/devices.py, 2026-12-02). The globals are pulled towards
# reasoned starting figures (70 % per extra thread, 60 % of DRAM, 10 us per node at 1 GHz) like the scales
# towards their priors: left free, the dispatch cost was learnt from ShuffleNet alone (the only model of many
# light nodes) and a fit without it put the cost at its floor, estimating ShuffleNet at 0.37-0.49x. The
# bandwidth efficiency near 1 says the CNNs' activations partly stay in L2/L3. The ncnn rows'
# Winograd 3x3 convolutions are fitted apart (a gain of 1.58 on ncnn rows only), so conv_dense describes
# direct / GEMM convolution as MLAS runs it; ncnn's fp16 arithmetic on Armv8.2 is modelled with the fp16 peak.
DEVICE_MODEL = DeviceModel(
    thread_efficiency=0.544,
    bandwidth_efficiency=0.959,
    node_overhead_us_ghz=13.456,
    run_overhead_us_ghz=60.0,
    basis="priors scaled by the fit in benchmarks/devices.py",
)


def _register_table(scale: Mapping[str, float]) -> None:
    for work, (why, per_isa) in _PRIORS.items():
        for isa, (fp32, int8) in zip(ISA_CLASSES, per_isa, strict=True):
            KERNEL_EFFICIENCY.add(
                f"{isa}:{work}",
                KernelEfficiency(
                    isa=isa,
                    work=work,
                    fp32=fp32 * scale[work],
                    int8=int8 * scale[work] * scale["int8"],
                    why=why,
                ),
            )


if set(FITTED_SCALE) != {*WORK_KINDS, "int8"}:  # a kind added to one table only: fail at import, not mid-estimate
    raise RuntimeError(f"kernels: FITTED_SCALE {sorted(FITTED_SCALE)} does not cover the kinds {WORK_KINDS} + int8")
_register_table(FITTED_SCALE)


def prior_table() -> dict[str, tuple[float, float]]:
    """``isa:work`` -> (fp32, int8) before the fitted scale (the fit in benchmarks/devices.py starts here)."""
    return {
        f"{isa}:{work}": pair
        for work, (_, per_isa) in _PRIORS.items()
        for isa, pair in zip(ISA_CLASSES, per_isa, strict=True)
    }


def efficiency(isa: str, work: WorkKind | str) -> KernelEfficiency:
    return KERNEL_EFFICIENCY.get(f"{isa}:{WorkKind(work)}")


# ISA features -> class, strongest first: a profile's class is the first whose feature it lists.
_ISA_BY_FEATURE = (
    ("avx512", "x86-avx512"),
    ("avx512f", "x86-avx512"),
    ("avx2", "x86-avx2"),
    ("i8mm", "arm-i8mm"),
    ("dotprod", "arm-dotprod"),
    ("neon", "arm-neon"),
    ("asimd", "arm-neon"),
)


def isa_class(isa_features: tuple[str, ...] | list[str]) -> str:
    """The efficiency class of a CPU from its profile's ``isa_features`` (``arm-neon`` when none match)."""
    features = {f.lower().replace("-", "_") for f in isa_features}
    for feature, cls in _ISA_BY_FEATURE:
        if feature in features:
            return cls
    return "arm-neon"


# Node kinds whose compute is a GEMM on every CPU kernel; the rest (elementwise, normalization...) is vector.
_GEMM_NODES = frozenset({NodeKind.GEMM, NodeKind.ATTENTION, NodeKind.ATTENTION_CORE})


def work_kind(node: Any) -> WorkKind:
    """The row of the table a node's compute falls in."""
    if node.kind == NodeKind.CONV:
        # A pointwise (1x1) convolution with a short reduction (MobileNet's 16-32-channel projections) is a
        # plain GEMM with a short K over full M x N tiles, no im2col: it runs near the dense rate, unlike a
        # 3x3 stem whose im2col tiles are mostly padding.
        if node.conv_class == "small" and node.kernel_elems == 1:
            return WorkKind.CONV_DENSE
        return WorkKind("conv_" + node.conv_class)
    if node.kind in _GEMM_NODES:
        return WorkKind.GEMM
    return WorkKind.VECTOR
