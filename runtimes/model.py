"""The model object :func:`runtimes.load` returns, and ``load`` itself.

``Model.run`` takes named arrays for any package. The task's pipeline (from ``runtimes.pipelines.PIPELINES``)
adds ``embed``, ``classify`` or ``generate`` / ``stream``; calling a method the task does not have raises a
:class:`UsageError` naming the task and the methods it has. The model reports which providers run, what
share of the graph's nodes each took, and every fallback (``model.fallbacks``, also logged once).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import limits
from edgekit.errors import PackageError, UsageError, edgekit_boundary
from edgekit.manifest import MODEL_NAME, Manifest
from edgekit.session_policy import AppliedPolicy, apply_policy
from runtimes.pipelines import PIPELINES, PipelineContext, PipelineSpec
from runtimes.providers import Fallback, plan_providers, report_fallbacks
from runtimes.session import RuntimeSession, SessionConfig, build_session, model_digest, physical_cores

# A session needs roughly its weights plus activations and arena slack; below this multiple of the model's
# size in the app's memory budget, the arena and memory-pattern planning are switched off.
_LOW_MEMORY_FACTOR = 3


class Model:
    """A loaded package: ``run`` for every task, plus the task's pipeline methods."""

    def __init__(
        self,
        *,
        session: RuntimeSession,
        manifest: Manifest | None,
        root: Path | None,
        spec: PipelineSpec,
        device: str | None,
        verified: bool,
    ) -> None:
        self.session = session
        self.manifest = manifest
        self.root = root
        self.task = spec.task
        self.device = device
        self.verified = verified
        self._spec = spec
        self._pipeline = spec.factory(PipelineContext(session, manifest, root)) if spec.factory else None
        self.load_seconds = session.load_seconds  # load() sets the whole time: session plus pipeline

    # --- what the model reports ----------------------------------------------------------------------

    @property
    def methods(self) -> tuple[str, ...]:
        return ("run", *self._spec.methods)

    @property
    def providers(self) -> list[str]:
        return list(self.session.providers)

    @property
    def fallbacks(self) -> list[Fallback]:
        return list(self.session.fallbacks)

    @property
    def node_assignment(self) -> dict[str, dict[str, float | int]]:
        """Per provider: how many nodes of the optimized graph it runs, and their share."""
        return self.session.node_report()

    @property
    def inputs(self) -> dict[str, str]:
        return {name: spec.describe() for name, spec in self.session.inputs.items()}

    def info(self) -> dict[str, Any]:
        return {
            "package": str(self.root) if self.root else None,
            "name": self.manifest.name if self.manifest else None,
            "task": self.task,
            "methods": list(self.methods),
            "device": self.device,
            "checksums_verified": self.verified,
            "model_load_seconds": round(self.load_seconds, 4),
            **self.session.to_dict(),
        }

    def __repr__(self) -> str:
        return f"<edgekit Model task={self.task!r} providers={self.providers} package={str(self.root)!r}>"

    # --- calls ---------------------------------------------------------------------------------------

    def run(self, inputs: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Named arrays in, named arrays out; inputs are validated (names, dtypes, ranks, fixed dims)."""
        return self.session.run(inputs, outputs)

    def embed(self, texts: str | Sequence[str], *, batch_size: int = 32, normalize: bool | None = None) -> np.ndarray:
        return self._require("embed").embed(texts, batch_size=batch_size, normalize=normalize)

    def classify(self, x: Any, *, top_k: int = 5, **kwargs: Any) -> list[Any]:
        return self._require("classify").classify(x, top_k=top_k, **kwargs)

    def generate(self, prompt: str | Sequence[int], config: Any = None, *, cancel: Any = None, **options: Any) -> Any:
        """Generate a completion; options are ``GenerationConfig`` fields (max_tokens, temperature, ...).

        ``cancel``: a ``threading.Event``; once another thread sets it, generation stops between two tokens
        and the result has ``finish_reason="cancelled"``.
        """
        pipeline = self._require("generate")
        return pipeline.generate(prompt, _generation_config(config, options), cancel=cancel)

    def stream(self, prompt: str | Sequence[int], config: Any = None, *, cancel: Any = None, **options: Any) -> Any:
        """Iterate text deltas (never half a UTF-8 character); ``.result`` holds finish_reason and usage.

        ``cancel`` as for :meth:`generate`.
        """
        pipeline = self._require("stream")
        return pipeline.stream(prompt, _generation_config(config, options), cancel=cancel)

    def _require(self, method: str) -> Any:
        if method not in self._spec.methods or self._pipeline is None:
            raise UsageError(
                f"this package's task is {self.task!r}, which has no {method}();"
                f" its methods are: {', '.join(self.methods)}",
                hint="load a package exported for a task that has it (see `edgekit export --task`)",
                param=method,
            )
        return self._pipeline


def _generation_config(config: Any, options: Mapping[str, Any]) -> Any:
    from runtimes.pipelines.generate import GenerationConfig

    if config is None:
        return GenerationConfig.from_dict(options)
    if isinstance(config, Mapping):
        return GenerationConfig.from_dict({**config, **options})
    if isinstance(config, GenerationConfig):
        return config.replace(**options) if options else config
    raise UsageError(f"config must be a GenerationConfig or a dict, got {type(config).__name__}", param="config")


@edgekit_boundary
def load(
    package: str | Path | Any,
    *,
    device: str | Any | None = None,
    providers: Iterable[str] | None = None,
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    threads: int | None = None,
    verify: bool = True,
    graph_optimization: str = "all",
    low_memory: bool | None = None,
    cache_optimized_graph: bool = True,
    cache_dir: str | Path | None = None,
) -> Model:
    """Load a model package (a directory, a ``.zip`` of one, or a bare ``.onnx`` file for ``run`` only).

    ``device`` names a device profile (or passes a ``DeviceProfile``): its execution providers are tried
    first, in order, and its ``default_threads`` is the thread count. ``providers`` adds the caller's
    choices (ORT names or aliases such as ``"xnnpack"``). Missing providers fall back, ending on CPU;
    each fallback is logged once and kept in ``model.fallbacks``. ``verify=False`` skips the sha256 check.
    """
    config = SessionConfig(
        threads=threads,
        graph_optimization=graph_optimization,
        low_memory=low_memory,
        cache_optimized_graph=cache_optimized_graph,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
    )
    profile = _device_profile(device)
    root, manifest, model_path, known = _open(package, verify)
    task = manifest.task if manifest else "tensor"
    spec = PIPELINES.get(task)
    if not model_path.is_file():
        raise PackageError(f"the package has no {MODEL_NAME}", hint="export the package again")

    plan = plan_providers(
        device_providers=profile.provider_names if profile else (),
        device_name=profile.name if profile else None,
        requested=providers,
    )
    limits.check("threads", threads)  # the same bound as the CLI's --threads
    applied = _thread_policy(manifest, threads, profile)
    if config.allow_spinning is None and applied.allow_spinning is not None:
        config = dataclasses.replace(config, allow_spinning=applied.allow_spinning)
    n_threads = applied.threads
    gen = manifest.generation if manifest else None
    if gen is not None and gen.with_kv_cache and gen.shared_kv_buffer:  # decode steps: the same shapes each time
        config = dataclasses.replace(config, repeated_shapes=True)
    if low_memory is None:
        budget = profile.app_memory_budget_mb * 2**20 if profile else None
        low_memory = bool(budget and model_path.stat().st_size * _LOW_MEMORY_FACTOR > budget)
    start = time.perf_counter()
    session = build_session(
        model_path,
        plan=plan,
        config=config,
        threads=n_threads,
        low_memory=low_memory,
        provider_options=provider_options,
        # the cache key is the model as it is on disk: verified sums are reused, anything else is hashed
        digest=model_digest(model_path, known) if _caches(config) else None,
    )
    session.policy = applied.to_dict()
    report_fallbacks(session.fallbacks)
    model = Model(
        session=session,
        manifest=manifest,
        root=root,
        spec=spec,
        device=profile.name if profile else None,
        verified=bool(manifest is not None and MODEL_NAME in known),
    )
    model.load_seconds = time.perf_counter() - start
    return model


def _open(package: str | Path | Any, verify: bool) -> tuple[Path | None, Manifest | None, Path, dict[str, str]]:
    """The package's root, manifest, model file, and the sha256 sums checked in this load (file name -> sum)."""
    from edgekit.package import Package, open_package, verify_files

    if isinstance(package, Package):
        # A Package opened with verify=False is checked now when this load asks for verification.
        known = dict(package.verified or (verify_files(package) if verify else {}))
        return package.root, package.manifest, package.model_path, known
    if Path(package).suffix == ".onnx" and Path(package).is_file():
        return None, None, Path(package), {}
    pkg = open_package(package, verify=verify)
    return pkg.root, pkg.manifest, pkg.model_path, dict(pkg.verified)


def _thread_policy(manifest: Manifest | None, threads: int | None, profile: Any) -> AppliedPolicy:
    """The caller's threads, else the package's session policy (edgekit.session_policy), else all cores.

    A profile's thread count is for its device; on a smaller machine (a test host) it is capped to its cores."""
    all_threads = min(profile.default_threads, physical_cores()) if profile else physical_cores()
    policy = manifest.runtime.session_policy if manifest and manifest.runtime else None
    # The host profile is this machine: the package's own measurement holds there when the CPUs match.
    device = profile if profile is not None and profile.name != "host" else None
    return apply_policy(policy, threads=threads, all_threads=all_threads, cpu=_host_cpu(), device=device)


@functools.lru_cache(maxsize=1)
def _host_cpu() -> str | None:
    try:
        from edgekit.devices.host import detect_cpu

        return detect_cpu().model
    except Exception:  # detection reads /proc and /sys; on an unusual OS the package's rule decides
        return None


def _device_profile(device: Any) -> Any:
    if device is None:
        return None
    if isinstance(device, str):
        from edgekit.devices import get_device

        return get_device(device)
    if hasattr(device, "provider_names") and hasattr(device, "default_threads"):
        return device
    raise UsageError(f"device must be a device name or a DeviceProfile, got {type(device).__name__}", param="device")


def _caches(config: SessionConfig) -> bool:
    return config.cache_optimized_graph and config.graph_optimization != "disable"
