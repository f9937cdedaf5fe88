"""``edgekit.profile(...)``: measure packages on this host, estimate them on device profiles, check budgets.

    >>> from edgekit.profiler import profile
    >>> report = profile(["out/minilm-fp32", "out/minilm-int8"], devices=["host", "pixel-8"], runs=50)  # doctest: +SKIP
    >>> print(report.render_table())                                                              # doctest: +SKIP
    >>> report.write_html("profile.html")                                                         # doctest: +SKIP

For each package: the phases to run and their inputs (:mod:`.feeds`), the static analysis of the stored
graph and of the graph ONNX Runtime runs (:mod:`.static`), the measurement in fresh processes with the
estimator's calibration suite interleaved (:mod:`.measure`, :mod:`.calibration`), then per device the
estimate (:mod:`.estimate`), the execution-provider coverage (:mod:`.coverage`) and the budget checks.
The host estimate is computed exactly as any other device's, so its error against the measurement beside it
is the check on the estimator; the report carries that error.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgekit.devices import DeviceKind, DeviceProfile, get_device
from edgekit.errors import BudgetExceededError, SourceNotFoundError, UsageError
from edgekit.manifest import MANIFEST_NAME, MODEL_NAME
from edgekit.profiler import measure
from edgekit.profiler.report import BudgetFailure, DeviceResult, ProfileReport, VariantResult
from edgekit.progress import Progress

__all__ = ["budget_error", "profile"]

DEFAULT_RUNS = 100
OP_PROFILE_RUNS = 5
TOP_NODES = 12  # rows of the report's per-node table, per phase


def _positive_budget(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UsageError(
            f"{name} must be a positive number (got {value!r})", hint=f"e.g. --{name.replace('_', '-')} 50", param=name
        )
    return float(value)


def _positive_int(name: str, value: int | None, hint: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(
            f"{name} must be a positive integer (got {value!r})",
            hint=hint.format(cores=os.cpu_count() or 1),
            param=name,
        )
    return value


def _measure_providers(names: Sequence[str] | None) -> list[str]:
    """The host measurement's providers in ORT's spelling, CPU last; refuses any this build lacks."""
    if not names:
        return ["CPUExecutionProvider"]
    from runtimes.providers import CPU, available_providers, resolve_provider

    available = available_providers()
    out: list[str] = []
    for raw in names:
        name = resolve_provider(raw)  # UnknownNameError (a UsageError) with a did-you-mean
        if name not in available:
            raise UsageError(
                f"execution provider {name} is not in this onnxruntime build, so it cannot be measured here",
                hint=f"available here: {', '.join(available)}; other devices' providers are estimated "
                "from their profiles (--device NAME)",
                param="providers",
            )
        if name not in out:
            out.append(name)
    if CPU not in out:
        out.append(CPU)  # ORT's last resort for the nodes the others refuse, as at run time
    return out


def _generation_input(target: Any) -> str | None:
    gen = target.manifest.generation if target.manifest is not None else None
    return gen.input_ids_name if gen is not None else None


def _check_generation_options(
    targets: Sequence[Any],
    input_shapes: Mapping[str, Sequence[int]] | None,
    prompt_tokens: int | None,
    new_tokens: int | None,
) -> None:
    if prompt_tokens is None and new_tokens is None:
        return
    flag = "--prompt-tokens" if prompt_tokens is not None else "--new-tokens"
    ids_names = {n for n in (_generation_input(t) for t in targets) if n}
    if not ids_names:
        raise UsageError(
            f"{flag} applies to text-generation packages, and none of {', '.join(t.label for t in targets)} is one",
            hint="for other text models bind the sequence length instead: --input-shape input_ids=1x128",
            param="prompt_tokens" if prompt_tokens is not None else "new_tokens",
        )
    clash = sorted(ids_names & set(input_shapes or {}))
    if prompt_tokens is not None and clash:
        raise UsageError(
            f"--prompt-tokens and --input-shape {clash[0]}=... both set the prompt length",
            hint="give one of them",
            param="prompt_tokens",
        )


def _shapes_for(
    target: Any, input_shapes: Mapping[str, Sequence[int]] | None, prompt_tokens: int | None
) -> dict[str, Sequence[int]]:
    """``input_shapes`` for one target; a generation package's prompt bound to ``prompt_tokens``."""
    shapes = dict(input_shapes or {})
    ids = _generation_input(target)
    if ids is not None and prompt_tokens is not None:
        shapes[ids] = (1, prompt_tokens)
    return shapes


def _package_info(target: Any) -> dict[str, Any]:
    """Sizes and the accuracy the exporter measured against the fp32 reference (manifest), for the summary."""
    model_bytes = target.model_path.stat().st_size
    data = target.model_path.with_name(target.model_path.name + ".data")
    if data.is_file():
        model_bytes += data.stat().st_size
    manifest = target.manifest
    accuracy = (manifest.accuracy or {}) if manifest is not None else {}
    reference = accuracy.get("reference_model_bytes")
    metrics = accuracy.get("metrics") or {}
    return {
        "model_bytes": model_bytes,
        "package_bytes": sum(f.bytes for f in manifest.files) if manifest is not None else None,
        "reference_model_bytes": reference,
        "size_vs_fp32": model_bytes / reference if reference else None,
        "accuracy": {
            "primary_metric": accuracy.get("primary_metric"),
            "primary_value": metrics.get(accuracy.get("primary_metric")),
            "accuracy_drop": metrics.get("accuracy_drop"),
            "samples": accuracy.get("samples"),
            "max_accuracy_drop": accuracy.get("max_accuracy_drop"),
        }
        if accuracy
        else None,
    }


def _target(path_like: str | Path) -> Any:
    from edgekit.package import open_package
    from edgekit.profiler.feeds import Target

    path = Path(path_like)
    if not path.exists():
        raise SourceNotFoundError(
            f"nothing to profile at {path}", hint="pass a package directory (edgekit export -o DIR) or an .onnx file"
        )
    if path.is_file() and path.suffix == ".onnx":
        return Target(label=path.stem, model_path=path)
    if path.is_dir() and not (path / MANIFEST_NAME).is_file() and (path / MODEL_NAME).is_file():
        return Target(label=path.name, model_path=path / MODEL_NAME)
    pkg = open_package(path)
    recipe = pkg.manifest.recipe.name
    label = pkg.root.name if pkg.root.name else f"{pkg.manifest.name}-{recipe}"
    return Target(label=label, model_path=pkg.model_path, root=pkg.root, manifest=pkg.manifest)


def _unique_labels(targets: Sequence[Any]) -> list[Any]:
    from dataclasses import replace

    seen: dict[str, int] = {}
    out = []
    for t in targets:
        n = seen.get(t.label, 0)
        seen[t.label] = n + 1
        out.append(t if n == 0 else replace(t, label=f"{t.label}-{n + 1}"))
    return out


def _devices(names: Sequence[str], device_dirs: Sequence[str] | None) -> list[DeviceProfile]:
    if not names:
        raise UsageError("give at least one device", hint="e.g. --device host --device raspberry-pi-5", param="devices")
    out, seen = [], set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        out.append(get_device(name, extra_dirs=device_dirs))
    return out


def _host_profile(devices: Sequence[DeviceProfile]) -> DeviceProfile:
    for d in devices:
        if d.name == "host":
            return d
    return get_device("host")


def _stored_summary(analysis: Any) -> dict[str, Any]:
    return analysis.to_dict(top_k=10)


def _opening_line(count: int, profiles: Sequence[DeviceProfile], host: DeviceProfile) -> str:
    if any(d is host for d in profiles):
        return f"profiling {count} model(s) on {', '.join(d.name for d in profiles)}"
    return "detecting and calibrating the host"


def _run_config(
    packages: Sequence[str | Path],
    profiles: Sequence[DeviceProfile],
    host: DeviceProfile,
    *,
    runs: int,
    warmup_runs: int,
    input_shapes: Mapping[str, Sequence[int]] | None,
    max_latency_ms: float | None,
    max_memory_mb: float | None,
    threads: int | None,
    providers: list[str],
    prompt_tokens: int | None,
    new_tokens: int | None,
) -> dict[str, Any]:
    """The report's ``config``: the run's settings with every default resolved."""
    return {
        "packages": [str(p) for p in packages],
        "devices": [d.name for d in profiles],
        "runs": runs,
        "warmup_runs": warmup_runs,
        "input_shapes": {k: list(v) for k, v in (input_shapes or {}).items()},
        "max_latency_ms": max_latency_ms,
        "max_memory_mb": max_memory_mb,
        # By default the host profile's threads (its physical cores, cgroup quota applied).
        "threads": threads or max(1, min(host.default_threads, os.cpu_count() or 1)),
        "providers": providers,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
    }


def profile(
    packages: str | Path | Sequence[str | Path],
    devices: Sequence[str] = ("host",),
    runs: int = DEFAULT_RUNS,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    max_latency_ms: float | None = None,
    max_memory_mb: float | None = None,
    progress: bool | Progress = True,
    *,
    warmup: int | None = None,
    device_dirs: Sequence[str] | None = None,
    op_profile_runs: int = OP_PROFILE_RUNS,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
    prompt_tokens: int | None = None,
    new_tokens: int | None = None,
) -> ProfileReport:
    """Profile each package on this host and estimate it on every device in ``devices``.

    ``runs`` timed runs follow ``warmup`` untimed ones (default: a tenth of ``runs``, 2 to 10).
    ``input_shapes`` binds dynamic dims, e.g. ``{"input_ids": (1, 128)}``. Budgets apply to every device:
    on ``host`` to the measured median and peak memory, elsewhere to the estimates; exceeding one is listed
    in ``report.budget_failures`` (the CLI then exits 3). Never raises for a budget: see :func:`budget_error`.
    ``threads`` and ``providers`` set the host measurement's intra-op threads (default: the host profile's)
    and execution providers (default: CPU; names or aliases such as ``xnnpack``). For text-generation
    packages, ``prompt_tokens`` is the prefill prompt's length and ``new_tokens`` the end-to-end run's.
    """
    started = time.perf_counter()
    bar = progress if isinstance(progress, Progress) else Progress(enabled=bool(progress))
    packages = [packages] if isinstance(packages, (str, Path)) else list(packages)
    if not packages:
        raise UsageError("give at least one package to profile", param="packages")
    _positive_int("runs", runs, "e.g. --runs 50")
    latency_budget = _positive_budget("max_latency_ms", max_latency_ms)
    memory_budget = _positive_budget("max_memory_mb", max_memory_mb)
    threads = _positive_int("threads", threads, "e.g. --threads 2 (this host has {cores} logical CPUs)")
    prompt_tokens = _positive_int("prompt_tokens", prompt_tokens, "e.g. --prompt-tokens 64")
    new_tokens = _positive_int("new_tokens", new_tokens, "e.g. --new-tokens 32")
    measure_providers = _measure_providers(providers)
    warm = warmup if warmup is not None else max(2, min(10, runs // 10))
    profiles = _devices(list(devices), device_dirs)
    targets = _unique_labels([_target(p) for p in packages])
    _check_generation_options(targets, input_shapes, prompt_tokens, new_tokens)
    conditions = measure.host_conditions()
    host = _host_profile(profiles)
    bar.log(_opening_line(len(targets), profiles, host))
    config = _run_config(
        packages,
        profiles,
        host,
        runs=runs,
        warmup_runs=warm,
        input_shapes=input_shapes,
        max_latency_ms=latency_budget,
        max_memory_mb=memory_budget,
        threads=threads,
        providers=measure_providers,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
    )
    variants, memory_cal = _measure_all(
        targets,
        config,
        profiles=profiles,
        host=host,
        input_shapes=input_shapes,
        bar=bar,
        op_profile_runs=op_profile_runs,
        threads_given=threads is not None,
    )
    failures = _budget_failures(variants, latency_budget, memory_budget)
    return ProfileReport(
        config=config,
        variants=variants,
        budget_failures=failures,
        memory_calibration=memory_cal.to_dict(),
        seconds=time.perf_counter() - started,
        host=conditions.finish().to_dict(),
    )


def _measure_all(
    targets: Sequence[Any],
    config: Mapping[str, Any],
    *,
    profiles: Sequence[DeviceProfile],
    host: DeviceProfile,
    input_shapes: Mapping[str, Sequence[int]] | None,
    bar: Progress,
    op_profile_runs: int,
    threads_given: bool = False,
) -> tuple[list[VariantResult], Any]:
    """Each target measured and estimated in turn, sharing one calibration suite and memory calibration."""
    from edgekit.profiler import calibration

    with tempfile.TemporaryDirectory(prefix="edgekit-profile-") as tmp:
        work = Path(tmp)
        suite = calibration.suite()
        memory_cal = calibration.memory_calibration(work / "memory", config["threads"])
        variants = [
            _profile_one(
                target,
                work / f"v{i}",
                profiles=profiles,
                host=host,
                threads=config["threads"] if threads_given else _policy_threads(target, config["threads"]),
                runs=config["runs"],
                warmup=config["warmup_runs"],
                input_shapes=_shapes_for(target, input_shapes, config["prompt_tokens"]),
                providers=config["providers"],
                new_tokens=config["new_tokens"],
                suite=suite,
                memory_cal=memory_cal,
                bar=bar,
                op_profile_runs=op_profile_runs,
            )
            for i, target in enumerate(targets)
        ]
    return variants, memory_cal


def _policy_threads(target: Any, all_threads: int) -> int:
    """The threads the runtime would pick for this package here (its session policy), so the profile
    measures what ``runtimes.load`` runs; ``--threads`` overrides it as it does there."""
    from edgekit.devices.host import detect_cpu
    from edgekit.session_policy import apply_policy

    runtime = target.manifest.runtime if target.manifest is not None else None
    policy = runtime.session_policy if runtime is not None else None
    return apply_policy(policy, threads=None, all_threads=all_threads, cpu=detect_cpu().model).threads


def _profile_one(
    target: Any,
    work: Path,
    *,
    profiles: Sequence[DeviceProfile],
    host: DeviceProfile,
    threads: int,
    runs: int,
    warmup: int,
    input_shapes: Mapping[str, Sequence[int]] | None,
    providers: Sequence[str],
    new_tokens: int | None,
    suite: Sequence[Any],
    memory_cal: Any,
    bar: Progress,
    op_profile_runs: int,
) -> VariantResult:
    from edgekit.profiler import calibration, feeds, layout, static
    from edgekit.profiler.nodes import GraphIndex

    work.mkdir(parents=True)
    model = static.load_onnx(target.model_path)
    specs = static.graph_input_specs(model)
    phases = feeds.make_phases(target, input_shapes, specs)
    stored = [static.analyze_model(model, feeds=p.feeds) for p in phases]
    runtime_model = static.load_onnx(static.runtime_graph(target.model_path, work / "runtime.onnx"))
    runtime = [static.analyze_model(runtime_model, feeds=p.feeds) for p in phases]
    # the host's estimate runs on the same graph plus the layout conversions only this host adds (NCHWc)
    host_runtime = runtime
    if any(p.kind == DeviceKind.HOST for p in profiles):
        reorders = layout.host_layout_nodes(
            target.model_path, work / "host_layout.onnx", runtime, portable=work / "runtime.onnx"
        )
        host_runtime = [layout.with_layout(a, r) for a, r in zip(runtime, reorders, strict=True)]
    graphs = {"stored": GraphIndex.of(model), "runtime": GraphIndex.of(runtime_model)}
    del runtime_model  # only its wiring is kept

    job = _job(target, phases, work, threads=threads, providers=providers, runs=runs, warmup=warmup)
    job["op_profile_runs"] = op_profile_runs
    job["calibration"] = calibration.suite_job_entries(suite)
    if target.manifest is not None and target.manifest.generation is not None and target.root is not None:
        job["generation"] = _generation_job(target, phases, new_tokens)
    total = len(phases) * (runs + warmup)
    with bar.bar(total, f"measuring {target.label}") as update:
        m = measure.measure(work, job, on_progress=update)
    # the cases at the speed the model ran at (the median probe beside its runs): speed.py
    efficiency = calibration.fit(
        suite,
        m.calibration_samples_ms,
        threads,
        probes_ms=m.calibration_probe_ms,
        reference_ms=m.speed.reference_ms,
    )
    devices, coverages = _device_results(
        profiles,
        host=host,
        efficiency=efficiency,
        m=m,
        model=model,
        phases=phases,
        stored=stored,
        runtime=runtime,
        host_runtime=host_runtime,
        memory_cal=memory_cal,
    )
    return VariantResult(
        label=target.label,
        path=str(target.root or target.model_path),
        task=target.task,
        recipe=target.recipe,
        phases=_phase_info(phases, stored, runtime),
        static=_stored_summary(stored[0]),
        measurement=m.to_dict(),
        host_efficiency=efficiency.to_dict(),
        devices=devices,
        package=_package_info(target),
        nodes=_node_table(m, graphs, coverages),
    )


def _job(
    target: Any, phases: Sequence[Any], work: Path, *, threads: int, providers: Sequence[str], runs: int, warmup: int
) -> dict[str, Any]:
    """What the measurement children read: the model, its phases' feeds (saved beside it), runs and threads."""
    from edgekit.profiler import feeds

    return {
        "label": target.label,
        "model_path": str(target.model_path),
        "threads": threads,
        "providers": list(providers),
        "runs": runs,
        "warmup": warmup,
        "phases": [
            {
                "name": p.name,
                "feeds_file": str(feeds.save_feeds(p, work / f"{p.name}.npz")),
                "items_per_run": p.items_per_run,
                "item": p.item,
            }
            for p in phases
        ],
        "top_k": TOP_NODES,
    }


def _device_results(
    profiles: Sequence[DeviceProfile],
    *,
    host: DeviceProfile,
    efficiency: Any,
    m: Any,
    model: Any,
    phases: Sequence[Any],
    stored: Sequence[Any],
    runtime: Sequence[Any],
    host_runtime: Sequence[Any],
    memory_cal: Any,
) -> tuple[list[DeviceResult], list[Any]]:
    """Per device: the estimate, the provider coverage and the budgets; on the host, the check against ``m``."""
    from edgekit.profiler import coverage, estimate

    devices, coverages = [], []
    for profile in profiles:
        rates = estimate.device_rates(profile, efficiency, host)
        is_host = profile.kind == DeviceKind.HOST
        graphs = host_runtime if is_host else runtime
        phase_estimates = [estimate.estimate_latency(p.name, a, rates) for p, a in zip(phases, graphs, strict=True)]
        memory = estimate.estimate_memory_mb(
            stored[0], runtime, memory_cal if is_host else memory_cal.for_other_devices()
        )
        cov = coverage.device_coverage(
            profile, model, stored[0].value_shapes, set(stored[0].folded_outputs), set(stored[0].dynamic_inputs)
        )
        coverages.append(cov)
        measured = None
        if profile.name == "host":
            measured = _host_check(m, phase_estimates, memory["total_mb"])
        devices.append(
            DeviceResult(
                device=profile.name,
                display_name=profile.display_name,
                kind=profile.kind.value,
                rates=rates.to_dict(),
                phases=[e.to_dict() for e in phase_estimates],
                memory=memory,
                app_memory_budget_mb=float(profile.app_memory_budget_mb),
                fits=memory["total_mb"] <= profile.app_memory_budget_mb,
                coverage=cov.to_dict(),
                inherits_unverified=estimate.inherited_doubts(profile),
                derived_fields=estimate.derived_fields(profile),
                measured=measured,
            )
        )
    return devices, coverages


def _phase_info(phases: Sequence[Any], stored: Sequence[Any], runtime: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": p.name,
            "description": p.description,
            "input_shapes": {k: list(v) for k, v in p.input_shapes.items()},
            "items_per_run": p.items_per_run,
            "item": p.item,
            "flops": s.flops,
            "macs": s.macs,
            "bytes_moved": s.bytes_moved,
            "peak_activation_bytes": s.peak_activation_bytes,
            "runtime_graph": {
                "node_count": len(r.nodes),
                "flops": r.flops,
                "bytes_moved": r.bytes_moved,
                "peak_activation_bytes": r.peak_activation_bytes,
                "op_histogram": dict(r.op_histogram),
            },
        }
        for p, s, r in zip(phases, stored, runtime, strict=True)
    ]


def _node_table(m: Any, graphs: Mapping[str, Any], coverages: Sequence[Any]) -> list[dict[str, Any]]:
    from edgekit.profiler.nodes import node_rows

    rows: list[dict[str, Any]] = []
    for phase in m.phases:
        rows += node_rows(
            phase.name, phase.top_nodes, runtime=graphs["runtime"], stored=graphs["stored"], coverages=coverages
        )
    return rows


def _generation_job(target: Any, phases: Sequence[Any], new_tokens: int | None) -> dict[str, Any]:
    from edgekit.profiler.feeds import GENERATE_NEW_TOKENS
    from runtimes.preprocess import TextEncoder

    gen = target.manifest.generation
    prefill = phases[0]
    ids = [int(t) for t in prefill.feeds[gen.input_ids_name][0]]
    encoder = TextEncoder(target.root / target.manifest.preprocessing.get("tokenizer_file", "tokenizer.json"))
    room = max(1, gen.max_context_tokens - len(ids) - 1)
    if new_tokens is not None and new_tokens > room:
        raise UsageError(
            f"{target.label}: a {len(ids)}-token prompt leaves room for {room} new tokens in its "
            f"{gen.max_context_tokens}-token context, not {new_tokens}",
            hint=f"use --new-tokens {room} or fewer, or a shorter --prompt-tokens",
            param="new_tokens",
        )
    return {
        "package_dir": str(target.root),
        "prompt": encoder.decode(ids, skip_special_tokens=False),
        "max_tokens": new_tokens if new_tokens is not None else min(room, GENERATE_NEW_TOKENS),
        "repeats": 3,
        "min_seconds": 0.3,
    }


def _host_check(m: Any, estimates: Sequence[Any], memory_mb: float) -> dict[str, Any]:
    """The measurement the host estimate is checked against, and the error of the estimate."""
    phases = {}
    reference = m.speed.reference_ms
    for e in estimates:
        meas = m.phase(e.phase)
        p50 = meas.latency.p50_ms
        # checked against the runs at the reference speed the calibration was normalised to (speed.py): the
        # same figure as p50 on a steady host, not moved by a speed mode only the model's runs or the cases met
        check = meas.normalised_ms(reference)
        phases[e.phase] = {
            "p50_ms": p50,
            "estimate_ms": e.latency_ms,
            "check_ms": check,
            "estimate_error": (e.latency_ms - check) / check if check > 0 else None,
            "estimate_error_vs_p50": (e.latency_ms - p50) / p50 if p50 > 0 else None,
        }
    rise = m.inference_peak_rss_mb
    return {
        "phases": phases,
        "memory_mb": rise,
        "memory_error": (memory_mb - rise) / rise if rise else None,
        "note": "memory_mb is the peak resident memory during inference above the process's baseline "
        "(onnxruntime imported); the estimate is checked against it",
    }


def _budget_failures(
    variants: Sequence[VariantResult], latency: float | None, memory: float | None
) -> list[BudgetFailure]:
    failures = []
    for v in variants:
        for d in v.devices:
            host = d.measured is not None
            if latency is not None:
                for e in d.phases:
                    value = d.measured["phases"][e["phase"]]["p50_ms"] if host else e["latency_ms"]
                    if value > latency:
                        failures.append(
                            BudgetFailure(
                                variant=v.label,
                                device=d.device,
                                figure="latency_ms",
                                phase=e["phase"],
                                value=value,
                                budget=latency,
                                basis="measured p50" if host else "estimated",
                            )
                        )
            if memory is not None:
                value = d.measured["memory_mb"] if host and d.measured.get("memory_mb") else d.memory["total_mb"]
                if value > memory:
                    failures.append(
                        BudgetFailure(
                            variant=v.label,
                            device=d.device,
                            figure="memory_mb",
                            phase=None,
                            value=value,
                            budget=memory,
                            basis="measured" if host else "estimated",
                        )
                    )
    return failures


def budget_error(report: ProfileReport) -> BudgetExceededError | None:
    """The error a CI gate raises for ``report``'s budget failures (None when every budget holds)."""
    if not report.budget_failures:
        return None
    first = report.budget_failures[0]
    more = len(report.budget_failures) - 1
    return BudgetExceededError(
        first.message + (f" (and {more} more)" if more else ""),
        hint="see budget_failures in the --json report; raise the budget or pick a smaller variant or device",
        param=first.figure,
    )
