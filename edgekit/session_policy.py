"""How many intra-op threads a package runs on, and whether a quantized package is faster than its fp32 graph.

One place for both records and their decisions; the exporters measure, this module decides, the manifest
stores the records (``runtime.session_policy``, ``runtime.speedup``) and the runtime applies them.

Threads. A graph whose nodes each do little work (a tiny decoder's decode step, a small CNN) is bound by the
per-node cost of waking and joining the intra-op pool, not by arithmetic: measured here (2 vCPU AMD EPYC,
AVX2), the tiny Llama decode step runs faster on one thread than on two. So the exporter times the package's
typical call (one decode step with a KV cache for text generation, a median-sized validation sample
otherwise) on one thread and on all physical cores, in interleaved rounds, and records the winner. Where the
package runs on another CPU the measurement says nothing, so the record also keeps the call's work, converted
to MFLOP at the export host's measured single-core MatMul rate; the *per-node work rule* then estimates the
time per node on the target's fastest core (device profile peak) and runs a graph below
:data:`OVERHEAD_BOUND_NODE_US` per node on one thread and anything larger on all big cores (the profile's
``default_threads``).

Speed-up. A quantized package, at its own thread policy, is timed against the fp32 graph of the same export
(the graph just before the quantizing step) at the set-up that graph's own policy takes on the host (one thread,
or all cores with spinning on or off, by the rule below: what the fp32 package would run), interleaved rounds of
blocks of calls, median of the per-round ratios. It is *slower* when that median ratio exceeds ``1 + SPEEDUP_TOLERANCE``: a ratio within 2 % of
parity is ``within-noise`` and kept, so a noisy machine cannot flip a tie; a median says more than a mean
because one descheduled round moves it little. The band was 5 % with single alternating calls compared at the
package's threads, which let EfficientNet-B0 int8-static ship at "1.01x" while it ran 1.4x slower than the fp32
package (2026-12-02 d).

Speed-up on the target devices. The export host is rarely the device: where the user names target devices, the
profiler (supplied by the edgekit layer: exporters never import it) estimates the same call on each device's
profile, fp32 graph against package, and the record keeps each estimate with its error band
(:class:`DeviceSpeedup`). The band is the held-out error of one latency estimate on the device's ISA class; it is
applied to the ratio as is. The per-device factor cancels in a ratio, and the two estimates share the device's
peaks, bandwidth and dispatch costs, so what is left is the relative efficiency of the int8 (or int4) kernels
against the fp32 ones, which the validation rows of both precisions bound but do not test as a pair (the
published data holds one fp32 / int8 pair, MobileNetV2 on a Raspberry Pi 4: estimated 0.61, published 0.37).
An estimate is evidence, not a measurement: a device estimated slower beyond its band warns, and refuses only
when asked (``on_device_slower="refuse"``); an estimate without a validated band never refuses.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "ALL",
    "DEVICE_VERDICTS",
    "ON_DEVICE_SLOWER",
    "ON_SLOWER",
    "OVERHEAD_BOUND_NODE_US",
    "SPEEDUP_TOLERANCE",
    "THREADS_TOLERANCE",
    "AppliedPolicy",
    "CallWork",
    "DeviceSpeedup",
    "DeviceSpeedupEstimator",
    "SessionPolicy",
    "SpeedupRecord",
    "apply_policy",
    "choose_policy",
    "device_core_gflops",
    "device_speedup_verdict",
    "rule_threads",
    "speedup_verdict",
]

ALL = "all"
# Below this estimated time per node on one core, the pool's wake/join cost (a few microseconds per node
# on the CPUs measured) outweighs what a second thread saves. Calibrated here: the tiny Llama decode step
# (~2-3 us per node) is 1.5-1.9x faster on one thread; MiniLM at 64 tokens (~100 us per node) is faster
# on all cores.
OVERHEAD_BOUND_NODE_US = 20.0
SPEEDUP_TOLERANCE = 0.02
# All cores must beat one thread by more than this (median per-round ratio) to be chosen: within it the two
# are a tie on a noisy machine, and one thread does the same work with the rest of the CPU left free.
THREADS_TOLERANCE = 0.10
ON_SLOWER = ("refuse", "warn", "off")
# A target device estimated slower than fp32 beyond its band: warn (default) or refuse the package.
ON_DEVICE_SLOWER = ("warn", "refuse")
DEVICE_VERDICTS = ("faster", "within-band", "slower", "not-validated")


@dataclass(frozen=True, kw_only=True)
class CallWork:
    """The package's typical call, as measured on the export host at one thread."""

    workload: str
    nodes: int
    host_core_ms: float  # one call, one intra-op thread
    host_core_gflops: float  # the export host's single-core fp32 MatMul rate, measured beside it

    @property
    def mflop(self) -> float:
        return self.host_core_ms * self.host_core_gflops  # ms x GFLOP/s = MFLOP

    def node_us(self, core_gflops: float) -> float:
        """Estimated microseconds per node on one core of ``core_gflops``."""
        return self.mflop / max(1, self.nodes) / core_gflops * 1e3


@dataclass(frozen=True, kw_only=True)
class SessionPolicy:
    """The thread policy recorded with a package (``runtime.session_policy`` in the manifest)."""

    intra_op_threads: int | str  # 1 or "all" (all physical / big cores of whatever runs it)
    allow_spinning: bool  # ORT ``session.intra_op.allow_spinning``
    rule: str  # "measured" | "per-node-work"
    reason: str
    cpu: str | None = None  # the CPU the measurement ran on
    measured: dict[str, Any] = field(default_factory=dict)  # median ratios, rounds, threads compared
    work: CallWork | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class DeviceSpeedup:
    """The package against its fp32 graph on one target device, as the profiler estimates the same call there."""

    device: str
    speedup: float  # estimated fp32 time / package time on the device
    fp32_ms: float  # the profiler's estimate of the fp32 graph's call on the device
    package_ms: float
    threads: int  # the profile's default_threads, as `edgekit profile` estimates it
    isa_class: str
    band_pct: float | None  # the class's held-out error band (80th percentile), None: not validated
    band: str  # the band's label: the rows it rests on
    verdict: str  # DEVICE_VERDICTS: faster / slower only beyond the band

    @property
    def ratio(self) -> float:
        """Package time / fp32 time (the host record's ``median_ratio``, estimated)."""
        return self.package_ms / self.fp32_ms if self.fp32_ms > 0 else float("inf")

    def summary(self) -> str:
        """``faster; ±37 %, validated on ...`` (the band's label alone when it is not validated)."""
        return self.band if self.verdict == "not-validated" else f"{self.verdict}; {self.band}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DeviceSpeedupEstimator(Protocol):
    """What the export calls to estimate a package's speed-up on target devices (the edgekit layer supplies it:
    ``edgekit.profiler.speedup.DeviceEstimator``). ``feeds`` is the call the host comparison timed."""

    def __call__(self, fp32_model: Path, package_model: Path, feeds: Mapping[str, Any]) -> list[DeviceSpeedup]: ...


def device_speedup_verdict(ratio: float, band_pct: float | None) -> str:
    """``slower`` / ``faster`` only when the estimated ratio (package / fp32) is beyond the band either way."""
    if band_pct is None:
        return "not-validated"
    band = band_pct / 100
    if ratio > 1.0 + band:
        return "slower"
    return "faster" if ratio < 1.0 - band else "within-band"


@dataclass(frozen=True, kw_only=True)
class SpeedupRecord:
    """A quantized package against the fp32 graph of its own export, on the export host."""

    speedup: float  # fp32 time / package time (1 / median per-round ratio)
    median_ratio: float  # package / fp32, median over rounds
    verdict: str  # faster | within-noise | slower
    rounds: int
    threads: int  # the package's, from its session policy
    workload: str
    cpu: str
    isa: list[str] = field(default_factory=list)
    tolerance: float = SPEEDUP_TOLERANCE
    # the fp32 graph's set-up by its own policy on this host, the one compared against (1.3 additive; None: older)
    fp32_threads: int | None = None
    fp32_spinning: bool | None = None
    on_slower: str = "refuse"  # what the export was told to do with a slower package
    # the target devices' estimates (none named: empty) and what the export was told to do with a slower one
    devices: list[DeviceSpeedup] = field(default_factory=list)
    on_device_slower: str = "warn"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def speedup_verdict(ratios: Sequence[float], tolerance: float = SPEEDUP_TOLERANCE) -> tuple[float, str]:
    """(median ratio package/fp32, verdict): ``slower`` only beyond ``1 + tolerance``."""
    median = statistics.median(ratios)
    if median < 1.0:
        return median, "faster"
    return median, "within-noise" if median <= 1.0 + tolerance else "slower"


def rule_threads(work: CallWork, core_gflops: float) -> tuple[int | str, str]:
    """The per-node work rule: (1 or "all", why), for a core of ``core_gflops``."""
    us = work.node_us(core_gflops)
    if us < OVERHEAD_BOUND_NODE_US:
        why = f"~{us:.1f} us per node < {OVERHEAD_BOUND_NODE_US:g} us: overhead-bound, one thread"
        return 1, why
    return ALL, f"~{us:.1f} us per node >= {OVERHEAD_BOUND_NODE_US:g} us: compute-bound, all big cores"


def choose_policy(
    *,
    one_vs_all: Sequence[float] | None,
    spin_off_vs_on: Sequence[float] | None,
    all_threads: int,
    work: CallWork,
    cpu: str,
) -> SessionPolicy:
    """The policy from measured per-round ratios (time at 1 thread / time at all; spinning off / on).

    Ties (within :data:`THREADS_TOLERANCE`) go to one thread, and to no spinning: equal speed for less CPU. Without a measurement (a one-core
    host) the per-node work rule decides."""
    if not one_vs_all or all_threads <= 1:
        threads, why = rule_threads(work, work.host_core_gflops)
        return SessionPolicy(
            intra_op_threads=threads, allow_spinning=True, rule="per-node-work", reason=why, cpu=cpu, work=work
        )
    r_threads = statistics.median(one_vs_all)
    measured: dict[str, Any] = {
        "one_vs_all_threads": round(r_threads, 4),
        "all_threads": all_threads,
        "rounds": len(one_vs_all),
    }
    if r_threads <= 1.0 + THREADS_TOLERANCE:
        reason = (
            f"1 thread runs the call in {r_threads:.2f}x the time of {all_threads} (median of rounds;"
            f" all cores must be > {THREADS_TOLERANCE:.0%} faster to be chosen)"
        )
        return SessionPolicy(
            intra_op_threads=1,
            allow_spinning=False,
            rule="measured",
            reason=reason,
            cpu=cpu,
            measured=measured,
            work=work,
        )
    spin = True
    reason = f"{all_threads} threads run the call {r_threads:.2f}x faster than 1 (median of rounds)"
    if spin_off_vs_on:
        r_spin = statistics.median(spin_off_vs_on)
        measured["spinning_off_vs_on"] = round(r_spin, 4)
        spin = r_spin > 1.0
        reason += f"; spinning {'on' if spin else 'off'} (off/on time {r_spin:.2f}x)"
    return SessionPolicy(
        intra_op_threads=ALL,
        allow_spinning=spin,
        rule="measured",
        reason=reason,
        cpu=cpu,
        measured=measured,
        work=work,
    )


def device_core_gflops(profile: Any) -> float:
    """The fp32 GFLOP/s of one core of the profile's fastest cluster (its big cores)."""
    return max(c.peak_gops("fp32") / c.cores for c in profile.cpu_clusters)


@dataclass(frozen=True, kw_only=True)
class AppliedPolicy:
    """What a session was built with, and why: reported by ``model.info()`` / ``edgekit run --json``."""

    threads: int
    allow_spinning: bool | None  # None: ONNX Runtime's default
    source: str  # caller | package-measured | package-rule | device-profile | default
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_policy(
    policy: SessionPolicy | None,
    *,
    threads: int | None,
    all_threads: int,
    cpu: str | None,
    device: Any = None,
) -> AppliedPolicy:
    """The threads a session uses: the caller's, else the package's policy, else all cores.

    ``all_threads``: what "all" means here (physical cores, or a named device's big cores capped to them).
    The package's measurement holds on the CPU it ran on; on another CPU, or for a named device, the
    per-node work rule decides from the device's core rate (the export host's for an unknown CPU)."""
    if threads is not None:
        return AppliedPolicy(threads=threads, allow_spinning=None, source="caller", reason="threads given")
    if policy is None:
        source = "device-profile" if device is not None else "default"
        why = "the device profile's default_threads" if device is not None else "all physical cores"
        return AppliedPolicy(threads=all_threads, allow_spinning=None, source=source, reason=why)
    if device is None and policy.rule == "measured" and cpu is not None and cpu == policy.cpu:
        n = 1 if policy.intra_op_threads == 1 else all_threads
        return AppliedPolicy(
            threads=n, allow_spinning=policy.allow_spinning, source="package-measured", reason=policy.reason
        )
    if policy.work is None:
        n = 1 if policy.intra_op_threads == 1 else all_threads
        return AppliedPolicy(threads=n, allow_spinning=None, source="package-rule", reason=policy.reason)
    gflops = device_core_gflops(device) if device is not None else policy.work.host_core_gflops
    choice, why = rule_threads(policy.work, gflops)
    where = f"on {device.name}" if device is not None else f"on this CPU (not the export host's {policy.cpu})"
    n = 1 if choice == 1 else all_threads
    return AppliedPolicy(threads=n, allow_spinning=None, source="package-rule", reason=f"{where}: {why}")
