"""Measuring the trials' packages: on this host one at a time, estimated on every device.

All packages that still need figures go to one :func:`edgekit.profile` call, which measures them serially in
fresh processes (so no trial disturbs another's timing) and estimates each on the device profiles. Only the
public JSON of its report is read. Figures are cached by the model's sha256, the devices, the runs and the
edgekit / ONNX Runtime versions; packages with the same model bytes are measured once.

The figure that ranks variants is the latency of the primary phase: ``decode`` for generation (the token
rate a user waits on), else the model's one ``forward`` phase. On ``host`` it is the measured median, on
other devices the estimate; peak memory likewise.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError, UsageError
from edgekit.progress import Progress

PRIMARY_PHASES = ("decode", "forward")


@dataclass(frozen=True, kw_only=True)
class DeviceFigures:
    device: str
    phase: str
    latency_ms: float
    basis: str  # "measured p50" (host) or "estimated"
    memory_mb: float | None
    app_memory_budget_mb: float | None
    fits: bool
    phases_ms: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "phase": self.phase,
            "latency_ms": self.latency_ms,
            "basis": self.basis,
            "memory_mb": self.memory_mb,
            "app_memory_budget_mb": self.app_memory_budget_mb,
            "fits": self.fits,
            "phases_ms": dict(self.phases_ms),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeviceFigures:
        return cls(**{**d, "phases_ms": dict(d["phases_ms"])})


def _key(model_sha: str, devices: Sequence[str], runs: int, shapes: Mapping[str, Sequence[int]] | None) -> str:
    import onnxruntime

    from edgekit import __version__

    payload = [model_sha, list(devices), runs, {k: list(v) for k, v in (shapes or {}).items()}]
    payload += [__version__, onnxruntime.__version__]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def measure_packages(
    packages: Mapping[str, tuple[str, str]],
    *,
    devices: Sequence[str],
    runs: int,
    input_shapes: Mapping[str, Sequence[int]] | None,
    cache_dir: Path,
    device_dirs: Sequence[str] | None,
    progress: Progress,
) -> tuple[dict[str, list[DeviceFigures]], dict[str, str]]:
    """Figures per device for each ``{trial key: (package dir, model sha256)}`` (cached, deduplicated), and
    the error of each package that could not be measured."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[DeviceFigures]] = {}
    todo: dict[str, str] = {}  # measure key -> package dir
    keys = {k: _key(sha, devices, runs, input_shapes) for k, (_, sha) in packages.items()}
    for trial, (pkg, _) in packages.items():
        path = cache_dir / f"{keys[trial]}.json"
        if path.is_file():
            out[trial] = [DeviceFigures.from_dict(d) for d in json.loads(path.read_text())]
        else:
            todo.setdefault(keys[trial], pkg)
    errors: dict[str, str] = {}
    if todo:
        progress.log(f"measuring {len(todo)} package(s) on this host, one at a time")
        profile = _profiler(devices, runs, input_shapes, device_dirs, progress)
        try:
            _store(cache_dir, todo, profile(list(todo.values())))
        except UsageError:
            raise  # the user's to fix (unbound input dims, say), whatever the package
        except Exception as exc:  # the profiler's own failures too: one package must not sink the others
            if len(todo) == 1:
                errors.update(dict.fromkeys(todo, _describe(exc)))
            else:
                errors.update(_one_by_one(cache_dir, todo, profile))
    failed = {}
    for trial in packages:
        if keys[trial] in errors:
            failed[trial] = errors[keys[trial]]
        elif trial not in out:
            out[trial] = [
                DeviceFigures.from_dict(d) for d in json.loads((cache_dir / f"{keys[trial]}.json").read_text())
            ]
    return out, failed


def _one_by_one(cache_dir: Path, todo: Mapping[str, str], profile: Callable[[list[str]], Any]) -> dict[str, str]:
    """Measure each package alone, so the ones that work keep their figures; the errors of the others."""
    errors = {}
    for mkey, pkg in todo.items():
        try:
            _store(cache_dir, {mkey: pkg}, profile([pkg]))
        except UsageError:
            raise
        except Exception as exc:
            errors[mkey] = _describe(exc)
    return errors


def _describe(exc: Exception) -> str:
    if isinstance(exc, EdgekitError):
        return f"{exc.code}: {exc.message}"
    return f"the profiler failed ({type(exc).__name__}: {str(exc).strip()[:300]})"


def _profiler(
    devices: Sequence[str],
    runs: int,
    input_shapes: Mapping[str, Sequence[int]] | None,
    device_dirs: Sequence[str] | None,
    progress: Progress,
) -> Callable[[list[str]], dict[str, Any]]:
    import edgekit

    def run(packages: list[str]) -> dict[str, Any]:
        report = edgekit.profile(
            packages,
            devices=list(devices),
            runs=runs,
            input_shapes=input_shapes,
            progress=progress,
            device_dirs=device_dirs,
        )
        return report.to_dict()

    return run


def _store(cache_dir: Path, todo: Mapping[str, str], report: Mapping[str, Any]) -> None:
    for mkey, variant in zip(todo, report["result"]["variants"], strict=True):
        figures = [_figures(d) for d in variant["devices"]]
        tmp = cache_dir / f".{mkey}.tmp"
        tmp.write_text(json.dumps([f.to_dict() for f in figures]))
        os.replace(tmp, cache_dir / f"{mkey}.json")


def _primary(phases: Sequence[str]) -> str:
    return next((p for p in PRIMARY_PHASES if p in phases), phases[0])


def _figures(d: Mapping[str, Any]) -> DeviceFigures:
    estimate = d["estimate"]
    phases = {p["phase"]: p["latency_ms"] for p in estimate["phases"]}
    memory = estimate.get("memory_mb")
    basis = "estimated"
    measured = d.get("measured")
    if measured:
        phases = {name: m["p50_ms"] for name, m in measured["phases"].items()}
        memory = measured.get("memory_mb") or memory
        basis = "measured p50"
    phase = _primary(list(phases))
    return DeviceFigures(
        device=d["device"],
        phase=phase,
        latency_ms=phases[phase],
        basis=basis,
        memory_mb=memory,
        app_memory_budget_mb=d.get("app_memory_budget_mb"),
        fits=bool(d.get("fits", True)),
        phases_ms=phases,
    )
