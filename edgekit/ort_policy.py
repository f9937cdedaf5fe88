"""ONNX Runtime session choices that edgekit's runtime, profiler and exporters share.

``SkipLayerNormFusion``: at session load ONNX Runtime fuses ``Add`` + ``LayerNormalization`` into the contrib
``SkipLayerNormalization``. With the CPU execution provider (onnxruntime 1.32) that kernel is 1.5-4x slower
than the two nodes it replaces: measured here at hidden 64 / 256 / 384 / 768 on 18 and 512 rows, e.g. 12 nodes
at 184 x 384 in 2.9 ms against 1.05 ms. edgekit's exporters therefore keep the two apart, and every session
edgekit creates keeps ONNX Runtime from fusing them back. GPU providers have fused kernels of their own, so
the fusion stays on when one of them is in use.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CPU_DISABLED_OPTIMIZERS",
    "MEMORY_POLICY",
    "MemoryPolicy",
    "apply_memory_policy",
    "cache_key_suffix",
    "cached_graph_entries",
    "disabled_optimizers",
    "huge_pages_wanted",
    "release_freed_heap",
    "reopen_written_graph",
    "settle_run_entries",
]

CPU_DISABLED_OPTIMIZERS: tuple[str, ...] = ("SkipLayerNormFusion",)

_GPU_PROVIDERS = frozenset(
    {
        "CUDAExecutionProvider",
        "TensorrtExecutionProvider",
        "ROCMExecutionProvider",
        "MIGraphXExecutionProvider",
        "DmlExecutionProvider",
        "WebGpuExecutionProvider",
    }
)


def disabled_optimizers(providers: Sequence[Any] = ("CPUExecutionProvider",)) -> list[str]:
    """The ``disabled_optimizers`` for an ``InferenceSession`` on ``providers`` (names or (name, options) pairs)."""
    names = {p if isinstance(p, str) else p[0] for p in providers}
    return [] if names & _GPU_PROVIDERS else list(CPU_DISABLED_OPTIMIZERS)


# ------------------------------------------------------------------------------------------- memory


@dataclass(frozen=True, kw_only=True)
class MemoryPolicy:
    """The session settings that decide resident memory (issue 14: within 1.2x weights + KV + activations).

    ``config_entries``: ONNX Runtime session config keys (onnxruntime_session_options_config_keys.h).
    ``arena`` / ``mem_pattern``: ``enable_cpu_mem_arena`` / ``enable_mem_pattern``; None keeps ORT's default
    (for ``mem_pattern``: ``cpu_mem_pattern`` on a CPU-only session). ``low_memory`` sessions turn both off
    whatever this says.

    ``cpu_mem_pattern`` (2026-12-02 c): CPU-only sessions plan no memory pattern. Why: with the pattern, ORT's
    second run of a shape takes all its tensors as one planned block, while the arena regions its first run
    filled stay (two of them pinned by chunks still in use, which no shrink releases): MobileNetV2 fp32 on its
    mapped cache entry holds 0.9 MB after load, 4.3 after a first run shrunk and trimmed, 11.1 after the
    second (the 6.8 MB block beside the pinned regions); without the pattern the runs reuse the arena's
    chunks: 9.2. Cost, measured as thread CPU time per run (one intra-op thread, 30 interleaved rounds, so
    the host's load does not enter): MobileNetV2 fp32 1.001x, int8-static 1.001x, MiniLM int8 batch 8
    1.012x; with two threads (spinning off, process CPU time) 0.98x / 0.99x / 1.02x. GPU providers keep
    ORT's default.
    """

    config_entries: Mapping[str, str] = field(default_factory=dict)
    arena: bool | None = None
    mem_pattern: bool | None = None
    external_cache_weights: bool = True  # the optimized-graph cache keeps weights in a file ORT maps
    trim_heap: bool = True  # hand the heap pages load freed back to the OS (glibc)
    reopen_written: bool = True  # after writing the cache entry, run from it (weights mapped) instead
    settle_static_arena: bool = True  # a static-shape CPU session runs once at load, its arena shrunk after
    cpu_mem_pattern: bool = False  # a CPU-only session's enable_mem_pattern when ``mem_pattern`` is None
    # ... and for a session that runs one set of shapes over and over (the in-place KV decode loop: every step
    # binds the same (1, 1) ids, full-length mask and KV buffers). Why on: without the pattern each step takes
    # every intermediate from the arena one by one; the tiny Llama's decode step ran 1.055-1.072x faster with
    # it (int4, 1 thread, CPU time per step, 25 interleaved rounds, AVX-512 VNNI Zen 5), as fast as a session
    # with ORT's defaults. The memory the pattern costs is one planned block of the step's activations (a few
    # KiB to a few MiB for a decode step; the prefill's own shapes get their own block). Where shapes do not
    # repeat across calls (a server's prompts: each call a new prompt length and total) it still pays: whole
    # generate() CPU time 0.95x (tiny) / 0.98x (32M fp32) of no pattern; ORT keeps a pattern per shape set, and
    # 580 of them grew RSS no more than without (13.6 vs 13.8 MB: the arena's growth for longer prompts).
    repeated_shapes_mem_pattern: bool = True
    huge_pages: bool = True  # the load's new anonymous memory (pre-packed weights) into 2 MiB pages (Linux)


MEMORY_POLICY = MemoryPolicy()


def apply_memory_policy(
    options: Any,
    *,
    low_memory: bool,
    cpu_only: bool = False,
    policy: MemoryPolicy | None = None,
    repeated_shapes: bool = False,
) -> None:
    """Set an ``ort.SessionOptions`` for memory: :data:`MEMORY_POLICY` (or ``policy``), then ``low_memory``.

    ``cpu_only``: the session runs on the CPU provider alone (its memory pattern is ``cpu_mem_pattern``, or
    ``repeated_shapes_mem_pattern`` when ``repeated_shapes``: the caller runs the same shapes over and over).
    """
    policy = policy or MEMORY_POLICY
    for key, value in policy.config_entries.items():
        options.add_session_config_entry(key, value)
    if policy.arena is not None:
        options.enable_cpu_mem_arena = policy.arena
    if policy.mem_pattern is not None:
        options.enable_mem_pattern = policy.mem_pattern
    elif cpu_only:
        options.enable_mem_pattern = policy.repeated_shapes_mem_pattern if repeated_shapes else policy.cpu_mem_pattern
    if low_memory:  # the caller asked to trade speed for memory: no arena, no planned buffers
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False


# Weights at least this large go to the cache entry's external file, at offsets ORT aligns for mmap.
_EXTERNAL_MIN_BYTES = 1024


def cached_graph_entries(model_name: str, *, force: bool, policy: MemoryPolicy | None = None) -> dict[str, str]:
    """Session config entries for saving the optimized graph: weights in ``<model>.data`` beside it.

    Why: a graph whose weights are inside the protobuf is read into memory whole, each weight copied into a
    tensor, then pre-packed (MLAS's layout for GEMM / conv kernels) into a third buffer; the copies are freed
    but load peaks at 2-3x the weights. Weights in an external file are mapped instead: pre-packing reads the
    mapped pages and the mapping is dropped once packed, so load peaks near 1.2x and steady state is 1x.
    Measured on a 16.8 MB fp32 MLP (onnxruntime 1.32, AVX2): load peak 33.7 -> 20.9 MB, resident after load
    33.7 -> 16.8 MB, run time unchanged. ``force``: protobuf's 2 GB limit needs the file whatever the policy.
    """
    policy = policy or MEMORY_POLICY
    if not (force or policy.external_cache_weights):
        return {}
    return {
        "session.optimized_model_external_initializers_file_name": f"{model_name}.data",
        "session.optimized_model_external_initializers_min_size_in_bytes": str(_EXTERNAL_MIN_BYTES),
    }


def cache_key_suffix(policy: MemoryPolicy | None = None) -> str:
    """What the optimized-graph cache key adds for this policy: an entry with mapped weights is another file set."""
    return "-xw" if (policy or MEMORY_POLICY).external_cache_weights else ""


def reopen_written_graph(policy: MemoryPolicy | None = None) -> bool:
    """Whether a load that has just written the optimized-graph cache entry reopens the session from it.

    Why: the session that optimized and saved the graph keeps every weight in its heap (33.7 MB resident for
    the 16.8 MB MLP even after :func:`release_freed_heap`); the session opened from the entry maps them
    (16.8 MB). It costs one cache-hit load (~15 ms for a tiny Llama, ~0.2 s for MiniLM), on the first load only.
    """
    policy = policy or MEMORY_POLICY
    return policy.external_cache_weights and policy.reopen_written


def release_freed_heap(policy: MemoryPolicy | None = None) -> bool:
    """``malloc_trim(0)`` after a session is built (glibc only; False elsewhere or when the policy says no).

    Why: loading frees the protobuf copy of every weight once it is packed, but glibc keeps freed heap pages
    resident (most weights fall under its dynamic mmap threshold), so a 16.8 MB model stays at 33.7 MB
    resident until trimmed (measured: 16.9 MB after). It costs a few milliseconds, once per load.
    """
    policy = policy or MEMORY_POLICY
    if not policy.trim_heap:
        return False
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, looked up once per process; None where there is none (not Linux, musl, ...).

    Why ``libc.so.6`` before ``ctypes.util.find_library``: the lookup runs ``ldconfig -p`` in a subprocess (and
    imports ``subprocess``) on every call; glibc's soname is fixed, so the search is only the fallback.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        pass
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim: nothing to hand back
        return None


def huge_pages_wanted(*, low_memory: bool, policy: MemoryPolicy | None = None) -> bool:
    """Whether a session's load moves the memory it allocated into transparent huge pages (edgekit.huge_pages).

    Why: the weights a decode step streams were spread over 4 KiB pages (ONNX Runtime never asks for huge
    ones), and the same graph ran up to 7 % apart between two sessions of one process by where the pages fell;
    collapsed into 2 MiB pages, the ~32M Llama decode step at fp32 ran 1.15-1.2x faster (AVX-512 VNNI host, one
    thread, steps interleaved with an uncollapsed session's). ``low_memory`` sessions keep small pages: a
    partly used 2 MiB stretch becomes wholly resident when collapsed.
    """
    return (policy or MEMORY_POLICY).huge_pages and not low_memory


# A run option: at the end of the run, the CPU arena hands back every region none of its chunks still uses.
_SHRINK_CPU_ARENA = {"memory.enable_memory_arena_shrinkage": "cpu:0"}


def settle_run_entries(*, static_shapes: bool, cpu_only: bool, policy: MemoryPolicy | None = None) -> dict[str, str]:
    """The run config entries of a settling run at load, or {} when the session is not to be settled.

    Why: with memory-pattern planning on, ONNX Runtime runs a new input shape once tensor by tensor, records
    the plan, and from the second run on takes all of that shape's activations as one planned block. The
    arena keeps the regions of the first run beside that block: MobileNetV2 int8 (batch 1, AVX-512 VNNI host)
    holds 26.3 MB after two runs, 19.7 MB after one. Running once at load with the arena shrunk afterwards
    leaves only the planned block: 21.3 MB, with the planned (fast) path kept for every call. Only a graph
    whose every input shape is fixed is settled (its first run is the shape every call will have), only on
    the CPU provider (the shrink names the CPU arena), never with ``low_memory`` (no arena, no plan). It costs
    one inference at load; the first call is then as fast as later ones.
    """
    policy = policy or MEMORY_POLICY
    return dict(_SHRINK_CPU_ARENA) if policy.settle_static_arena and static_shapes and cpu_only else {}
