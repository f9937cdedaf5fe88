"""``edgekit.tuning.tune(...)``: the best package per device under accuracy, latency and memory budgets.

    >>> from edgekit.tuning import tune
    >>> result = tune("minilm/", task="feature-extraction", devices=["host", "pixel-8"],
    ...               output="tuned/", max_accuracy_drop=0.01)                        # doctest: +SKIP
    >>> print(result.render_table())                                                 # doctest: +SKIP

The flow: export each source's fp32 baseline (a trial like the others), read the facts the variant families
need from it (its ops), enumerate and export the other variants as independent trials (a local process pool,
or Ray tasks), measure every package on this host one at a time and estimate it per device, then choose per
(source, device) and write the picks under ``output`` with ``tune.json`` and ``tune.html`` beside them.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgekit.errors import EdgekitError, OutputExistsError, SourceNotFoundError, UsageError
from edgekit.hashing import sha256_tree
from edgekit.progress import Progress
from edgekit.tuning import report as tune_report
from edgekit.tuning.measure import measure_packages
from edgekit.tuning.pareto import LATENCY_TIE, Budgets, DevicePick, choose
from edgekit.tuning.trials import (
    ExportSettings,
    TrialCache,
    TrialResult,
    TrialSpec,
    run_local,
    run_ray,
    start_ray,
    stop_ray,
)
from edgekit.tuning.variants import ModelFacts, Skipped, Variant, enumerate_variants, select

REPORT_JSON = "tune.json"
REPORT_HTML = "tune.html"
CACHE_DIR = ".trials"
CONVERTED_DIR = "converted"  # each source's fp32 conversion, shared by its trials


@dataclass(frozen=True, kw_only=True)
class SourceResult:
    name: str
    path: str
    sha256: str
    trials: tuple[TrialResult, ...]  # fp32 first
    skipped: tuple[Skipped, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "trials": [t.to_dict() for t in self.trials],
            "skipped_families": [s.to_dict() for s in self.skipped],
        }


@dataclass(frozen=True, kw_only=True)
class TuneResult:
    config: Mapping[str, Any]
    sources: tuple[SourceResult, ...]
    picks: tuple[DevicePick, ...]
    output_dir: Path
    seconds: float
    trials_run: int  # exports done in this call (the rest came from the cache)

    @property
    def within_budget(self) -> bool:
        return all(p.within_budget for p in self.picks)

    def pick(self, device: str, source: str | None = None) -> DevicePick:
        for p in self.picks:
            if p.device == device and (source is None or p.source == source):
                return p
        raise KeyError(device)

    def result_dict(self) -> dict[str, Any]:
        return {
            "config": dict(self.config),
            "output_dir": str(self.output_dir),
            "within_budget": self.within_budget,
            "sources": [s.to_dict() for s in self.sources],
            "picks": [p.to_dict() for p in self.picks],
            "trials_total": sum(len(s.trials) for s in self.sources),
            "trials_run": self.trials_run,
            "seconds": round(self.seconds, 3),
        }

    def to_dict(self) -> dict[str, Any]:
        return tune_report.make(self)

    def render_table(self) -> str:
        return tune_report.render_table(self.to_dict())

    def error(self) -> EdgekitError | None:
        """The budget error a CI gate exits with (None when every device's pick is within budget)."""
        return tune_report.budget_error(self)


def _check_budget(name: str, value: float | None, *, fraction: bool = False) -> float | None:
    if value is None:
        return None
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if bad or (fraction and not 0 <= value < 1) or (not fraction and value <= 0):
        want = "a fraction in [0, 1), e.g. 0.01 for one point" if fraction else "a positive number"
        raise UsageError(f"{name} must be {want} (got {value!r})", param=name)
    return float(value)


def _prepare_output(output: str | Path, force: bool) -> Path:
    out = Path(output)
    ours = (out / REPORT_JSON).is_file() or (out / CACHE_DIR).is_dir()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not ours)) and not force:
        raise OutputExistsError(
            f"the output {out} exists and is not a tune directory",
            hint="choose another -o path, pass --force, or reuse a previous tune's output to resume it",
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _source_names(paths: Sequence[Path]) -> list[str]:
    from exporters.api import _default_name

    names: list[str] = []
    for p in paths:
        base = _default_name(p)
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def tune(
    sources: str | Path | Sequence[str | Path],
    *,
    task: str,
    output: str | Path,
    devices: Sequence[str] = ("host",),
    max_accuracy_drop: float | None = None,
    max_latency_ms: float | None = None,
    max_memory_mb: float | None = None,
    latency_tie: float = LATENCY_TIE,
    variants: Sequence[str] | None = None,
    max_trials: int | None = None,
    runs: int = 50,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    calibration: str | Path | None = None,
    validation_data: str | Path | None = None,
    validation_samples: int = 64,
    with_kv_cache: bool = True,
    executor: Literal["local", "ray"] = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    device_dirs: Sequence[str] | None = None,
    force: bool = False,
    progress: Progress | bool = True,
) -> TuneResult:
    """Tune each source for each device; see the module docstring. Budgets apply to every device.

    ``variants`` keeps the variants whose recipe or name matches a shell pattern (fp32 is always kept);
    ``max_trials`` caps the variants per source. Latencies within ``latency_tie`` of the fastest are ties
    (broken by model size, then accuracy drop: see :mod:`edgekit.tuning.pareto`). Trial results are cached in ``cache_dir`` (default
    ``output/.trials``), so a repeated or interrupted tune resumes.
    """
    t0 = time.perf_counter()
    prog = progress if isinstance(progress, Progress) else Progress(enabled=bool(progress))
    paths = _check_sources(sources)
    budgets = Budgets(
        max_accuracy_drop=_check_budget("max_accuracy_drop", max_accuracy_drop, fraction=True),
        max_latency_ms=_check_budget("max_latency_ms", max_latency_ms),
        max_memory_mb=_check_budget("max_memory_mb", max_memory_mb),
    )
    tie = _check_budget("latency_tie", latency_tie, fraction=True) or 0.0
    if executor not in ("local", "ray"):
        raise UsageError(f"executor must be 'local' or 'ray', got {executor!r}", param="executor")
    device_names = _check_devices(devices, device_dirs)
    out = _prepare_output(output, force)
    cache_root = Path(cache_dir) if cache_dir else out / CACHE_DIR
    settings = ExportSettings(
        task=task,
        validation_samples=validation_samples,
        calibration=str(calibration) if calibration else None,
        validation_data=str(validation_data) if validation_data else None,
        with_kv_cache=with_kv_cache,
    )
    runner = _Runner(
        cache=TrialCache(cache_root / "trials"),
        executor=executor,
        ray_address=ray_address,
        workers=workers or os.cpu_count() or 1,
        progress=prog,
    )
    source_results = _run_trials(paths, settings, budgets, runner, variants, max_trials)
    figures, unmeasured = _measure(source_results, device_names, runs, input_shapes, cache_root, device_dirs, prog)
    picks = _choose_and_write(source_results, device_names, figures, unmeasured, budgets, tie, out, prog)
    config = {
        **{"sources": [str(p) for p in paths], "task": task, "devices": device_names, **budgets.to_dict()},
        "latency_tie": tie,
        **{"variants": list(variants) if variants else None, "max_trials": max_trials, "runs": runs},
        **{"executor": executor, "ray_address": ray_address, "cache_dir": str(cache_root)},
    }
    result = TuneResult(
        config=config,
        sources=source_results,
        picks=tuple(picks),
        output_dir=out,
        seconds=time.perf_counter() - t0,
        trials_run=runner.ran,
    )
    tune_report.write(result, out / REPORT_JSON, out / REPORT_HTML)
    return result


def _check_sources(sources: str | Path | Sequence[str | Path]) -> list[Path]:
    paths = [Path(s) for s in ([sources] if isinstance(sources, (str, Path)) else sources)]
    if not paths:
        raise UsageError("give at least one source to tune", param="sources")
    for p in paths:
        if not p.exists():
            raise SourceNotFoundError(
                f"the source {p} does not exist", hint="pass a HF model dir, .onnx file or package"
            )
    return paths


def _check_devices(devices: Sequence[str], device_dirs: Sequence[str] | None) -> list[str]:
    from edgekit.devices import get_device

    names = list(dict.fromkeys(devices))
    if not names:
        raise UsageError("give at least one device", hint="e.g. --device host --device pixel-8", param="devices")
    for d in names:
        get_device(d, extra_dirs=device_dirs)  # an unknown name fails before any export
    return names


def _run_trials(
    paths: Sequence[Path],
    settings: ExportSettings,
    budgets: Budgets,
    runner: _Runner,
    variants: Sequence[str] | None,
    max_trials: int | None,
) -> tuple[SourceResult, ...]:
    """The fp32 baselines first (what they show decides the families), then every other trial at once."""
    runner.progress.log(f"hashing {len(paths)} source(s)")
    base_specs = [
        TrialSpec(
            source=str(p),
            source_name=n,
            source_sha256=sha256_tree(p),
            variant=_baseline(),
            settings=settings,
            max_accuracy_drop=budgets.max_accuracy_drop,
            conversion_store=str(runner.cache.root.parent / CONVERTED_DIR),
        )
        for p, n in zip(paths, _source_names(paths), strict=True)
    ]
    try:
        baselines = runner.run(base_specs, total=len(base_specs))
        plans = [
            _plan(b, s, budgets, settings, variants, max_trials) for b, s in zip(baselines, base_specs, strict=True)
        ]
        rest = [spec for _, specs in plans for spec in specs]
        results = runner.run(rest, total=len(base_specs) + len(rest))
    finally:
        runner.close()
    by_key = {r.key: r for r in baselines + results}
    return tuple(
        SourceResult(
            name=spec.source_name,
            path=spec.source,
            sha256=spec.source_sha256,
            trials=(by_key[spec.key], *(by_key[s.key] for s in specs)),
            skipped=tuple(skipped),
        )
        for spec, (skipped, specs) in zip(base_specs, plans, strict=True)
    )


def _baseline() -> Variant:
    from exporters.recipes import RECIPES

    return Variant(recipe="fp32", config=RECIPES.get("fp32").config_cls())


def _plan(
    base: TrialResult,
    spec: TrialSpec,
    budgets: Budgets,
    settings: ExportSettings,
    patterns: Sequence[str] | None,
    max_trials: int | None,
) -> tuple[list[Skipped], list[TrialSpec]]:
    """The trials after the baseline: every family that applies to what the fp32 package shows."""
    if base.status != "ok":
        raise tune_report.error_from(base)
    facts = ModelFacts(
        op_types=frozenset(base.op_types) | _source_op_types(Path(spec.source)),
        has_calibration=settings.calibration is not None,
        max_accuracy_drop=budgets.max_accuracy_drop,
    )
    all_variants, skipped = enumerate_variants(facts)
    chosen = select(all_variants, patterns, max_trials)
    return skipped, [
        TrialSpec(
            source=spec.source,
            source_name=spec.source_name,
            source_sha256=spec.source_sha256,
            variant=v,
            settings=settings,
            max_accuracy_drop=budgets.max_accuracy_drop,
            conversion_store=spec.conversion_store,
        )
        for v in chosen[1:]
    ]


def _source_op_types(path: Path) -> frozenset[str]:
    """The ops of an ``.onnx`` source as given: the fp32 recipe's basic optimization turns MatMul + Add into
    Gemm, while int4 quantizes the source's MatMuls."""
    if path.suffix != ".onnx":
        return frozenset()
    import onnx

    return frozenset(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


@dataclass(kw_only=True)
class _Runner:
    """Runs trials that are not in the cache, and counts trials done / total on stderr."""

    cache: TrialCache
    executor: str
    ray_address: str | None
    workers: int
    progress: Progress
    done: int = 0
    ran: int = 0
    ray_started: bool = False

    def close(self) -> None:
        if self.ray_started:
            stop_ray()
            self.ray_started = False

    def run(self, specs: Sequence[TrialSpec], *, total: int) -> list[TrialResult]:
        found = {s.key: self.cache.load(s) for s in specs}
        cached = [r for r in found.values() if r is not None]
        for r in cached:
            self._report(r, total)
        # The accuracy searches (many re-quantizations and validations each) go first, so the pool does
        # not end on one long trial while the other workers idle.
        todo = sorted((s for s in specs if found[s.key] is None), key=lambda s: not s.variant.mixed)
        if todo:
            where = (
                f"Ray ({self.ray_address or 'local instance'})"
                if self.executor == "ray"
                else f"{self.workers} process(es)"
            )
            self.progress.log(f"exporting {len(todo)} trial(s) on {where}")
        on_done = lambda r: self._report(r, total)  # noqa: E731
        if self.executor == "ray" and todo:
            # One Ray session for all of the tune's trials (connecting or starting one takes seconds).
            self.ray_started = self.ray_started or start_ray(self.ray_address)
            new = run_ray(todo, self.cache, on_done=on_done)
        else:
            new = run_local(todo, self.cache, workers=self.workers, on_done=on_done)
        self.ran += len(new)
        by_key = {**{r.key: r for r in cached}, **{r.key: r for r in new}}
        return [by_key[s.key] for s in specs]

    def _report(self, r: TrialResult, total: int) -> None:
        self.done += 1
        how = "cached" if r.cached else f"{r.export_seconds:.1f}s"
        what = f"drop {r.accuracy_drop:.4f}" if r.status == "ok" else f"failed: {(r.error or {}).get('code')}"
        self.progress.log(f"trial {self.done}/{total} {r.source_name} {r.variant.name}: {what} ({how})")


def _measure(
    sources: Sequence[SourceResult],
    devices: Sequence[str],
    runs: int,
    input_shapes: Mapping[str, Sequence[int]] | None,
    cache_root: Path,
    device_dirs: Sequence[str] | None,
    prog: Progress,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``{trial key: {device: DeviceFigures}}`` for every trial with a package, and measurement errors."""
    packages = {
        t.key: (t.package_dir, t.model_sha256)
        for s in sources
        for t in s.trials
        if t.status == "ok" and t.package_dir and t.model_sha256
    }
    figures, failed = measure_packages(
        packages,
        devices=devices,
        runs=runs,
        input_shapes=input_shapes,
        cache_dir=cache_root / "measure",
        device_dirs=device_dirs,
        progress=prog,
    )
    return {k: {f.device: f for f in v} for k, v in figures.items()}, failed


def _choose_and_write(
    sources: Sequence[SourceResult],
    devices: Sequence[str],
    figures: Mapping[str, Mapping[str, Any]],
    unmeasured: Mapping[str, str],
    budgets: Budgets,
    latency_tie: float,
    out: Path,
    prog: Progress,
) -> list[DevicePick]:
    from dataclasses import replace

    from edgekit.fsutil import atomic_dir

    picks = []
    for s in sources:
        for device in devices:
            per_device = {k: f[device] for k, f in figures.items() if device in f}
            pick = choose(s.name, device, s.trials, per_device, budgets, unmeasured=unmeasured, latency_tie=latency_tie)
            if pick.picked is not None:
                trial = next(t for t in s.trials if t.variant.name == pick.picked)
                dest = out / device if len(sources) == 1 else out / s.name / device
                with atomic_dir(dest, force=True) as tmp:
                    shutil.copytree(trial.package_dir, tmp, dirs_exist_ok=True)
                pick = replace(pick, package_dir=str(dest))
                prog.log(f"{s.name} on {device}: {pick.picked} -> {dest}")
            picks.append(pick)
    return picks
