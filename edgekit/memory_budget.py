"""What a package should cost in resident memory, and the process readings to compare it with.

The budget of a loaded and running package is its weight bytes (every initializer, as the manifest counts
them: :func:`edgekit.onnx_graph.weight_stats`) + its KV cache (decoders: layers x 2 x kv heads x head size x
tokens x dtype bytes, twice over when the runtime's copying loop keeps the past and the present alive
together) + the largest set of activations live at once (the profiler's liveness walk,
``edgekit.profiler.static``, passed in by the caller: core does not import the profiler). Issue 14 asks that
the resident memory a package adds stays within :data:`TARGET_RATIO` of that.

Readings come from ``/proc/self/status``: ``VmRSS`` (resident now) and ``VmHWM`` (the peak), the peak reset
between phases by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0). The baseline is taken after the
interpreter, numpy, onnxruntime and edgekit's runtime are imported, and ONNX Runtime's environment is up:
none of that is the model's cost, and a second model in the same app would not pay it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.onnx_graph import weight_stats

__all__ = [
    "TARGET_RATIO",
    "KVCache",
    "MemoryBudget",
    "ProcessMemory",
    "kv_cache_for",
    "library_code_bytes",
    "read_process_memory",
    "reset_peak",
    "weight_bytes",
]

TARGET_RATIO = 1.2
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_SMAPS = Path("/proc/self/smaps")
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1, "uint8": 1}


@dataclass(frozen=True, kw_only=True)
class KVCache:
    """The KV cache a decode of ``tokens`` positions holds; ``copies`` 2 when past and present coexist."""

    layers: int
    kv_heads: int
    head_size: int
    tokens: int
    dtype_bytes: int = 4
    batch: int = 1
    copies: int = 1

    @property
    def nbytes(self) -> int:
        return (
            self.copies * self.layers * 2 * self.kv_heads * self.head_size * self.tokens * self.dtype_bytes * self.batch
        )


def kv_cache_for(generation: Any, tokens: int, *, batch: int = 1) -> KVCache:
    """The KV cache of a manifest's :class:`~edgekit.manifest.GenerationSpec` decoding ``tokens`` positions.

    A shared buffer (GroupQueryAttention graphs) is one allocation of ``tokens`` positions, written in place;
    the copying loop binds each step's presents as the next step's pasts, so both are live during a step.
    """
    if generation is None or not generation.with_kv_cache:
        return KVCache(layers=0, kv_heads=0, head_size=0, tokens=0)
    return KVCache(
        layers=int(generation.num_layers),
        kv_heads=int(generation.num_kv_heads),
        head_size=int(generation.head_size),
        tokens=int(tokens),
        dtype_bytes=_DTYPE_BYTES.get(str(generation.kv_dtype), 4),
        batch=batch,
        copies=1 if generation.shared_kv_buffer else 2,
    )


def weight_bytes(model: Any) -> int:
    """Bytes of every initializer of a loaded ``ModelProto`` (the manifest's ``weights.bytes_by_dtype``, summed)."""
    return int(sum(weight_stats(model).bytes_by_dtype.values()))


@dataclass(frozen=True, kw_only=True)
class MemoryBudget:
    """The bytes a running package needs: weights + KV cache + the peak of live activations."""

    weight_bytes: int
    kv_cache_bytes: int = 0
    activation_bytes: int = 0

    @property
    def total(self) -> int:
        return self.weight_bytes + self.kv_cache_bytes + self.activation_bytes

    def ratio(self, measured_bytes: float) -> float:
        """Measured bytes (above the baseline) over the budget; the target is <= :data:`TARGET_RATIO`."""
        return float(measured_bytes) / self.total if self.total else float("inf")

    def to_dict(self) -> dict[str, int]:
        return {
            "weight_bytes": self.weight_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "activation_bytes": self.activation_bytes,
            "total_bytes": self.total,
        }


@dataclass(frozen=True, kw_only=True)
class ProcessMemory:
    """``VmRSS`` and ``VmHWM`` of this process, in bytes (None where ``/proc`` is missing)."""

    rss: int | None
    peak: int | None

    def to_dict(self) -> dict[str, int | None]:
        return {"rss": self.rss, "peak": self.peak}


def _status_fields(text: str) -> Mapping[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM") and value.split():
            out[key] = int(value.split()[0]) * 1024  # the kernel reports kB (KiB)
    return out


def read_process_memory() -> ProcessMemory:
    """This process's resident and peak resident memory now."""
    try:
        fields = _status_fields(_STATUS.read_text())
    except OSError:  # not Linux: the caller reports "unknown" rather than a wrong figure
        return ProcessMemory(rss=None, peak=None)
    return ProcessMemory(rss=fields.get("VmRSS"), peak=fields.get("VmHWM"))


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS so the next peak is of what follows only; False where not allowed."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _is_shared_library(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return ".so" in name and (name.endswith(".so") or ".so." in name or ".cpython-" in name)


def library_code_bytes() -> int | None:
    """Resident bytes of shared-library mappings (``*.so``): code the process pages in as it first runs a kernel.

    Why apart: ONNX Runtime's kernels are paged in from ``libonnxruntime.so`` the first time a model uses them
    (MiniLM int8 pages in ~5 MB of integer GEMM code on its first call); that is the library's cost, shared by
    every model of the app, and it never leaves RSS once touched. None where ``/proc/self/smaps`` is missing.
    """
    try:
        text = _SMAPS.read_text()
    except OSError:
        return None
    total, in_library = 0, False
    for line in text.splitlines():
        head = line.split(None, 6)
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            in_library = len(head) == 6 and _is_shared_library(head[5])
        elif in_library and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total
