"""Device profiles: what an edge device can do, read from one TOML file per device.

A profile holds the CPU clusters with their per-cycle throughput, the peak fp32 / fp16 / int8 rates derived
from them, the accelerators, memory size and bandwidth, the memory one app may use, and the ordered list of
ONNX Runtime execution providers to try. Every figure names its source in ``sources``; derived figures say
``derived: <formula>`` and doubtful ones are listed in ``unverified``.

Profiles come from the bundled directory (this package), from directories passed as ``extra_dirs`` and from
the directories named in ``EDGEKIT_DEVICE_PATH`` (``os.pathsep``-separated). The name ``host`` is this
machine, detected and calibrated at run time (see :mod:`edgekit.devices.host`).

    >>> from edgekit.devices import get_device
    >>> get_device("raspberry-pi-5").peak_fp32_gflops
    153.6
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from edgekit.errors import DeviceProfileError, UnknownNameError
from edgekit.registry import Registry, unknown_message

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser under its PyPI name
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "BUNDLED_DIR",
    "DEVICE_PATH_ENV",
    "EP_CONSTRAINTS",
    "HOST",
    "KNOWN_PROVIDERS",
    "Accelerator",
    "AcceleratorKind",
    "CpuCluster",
    "DeviceEntry",
    "DeviceKind",
    "DeviceProfile",
    "ExecutionProviderEntry",
    "FrozenMap",
    "Precision",
    "ProviderInfo",
    "device_dirs",
    "device_names",
    "device_registry",
    "get_device",
    "list_devices",
    "load_profile",
]

BUNDLED_DIR = Path(__file__).resolve().parent
DEVICE_PATH_ENV = "EDGEKIT_DEVICE_PATH"
HOST = "host"

_HINT = "see edgekit/devices/README.md for the fields a device profile holds"
_NAME_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class DeviceKind(str, Enum):
    PHONE = "phone"
    SBC = "sbc"
    JETSON = "jetson"
    MINI_PC = "mini-pc"
    IOT = "iot"
    HOST = "host"  # the machine edgekit runs on, detected rather than read from a file


class AcceleratorKind(str, Enum):
    NPU = "npu"
    GPU = "gpu"
    DSP = "dsp"


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT16 = "int16"
    INT8 = "int8"
    INT4 = "int4"


# What each constraint word in a profile's execution-provider entry means; a profile may only use these, so
# the profiler can act on them instead of parsing prose.
EP_CONSTRAINTS: Mapping[str, str] = {
    "static_shapes": "input shapes must be fixed (no symbolic dims) before the session is created",
    "qdq_only": "the accelerator runs only QDQ-quantized (8/16-bit integer) graphs",
    "float_only": "no QuantizeLinear/DequantizeLinear kernels: quantized graphs fall back to the CPU",
    "supported_ops": "takes a subset of ops; the rest falls back to the next provider in the list",
    "custom_build": "not in the default ONNX Runtime package for this platform: needs a custom or vendor build",
    "deprecated": "the platform API behind the provider is deprecated",
    "windows_only": "available on Windows only",
}


@dataclass(frozen=True, kw_only=True)
class ProviderInfo:
    """An ONNX Runtime execution provider edgekit knows by name: the one record of its facts that core code
    needs. ``runtimes.providers`` builds its option records on these and repeats none of them."""

    name: str
    typical_constraints: tuple[str, ...] = ()  # EP_CONSTRAINTS words a model must meet to run on it
    # Runs the graph on a remote endpoint (Azure): never a place to run a local graph, says nothing of a device.
    remote: bool = False
    # "module:attr" of the profiler's op-coverage rule (supported ops, node limits); a plain string so core
    # names it without importing the profiler, which sits above. None: coverage is not estimated.
    coverage_rule: str | None = None

    def __post_init__(self) -> None:
        for word in self.typical_constraints:
            if word not in EP_CONSTRAINTS:
                raise ValueError(unknown_message("constraint", word, list(EP_CONSTRAINTS)))


# The provider names ONNX Runtime itself knows (``onnxruntime.get_all_providers()`` in 1.32). ACL and ArmNN
# are absent on purpose: ONNX Runtime removed both EPs (ArmNN in 1.25, PR #27447).
KNOWN_PROVIDERS: Registry[ProviderInfo] = Registry("execution provider")
for _info in (
    ProviderInfo(
        name="QNNExecutionProvider",
        typical_constraints=("static_shapes", "qdq_only", "supported_ops"),
        coverage_rule="edgekit.profiler.coverage:QNN_RULE",
    ),
    ProviderInfo(
        name="NnapiExecutionProvider",
        typical_constraints=("static_shapes", "supported_ops", "deprecated"),
        coverage_rule="edgekit.profiler.coverage:NNAPI_RULE",
    ),
    ProviderInfo(
        name="CoreMLExecutionProvider",
        typical_constraints=("supported_ops", "float_only"),
        coverage_rule="edgekit.profiler.coverage:COREML_RULE",
    ),
    ProviderInfo(
        name="XnnpackExecutionProvider",
        typical_constraints=("supported_ops",),
        coverage_rule="edgekit.profiler.coverage:XNNPACK_RULE",
    ),
    ProviderInfo(name="VSINPUExecutionProvider", typical_constraints=("supported_ops", "qdq_only")),
    ProviderInfo(name="RknpuExecutionProvider", typical_constraints=("supported_ops",)),
    ProviderInfo(name="TensorrtExecutionProvider", typical_constraints=("supported_ops",)),
    ProviderInfo(name="CUDAExecutionProvider"),
    ProviderInfo(name="MIGraphXExecutionProvider", typical_constraints=("supported_ops",)),
    ProviderInfo(name="OpenVINOExecutionProvider", typical_constraints=("supported_ops",)),
    ProviderInfo(name="DnnlExecutionProvider", typical_constraints=("supported_ops",)),
    ProviderInfo(name="VitisAIExecutionProvider", typical_constraints=("supported_ops", "qdq_only")),
    ProviderInfo(name="DmlExecutionProvider", typical_constraints=("windows_only",)),
    ProviderInfo(name="CANNExecutionProvider", typical_constraints=("supported_ops",)),
    ProviderInfo(name="WebGpuExecutionProvider", typical_constraints=("supported_ops",)),
    ProviderInfo(name="WebNNExecutionProvider", typical_constraints=("supported_ops",)),
    ProviderInfo(name="JsExecutionProvider", typical_constraints=("supported_ops",)),
    ProviderInfo(name="AzureExecutionProvider", remote=True),
    ProviderInfo(name="CPUExecutionProvider"),
):
    KNOWN_PROVIDERS.add(_info.name, _info)
del _info


# --------------------------------------------------------------------------------------------------------
# Validation. One set of field parsers serves ``from_dict`` (which knows the file, so messages name it) and
# ``__post_init__`` (direct construction), so a profile is valid however it was built.


@dataclass(frozen=True)
class _Where:
    origin: str
    path: str = ""

    def at(self, key: str) -> _Where:
        return _Where(self.origin, f"{self.path}.{key}" if self.path else key)

    def item(self, index: int) -> _Where:
        return _Where(self.origin, f"{self.path}[{index}]")

    def error(self, problem: str) -> DeviceProfileError:
        return DeviceProfileError(
            f"device profile {self.origin}: field '{self.path}' {problem}", hint=_HINT, param=self.path or None
        )


Parser = Callable[[Any, _Where], Any]


def _text(value: Any, where: _Where) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(f"must be a non-empty string (got {value!r})")
    return value


def _note(value: Any, where: _Where) -> str:
    if not isinstance(value, str):
        raise where.error(f"must be a string (got {value!r})")
    return value


def _positive(value: Any, where: _Where) -> float:
    # bool is an int in Python; ``true`` in a TOML file is a typo, not a number.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise where.error(f"must be a positive number (got {value!r})")
    return float(value)


def _count(value: Any, where: _Where) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise where.error(f"must be a positive integer (got {value!r})")
    return value


def _enum(enum_cls: type[Enum]) -> Parser:
    values = [member.value for member in enum_cls]

    def parse(value: Any, where: _Where) -> Enum:
        try:
            return enum_cls(value)
        except ValueError:
            raise where.error(f"must be one of {', '.join(values)} (got {value!r})") from None

    return parse


def _device_name(value: Any, where: _Where) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise where.error(f"must be lowercase letters, digits and single hyphens, like 'pixel-8' (got {value!r})")
    return value


def _provider_name(value: Any, where: _Where) -> str:
    name = _text(value, where)
    if name in KNOWN_PROVIDERS:
        return name
    # ONNX Runtime's names are case-sensitive and irregular (NnapiExecutionProvider, QNNExecutionProvider);
    # difflib misses a pure case slip, so name the right spelling first.
    same_letters = [known for known in KNOWN_PROVIDERS.names() if known.lower() == name.lower()]
    if same_letters:
        raise where.error(f"is invalid: ONNX Runtime spells it {same_letters[0]!r} (got {name!r})")
    raise where.error(f"is invalid: {unknown_message('execution provider', name, KNOWN_PROVIDERS.names())}")


def _constraint(value: Any, where: _Where) -> str:
    word = _text(value, where)
    if word not in EP_CONSTRAINTS:
        raise where.error(f"is invalid: {unknown_message('constraint', word, list(EP_CONSTRAINTS))}")
    return word


def _tuple_of(item: Parser, *, non_empty: bool = False) -> Parser:
    def parse(value: Any, where: _Where) -> tuple[Any, ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise where.error(f"must be a list (got {value!r})")
        if non_empty and not value:
            raise where.error("must not be empty")
        return tuple(item(element, where.item(i)) for i, element in enumerate(value))

    return parse


def _record(cls: type[_Record]) -> Parser:
    def parse(value: Any, where: _Where) -> _Record:
        if isinstance(value, cls):
            return value
        return cls(**_validated(cls, value, where))

    return parse


class FrozenMap(Mapping[str, str]):
    """A read-only, hashable mapping, so a frozen profile stays immutable and usable as a cache key."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


def _text_map(value: Any, where: _Where) -> FrozenMap:
    if not isinstance(value, Mapping):
        raise where.error(f"must be a table of strings (got {value!r})")
    return FrozenMap({_text(key, where): _text(text, where.at(str(key))) for key, text in value.items()})


def _validated(cls: type[_Record], data: Any, where: _Where) -> dict[str, Any]:
    """Check ``data`` against ``cls``'s fields and return the normalized keyword arguments."""
    if not isinstance(data, Mapping):
        place = f"field '{where.path}'" if where.path else "the document"
        raise DeviceProfileError(f"device profile {where.origin}: {place} must be a table", hint=_HINT)
    declared = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in declared:
            inside = f" in '{where.path}'" if where.path else ""
            raise DeviceProfileError(
                f"device profile {where.origin}: {unknown_message('field', str(key), list(declared))}{inside}",
                hint=_HINT,
                param=where.at(str(key)).path,
            )
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        raw = data.get(name)
        if raw is None:  # TOML has no null; a JSON report may carry one for an optional field
            if spec.default is MISSING and spec.default_factory is MISSING:
                raise where.at(name).error("is missing")
            values[name] = spec.default if spec.default is not MISSING else spec.default_factory()
            continue
        values[name] = cls._PARSERS[name](raw, where.at(name))
    cls._check(values, where)
    return values


def _plain(value: Any) -> Any:
    """A JSON/TOML-ready copy: enums by value, records as dicts, tuples as lists."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


_R = TypeVar("_R", bound="_Record")


class _Record:
    """Shared ``from_dict`` / ``to_dict`` / validation for the frozen profile dataclasses."""

    _PARSERS: ClassVar[Mapping[str, Parser]] = {}

    def __post_init__(self) -> None:
        current = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        where = _Where(f"<{type(self).__name__} built in code>")
        for name, value in _validated(type(self), current, where).items():
            object.__setattr__(self, name, value)

    @classmethod
    def _check(cls, values: dict[str, Any], where: _Where) -> None:
        """Cross-field rules; the single fields are already parsed."""

    @classmethod
    def from_dict(cls: type[_R], data: Mapping[str, Any], *, origin: str = "<dict>") -> _R:
        """Build from a TOML/JSON mapping, refusing unknown keys and naming any missing or invalid field."""
        return cls(**_validated(cls, data, _Where(origin)))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class CpuCluster(_Record):
    """Cores of one type and clock. Per-cycle rates are per core; a cluster's peak is their product."""

    cores: int
    core_type: str
    max_ghz: float
    fp32_flops_per_cycle: float
    fp16_flops_per_cycle: float  # the fp32 rate where the core has no FP16 arithmetic
    int8_ops_per_cycle: float

    _PARSERS: ClassVar[Mapping[str, Parser]] = {
        "cores": _count,
        "core_type": _text,
        "max_ghz": _positive,
        "fp32_flops_per_cycle": _positive,
        "fp16_flops_per_cycle": _positive,
        "int8_ops_per_cycle": _positive,
    }

    def peak_gops(self, precision: Precision | str) -> float:
        """cores x GHz x ops/cycle for fp32, fp16 or int8 (GFLOP/s or GOP/s)."""
        per_cycle = {
            Precision.FP32: self.fp32_flops_per_cycle,
            Precision.FP16: self.fp16_flops_per_cycle,
            Precision.INT8: self.int8_ops_per_cycle,
        }[Precision(precision)]
        return self.cores * self.max_ghz * per_cycle


@dataclass(frozen=True, kw_only=True)
class Accelerator(_Record):
    """An NPU, GPU or DSP. ``tops`` is tera-ops per second at ``precision`` (TFLOPS for float precisions)."""

    name: str
    kind: AcceleratorKind
    tops: float | None = None  # unpublished figures stay None rather than a guess
    precision: Precision | None = None
    note: str = ""
    execution_provider: str | None = None  # the provider that reaches it; None: no ONNX Runtime path

    _PARSERS: ClassVar[Mapping[str, Parser]] = {
        "name": _text,
        "kind": _enum(AcceleratorKind),
        "tops": _positive,
        "precision": _enum(Precision),
        "note": _note,
        "execution_provider": _provider_name,
    }

    @classmethod
    def _check(cls, values: dict[str, Any], where: _Where) -> None:
        if values["tops"] is not None and values["precision"] is None:
            raise where.at("precision").error("is missing: a TOPS figure means nothing without its precision")


@dataclass(frozen=True, kw_only=True)
class ExecutionProviderEntry(_Record):
    """One ONNX Runtime execution provider to try, with what a model must satisfy to run on it."""

    name: str
    constraints: tuple[str, ...] = ()
    note: str = ""

    _PARSERS: ClassVar[Mapping[str, Parser]] = {
        "name": _provider_name,
        "constraints": _tuple_of(_constraint),
        "note": _note,
    }


# The fields holding a figure or a fact about the hardware; each needs an entry in ``sources``.
_SOURCED_FIELDS = (
    "cpu_clusters",
    "isa_features",
    "peak_fp32_gflops",
    "peak_fp16_gflops",
    "peak_int8_gops",
    "memory_gb",
    "memory_bandwidth_gbps",
    "app_memory_budget_mb",
    "execution_providers",
    "default_threads",
)


@dataclass(frozen=True, kw_only=True)
class DeviceProfile(_Record):
    """One device. CPU peaks are theoretical (``derived: ...``) except on ``host``, where they are measured."""

    name: str
    display_name: str
    kind: DeviceKind
    os: str
    cpu_clusters: tuple[CpuCluster, ...]
    isa_features: tuple[str, ...]
    peak_fp32_gflops: float
    peak_fp16_gflops: float
    peak_int8_gops: float
    accelerators: tuple[Accelerator, ...] = ()
    memory_gb: float
    memory_bandwidth_gbps: float
    app_memory_budget_mb: int
    execution_providers: tuple[ExecutionProviderEntry, ...]  # in the order to try them
    default_threads: int
    sources: Mapping[str, str]  # field name -> where the figure comes from ("derived: ..." if computed)
    unverified: tuple[str, ...] = ()  # fields whose figures are placeholders or single weak sources

    _PARSERS: ClassVar[Mapping[str, Parser]] = {
        "name": _device_name,
        "display_name": _text,
        "kind": _enum(DeviceKind),
        "os": _text,
        "cpu_clusters": _tuple_of(_record(CpuCluster), non_empty=True),
        "isa_features": _tuple_of(_text),
        "peak_fp32_gflops": _positive,
        "peak_fp16_gflops": _positive,
        "peak_int8_gops": _positive,
        "accelerators": _tuple_of(_record(Accelerator)),
        "memory_gb": _positive,
        "memory_bandwidth_gbps": _positive,
        "app_memory_budget_mb": _count,
        "execution_providers": _tuple_of(_record(ExecutionProviderEntry), non_empty=True),
        "default_threads": _count,
        "sources": _text_map,
        "unverified": _tuple_of(_text),
    }

    @classmethod
    def _check(cls, values: dict[str, Any], where: _Where) -> None:
        cores = sum(cluster.cores for cluster in values["cpu_clusters"])
        if values["default_threads"] > cores:
            raise where.at("default_threads").error(
                f"must not exceed the {cores} cores in cpu_clusters (got {values['default_threads']})"
            )
        if values["app_memory_budget_mb"] > values["memory_gb"] * 1024:
            raise where.at("app_memory_budget_mb").error(
                f"must not exceed memory_gb ({values['memory_gb']} GB) (got {values['app_memory_budget_mb']} MB)"
            )
        providers = [entry.name for entry in values["execution_providers"]]
        for i, name in enumerate(providers):
            if name in providers[:i]:
                raise where.at("execution_providers").item(i).at("name").error(f"repeats {name!r}")
        for i, accelerator in enumerate(values["accelerators"]):
            if accelerator.execution_provider is not None and accelerator.execution_provider not in providers:
                raise (
                    where.at("accelerators")
                    .item(i)
                    .at("execution_provider")
                    .error(f"names {accelerator.execution_provider!r}, which is not in execution_providers")
                )
        field_names = [f.name for f in fields(cls)]
        for key in values["sources"]:
            if key not in field_names:
                raise where.at("sources").error(f"has an entry for {unknown_message('field', key, field_names)}")
        needed = _SOURCED_FIELDS + (("accelerators",) if values["accelerators"] else ())
        missing = [key for key in needed if key not in values["sources"]]
        if missing:
            raise where.at("sources").error(f"must say where each figure comes from; missing: {', '.join(missing)}")
        for i, key in enumerate(values["unverified"]):
            if key not in field_names:
                raise where.at("unverified").item(i).error(f"is invalid: {unknown_message('field', key, field_names)}")

    @property
    def cores(self) -> int:
        return sum(cluster.cores for cluster in self.cpu_clusters)

    @property
    def provider_names(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in self.execution_providers)

    def cluster_peak_gops(self, precision: Precision | str) -> float:
        """The CPU peak recomputed from the clusters: sum of cores x GHz x ops/cycle."""
        return sum(cluster.peak_gops(precision) for cluster in self.cpu_clusters)

    def is_unverified(self, field_name: str) -> bool:
        return field_name in self.unverified


# --------------------------------------------------------------------------------------------------------
# Loading and the device registry.


def load_profile(path: str | os.PathLike[str]) -> DeviceProfile:
    """Read one profile file; its ``name`` must equal the file's stem so a file is found by its name."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise DeviceProfileError(f"device profile {file}: cannot be read ({err.strerror or err})") from err
    except tomllib.TOMLDecodeError as err:
        raise DeviceProfileError(f"device profile {file}: not valid TOML: {err}", hint=_HINT) from err
    profile = DeviceProfile.from_dict(data, origin=str(file))
    if profile.name != file.stem:
        raise DeviceProfileError(
            f"device profile {file}: field 'name' must match the file name {file.stem!r} (got {profile.name!r})",
            hint="rename the file or the profile so the two agree",
            param="name",
        )
    return profile


@dataclass(frozen=True, kw_only=True)
class DeviceEntry:
    """A registry entry: where a device comes from and how to get its profile (detection is deferred)."""

    name: str
    origin: str  # the TOML file, or "detected at run time"
    load: Callable[[], DeviceProfile]
    detected: bool = False


def _detect_host() -> DeviceProfile:
    from edgekit.devices.host import host_profile  # imports onnxruntime and numpy: only when asked for

    return host_profile()


def _constant(profile: DeviceProfile) -> Callable[[], DeviceProfile]:
    return lambda: profile


def device_dirs(extra_dirs: Iterable[str | os.PathLike[str]] | None = None) -> list[Path]:
    """The directories searched, in order: bundled, ``extra_dirs``, then ``EDGEKIT_DEVICE_PATH``."""
    from_env = [Path(part).expanduser() for part in os.environ.get(DEVICE_PATH_ENV, "").split(os.pathsep) if part]
    return [BUNDLED_DIR, *(Path(d).expanduser() for d in extra_dirs or ()), *from_env]


def device_registry(extra_dirs: Iterable[str | os.PathLike[str]] | None = None) -> Registry[DeviceEntry]:
    """Every known device. A name defined twice (in any two directories, or as ``host``) is an error."""
    registry: Registry[DeviceEntry] = Registry("device")
    registry.add(HOST, DeviceEntry(name=HOST, origin="detected at run time", load=_detect_host, detected=True))
    for directory in device_dirs(extra_dirs):
        if not directory.is_dir():
            raise DeviceProfileError(
                f"device profile directory {directory} does not exist",
                hint=f"check the directories passed as extra_dirs or listed in {DEVICE_PATH_ENV}",
                param="extra_dirs",
            )
        for file in sorted(directory.glob("*.toml")):
            profile = load_profile(file)
            if profile.name in registry:
                raise DeviceProfileError(
                    f"device profile {file}: device {profile.name!r} is already defined by "
                    f"{registry.get(profile.name).origin}",
                    hint="give your profile another name (file name and name field), or remove one of the two",
                    param="name",
                )
            registry.add(profile.name, DeviceEntry(name=profile.name, origin=str(file), load=_constant(profile)))
    return registry


def get_device(name: str, extra_dirs: Iterable[str | os.PathLike[str]] | None = None) -> DeviceProfile:
    """The profile called ``name``; ``host`` detects and calibrates this machine (cached on disk)."""
    registry = device_registry(extra_dirs)
    try:
        entry = registry.get(name)
    except UnknownNameError as err:
        raise UnknownNameError(
            err.message,
            hint=f"add your own profile as <name>.toml in a directory listed in {DEVICE_PATH_ENV}",
            param="device",
        ) from None
    return entry.load()


def list_devices(
    extra_dirs: Iterable[str | os.PathLike[str]] | None = None, *, include_host: bool = False
) -> list[DeviceProfile]:
    """All profiles, sorted by name. ``host`` only when asked: detecting it may run the calibration."""
    entries = [entry for entry in device_registry(extra_dirs) if include_host or not entry.detected]
    return [entry.load() for entry in sorted(entries, key=lambda entry: entry.name)]


def device_names(extra_dirs: Iterable[str | os.PathLike[str]] | None = None) -> list[str]:
    """Every device name, ``host`` included, sorted: the choices for a ``--device`` option."""
    return sorted(device_registry(extra_dirs).names())
