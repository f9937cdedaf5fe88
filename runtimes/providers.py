"""Execution providers: one registry entry per ONNX Runtime EP, and the selection / fallback logic.

Each :class:`ExecutionProviderSpec` holds ONNX Runtime's provider name, the provider options ONNX Runtime
documents for it (with the defaults edgekit passes), the session settings the EP wants (XNNPACK: ORT's own
intra-op pool at 1 thread, spinning off), and the constraints a model must meet to run on it. The EP's core facts (its name, constraints, whether it is
remote, its coverage rule) live in one record, ``edgekit.devices.KNOWN_PROVIDERS``; this module adds options and
session settings on top and reads those facts from there, not from a second list.

Selection (:func:`plan_providers`): the device profile's ordered list when a device is named, then the
caller's list, intersected with :func:`available_providers`, then CPU. Every provider asked for but not
used becomes a :class:`Fallback` record (asked / available / running / reason), logged once per process
and kept on the model object. Tests simulate missing providers by monkeypatching
:func:`available_providers`.

What cannot run on this machine: the PyPI ``onnxruntime`` wheel for Linux x86-64 holds only the CPU (and
Azure) providers, so XNNPACK, NNAPI, CoreML, QNN, OpenVINO and CUDA are exercised here only through the
selection and fallback logic; their options are passed as ONNX Runtime documents them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgekit.devices import KNOWN_PROVIDERS, ProviderInfo
from edgekit.errors import ConfigError, UnknownNameError
from edgekit.ort_policy import disabled_optimizers
from edgekit.registry import Registry, resolve, unknown_message

logger = logging.getLogger("edgekit.runtimes")

CPU = "CPUExecutionProvider"
# A remote EP (Azure) calls an endpoint; it is never a place to run a local graph, so it is never picked.
_NEVER_PICKED = frozenset(info.name for info in KNOWN_PROVIDERS if info.remote)


@dataclass(frozen=True, kw_only=True)
class ProviderOption:
    """One documented provider option. ``default`` is what edgekit passes unless overridden (None: leave
    ONNX Runtime's own default)."""

    name: str
    meaning: str
    default: str | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ExecutionProviderSpec:
    name: str  # ONNX Runtime's spelling, a KNOWN_PROVIDERS name
    alias: str  # the short name the CLI and ``providers=[...]`` accept
    options: tuple[ProviderOption, ...] = ()
    # Session config entries the EP wants, e.g. XNNPACK's recommendation to stop ORT's pool from spinning.
    session_config: Mapping[str, str] = field(default_factory=dict)
    # Force ORT's own intra-op pool to this size (XNNPACK runs its own pool; two pools fight over cores).
    session_threads: int | None = None
    threads_option: str | None = None  # the provider option that receives the thread count
    cache_option: str | None = None  # the provider option that takes a compiled-model cache directory
    # Whether ORT can save the optimized graph with this EP assigned (EPs that compile subgraphs into
    # their own format cannot be serialized back to ONNX).
    saves_optimized_graph: bool = False
    note: str = ""
    docs: str = ""

    @property
    def info(self) -> ProviderInfo:
        """The EP's core record: its constraints, remoteness and coverage rule."""
        return KNOWN_PROVIDERS.get(self.name)

    @property
    def requirements(self) -> tuple[str, ...]:
        """The EP_CONSTRAINTS words a model must satisfy (from the core record)."""
        return self.info.typical_constraints

    @property
    def coverage_rule(self) -> str | None:
        """The "module:attr" of the profiler's op-coverage rule (from the core record), resolved only by the
        profiler, which sits above this layer; None: no rule, coverage is not estimated."""
        return self.info.coverage_rule

    def coverage(self) -> Any:
        """The EP's ``edgekit.profiler.coverage.ProviderRule``, or None (imports the profiler's module now)."""
        return resolve(self.coverage_rule) if self.coverage_rule else None

    def disabled_optimizers(self) -> list[str]:
        """The ORT graph optimizers sessions on this EP turn off (the policy and its reasons: ``edgekit.ort_policy``)."""
        return disabled_optimizers([self.name])

    def __post_init__(self) -> None:
        if self.name not in KNOWN_PROVIDERS:
            raise ValueError(unknown_message("execution provider", self.name, KNOWN_PROVIDERS.names()))
        names = [o.name for o in self.options]
        for extra in (self.threads_option, self.cache_option):
            if extra is not None and extra not in names:
                raise ValueError(f"{self.name}: option {extra!r} is not among its documented options")

    def option(self, name: str) -> ProviderOption:
        for opt in self.options:
            if opt.name == name:
                return opt
        raise ConfigError(
            f"{self.name} has no provider option {name!r}."
            f" {unknown_message('option', name, [o.name for o in self.options]).split('. ', 1)[-1]}",
            param="provider_options",
        )

    def provider_options(
        self, *, threads: int | None = None, cache_dir: str | None = None, overrides: Mapping[str, Any] | None = None
    ) -> dict[str, str]:
        """The options dict passed to ONNX Runtime: defaults, then threads / cache dir, then the caller's."""
        resolved = {o.name: o.default for o in self.options if o.default is not None}
        if self.threads_option and threads:
            resolved[self.threads_option] = str(threads)
        if self.cache_option and cache_dir:
            resolved[self.cache_option] = cache_dir
        for key, value in (overrides or {}).items():
            opt = self.option(key)
            text = str(int(value)) if isinstance(value, bool) else str(value)
            if opt.choices and text not in opt.choices:
                raise ConfigError(
                    f"{self.name} option {key}={text!r} is invalid; choose one of {', '.join(opt.choices)}",
                    param="provider_options",
                )
            resolved[key] = text
        return resolved

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alias": self.alias,
            "options": {
                o.name: {"default": o.default, "meaning": o.meaning, "choices": list(o.choices)} for o in self.options
            },
            "session_config": dict(self.session_config),
            "session_threads": self.session_threads,
            "requirements": list(self.requirements),
            "note": self.note,
            "docs": self.docs,
            "coverage_rule": self.coverage_rule,
            "disabled_optimizers": self.disabled_optimizers(),
        }


PROVIDERS: Registry[ExecutionProviderSpec] = Registry("execution provider")


def _add(spec: ExecutionProviderSpec) -> None:
    PROVIDERS.add(spec.name, spec)


_BOOL = ("0", "1")

_add(
    ExecutionProviderSpec(
        name=CPU,
        alias="cpu",
        saves_optimized_graph=True,
        note="always available; arena and memory-pattern switches live on the session options",
        docs="https://onnxruntime.ai/docs/execution-providers/",
    )
)
_add(
    ExecutionProviderSpec(
        name="XnnpackExecutionProvider",
        alias="xnnpack",
        options=(
            ProviderOption(
                name="intra_op_num_threads",
                meaning="threads in XNNPACK's own pool (edgekit passes the session's thread count)",
            ),
        ),
        session_config={"session.intra_op.allow_spinning": "0"},
        session_threads=1,
        threads_option="intra_op_num_threads",
        note="ORT's docs recommend ORT's intra-op pool at 1 thread with spinning off so the two pools do not contend",
        docs="https://onnxruntime.ai/docs/execution-providers/Xnnpack-ExecutionProvider.html",
    )
)
_add(
    ExecutionProviderSpec(
        name="NnapiExecutionProvider",
        alias="nnapi",
        options=(
            ProviderOption(
                name="NNAPI_FLAG_USE_FP16",
                meaning="fp16 relaxation: may be faster, less precise",
                default="0",
                choices=_BOOL,
            ),
            ProviderOption(
                name="NNAPI_FLAG_USE_NCHW",
                meaning="NCHW layout (API level 29+; usually slower)",
                default="0",
                choices=_BOOL,
            ),
            ProviderOption(
                name="NNAPI_FLAG_CPU_DISABLED",
                meaning="keep NNAPI off its reference CPU implementation; ORT's CPU kernels take those ops instead",
                default="1",
                choices=_BOOL,
            ),
            ProviderOption(
                name="NNAPI_FLAG_CPU_ONLY",
                meaning="NNAPI on CPU only: reference outputs for validation, slow",
                default="0",
                choices=_BOOL,
            ),
        ),
        note=(
            "the flags are a bit set in the C/Java API (OrtSessionOptionsAppendExecutionProvider_Nnapi); an Android"
            " app passes them there. ONNX Runtime's Python binding creates NNAPI with flags 0"
        ),
        docs="https://onnxruntime.ai/docs/execution-providers/NNAPI-ExecutionProvider.html",
    )
)
_add(
    ExecutionProviderSpec(
        name="CoreMLExecutionProvider",
        alias="coreml",
        options=(
            ProviderOption(
                name="ModelFormat",
                meaning="MLProgram (iOS 15+/macOS 12+, fp16) or the older NeuralNetwork format",
                default="MLProgram",
                choices=("MLProgram", "NeuralNetwork"),
            ),
            ProviderOption(
                name="MLComputeUnits",
                meaning="which units Core ML may use",
                default="ALL",
                choices=("CPUOnly", "CPUAndGPU", "CPUAndNeuralEngine", "ALL"),
            ),
            ProviderOption(
                name="RequireStaticInputShapes",
                meaning="take only nodes whose inputs have static shapes",
                choices=_BOOL,
            ),
            ProviderOption(
                name="EnableOnSubgraphs", meaning="also run nodes inside control-flow subgraphs", choices=_BOOL
            ),
            ProviderOption(
                name="SpecializationStrategy",
                meaning="Core ML graph specialization policy",
                choices=("Default", "FastPrediction"),
            ),
            ProviderOption(
                name="AllowLowPrecisionAccumulationOnGPU", meaning="fp16 accumulation on the GPU", choices=_BOOL
            ),
            ProviderOption(name="ProfileComputePlan", meaning="log Core ML's per-op device plan", choices=_BOOL),
            ProviderOption(
                name="ModelCacheDirectory",
                meaning="where the compiled Core ML model is cached, so the next load skips the conversion",
            ),
        ),
        cache_option="ModelCacheDirectory",
        docs="https://onnxruntime.ai/docs/execution-providers/CoreML-ExecutionProvider.html",
    )
)
_add(
    ExecutionProviderSpec(
        name="QNNExecutionProvider",
        alias="qnn",
        options=(
            ProviderOption(
                name="backend_path",
                meaning="the QNN backend library; the HTP (NPU) backend",
                default="QnnHtp.dll" if sys.platform == "win32" else "libQnnHtp.so",
            ),
            ProviderOption(
                name="htp_performance_mode",
                meaning="HTP power/performance vote",
                default="burst",
                choices=(
                    "burst",
                    "balanced",
                    "default",
                    "high_performance",
                    "high_power_saver",
                    "low_balanced",
                    "low_power_saver",
                    "power_saver",
                    "extreme_power_saver",
                    "sustained_high_performance",
                ),
            ),
            ProviderOption(
                name="htp_graph_finalization_optimization_mode",
                meaning="0-3: higher spends longer preparing the graph for faster runs",
                choices=("0", "1", "2", "3"),
            ),
            ProviderOption(name="enable_htp_fp16_precision", meaning="run float ops in fp16 on the HTP", choices=_BOOL),
            ProviderOption(name="htp_arch", meaning="HTP architecture, e.g. 73 or 75 (offline context preparation)"),
            ProviderOption(name="soc_model", meaning="Qualcomm SoC model number"),
            ProviderOption(
                name="qnn_context_priority",
                meaning="context priority",
                choices=("low", "normal", "normal_high", "high"),
            ),
            ProviderOption(name="profiling_level", meaning="QNN profiling", choices=("off", "basic", "detailed")),
            ProviderOption(name="device_id", meaning="which HTP device"),
        ),
        note="the HTP runs QDQ-quantized (8/16-bit) graphs with static shapes; anything else falls to the CPU",
        docs="https://onnxruntime.ai/docs/execution-providers/QNN-ExecutionProvider.html",
    )
)
_add(
    ExecutionProviderSpec(
        name="OpenVINOExecutionProvider",
        alias="openvino",
        options=(
            ProviderOption(
                name="device_type",
                meaning="CPU, GPU, NPU, GPU.0, or AUTO:/HETERO: combinations",
                default="CPU",
            ),
            ProviderOption(name="precision", meaning="inference precision", choices=("FP32", "FP16", "ACCURACY")),
            ProviderOption(name="num_of_threads", meaning="OpenVINO's CPU threads"),
            ProviderOption(name="cache_dir", meaning="where OpenVINO caches compiled blobs"),
            ProviderOption(
                name="enable_qdq_optimizer", meaning="optimize QDQ graphs for the NPU", choices=("True", "False")
            ),
        ),
        threads_option="num_of_threads",
        cache_option="cache_dir",
        docs="https://onnxruntime.ai/docs/execution-providers/OpenVINO-ExecutionProvider.html",
    )
)
_add(
    ExecutionProviderSpec(
        name="CUDAExecutionProvider",
        alias="cuda",
        options=(
            ProviderOption(name="device_id", meaning="GPU index", default="0"),
            ProviderOption(
                name="arena_extend_strategy",
                meaning="how the GPU arena grows",
                choices=("kNextPowerOfTwo", "kSameAsRequested"),
            ),
            ProviderOption(name="gpu_mem_limit", meaning="arena size limit in bytes"),
            ProviderOption(
                name="cudnn_conv_algo_search",
                meaning="cuDNN convolution algorithm search",
                choices=("EXHAUSTIVE", "HEURISTIC", "DEFAULT"),
            ),
            ProviderOption(name="do_copy_in_default_stream", meaning="copies on the default stream", choices=_BOOL),
        ),
        saves_optimized_graph=True,
        docs="https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html",
    )
)


def available_providers() -> list[str]:
    """The providers this onnxruntime build offers. Tests monkeypatch this to simulate other builds."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def resolve_provider(name: str) -> str:
    """ORT's spelling for a provider given by ORT name, alias (``xnnpack``) or a case slip."""
    if name in KNOWN_PROVIDERS:
        return name
    low = name.lower()
    for spec in PROVIDERS:
        if low in (spec.alias, spec.name.lower(), spec.name.lower().removesuffix("executionprovider")):
            return spec.name
    for known in KNOWN_PROVIDERS.names():
        if low in (known.lower(), known.lower().removesuffix("executionprovider")):
            return known
    choices = [spec.alias for spec in PROVIDERS] + KNOWN_PROVIDERS.names()
    raise UnknownNameError(unknown_message("execution provider", name, choices), param="providers")


def provider_spec(name: str) -> ExecutionProviderSpec | None:
    """The registry entry for an ORT provider name; None for providers we pass without options."""
    return PROVIDERS.get(name) if name in PROVIDERS else None


@dataclass(frozen=True, kw_only=True)
class Fallback:
    """A provider that was asked for and does not run (or runs none of the graph)."""

    asked: str
    asked_by: str  # "device <name>" | "caller"
    reason: str
    available: tuple[str, ...]
    running: tuple[str, ...] = ()

    def message(self) -> str:
        return (
            f"execution provider {self.asked} (asked by {self.asked_by}) {self.reason};"
            f" available: {', '.join(self.available) or 'none'}; running: {', '.join(self.running) or 'nothing yet'}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "asked": self.asked,
            "asked_by": self.asked_by,
            "reason": self.reason,
            "available": list(self.available),
            "running": list(self.running),
        }


@dataclass(frozen=True, kw_only=True)
class ProviderPlan:
    """The providers to create the session with, in priority order, and what was dropped on the way."""

    providers: tuple[str, ...]
    asked: tuple[tuple[str, str], ...]  # (provider, asked_by) in the order considered
    dropped: tuple[Fallback, ...]
    available: tuple[str, ...]

    def requirements(self) -> dict[str, tuple[str, ...]]:
        return {p: spec.requirements for p in self.providers if (spec := provider_spec(p)) is not None}


def plan_providers(
    *,
    device_providers: Sequence[str] = (),
    device_name: str | None = None,
    requested: Iterable[str] | None = None,
    available: Sequence[str] | None = None,
) -> ProviderPlan:
    """Device order, then the caller's, each kept only if available, then CPU."""
    avail = tuple(available if available is not None else available_providers())
    asked: list[tuple[str, str]] = []
    seen: set[str] = set()
    for source, names in ((f"device {device_name}", device_providers), ("caller", list(requested or ()))):
        for raw in names:
            name = resolve_provider(raw)
            if name not in seen:
                seen.add(name)
                asked.append((name, source))
    chosen: list[str] = []
    dropped: list[Fallback] = []
    for name, source in asked:
        if name in _NEVER_PICKED:
            dropped.append(
                Fallback(asked=name, asked_by=source, reason="runs remote endpoints, not local graphs", available=avail)
            )
        elif name in avail:
            chosen.append(name)
        else:
            dropped.append(
                Fallback(asked=name, asked_by=source, reason="is not in this onnxruntime build", available=avail)
            )
    if CPU not in chosen:
        chosen.append(CPU)  # the last resort: every node has a CPU kernel
    return ProviderPlan(providers=tuple(chosen), asked=tuple(asked), dropped=tuple(dropped), available=avail)


_REPORTED: set[tuple[str, str, str]] = set()


def report_fallbacks(fallbacks: Iterable[Fallback], *, log: Callable[[str], None] | None = None) -> None:
    """Log each fallback once per process: a model loaded a hundred times warns once, not a hundred times."""
    emit = log or logger.warning
    for fb in fallbacks:
        key = (fb.asked, fb.reason, ",".join(fb.running))
        if key not in _REPORTED:
            _REPORTED.add(key)
            emit(fb.message())


def node_shares(assignment: Mapping[str, int]) -> dict[str, dict[str, float | int]]:
    total = sum(assignment.values())
    return {
        name: {"nodes": count, "share": round(count / total, 4) if total else 0.0}
        for name, count in sorted(assignment.items(), key=lambda kv: -kv[1])
    }
