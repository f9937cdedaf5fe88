"""Detect this machine and calibrate it with a short micro-benchmark, so it can serve as the ``host`` profile.

Detection reads Linux's ``/sys`` and ``/proc`` (with portable fallbacks) and needs no psutil. Calibration runs
through ONNX Runtime only, on the CPU execution provider, so it measures what edgekit's runtime gets rather
than what the silicon could do:

- fp32 GEMM GFLOP/s: an NxNxN ``MatMul`` (fp16 likewise, when the CPU EP has an fp16 kernel);
- int8 GEMM GOP/s: ``MatMulInteger`` uint8 x int8 -> int32;
- memory bandwidth GB/s: a large numpy copy, bytes read + written over time.

The ONNX graphs are encoded here as protobuf bytes by a tiny writer, because the device install has
onnxruntime and numpy but not the ``onnx`` package. Results are cached as JSON (``EDGEKIT_CACHE_DIR`` or
``~/.cache/edgekit/host_calibration.json``), keyed by CPU model, core count and ONNX Runtime version; pass
``recalibrate=True`` to measure again. A calibration takes about 2-3 s.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgekit.devices import (
    KNOWN_PROVIDERS,
    CpuCluster,
    DeviceKind,
    DeviceProfile,
    ExecutionProviderEntry,
)
from edgekit.errors import EdgekitError, RuntimeBackendError

__all__ = [
    "CACHE_DIR_ENV",
    "CACHE_FILE",
    "HostCalibration",
    "HostCluster",
    "HostCpu",
    "HostMemory",
    "cache_path",
    "calibrate",
    "detect_cpu",
    "detect_memory",
    "host_profile",
    "matmul_model_bytes",
]

CACHE_DIR_ENV = "EDGEKIT_CACHE_DIR"
CACHE_FILE = "host_calibration.json"
CACHE_SCHEMA_VERSION = 1

_SYS_CPU = Path("/sys/devices/system/cpu")
_PROC_CPUINFO = Path("/proc/cpuinfo")
_PROC_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")

# Linux cpuinfo flag -> the feature word the bundled profiles use.
_ISA_FLAGS = {
    # x86 ("flags")
    "sse4_2": "sse4.2",
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "avx_vnni": "avx_vnni",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512_vnni": "avx512_vnni",
    "avx512_bf16": "avx512_bf16",
    "avx512_fp16": "avx512_fp16",
    "amx_bf16": "amx_bf16",
    "amx_int8": "amx_int8",
    # Arm ("Features")
    "asimd": "neon",
    "asimddp": "dotprod",
    "fphp": "fp16_arith",
    "i8mm": "i8mm",
    "bf16": "bf16",
    "sve": "sve",
    "sve2": "sve2",
    "sme": "sme",
}

# Arm Ltd. (implementer 0x41) part numbers -> core names, so a host's clusters read like the bundled profiles.
_ARM_PARTS = {
    0xD03: "Cortex-A53",
    0xD04: "Cortex-A35",
    0xD05: "Cortex-A55",
    0xD07: "Cortex-A57",
    0xD08: "Cortex-A72",
    0xD09: "Cortex-A73",
    0xD0A: "Cortex-A75",
    0xD0B: "Cortex-A76",
    0xD0C: "Neoverse-N1",
    0xD0D: "Cortex-A77",
    0xD40: "Neoverse-V1",
    0xD41: "Cortex-A78",
    0xD42: "Cortex-A78AE",
    0xD44: "Cortex-X1",
    0xD46: "Cortex-A510",
    0xD47: "Cortex-A710",
    0xD48: "Cortex-X2",
    0xD49: "Neoverse-N2",
    0xD4B: "Cortex-A78C",
    0xD4D: "Cortex-A715",
    0xD4E: "Cortex-X3",
    0xD4F: "Neoverse-V2",
    0xD80: "Cortex-A520",
    0xD81: "Cortex-A720",
    0xD82: "Cortex-X4",
}


# --------------------------------------------------------------------------------------------------------
# Detection


@dataclass(frozen=True, kw_only=True)
class HostCluster:
    core_type: str
    cores: int  # physical cores
    max_ghz: float | None  # None when no source reports a clock


@dataclass(frozen=True, kw_only=True)
class HostCpu:
    model: str
    arch: str
    clusters: tuple[HostCluster, ...]
    isa_features: tuple[str, ...]
    threads: int  # threads edgekit may use: physical cores in our affinity, capped by a cgroup CPU quota
    topology_source: str
    frequency_source: str

    @property
    def cores(self) -> int:
        return sum(cluster.cores for cluster in self.clusters)


@dataclass(frozen=True, kw_only=True)
class HostMemory:
    total_mb: int
    available_mb: int
    source: str


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _cpu_list(text: str) -> frozenset[int]:
    """Parse the kernel's cpulist format: ``0-3,8,10-11``."""
    cpus: set[int] = set()
    for part in text.split(","):
        if "-" in part:
            low, high = part.split("-", 1)
            cpus.update(range(int(low), int(high) + 1))
        elif part.strip():
            cpus.add(int(part))
    return frozenset(cpus)


def _cpuinfo_blocks() -> list[dict[str, str]]:
    text = _read(_PROC_CPUINFO) or ""
    blocks: list[dict[str, str]] = [{}]
    for line in text.splitlines():
        if not line.strip():
            blocks.append({})
            continue
        key, _, value = line.partition(":")
        blocks[-1][key.strip()] = value.strip()
    return [block for block in blocks if block]


def _allowed_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity API in os
        return list(range(os.cpu_count() or 1))


def _cgroup_cpu_limit() -> int | None:
    text = _read(_CGROUP / "cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"
    if not text:
        return None
    quota, _, period = text.partition(" ")
    if quota == "max" or not period:
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def _core_type(block: dict[str, str], fallback: str) -> str:
    part = block.get("CPU part")
    if part and block.get("CPU implementer", "").lower() == "0x41":
        return _ARM_PARTS.get(int(part, 16), f"Arm part {part}")
    return block.get("model name") or fallback


def detect_cpu() -> HostCpu:
    """Physical cores grouped by (core type, max clock), ISA features, and the thread count to use."""
    blocks = {int(b["processor"]): b for b in _cpuinfo_blocks() if b.get("processor", "").isdigit()}
    first = next(iter(blocks.values()), {})
    arch = platform.machine() or "unknown"
    model = first.get("model name") or first.get("Model") or first.get("Hardware") or platform.processor() or arch
    allowed = _allowed_cpus()

    # One physical core = one set of SMT siblings; count each set once, grouped by its core type and clock.
    seen: set[frozenset[int]] = set()
    groups: dict[tuple[str, float | None], int] = {}
    freq_sources: set[str] = set()
    topology_source = f"{_SYS_CPU}/cpu*/topology/thread_siblings_list"
    for cpu in allowed:
        siblings_text = _read(_SYS_CPU / f"cpu{cpu}" / "topology" / "thread_siblings_list")
        if siblings_text is None:
            topology_source = "os.sched_getaffinity / os.cpu_count (logical CPUs; SMT not detected)"
            siblings = frozenset({cpu})
        else:
            siblings = _cpu_list(siblings_text)
        if siblings in seen:
            continue
        seen.add(siblings)
        block = blocks.get(cpu, first)
        ghz, source = _max_ghz(cpu, block, model)
        if source:
            freq_sources.add(source)
        key = (_core_type(block, model), ghz)
        groups[key] = groups.get(key, 0) + 1

    clusters = tuple(
        HostCluster(core_type=core_type, cores=cores, max_ghz=ghz)
        for (core_type, ghz), cores in sorted(groups.items(), key=lambda item: -(item[0][1] or 0.0))
    )
    flags = set((first.get("flags") or first.get("Features") or "").split())
    features = tuple(sorted({word for flag, word in _ISA_FLAGS.items() if flag in flags}))
    physical = sum(cluster.cores for cluster in clusters)
    limit = _cgroup_cpu_limit()
    return HostCpu(
        model=model,
        arch=arch,
        clusters=clusters,
        isa_features=features,
        threads=min(physical, limit) if limit else physical,
        topology_source=topology_source,
        frequency_source="; ".join(sorted(freq_sources)) or "unknown",
    )


def _max_ghz(cpu: int, block: dict[str, str], model: str) -> tuple[float | None, str]:
    """The core's max clock, from the best source available (cpufreq > cpuinfo MHz > model name)."""
    khz = _read(_SYS_CPU / f"cpu{cpu}" / "cpufreq" / "cpuinfo_max_freq")
    if khz and khz.isdigit():
        return round(int(khz) / 1e6, 3), "cpufreq cpuinfo_max_freq"
    mhz = block.get("cpu MHz")
    if mhz:
        # The current clock, not the max; in VMs it is the nominal clock the hypervisor reports.
        return round(float(mhz) / 1000, 3), "/proc/cpuinfo 'cpu MHz' (current clock; no cpufreq)"
    match = re.search(r"@\s*([0-9.]+)\s*GHz", model)
    if match:
        return float(match.group(1)), "CPU model name (nominal clock)"
    return None, ""


def detect_memory() -> HostMemory:
    """Total and currently available memory, the cgroup limit applied when one is set."""
    info: dict[str, int] = {}
    for line in (_read(_PROC_MEMINFO) or "").splitlines():
        key, _, value = line.partition(":")
        number = value.split()
        if number and number[0].isdigit():
            info[key] = int(number[0]) // 1024  # kB -> MB
    if "MemTotal" in info:
        total, available, source = info["MemTotal"], info.get("MemAvailable", info["MemTotal"]), "/proc/meminfo"
    else:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        total = pages * page_size // 2**20
        # Without /proc there is no portable "available" figure; half of RAM is a planning guess.
        available, source = total // 2, "os.sysconf (available memory: half of RAM, a guess)"
    limit = _read(_CGROUP / "memory.max")
    if limit and limit.isdigit():
        used = int(_read(_CGROUP / "memory.current") or 0)
        total = min(total, int(limit) // 2**20)
        available = min(available, (int(limit) - used) // 2**20)
        source += " + cgroup memory.max"
    return HostMemory(total_mb=total, available_mb=max(1, available), source=source)


# --------------------------------------------------------------------------------------------------------
# A minimal ONNX protobuf writer: enough for a one-node graph (field numbers from onnx/onnx.proto).

_ELEM_TYPES = {"float32": 1, "uint8": 2, "int8": 3, "int32": 6, "float16": 10}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _str_field(number: int, text: str) -> bytes:
    return _bytes_field(number, text.encode())


def _value_info(name: str, dtype: str, shape: tuple[int, ...]) -> bytes:
    dims = b"".join(_bytes_field(1, _int_field(1, d)) for d in shape)  # TensorShapeProto.dim.dim_value
    tensor_type = _int_field(1, _ELEM_TYPES[dtype]) + _bytes_field(2, dims)  # TypeProto.Tensor
    return _str_field(1, name) + _bytes_field(2, _bytes_field(1, tensor_type))  # ValueInfoProto


def _initializer(name: str, array: Any) -> bytes:
    dims = b"".join(_int_field(1, d) for d in array.shape)
    return dims + _int_field(2, _ELEM_TYPES[str(array.dtype)]) + _str_field(8, name) + _bytes_field(9, array.tobytes())


def matmul_model_bytes(op_type: str, input_dtype: str, weight: Any, output_dtype: str) -> bytes:
    """A serialized ModelProto computing ``Y = op_type(A, B)`` with B a constant initializer.

    B is constant, as a model's weights are, so ONNX Runtime pre-packs it the way it does in real inference.
    """
    rows = weight.shape[0]
    node = _str_field(1, "A") + _str_field(1, "B") + _str_field(2, "Y") + _str_field(4, op_type)
    graph = (
        _bytes_field(1, node)
        + _str_field(2, "edgekit_calibration")
        + _bytes_field(5, _initializer("B", weight))
        + _bytes_field(11, _value_info("A", input_dtype, (rows, rows)))
        + _bytes_field(12, _value_info("Y", output_dtype, (rows, weight.shape[1])))
    )
    opset = _int_field(2, 13)  # default domain: MatMul-13, MatMulInteger-10
    return _int_field(1, 8) + _bytes_field(8, opset) + _str_field(2, "edgekit") + _bytes_field(7, graph)


# --------------------------------------------------------------------------------------------------------
# Calibration


@dataclass(frozen=True, kw_only=True)
class HostCalibration:
    key: str
    fp32_gflops: float
    fp16_gflops: float | None  # None: the CPU EP has no fp16 MatMul kernel here
    int8_gops: float
    memory_bandwidth_gbps: float
    threads: int
    gemm_size: int
    copy_mib: int
    onnxruntime_version: str
    seconds: float
    measured_at: str
    from_cache: bool = False  # how this object was obtained; not part of the cached record

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        del record["from_cache"]
        return record

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, from_cache: bool = False) -> HostCalibration:
        return cls(**data, from_cache=from_cache)


def cache_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$EDGEKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgekit`` or ``~/.cache/edgekit``."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_DIR_ENV) or None
    if cache_dir is None:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        cache_dir = Path(base) / "edgekit"
    return Path(cache_dir) / CACHE_FILE


def _calibration_key(cpu: HostCpu, ort_version: str) -> str:
    return f"{cpu.model} | {cpu.arch} | {cpu.threads} threads | onnxruntime {ort_version}"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        # A corrupt or unreadable cache is only a miss: measuring again and rewriting it repairs it.
        return {}
    if not isinstance(document, dict) or document.get("schema_version") != CACHE_SCHEMA_VERSION:
        return {}
    entries = document.get("entries")
    return entries if isinstance(entries, dict) else {}


def _write_cache(path: Path, entries: dict[str, Any]) -> None:
    document = {"schema_version": CACHE_SCHEMA_VERSION, "entries": entries}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename, so a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(document, out, indent=2, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise EdgekitError(
            f"cannot write the host calibration cache {path}: {err.strerror or err}",
            hint=f"set {CACHE_DIR_ENV} to a writable directory",
            param=CACHE_DIR_ENV,
        ) from err


def _median_seconds(run: Callable[[], object], *, budget_s: float, min_runs: int = 3, max_runs: int = 200) -> float:
    run()  # warm-up: the first runs pay for allocations and thread-pool start-up
    run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (len(times) < max_runs and time.perf_counter() - start < budget_s):
        tick = time.perf_counter()
        run()
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def _ort_errors() -> tuple[type[BaseException], ...]:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NotImplemented", "RuntimeException")
    return tuple(getattr(state, name) for name in names if hasattr(state, name))


def _gemm_rate(op_type: str, input_dtype: str, output_dtype: str, n: int, threads: int, budget_s: float) -> float:
    """Median GOP/s of an n x n x n product on the CPU EP (2 ops per multiply-add)."""
    import numpy as np
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    if input_dtype == "uint8":
        # 7-bit activations and 6-bit weights keep AVX2's u8s8 16-bit intermediate sums from saturating.
        a = rng.integers(0, 128, (n, n), dtype=np.uint8)
        b = rng.integers(-64, 64, (n, n), dtype=np.int8)
    else:
        a = rng.standard_normal((n, n)).astype(input_dtype)
        b = rng.standard_normal((n, n)).astype(input_dtype)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        matmul_model_bytes(op_type, input_dtype, b, output_dtype), options, providers=["CPUExecutionProvider"]
    )
    feed = {"A": a}
    seconds = _median_seconds(lambda: session.run(None, feed), budget_s=budget_s)
    return 2 * n**3 / seconds / 1e9


def _copy_bandwidth(mib: int, budget_s: float) -> float:
    """GB/s of a single-thread numpy copy: bytes read plus bytes written, over the median time."""
    import numpy as np

    source = np.ones(mib * 2**20 // 8, dtype=np.float64)
    target = np.empty_like(source)
    seconds = _median_seconds(lambda: np.copyto(target, source), budget_s=budget_s)
    return 2 * source.nbytes / seconds / 1e9


def _measure(cpu: HostCpu, memory: HostMemory, key: str, ort_version: str) -> HostCalibration:
    started = time.perf_counter()
    # 512 keeps a run in the milliseconds on small boards; many-core hosts need more work per thread.
    n = 512 if cpu.threads <= 8 else 1024
    errors = _ort_errors()
    try:
        fp32 = _gemm_rate("MatMul", "float32", "float32", n, cpu.threads, budget_s=0.6)
        int8 = _gemm_rate("MatMulInteger", "uint8", "int32", n, cpu.threads, budget_s=0.6)
    except errors as err:
        raise RuntimeBackendError(
            f"host calibration failed: ONNX Runtime could not run a {n}x{n} MatMul: {err}",
            hint="check the onnxruntime install (python -c 'import onnxruntime')",
        ) from err
    try:
        fp16: float | None = _gemm_rate("MatMul", "float16", "float16", n, cpu.threads, budget_s=0.4)
    except errors:
        # Builds without an fp16 MatMul kernel for this CPU are normal; the profile then uses the fp32 rate.
        fp16 = None
    # 64 MiB per buffer is far beyond the last-level cache of edge SoCs; smaller on tiny-RAM hosts.
    copy_mib = max(8, min(64, memory.total_mb // 32))
    bandwidth = _copy_bandwidth(copy_mib, budget_s=0.4)
    return HostCalibration(
        key=key,
        fp32_gflops=round(fp32, 2),
        fp16_gflops=None if fp16 is None else round(fp16, 2),
        int8_gops=round(int8, 2),
        memory_bandwidth_gbps=round(bandwidth, 2),
        threads=cpu.threads,
        gemm_size=n,
        copy_mib=copy_mib,
        onnxruntime_version=ort_version,
        seconds=round(time.perf_counter() - started, 3),
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def calibrate(
    *,
    recalibrate: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    cpu: HostCpu | None = None,
    memory: HostMemory | None = None,
) -> HostCalibration:
    """The host's measured rates: from the cache when this CPU and ONNX Runtime were measured before."""
    import onnxruntime as ort

    cpu = cpu or detect_cpu()
    memory = memory or detect_memory()
    key = _calibration_key(cpu, ort.__version__)
    path = cache_path(cache_dir)
    entries = _read_cache(path)
    if not recalibrate and key in entries:
        try:
            return HostCalibration.from_dict(entries[key], from_cache=True)
        except TypeError:
            pass  # an entry written by another edgekit version: measure again and replace it
    result = _measure(cpu, memory, key, ort.__version__)
    entries[key] = result.to_dict()
    _write_cache(path, entries)
    return result


def _host_clusters(
    cpu: HostCpu, calibration: HostCalibration, fp16: float, unverified: list[str]
) -> tuple[tuple[CpuCluster, ...], str]:
    """The CPU clusters with per-cycle rates derived from the measured peaks, and the clock's source."""
    ghz_sources = cpu.frequency_source
    if any(cluster.max_ghz is None for cluster in cpu.clusters):
        # No clock anywhere: 1 GHz keeps the per-cycle rates defined; they are then ops per ns, not per cycle.
        unverified.append("cpu_clusters")
        ghz_sources += "; clock unknown, 1.0 GHz placeholder"
    core_ghz = [(cluster, cluster.max_ghz or 1.0) for cluster in cpu.clusters]
    total_core_ghz = sum(cluster.cores * ghz for cluster, ghz in core_ghz)

    def per_cycle(rate: float) -> float:
        return round(rate / total_core_ghz, 4)

    clusters = tuple(
        CpuCluster(
            cores=cluster.cores,
            core_type=cluster.core_type,
            max_ghz=ghz,
            fp32_flops_per_cycle=per_cycle(calibration.fp32_gflops),
            fp16_flops_per_cycle=per_cycle(fp16),
            int8_ops_per_cycle=per_cycle(calibration.int8_gops),
        )
        for cluster, ghz in core_ghz
    )
    return clusters, ghz_sources


def _host_providers() -> tuple[ExecutionProviderEntry, ...]:
    """The execution providers this onnxruntime build offers that run on this machine."""
    import onnxruntime as ort

    # A remote EP (Azure) sends the model to an endpoint; it says nothing about this machine.
    return tuple(
        ExecutionProviderEntry(name=name, constraints=KNOWN_PROVIDERS.get(name).typical_constraints)
        for name in ort.get_available_providers()
        if name in KNOWN_PROVIDERS and not KNOWN_PROVIDERS.get(name).remote
    )


def _host_sources(cpu: HostCpu, memory: HostMemory, calibration: HostCalibration, ghz_sources: str) -> dict[str, str]:
    """Where each figure of the host profile comes from (``detected:`` / ``measured:`` / ``derived:``)."""
    run = (
        f"ONNX Runtime {calibration.onnxruntime_version} CPU EP, {calibration.threads} threads, "
        f"{calibration.measured_at}"
    )
    gemm = f"{calibration.gemm_size}x{calibration.gemm_size}x{calibration.gemm_size}"
    return {
        "cpu_clusters": (
            f"detected: {cpu.topology_source}; clock from {ghz_sources}; per-cycle rates derived: "
            "measured rate / sum(cores x GHz), an effective rate for ONNX Runtime's kernels"
        ),
        "isa_features": "detected: /proc/cpuinfo flags/Features",
        "peak_fp32_gflops": f"measured: median {gemm} fp32 MatMul, {run}",
        "peak_fp16_gflops": (
            f"measured: median {gemm} fp16 MatMul, {run}"
            if calibration.fp16_gflops is not None
            else "derived: the fp32 rate (this ONNX Runtime build has no fp16 MatMul kernel for this CPU)"
        ),
        "peak_int8_gops": f"measured: median {gemm} MatMulInteger uint8 x int8, {run}",
        "memory_gb": f"detected: {memory.source} total",
        "memory_bandwidth_gbps": (
            f"measured: single-thread numpy copy of {calibration.copy_mib} MiB, (read + written bytes) / "
            "median time; a lower bound on multi-channel DRAM bandwidth"
        ),
        "app_memory_budget_mb": f"detected: {memory.source} available memory at run time",
        "execution_providers": "detected: onnxruntime.get_available_providers(), without the remote Azure EP",
        "default_threads": "detected: physical cores in this process's CPU affinity, capped by a cgroup quota",
    }


def host_profile(*, recalibrate: bool = False, cache_dir: str | os.PathLike[str] | None = None) -> DeviceProfile:
    """This machine as a :class:`DeviceProfile`: detected facts, measured peaks (``measured:`` sources)."""
    cpu = detect_cpu()
    memory = detect_memory()
    calibration = calibrate(recalibrate=recalibrate, cache_dir=cache_dir, cpu=cpu, memory=memory)
    unverified: list[str] = []
    # No fp16 MatMul kernel measured: the fp32 rate stands in, flagged after the clusters' own flag.
    fp16 = calibration.fp16_gflops if calibration.fp16_gflops is not None else calibration.fp32_gflops
    clusters, ghz_sources = _host_clusters(cpu, calibration, fp16, unverified)
    if calibration.fp16_gflops is None:
        unverified.append("peak_fp16_gflops")
    memory_gb = round(memory.total_mb / 1024, 3)
    return DeviceProfile(
        name="host",
        display_name=f"This host ({cpu.model}, {cpu.cores} cores)",
        kind=DeviceKind.HOST,
        os=f"{platform.system()} {platform.release()} ({cpu.arch})",
        cpu_clusters=clusters,
        isa_features=cpu.isa_features,
        peak_fp32_gflops=calibration.fp32_gflops,
        peak_fp16_gflops=fp16,
        peak_int8_gops=calibration.int8_gops,
        memory_gb=memory_gb,
        memory_bandwidth_gbps=calibration.memory_bandwidth_gbps,
        app_memory_budget_mb=min(memory.available_mb, math.floor(memory_gb * 1024)),
        execution_providers=_host_providers(),
        default_threads=cpu.threads,
        sources=_host_sources(cpu, memory, calibration, ghz_sources),
        unverified=tuple(unverified),
    )
