"""What a package should cost in resident memory, and the process readings to compare it with.

The budget of a loaded and running package is its weight bytes (every initializer, as the manifest counts
them: :func:`edgekit.onnx_graph.weight_stats`) + its KV cache (decoders: layers x 2 x kv heads x head size x
tokens x dtype bytes, twice over when the runtime's copying loop keeps the past and the present alive
together) + the largest set of activations live at once (the profiler's liveness walk,
``edgekit.profiler.static``, passed in by the caller: core does not import the profiler) + the largest
kernel workspace, the scratch a kernel allocates while it runs and that is no tensor of the graph
(:func:`kernel_workspace_bytes`: im2col and indirection buffers of convolutions, the quantized input, the
QKV product and the attention scores inside a fused attention, the int8 copy of a MatMulNBits input).
Issue 14 asks that the resident memory a package adds stays within :data:`TARGET_RATIO` of that.

The workspace formulas are here, not in the profiler, so the profiler's own memory estimate can use them too.

Readings come from ``/proc/self/status``: ``VmRSS`` (resident now) and ``VmHWM`` (the peak), the peak reset
between phases by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0). The baseline is taken after the
interpreter, numpy, onnxruntime and edgekit's runtime are imported, and ONNX Runtime's environment is up:
none of that is the model's cost, and a second model in the same app would not pay it again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.onnx_graph import node_attr, weight_stats

__all__ = [
    "TARGET_RATIO",
    "KVCache",
    "MemoryBudget",
    "ProcessMemory",
    "Workspace",
    "kernel_workspace_bytes",
    "kv_cache_for",
    "largest_workspace",
    "library_code_bytes",
    "mapped_file_bytes",
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
    workspace_bytes: int = 0  # the largest kernel workspace (:func:`largest_workspace`), beside the tensors

    @property
    def total(self) -> int:
        return self.weight_bytes + self.kv_cache_bytes + self.activation_bytes + self.workspace_bytes

    def ratio(self, measured_bytes: float) -> float:
        """Measured bytes (above the baseline) over the budget; the target is <= :data:`TARGET_RATIO`."""
        return float(measured_bytes) / self.total if self.total else float("inf")

    def to_dict(self) -> dict[str, int]:
        return {
            "weight_bytes": self.weight_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "activation_bytes": self.activation_bytes,
            "workspace_bytes": self.workspace_bytes,
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


def _mapping_rss(wanted: Callable[[str], bool]) -> int | None:
    """Resident bytes of the ``/proc/self/smaps`` mappings whose path ``wanted`` accepts; None without smaps."""
    total, counted = 0, False
    try:
        # line by line: the whole text (~1 MB for ONNX Runtime's process) read at once would leave ~0.4 MB of
        # heap resident, counted in the very figures this reading is subtracted from
        with _SMAPS.open() as smaps:
            for line in smaps:
                head = line.split(None, 5)
                if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                    counted = len(head) == 6 and wanted(head[5].rstrip("\n"))
                elif counted and line.startswith("Rss:"):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return None
    return total


def library_code_bytes() -> int | None:
    """Resident bytes of shared-library mappings (``*.so``): code the process pages in as it first runs a kernel.

    Why apart: ONNX Runtime's kernels are paged in from ``libonnxruntime.so`` the first time a model uses them
    (MiniLM int8 pages in ~5 MB of integer GEMM code on its first call); that is the library's cost, shared by
    every model of the app, and it never leaves RSS once touched. None where ``/proc/self/smaps`` is missing.
    """
    return _mapping_rss(_is_shared_library)


def mapped_file_bytes(paths: Iterable[str | Path]) -> int | None:
    """Resident bytes of this process's mappings of ``paths`` (weights ONNX Runtime maps from a file).

    Why reported: how much of a mapped weight file a gather makes resident depends on the page cache, not the
    model: a file just written (the optimized-graph cache entry, on the first load) sits in large folios, and
    a fault maps the whole folio; read back from disk it comes in readahead-sized pieces. MiniLM int8's
    embedding table (11.7 MB, ~140 rows gathered per call): measured 4.5 MB resident read back, ~10 MB
    freshly written (Linux 6.18, ext4).
    """
    names = {str(Path(p).resolve()) for p in paths}
    return _mapping_rss(lambda path: path in names)


# ------------------------------------------------------------------------------------------- workspaces

Shape = tuple[int, ...]
ShapeOf = Callable[[str], "Shape | None"]


@dataclass(frozen=True, kw_only=True)
class Workspace:
    """The scratch bytes one node's kernel holds while it runs (no tensor of the graph), and why."""

    node: str
    op_type: str
    nbytes: int
    what: str


def _conv_geometry(node: Any, shape_of: ShapeOf) -> tuple[int, int, int, int] | None:
    """(kernel elements, input channels per group, output pixels, groups) of a 2-D convolution, or None."""
    w_name = node.input[3] if node.op_type == "QLinearConv" else node.input[1]
    w, y = shape_of(w_name), shape_of(node.output[0])
    if not w or not y or len(w) < 3 or len(y) < 3:
        return None
    channels_last = node.op_type == "QLinearConv" and bool(node_attr(node, "channels_last", 0))
    pixels = math.prod(y[1:-1]) if channels_last else math.prod(y[2:])
    return math.prod(w[2:]), int(w[1]), int(y[0]) * pixels, int(node_attr(node, "group", 1) or 1)


def _pointwise(node: Any, kernel: int) -> bool:
    strides = node_attr(node, "strides", None) or [1]
    pads = node_attr(node, "pads", None) or [0]
    return kernel == 1 and all(int(s) == 1 for s in strides) and all(int(p) == 0 for p in pads)


def _conv_fp32(node: Any, shape_of: ShapeOf) -> tuple[int, str]:
    """MLAS's generic convolution expands the input (im2col) and runs a GEMM on it: K x output pixels floats.

    A pointwise unit-stride convolution is a GEMM on the input as it is. The convolutions of ONNX Runtime's
    NCHWc layout (``com.microsoft.nchwc:Conv``, graph level "all" on x86 with AVX2 or better) run a direct
    sliding kernel over the blocked input and are not in :data:`_WORKSPACES`: no buffer.
    """
    geometry = _conv_geometry(node, shape_of)
    if geometry is None:
        return 0, ""
    kernel, cin_per_group, pixels, _ = geometry
    if _pointwise(node, kernel):
        return 0, ""
    return kernel * cin_per_group * pixels * 4, "im2col (float32)"


def _qlinear_conv(node: Any, shape_of: ShapeOf) -> tuple[int, str]:
    """ONNX Runtime's QLinearConv: a depthwise one builds an indirection buffer (one pointer per kernel tap
    per output pixel); any other non-pointwise one expands its uint8 input (im2col, K x output pixels bytes).
    """
    geometry = _conv_geometry(node, shape_of)
    if geometry is None:
        return 0, ""
    kernel, cin_per_group, pixels, groups = geometry
    if cin_per_group == 1 and groups > 1:
        return kernel * pixels * 8, "indirection buffer (depthwise)"
    if _pointwise(node, kernel):
        return 0, ""
    return kernel * cin_per_group * pixels, "im2col (uint8)"


def _attention(node: Any, shape_of: ShapeOf) -> tuple[int, str]:
    """A fused (Q)Attention: the packed QKV product (3 x tokens x hidden floats) and the scores
    (batch x heads x S x S floats); QAttention also quantizes its float input to uint8 first.
    """
    x = shape_of(node.input[0])
    if not x or len(x) != 3:
        return 0, ""
    batch, seq, hidden = (int(d) for d in x)
    heads = int(node_attr(node, "num_heads", 1) or 1)
    qkv = 3 * batch * seq * hidden * 4
    scores = batch * heads * seq * seq * 4
    quantized = batch * seq * hidden if node.op_type == "QAttention" else 0
    return qkv + scores + quantized, "QKV product + attention scores" + (" + uint8 input" if quantized else "")


def _group_query_attention(node: Any, shape_of: ShapeOf) -> tuple[int, str]:
    """GroupQueryAttention on CPU: the scores of the new tokens against every cached one (batch x heads x S x T)."""
    q, past = shape_of(node.input[0]), shape_of(node.input[3]) if len(node.input) > 3 else None
    if not q or len(q) != 3:
        return 0, ""
    heads = int(node_attr(node, "num_heads", 1) or 1)
    total = int(past[2]) if past and len(past) == 4 else int(q[1])
    return int(q[0]) * heads * int(q[1]) * max(total, int(q[1])) * 4, "attention scores"


def _matmul_nbits(node: Any, shape_of: ShapeOf) -> tuple[int, str]:
    """MatMulNBits at accuracy level 4 quantizes its input to int8 per block: M x K bytes + a scale and a sum
    (float) per block of every row.
    """
    a = shape_of(node.input[0])
    if not a or int(node_attr(node, "accuracy_level", 0) or 0) != 4:
        return 0, ""
    rows, k = math.prod(a[:-1]), int(node_attr(node, "K", a[-1]))
    blocks = -(-k // int(node_attr(node, "block_size", 32) or 32))
    return rows * k + rows * blocks * 8, "int8 copy of the input"


def _dynamic_quantize_matmul(node: Any, shape_of: ShapeOf) -> tuple[int, str]:
    """DynamicQuantizeMatMul (ONNX Runtime's fusion of DynamicQuantizeLinear + MatMulInteger): uint8 input."""
    a = shape_of(node.input[0])
    return (math.prod(a), "uint8 copy of the input") if a else (0, "")


# (domain, op_type) -> formula; "" is the default ONNX domain. Ops absent here allocate nothing of note
# beyond their outputs (elementwise, normalizations, GEMMs on packed weights).
_WORKSPACES: dict[tuple[str, str], Callable[[Any, ShapeOf], tuple[int, str]]] = {
    ("", "Conv"): _conv_fp32,
    ("", "QLinearConv"): _qlinear_conv,
    ("com.microsoft", "QLinearConv"): _qlinear_conv,
    ("com.microsoft", "Attention"): _attention,
    ("com.microsoft", "QAttention"): _attention,
    ("com.microsoft", "GroupQueryAttention"): _group_query_attention,
    ("com.microsoft", "MatMulNBits"): _matmul_nbits,
    ("com.microsoft", "DynamicQuantizeMatMul"): _dynamic_quantize_matmul,
}


def kernel_workspace_bytes(node: Any, shape_of: ShapeOf) -> Workspace:
    """The scratch ``node``'s CPU kernel allocates while it runs, from its shapes (``shape_of(name)``).

    ``node`` is read as ONNX Runtime runs it: pass the nodes of the graph the session runs (the optimized
    graph in edgekit's cache), where a QDQ convolution has become a QLinearConv and a float one may be NCHWc.
    """
    formula = _WORKSPACES.get((node.domain or "", node.op_type))
    nbytes, what = formula(node, shape_of) if formula else (0, "")
    return Workspace(node=node.name or node.op_type, op_type=node.op_type, nbytes=int(nbytes), what=what)


def largest_workspace(
    nodes: Iterable[Any],
    value_shapes: Mapping[str, Shape | None],
    initializers: Iterable[Any] = (),
) -> Workspace:
    """The largest :func:`kernel_workspace_bytes` over ``nodes``: a session runs its kernels one at a time
    (edgekit's sessions use one inter-op thread) and each frees its scratch before the next node starts, so
    only the largest one adds to the activations. Added to the liveness peak it is an upper bound: the node
    with the largest scratch need not run when the most tensors are live.

    ``value_shapes``: the shapes of the graph's values at the call (the profiler's ``value_shapes``);
    ``initializers``: ``TensorProto`` s whose dims give the weight shapes.
    """
    dims = {t.name: tuple(int(d) for d in t.dims) for t in initializers}

    def shape_of(name: str) -> Shape | None:
        shape = value_shapes.get(name) or dims.get(name)
        return tuple(int(d) for d in shape) if shape else None

    best = Workspace(node="", op_type="", nbytes=0, what="")
    for node in nodes:
        ws = kernel_workspace_bytes(node, shape_of)
        if ws.nbytes > best.nbytes:
            best = ws
    return best
