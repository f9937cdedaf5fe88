"""Export trials: independent jobs, cached, run in a local process pool or as Ray tasks.

A trial exports one variant of one source through :func:`exporters.export` (convert, recipe steps, validation
against fp32) and records what the manifest's accuracy report says. Its key hashes everything its result
depends on: the source's bytes, the task, the recipe's resolved config, the accuracy search's budget, the
validation and calibration data, and the edgekit and ONNX Runtime versions; so a repeated or interrupted tune
finds the finished trials in the cache and runs only the rest.

Cache layout, one directory per key: ``<key>/<source>-<variant>/`` (the exported package) and ``<key>/trial.json``
(written last, atomically: a trial without it did not finish).

Local trials run in a ``spawn`` process pool (forking a parent that has torch's thread pools loaded can
deadlock). Ray trials export into a temporary directory on whichever node runs them and return the package
as tar bytes, so the driver's cache is filled the same way whether the nodes share a filesystem or not; the
source path must be readable on every node.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.config import to_dict
from edgekit.errors import MissingDependencyError
from edgekit.hashing import sha256_tree
from edgekit.tuning.variants import Variant

TRIAL_FILE = "trial.json"


@dataclass(frozen=True, kw_only=True)
class ExportSettings:
    """The export options every trial of a tune shares."""

    task: str
    validation_samples: int = 64
    calibration: str | None = None
    validation_data: str | None = None
    with_kv_cache: bool = True


@dataclass(frozen=True, kw_only=True)
class TrialSpec:
    source: str
    source_name: str
    source_sha256: str
    variant: Variant
    settings: ExportSettings
    max_accuracy_drop: float | None  # used only by mixed variants (the sensitivity search's target)
    # Where the source's fp32 conversion is shared between trials (see edgekit.tuning.conversion); not part
    # of the key: it changes how long a trial takes, not what it produces.
    conversion_store: str | None = None

    @property
    def package_name(self) -> str:
        """The trial's package directory: named for the variant, which is what the profiler's progress shows."""
        return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", f"{self.source_name}-{self.variant.name}")[:120]

    @property
    def key(self) -> str:
        from edgekit import __version__

        payload = {
            "source_sha256": self.source_sha256,
            "recipe": self.variant.recipe,
            "config": to_dict(self.variant.config),
            "mixed": self.variant.mixed,
            "max_accuracy_drop": self.max_accuracy_drop if self.variant.mixed else None,
            "settings": to_dict(self.settings),
            "data_sha256": [_data_sha(p) for p in (self.settings.calibration, self.settings.validation_data)],
            "edgekit": __version__,
            "onnxruntime": _ort_version(),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


@dataclass(frozen=True, kw_only=True)
class TrialResult:
    key: str
    source_name: str
    variant: Variant
    status: str  # "ok" | "failed"
    package_dir: str | None = None
    accuracy_drop: float | None = None
    primary_metric: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    model_bytes: int | None = None
    model_sha256: str | None = None
    op_types: tuple[str, ...] = ()
    float_nodes: tuple[str, ...] = ()
    export_seconds: float = 0.0
    export_cpu_seconds: float = 0.0  # the trial process's CPU time: comparable across loads, unlike the wall
    error: dict[str, Any] | None = None
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "source": self.source_name,
            "variant": self.variant.to_dict(),
            "status": self.status,
            "package_dir": self.package_dir,
            "accuracy_drop": self.accuracy_drop,
            "primary_metric": self.primary_metric,
            "metrics": dict(self.metrics),
            "model_bytes": self.model_bytes,
            "model_sha256": self.model_sha256,
            "float_nodes": list(self.float_nodes),
            "export_seconds": round(self.export_seconds, 3),
            "export_cpu_seconds": round(self.export_cpu_seconds, 3),
            "error": self.error,
            "cached": self.cached,
        }


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


_DATA_SHA: dict[str, str] = {}


def _data_sha(path: str | None) -> str | None:
    if path is None:
        return None
    if path not in _DATA_SHA:
        _DATA_SHA[path] = sha256_tree(path) if Path(path).exists() else f"missing:{path}"
    return _DATA_SHA[path]


# ------------------------------------------------------------------------------------------- one trial


def run_trial(spec: TrialSpec, dest: Path) -> dict[str, Any]:
    """Export ``spec`` into ``dest/package`` and return the trial's record (a failure is a record too)."""
    import exporters

    t0, c0 = time.perf_counter(), time.process_time()
    kwargs: dict[str, Any] = {
        "recipe_options": to_dict(spec.variant.config),
        "validation_samples": spec.settings.validation_samples,
        "calibration": spec.settings.calibration,
        "validation_data": spec.settings.validation_data,
        "with_kv_cache": spec.settings.with_kv_cache,
        "max_accuracy_drop": spec.max_accuracy_drop if spec.variant.mixed else None,
        # tune times every variant itself (fp32 among them), ranks them by that and reports "not faster than
        # fp32" as a loss reason: the exporter's own speed-up check would be a second timing or a refusal
        "on_slower": "off",
    }
    out = dest / spec.package_name
    record: dict[str, Any] = {"key": spec.key, "status": "failed"}
    try:
        result = exporters.export(
            _shared_source(spec),
            output=out,
            task=spec.settings.task,
            recipe=spec.variant.recipe,
            progress=False,
            force=True,
            **kwargs,
        )
    except Exception as exc:  # one broken trial is a recorded result; the other trials go on
        record["error"] = _error_dict(exc)
    else:
        m = result.manifest
        acc = m.accuracy or {}
        model = next(f for f in m.files if f.path == "model.onnx")
        record.update(
            status="ok",
            accuracy_drop=acc.get("metrics", {}).get("accuracy_drop"),
            primary_metric=acc.get("primary_metric"),
            metrics={k: v for k, v in acc.get("metrics", {}).items() if isinstance(v, (int, float))},
            model_bytes=model.bytes,
            model_sha256=model.sha256,
            op_types=sorted(_op_types(out / "model.onnx")),
            float_nodes=list(m.recipe.float_nodes),
        )
    record["export_seconds"] = time.perf_counter() - t0
    record["export_cpu_seconds"] = time.process_time() - c0
    return record


def _shared_source(spec: TrialSpec) -> Any:
    """The source with its conversion shared, when the store's parent (the tune's cache) is on this node; a
    Ray node without the driver's filesystem converts on its own."""
    store = spec.conversion_store
    if store is None or not Path(store).parent.is_dir():
        return spec.source
    from edgekit.tuning import conversion

    conversion.register()
    return conversion.SharedConversion(path=spec.source, sha256=spec.source_sha256, store=store)


def _op_types(path: Path) -> set[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {n.op_type for n in model.graph.node}


def _error_dict(exc: Exception) -> dict[str, Any]:
    from edgekit.errors import EdgekitError

    if isinstance(exc, EdgekitError):
        return {"code": exc.code, "message": exc.message, "hint": exc.hint}
    return {"code": "trial_crashed", "message": f"{type(exc).__name__}: {str(exc)[:500]}", "hint": None}


def _quiet_worker() -> None:
    """In a worker process only: the libraries' warnings would interleave with the driver's progress lines."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)


def _local_job(spec: TrialSpec, dest: str) -> dict[str, Any]:
    _quiet_worker()
    return run_trial(spec, Path(dest))


def _ray_job(spec: TrialSpec) -> tuple[dict[str, Any], bytes | None]:
    _quiet_worker()
    with tempfile.TemporaryDirectory(prefix="edgekit-trial-") as tmp:
        record = run_trial(spec, Path(tmp))
        if record["status"] != "ok":
            return record, None
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(Path(tmp) / spec.package_name, arcname=spec.package_name)
        return record, buf.getvalue()


# ------------------------------------------------------------------------------------------ the cache


class TrialCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def dir(self, spec: TrialSpec) -> Path:
        return self.root / spec.key

    def load(self, spec: TrialSpec) -> TrialResult | None:
        d = self.dir(spec)
        path = d / TRIAL_FILE
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # a damaged record is a trial to run again
        if record.get("status") == "ok" and not (d / spec.package_name / "edgekit.json").is_file():
            return None
        return self._result(spec, record, cached=True)

    def store(self, spec: TrialSpec, record: dict[str, Any]) -> TrialResult:
        d = self.dir(spec)
        tmp = d / f".{TRIAL_FILE}.tmp"
        tmp.write_text(json.dumps(record, indent=1, default=str))
        os.replace(tmp, d / TRIAL_FILE)
        return self._result(spec, record, cached=False)

    def crashed(self, spec: TrialSpec, why: str) -> TrialResult:
        record = {"key": spec.key, "status": "failed", "error": {"code": "trial_crashed", "message": why, "hint": None}}
        return self._result(spec, record, cached=False)

    def _result(self, spec: TrialSpec, r: dict[str, Any], *, cached: bool) -> TrialResult:
        ok = r.get("status") == "ok"
        return TrialResult(
            key=spec.key,
            source_name=spec.source_name,
            variant=spec.variant,
            status="ok" if ok else "failed",
            package_dir=str(self.dir(spec) / spec.package_name) if ok else None,
            accuracy_drop=r.get("accuracy_drop"),
            primary_metric=r.get("primary_metric"),
            metrics=dict(r.get("metrics") or {}),
            model_bytes=r.get("model_bytes"),
            model_sha256=r.get("model_sha256"),
            op_types=tuple(r.get("op_types") or ()),
            float_nodes=tuple(r.get("float_nodes") or ()),
            export_seconds=float(r.get("export_seconds") or 0.0),
            export_cpu_seconds=float(r.get("export_cpu_seconds") or 0.0),
            error=r.get("error"),
            cached=cached,
        )


# ------------------------------------------------------------------------------------------ executors

OnDone = Callable[[TrialResult], None]


def run_local(specs: Sequence[TrialSpec], cache: TrialCache, *, workers: int, on_done: OnDone) -> list[TrialResult]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    if not specs:
        return []
    for s in specs:
        shutil.rmtree(cache.dir(s), ignore_errors=True)  # an unfinished trial's leftovers
        cache.dir(s).mkdir(parents=True)
    results: dict[str, TrialResult] = {}
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=max(1, min(workers, len(specs))), mp_context=ctx)
    try:
        futures = {pool.submit(_local_job, s, str(cache.dir(s))): s for s in specs}
        for fut in as_completed(futures):
            spec = futures[fut]
            try:
                results[spec.key] = cache.store(spec, fut.result())
            except BrokenProcessPool:
                # A worker died (killed, out of memory): not cached, so the next tune tries the trial again.
                results[spec.key] = cache.crashed(spec, "the worker process died (killed or out of memory)")
            on_done(results[spec.key])
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: do not wait for the queued trials
        raise
    pool.shutdown()
    return [results[s.key] for s in specs]


def start_ray(address: str | None) -> bool:
    """Connect to the cluster at ``address`` (None: start a local instance); True when this call started it."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError.for_extra("ray", "sweep") from None
    if ray.is_initialized():
        return False
    import sys

    # A local instance's workers get the driver's import path, so they import the same edgekit; a cluster's
    # nodes have their own install (the driver's paths mean nothing there).
    env = None if address else {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
    ray.init(address=address or None, runtime_env=env, log_to_driver=False)
    return True


def stop_ray() -> None:
    import ray

    ray.shutdown()


def run_ray(specs: Sequence[TrialSpec], cache: TrialCache, *, on_done: OnDone) -> list[TrialResult]:
    """Run ``specs`` as Ray tasks on the cluster :func:`start_ray` connected to."""
    import ray

    task = ray.remote(num_cpus=1)(_ray_job)
    refs = {task.remote(s): s for s in specs}
    results: dict[str, TrialResult] = {}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        spec = refs[done[0]]
        try:
            record, blob = ray.get(done[0])
        except ray.exceptions.RayError as exc:  # the task's worker or node died: not cached, tried again next time
            results[spec.key] = cache.crashed(spec, f"the Ray task failed: {type(exc).__name__}")
        else:
            results[spec.key] = _store_unpacked(cache, spec, record, blob)
        on_done(results[spec.key])
    return [results[s.key] for s in specs]


def _store_unpacked(cache: TrialCache, spec: TrialSpec, record: dict[str, Any], blob: bytes | None) -> TrialResult:
    d = cache.dir(spec)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    if blob is not None:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            tar.extractall(d, filter="data")
    return cache.store(spec, record)
