"""ONNX Runtime sessions: options, the optimized-graph cache, and input validation.

Threads default to the device profile's ``default_threads`` when a device is named, else the physical cores
this process may use. ``low_memory`` turns off the CPU arena and memory-pattern planning, which trade memory
for speed; it is switched on by default when a named device's app memory budget is tight for the model.

The optimized-graph cache: the first load saves ONNX Runtime's optimized graph (``optimized_model_filepath``)
in the user cache dir (``$EDGEKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgekit``, else ``~/.cache/edgekit``, under
``graphs/``), never inside the package, so a read-only package loads and a zipped folder ships no cache. An
entry is keyed by the sha256 of the model file(s) as they are on disk (the checksums ``verify`` just checked,
else hashed here: an edited ``model.onnx`` never reuses a stale graph, even with ``verify=False``), the
onnxruntime version, the providers, the optimization level and this CPU, since an ``all``-level graph holds
layout-specific kernels for one provider set and ISA. The entry stores the sha256 of its own files and is
checked on every hit; an entry that does not match is rebuilt, so an edited cached graph never runs. Later
loads read it with optimizations off. Its weights live in a file beside the cached graph, which ONNX Runtime
maps, and the load that writes an entry reopens the session from it; a static-shape CPU session runs once at
load with its arena shrunk after it, and CPU-only sessions plan no memory pattern (``edgekit.ort_policy``: the
memory policy); on Linux the memory the load allocated (the pre-packed weights) is moved into 2 MiB transparent
huge pages (``edgekit.huge_pages``: a memory-bound decode step runs 1.15-1.2x faster; ``info()["huge_pages"]``
says what was collapsed). Measured here: a tiny unfused Llama export creates its session 3.4x faster from the
cache (44 -> 13 ms); MiniLM already fused by the exporter gains ~1.07x (242 -> 227 ms), since its load is
dominated by reading and pre-packing weights, not by optimization. Providers that compile subgraphs into their
own format cannot be saved this way; they have their own caches (CoreML ``ModelCacheDirectory``, OpenVINO
``cache_dir``), kept per model under the same cache dir.

Input validation runs before ONNX Runtime sees the inputs. Names must match; ranks and fixed dimensions must
match; a symbolic dimension must take the same value in every input that names it. Dtypes: a numpy array
is cast only when the cast is lossless (``np.can_cast(..., "safe")``: int32 -> int64, float16 -> float32,
bool -> int64); float64 -> float32 and int64 -> int32 are refused, because silently dropping precision or
range hides bugs — cast explicitly with ``.astype``. Python lists and scalars carry no dtype of their own,
so they are converted to the model's dtype, refusing only values that change (1.5 for an integer input).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import huge_pages
from edgekit.errors import ConfigError, CorruptModelError, InvalidInputError, RuntimeBackendError
from edgekit.fsutil import CACHE_DIR_ENV, user_cache_dir
from edgekit.hashing import sha256_file
from edgekit.huge_pages import HugePageResult
from edgekit.ort_policy import (
    apply_memory_policy,
    cache_key_suffix,
    cached_graph_entries,
    disabled_optimizers,
    huge_pages_wanted,
    release_freed_heap,
    reopen_written_graph,
    settle_run_entries,
)
from edgekit.registry import unknown_message
from runtimes.providers import (
    CPU,
    Fallback,
    ProviderPlan,
    node_shares,
    provider_spec,
)

# The sha256 of each file of a cache entry, written beside them and checked on every hit.
_ENTRY_CHECKSUMS = "checksums.json"

_OPT_LEVELS = ("disable", "basic", "extended", "layout", "all")
# Above this size the optimized graph keeps its weights in an external file (protobuf's 2 GB limit).
_EXTERNAL_DATA_BYTES = 1 << 30

# ORT element type strings -> numpy dtypes.
_ORT_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": np.dtype(object),
}


@dataclass(frozen=True, kw_only=True)
class SessionConfig:
    """How a session is built. ``threads=None`` resolves from the device profile, else physical cores."""

    threads: int | None = None
    graph_optimization: str = "all"  # disable | basic | extended | layout | all
    low_memory: bool | None = None  # None: on when a named device's memory budget is tight for the model
    cache_optimized_graph: bool = True
    cache_dir: str | None = None  # where the optimized graph goes; None: the user cache dir's graphs/
    # ORT ``session.intra_op.allow_spinning``; None: ORT's default (a provider's own setting wins either way).
    # ``load`` sets it from the package's session policy (edgekit.session_policy).
    allow_spinning: bool | None = None
    # The caller runs one set of input shapes over and over (the in-place KV decode loop): the memory policy's
    # ``repeated_shapes_mem_pattern`` then decides ORT's memory pattern (edgekit.ort_policy). ``load`` sets it
    # for generation packages with a shared KV buffer.
    repeated_shapes: bool = False

    def __post_init__(self) -> None:
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ConfigError(f"threads must be a positive integer (got {self.threads!r})", param="threads")
        if self.graph_optimization not in _OPT_LEVELS:
            raise ConfigError(
                f"graph_optimization must be one of {', '.join(_OPT_LEVELS)} (got {self.graph_optimization!r})",
                param="graph_optimization",
            )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SessionConfig:
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise ConfigError(unknown_message("session option", str(key), sorted(known)), param=str(key))
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores this process may use (affinity and cgroup quota), from the host detection code."""
    try:
        from edgekit.devices.host import detect_cpu

        return max(1, detect_cpu().threads)
    except Exception:  # detection reads /proc and /sys; on an unusual OS fall back to the logical count
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype.name}[{dims}]"


def _ort() -> Any:
    import onnxruntime as ort

    return ort


def _level(name: str) -> Any:
    g = _ort().GraphOptimizationLevel
    return {
        "disable": g.ORT_DISABLE_ALL,
        "basic": g.ORT_ENABLE_BASIC,
        "extended": g.ORT_ENABLE_EXTENDED,
        "layout": getattr(g, "ORT_ENABLE_LAYOUT", g.ORT_ENABLE_EXTENDED),
        "all": g.ORT_ENABLE_ALL,
    }[name]


@dataclass
class CacheInfo:
    status: str  # hit | written | disabled | unsupported | failed
    path: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "path": self.path, "reason": self.reason}


@dataclass
class RuntimeSession:
    """An InferenceSession with its input specs, the providers it runs, and how it was built."""

    session: Any
    inputs: dict[str, InputSpec]
    output_names: list[str]
    providers: list[str]
    provider_options: dict[str, dict[str, str]]
    threads: int
    config: SessionConfig
    low_memory: bool
    fallbacks: list[Fallback] = field(default_factory=list)
    node_assignment: dict[str, int] = field(default_factory=dict)
    cache: CacheInfo = field(default_factory=lambda: CacheInfo("disabled"))
    # The load's memory moved into 2 MiB pages (edgekit.huge_pages): what was collapsed, or why not.
    huge_pages: HugePageResult = field(default_factory=lambda: HugePageResult(status="off"))
    load_seconds: float = 0.0
    # How the threads were chosen (edgekit.session_policy.AppliedPolicy.to_dict()), set by ``load``.
    policy: dict[str, Any] | None = None

    # --- running ------------------------------------------------------------------------------------

    def run(
        self, feeds: Mapping[str, Any], output_names: Sequence[str] | None = None, *, validate: bool = True
    ) -> dict[str, np.ndarray]:
        arrays = self.validate(feeds) if validate else dict(feeds)
        names = list(output_names) if output_names is not None else self.output_names
        try:
            values = self.session.run(names, arrays)
        except Exception as exc:  # ORT raises its own Fail / InvalidArgument / RuntimeException types
            raise RuntimeBackendError(
                f"ONNX Runtime failed while running the model: {_first_line(exc)}",
                hint="check the inputs against the model's inputs (model.inputs); run with --debug for details",
            ) from exc
        return dict(zip(names, values, strict=True))

    def validate(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check names, dtypes, ranks and fixed dims; return the arrays to feed (cast where lossless)."""
        if not isinstance(feeds, Mapping):
            raise InvalidInputError(
                f"inputs must be a mapping of input name to array, got {type(feeds).__name__}", hint=self.expected()
            )
        unknown = [k for k in feeds if k not in self.inputs]
        if unknown:
            raise InvalidInputError(
                f"the model has no input named {unknown[0]!r}. {self.expected()}", param=str(unknown[0])
            )
        missing = [k for k in self.inputs if k not in feeds]
        if missing:
            raise InvalidInputError(f"missing input {missing[0]!r}. {self.expected()}", param=missing[0])
        out: dict[str, np.ndarray] = {}
        bound: dict[str, tuple[int, str]] = {}  # symbolic dim -> (value, input that set it)
        for name, spec in self.inputs.items():
            arr = _as_array(feeds[name], spec, self.expected)
            if arr.ndim != len(spec.shape):
                raise InvalidInputError(
                    f"input {name!r} has rank {arr.ndim} (shape {list(arr.shape)}), the model expects rank"
                    f" {len(spec.shape)}. {self.expected()}",
                    param=name,
                )
            for axis, (dim, size) in enumerate(zip(spec.shape, arr.shape, strict=True)):
                if isinstance(dim, int) and dim >= 0 and dim != size:
                    raise InvalidInputError(
                        f"input {name!r} has size {size} on axis {axis}, the model fixes it at {dim}"
                        f" (got shape {list(arr.shape)}). {self.expected()}",
                        param=name,
                    )
                if isinstance(dim, str) and dim:
                    seen = bound.get(dim)
                    if seen is None:
                        bound[dim] = (size, name)
                    elif seen[0] != size:
                        raise InvalidInputError(
                            f"input {name!r} has {dim}={size} on axis {axis}, but input {seen[1]!r} has"
                            f" {dim}={seen[0]}: inputs sharing a dimension must agree. {self.expected()}",
                            param=name,
                        )
            out[name] = arr
        return out

    def expected(self) -> str:
        return "The model expects: " + "; ".join(spec.describe() for spec in self.inputs.values()) + "."

    # --- reporting ----------------------------------------------------------------------------------

    def node_report(self) -> dict[str, dict[str, float | int]]:
        return node_shares(self.node_assignment)

    def to_dict(self) -> dict[str, Any]:
        return {
            "providers": self.providers,
            "provider_options": self.provider_options,
            "node_assignment": self.node_report(),
            "fallbacks": [fb.to_dict() for fb in self.fallbacks],
            "threads": self.threads,
            "session_policy": self.policy,
            "low_memory": self.low_memory,
            "graph_optimization": self.config.graph_optimization,
            "optimized_graph_cache": self.cache.to_dict(),
            "huge_pages": self.huge_pages.to_dict(),
            "load_seconds": round(self.load_seconds, 4),
            "inputs": [spec.describe() for spec in self.inputs.values()],
            "outputs": self.output_names,
        }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _as_array(value: Any, spec: InputSpec, expected: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        if value.dtype == spec.dtype:
            return value
        if spec.dtype != object and np.can_cast(value.dtype, spec.dtype, casting="safe"):
            return value.astype(spec.dtype)
        raise InvalidInputError(
            f"input {spec.name!r} has dtype {value.dtype.name}, the model expects {spec.dtype.name};"
            f" {value.dtype.name} -> {spec.dtype.name} can lose values, so it is not cast implicitly. {expected()}",
            hint=f"cast it yourself: array.astype(numpy.{spec.dtype.name})",
            param=spec.name,
        )
    try:
        raw = np.asarray(value)
        if spec.dtype == object or raw.dtype == spec.dtype:
            return raw if spec.dtype != object else raw.astype(object)
        if raw.dtype.kind not in "biuf":
            raise TypeError(f"{raw.dtype.name} values")
        arr = raw.astype(spec.dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"input {spec.name!r} cannot be read as {spec.dtype.name} ({exc}). {expected()}", param=spec.name
        ) from None
    if spec.dtype.kind in "biu" and not np.array_equal(arr, raw):
        raise InvalidInputError(
            f"input {spec.name!r} holds values that change when read as {spec.dtype.name} (e.g. fractions for an"
            f" integer input). {expected()}",
            param=spec.name,
        )
    return arr


# ------------------------------------------------------------------------------------------ building


def _cache_root(cache_dir: str | None) -> Path | None:
    """``cache_dir``, else ``graphs/`` in the user cache dir (``$EDGEKIT_CACHE_DIR``, ...); None without one."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    base = user_cache_dir()
    return base / "graphs" if base is not None else None


def model_files(model_path: Path) -> list[Path]:
    """The graph and its external data (``model.onnx.data``: the exporter's naming), sorted."""
    siblings = [p for p in model_path.parent.glob(f"{model_path.name}.*") if p.is_file()]
    return [model_path, *sorted(siblings)]


def model_digest(model_path: Path, known: Mapping[str, str] | None = None) -> str:
    """The identity of the model as it is on disk: one sha256 over its files' names and sha256s.

    ``known`` maps file names to sha256s already checked against these files (a verified package), so
    they are not hashed twice; other files are hashed here.
    """
    import hashlib

    h = hashlib.sha256()
    for p in model_files(model_path):
        digest = (known or {}).get(p.name) or sha256_file(p)
        h.update(f"{p.name}:{digest}\n".encode())
    return h.hexdigest()


def _write_entry_checksums(entry: Path) -> None:
    sums = {p.name: sha256_file(p) for p in sorted(entry.iterdir()) if p.is_file()}
    (entry / _ENTRY_CHECKSUMS).write_text(json.dumps({"files": sums}, indent=1), encoding="utf-8")


def _entry_problem(entry: Path) -> str | None:
    """Why a cache entry must not be used (edited, truncated, incomplete), or None when it is intact."""
    try:
        sums = json.loads((entry / _ENTRY_CHECKSUMS).read_text(encoding="utf-8"))["files"]
        present = {p.name for p in entry.iterdir() if p.name != _ENTRY_CHECKSUMS}
        if not isinstance(sums, dict) or set(sums) != present:
            return "its files do not match its checksum list"
        for name, digest in sums.items():
            if sha256_file(entry / name) != digest:
                return f"{name} does not match its sha256"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its checksum list is unreadable ({_first_line(exc)})"
    return None


@lru_cache(maxsize=1)
def host_fingerprint() -> str:
    """This CPU's identity: an ``all``-level graph holds kernels laid out for its ISA (NCHWc block sizes), so
    a package directory copied to another machine must not reuse it."""
    import hashlib
    import platform

    try:
        from edgekit.devices.host import detect_cpu

        cpu = detect_cpu()
        ident = f"{platform.machine()}|{cpu.model}|{','.join(sorted(cpu.isa_features))}"
    except Exception:  # unusual OS: the architecture alone still separates the common cases
        ident = platform.machine()
    return hashlib.sha256(ident.encode()).hexdigest()[:8]


def _cache_key(model_digest: str, providers: Sequence[str], level: str) -> str:
    ort = _ort()
    names = "+".join(spec.alias if (spec := provider_spec(p)) else p for p in providers)
    # the graph differs with the fusions turned off (edgekit.ort_policy)
    off = "".join(f"-no{o}" for o in disabled_optimizers(providers))
    off += cache_key_suffix()  # and with the weights kept in a mapped file (memory policy)
    return f"{model_digest[:16]}-ort{ort.__version__}-{names}-{level}{off}-{host_fingerprint()}"


def build_session(
    model_path: Path,
    *,
    plan: ProviderPlan,
    config: SessionConfig,
    threads: int,
    low_memory: bool,
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    digest: str | None = None,
) -> RuntimeSession:
    """Create the session, dropping a provider that fails to initialize (recorded as a fallback).

    ``digest``: :func:`model_digest` of the model, when the caller has it; computed here when the
    optimized-graph cache needs it.
    """
    ort = _ort()
    if digest is None and config.cache_optimized_graph and config.graph_optimization != "disable":
        digest = model_digest(model_path)
    overrides = {k: dict(v) for k, v in (provider_options or {}).items()}
    providers = list(plan.providers)
    fallbacks = list(plan.dropped)
    start = time.perf_counter()
    wants_pages = huge_pages_wanted(low_memory=low_memory)
    if wants_pages:  # freed pages handed back first: the snapshot then tells the load's new pages from old ones
        release_freed_heap()
    mapped_before = huge_pages.snapshot() if wants_pages else None
    while True:
        try:
            session, resolved, cache = _create(
                ort, model_path, providers, config, threads, low_memory, overrides, digest
            )
            break
        except ConfigError:
            raise
        except Exception as exc:
            fallbacks.append(_drop_failing_provider(model_path, plan, providers, exc))
    running = list(session.get_providers())
    _settle_arena(ort, session, allowed=not low_memory, cpu_only=running == [CPU])  # memory: edgekit.ort_policy
    release_freed_heap()  # the load's freed weight copies back to the OS (edgekit.ort_policy)
    pages = (  # after the trim: a range trimmed later would split its huge pages again
        huge_pages.collapse_new(mapped_before)
        if mapped_before is not None
        else huge_pages.HugePageResult(status="off", reason="low_memory session" if low_memory else "memory policy")
    )
    assignment = _node_assignment(session)
    fallbacks += _late_fallbacks(plan, providers, running, assignment)
    used = tuple(n for n in running if not assignment or assignment.get(n, 0) > 0) or tuple(running)
    fallbacks = [
        Fallback(asked=fb.asked, asked_by=fb.asked_by, reason=fb.reason, available=fb.available, running=used)
        for fb in fallbacks
    ]
    inputs = {
        i.name: InputSpec(i.name, _ORT_DTYPES.get(i.type, np.dtype(object)), tuple(i.shape))
        for i in session.get_inputs()
    }
    return RuntimeSession(
        session=session,
        inputs=inputs,
        output_names=[o.name for o in session.get_outputs()],
        providers=running,
        provider_options={p: dict(resolved.get(p, {})) for p in running},
        threads=threads,
        config=config,
        low_memory=low_memory,
        fallbacks=fallbacks,
        node_assignment=assignment,
        cache=cache,
        huge_pages=pages,
        load_seconds=time.perf_counter() - start,
    )


def _drop_failing_provider(model_path: Path, plan: ProviderPlan, providers: list[str], exc: Exception) -> Fallback:
    """Take the first non-CPU provider out of ``providers`` after a failed session creation, as a fallback;
    with only the CPU provider left the failure is the model's, raised as a load error."""
    failing = next((p for p in providers if p != CPU), None)
    if failing is None:
        raise _load_error(model_path, exc) from exc
    providers.remove(failing)
    return Fallback(
        asked=failing,
        asked_by=dict(plan.asked).get(failing, "caller"),
        reason=f"failed to initialize ({_first_line(exc)})",
        available=plan.available,
    )


def _settle_arena(ort: Any, session: Any, *, allowed: bool, cpu_only: bool) -> bool:
    """Run a static-shape session once on zeros with the CPU arena shrunk after it (see
    :func:`edgekit.ort_policy.settle_run_entries`); False when the policy or the graph says not to, or the
    run fails (the session is fine unsettled: the first call records its plan instead).
    """
    feeds: dict[str, np.ndarray] = {}
    for spec in session.get_inputs():
        dtype = _ORT_DTYPES.get(spec.type)
        if dtype is None or not all(isinstance(d, int) and d > 0 for d in spec.shape):
            return False  # a symbolic dim: each call's shape is recorded on its own first run
        feeds[spec.name] = np.zeros(tuple(spec.shape), dtype)
    entries = settle_run_entries(static_shapes=allowed and bool(feeds), cpu_only=cpu_only)
    if not entries:
        return False
    options = ort.RunOptions()
    for key, value in entries.items():
        options.add_run_config_entry(key, value)
    try:
        session.run(None, feeds, options)
    except Exception:  # zeros may be outside what a model accepts (ids it gathers by): leave it unsettled
        return False
    return True


def _load_error(model_path: Path, exc: Exception) -> Exception:
    """The error for a model no provider could load: corrupt bytes, or a graph this onnxruntime cannot run."""
    if _is_corrupt(exc):
        return CorruptModelError(
            f"{model_path.name} is not a valid ONNX model (truncated or corrupt): {_first_line(exc)}",
            hint="copy the package again, or re-export it; --no-verify skipped the checksums that catch this",
        )
    return RuntimeBackendError(
        f"ONNX Runtime cannot load {model_path.name}: {_first_line(exc)}",
        hint="the model may use ops this onnxruntime lacks; re-export it, or upgrade onnxruntime",
    )


def _late_fallbacks(
    plan: ProviderPlan, providers: list[str], running: list[str], assignment: dict[str, int]
) -> list[Fallback]:
    """Providers the session took but did not use: skipped by ORT, or given none of the nodes."""
    late = [(n, "was not registered by onnxruntime") for n in providers if n not in running]
    late += [
        (n, "took none of the graph's nodes") for n in running if n != CPU and assignment and assignment.get(n, 0) == 0
    ]
    return [
        Fallback(asked=n, asked_by=dict(plan.asked).get(n, "caller"), reason=reason, available=plan.available)
        for n, reason in late
    ]


def _create(
    ort: Any,
    model_path: Path,
    providers: list[str],
    config: SessionConfig,
    threads: int,
    low_memory: bool,
    overrides: dict[str, dict[str, Any]],
    digest: str | None,
) -> tuple[Any, dict[str, dict[str, str]], CacheInfo]:
    specs = [provider_spec(p) for p in providers]
    so = ort.SessionOptions()
    so.log_severity_level = 3  # fallbacks are reported by edgekit, once, in its own words
    forced = [s.session_threads for s in specs if s is not None and s.session_threads]
    so.intra_op_num_threads = min(forced) if forced else threads
    so.inter_op_num_threads = 1
    apply_memory_policy(so, low_memory=low_memory, cpu_only=providers == [CPU], repeated_shapes=config.repeated_shapes)
    entries = {k: v for spec in specs for k, v in (spec.session_config if spec else {}).items()}
    if config.allow_spinning is not None:
        entries.setdefault("session.intra_op.allow_spinning", "1" if config.allow_spinning else "0")
    for key, value in entries.items():
        so.add_session_config_entry(key, value)
    with contextlib.suppress(Exception):  # older onnxruntime: no graph-assignment recording
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")

    cache_root = _cache_root(config.cache_dir)
    resolved: dict[str, dict[str, str]] = {}
    for name, spec in zip(providers, specs, strict=True):
        if spec is None:
            resolved[name] = {str(k): str(v) for k, v in overrides.get(name, {}).items()}
        else:
            # a provider's compiled-model cache, one per model so two models never share compiled blobs
            per_model = cache_root / f"{spec.alias}-cache" / (digest or "any")[:16] if cache_root else None
            cache = str(per_model) if spec.cache_option and per_model else None
            resolved[name] = spec.provider_options(threads=threads, cache_dir=cache, overrides=overrides.get(name))
    unknown = [k for k in overrides if k not in providers]
    if unknown:
        raise ConfigError(
            f"provider_options names {unknown[0]!r}, which is not among the providers in use ({', '.join(providers)})",
            param="provider_options",
        )
    ep_list = [(name, resolved[name]) for name in providers]
    with warnings.catch_warnings():
        # ORT warns when a provider is missing from its build; edgekit reports that itself, as a fallback.
        warnings.filterwarnings("ignore", message="Specified provider", category=UserWarning)
        return _open(ort, model_path, so, ep_list, config, specs, providers, resolved, cache_root, digest)


def _open(
    ort: Any,
    model_path: Path,
    so: Any,
    ep_list: list[tuple[str, dict[str, str]]],
    config: SessionConfig,
    specs: list[Any],
    providers: list[str],
    resolved: dict[str, dict[str, str]],
    cache_root: Path | None,
    digest: str | None,
) -> tuple[Any, dict[str, dict[str, str]], CacheInfo]:
    level = config.graph_optimization
    off = disabled_optimizers(providers)
    if not config.cache_optimized_graph or level == "disable":
        info = CacheInfo("disabled")
    elif not all(spec is not None and spec.saves_optimized_graph for spec in specs):
        info = CacheInfo("unsupported", reason="a provider in use compiles the graph; it keeps its own cache")
    elif cache_root is None or digest is None:
        info = CacheInfo("disabled", reason=f"no cache directory (set {CACHE_DIR_ENV})")
    else:
        entry = cache_root / _cache_key(digest, providers, level)
        sess, info = _open_cached(ort, model_path, so, ep_list, level, off, entry)
        return sess, resolved, info
    so.graph_optimization_level = _level(level)
    return ort.InferenceSession(str(model_path), so, providers=ep_list, disabled_optimizers=off), resolved, info


def _open_cached(
    ort: Any, model_path: Path, so: Any, ep_list: list[Any], level: str, off: list[str], entry: Path
) -> tuple[Any, CacheInfo]:
    """Load from a verified cache entry, else optimize and write the entry (atomically, with its checksums)."""
    cached = entry / model_path.name
    info: CacheInfo | None = None
    if entry.is_dir():
        problem = _entry_problem(entry)
        if problem is None:
            so.graph_optimization_level = _level("disable")  # already optimized for exactly this set-up
            try:
                sess = ort.InferenceSession(str(cached), so, providers=ep_list, disabled_optimizers=off)
                return sess, CacheInfo("hit", path=str(cached))
            except Exception as exc:  # a damaged cache entry is rebuilt, not fatal
                problem = f"unreadable ({_first_line(exc)})"
        shutil.rmtree(entry, ignore_errors=True)
        info = CacheInfo("failed", reason=f"the cached graph was not used and is rebuilt: {problem}")
    so.graph_optimization_level = _level(level)
    tmp: Path | None = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=f".{uuid.uuid4().hex[:6]}", dir=entry.parent))
        so.optimized_model_filepath = str(tmp / model_path.name)
        force = _model_bytes(model_path) > _EXTERNAL_DATA_BYTES
        for key, value in cached_graph_entries(model_path.name, force=force).items():  # memory: ort_policy
            so.add_session_config_entry(key, value)
    except OSError as exc:
        tmp = None
        info = CacheInfo("failed", reason=f"cache directory not writable: {exc}")
    try:
        sess = ort.InferenceSession(str(model_path), so, providers=ep_list, disabled_optimizers=off)
        if tmp is not None:
            info = _commit_entry(tmp, entry, cached, info)
            if info.status == "written" and reopen_written_graph():  # memory: edgekit.ort_policy
                sess = _reopen(ort, cached, so, ep_list, off) or sess
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return sess, info or CacheInfo("failed", reason="the cache entry was not written")


def _reopen(ort: Any, cached: Path, so: Any, ep_list: list[Any], off: list[str]) -> Any:
    """The session again, from the entry just written (its weights mapped); None when that fails."""
    so.optimized_model_filepath = ""
    so.graph_optimization_level = _level("disable")
    try:
        return ort.InferenceSession(str(cached), so, providers=ep_list, disabled_optimizers=off)
    except Exception:  # the session built from the source graph is fine: keep it
        return None


def _commit_entry(tmp: Path, entry: Path, cached: Path, before: CacheInfo | None) -> CacheInfo:
    reason = before.reason if before else None
    try:
        _write_entry_checksums(tmp)
        os.replace(tmp, entry)  # atomic: a concurrent loader sees the whole entry or none
        return CacheInfo("written", path=str(cached), reason=reason)
    except OSError as exc:  # another process won the race, or the disk is full: the session is fine either way
        if entry.is_dir():
            return CacheInfo("written", path=str(cached), reason=reason)
        return CacheInfo("failed", path=None, reason=f"the cache entry was not written: {exc}")


def _is_corrupt(exc: BaseException) -> bool:
    """ORT's words for a file that is not a model protobuf (truncated, zero bytes, another format)."""
    text = str(exc)
    return any(s in text for s in ("INVALID_PROTOBUF", "Protobuf parsing failed", "No graph was found"))


def _model_bytes(model_path: Path) -> int:
    total = model_path.stat().st_size
    for sibling in model_path.parent.glob(f"{model_path.name}*"):
        if sibling != model_path and sibling.is_file():
            total += sibling.stat().st_size
    return total


def _node_assignment(session: Any) -> dict[str, int]:
    """Nodes of the optimized graph per provider, from ORT's graph-assignment record (ORT >= 1.24)."""
    getter = getattr(session, "get_provider_graph_assignment_info", None)
    if getter is None:
        return {}
    try:
        counts: dict[str, int] = {}
        for subgraph in getter():
            counts[subgraph.ep_name] = counts.get(subgraph.ep_name, 0) + len(subgraph.get_nodes())
        return counts
    except Exception:  # recording was not enabled or the binding changed: report nothing rather than guess
        return {}
