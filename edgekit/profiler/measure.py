"""Measurement on this host, each model in fresh Python processes so its figures start clean.

The parent writes the feeds (``.npz``) and a job (JSON) to a temporary directory and starts
``python -m edgekit.profiler.measure JOB`` twice. The children need only onnxruntime and numpy (never onnx),
report progress as JSON lines on stdout and end with one ``{"event": "result", ...}`` line.

The memory process (nothing else ran in it, so no freed memory can hide an allocation):

1. resident memory with onnxruntime imported (the baseline), then what ONNX Runtime itself adds with a
   tiny session kept alive (the runtime overhead);
2. session creation for the model (cold load): time, the memory it keeps, its transient peak;
3. the first inference, a few runs of every phase, and the peak resident memory during inference
   (``VmHWM`` reset after loading through ``/proc/self/clear_refs``), above the baseline;
4. for text generation, end-to-end runs through ``runtimes`` (tokenization included): time to first
   token and decode tokens/s.

The timing process: per phase, ``warmup`` untimed runs and ``runs`` timed runs (p50 / p90 / p99 / mean /
std, throughput), in blocks of back-to-back calls (at least 10 blocks) with one pass over the estimator's
calibration suite (:mod:`edgekit.profiler.calibration`) after each block and the speed probe (:mod:`.speed`)
timed between every two, on one shared thread pool; then ONNX Runtime's own per-op profile over a few runs. Threads: the host profile's ``default_threads``.

Memory figures come from ``/proc/self/status`` (Linux); elsewhere they are ``None``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from edgekit.errors import RuntimeBackendError
from edgekit.ort_policy import disabled_optimizers

__all__ = [
    "HostConditions",
    "LatencyStats",
    "Measurement",
    "PhaseMeasurement",
    "host_conditions",
    "latency_stats",
    "measure",
    "run_job",
]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


# ------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class LatencyStats:
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _percentile(sorted_ms: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), without numpy."""
    if not sorted_ms:
        return math.nan
    pos = (len(sorted_ms) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (pos - lo)


def latency_stats(samples_ms: Sequence[float]) -> LatencyStats:
    s = sorted(samples_ms)
    return LatencyStats(
        runs=len(s),
        p50_ms=_percentile(s, 0.5),
        p90_ms=_percentile(s, 0.9),
        p99_ms=_percentile(s, 0.99),
        mean_ms=statistics.fmean(s) if s else math.nan,
        std_ms=statistics.pstdev(s) if len(s) > 1 else 0.0,
        min_ms=s[0] if s else math.nan,
        max_ms=s[-1] if s else math.nan,
    )


@dataclass(frozen=True, kw_only=True)
class PhaseMeasurement:
    name: str
    latency: LatencyStats
    samples_ms: tuple[float, ...]
    items_per_run: int  # what one run processes: a batch of inputs, prompt tokens, or one decode token
    item: str  # "inputs" | "tokens"
    top_ops: tuple[Mapping[str, Any], ...] = ()
    top_nodes: tuple[Mapping[str, Any], ...] = ()
    probe_ms: tuple[float, ...] = ()  # the speed probe of each run's moment (speed.py); () when not timed

    def normalised_ms(self, reference_ms: float) -> float:
        """The host estimate's check figure: ``speed.SPEED_QUANTILE`` of the runs at the reference speed."""
        from edgekit.profiler import speed

        return speed.quantile(speed.normalised(self.samples_ms, self.probe_ms, reference_ms), speed.SPEED_QUANTILE)

    @property
    def throughput_per_s(self) -> float:
        return self.items_per_run * 1e3 / self.latency.p50_ms if self.latency.p50_ms > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "latency": self.latency.to_dict(),
            "throughput_per_s": self.throughput_per_s,
            "throughput_unit": f"{self.item}/s",
            "items_per_run": self.items_per_run,
            "samples_ms": list(self.samples_ms),
            "probe_ms": list(self.probe_ms),
            "top_ops": [dict(o) for o in self.top_ops],
            "top_nodes": [dict(n) for n in self.top_nodes],
        }


@dataclass(frozen=True, kw_only=True)
class Measurement:
    threads: int
    providers: tuple[str, ...]
    load_ms: float  # first session creation in a fresh process (cold runtime; the file may be in page cache)
    first_inference_ms: float
    phases: tuple[PhaseMeasurement, ...]
    baseline_rss_mb: float | None
    runtime_overhead_mb: float | None  # what ONNX Runtime adds with a tiny session (process-wide state)
    load_rss_mb: float | None  # memory session creation added and kept, runtime overhead included
    load_peak_rss_mb: float | None  # transient peak during session creation, above the baseline
    inference_peak_rss_mb: float | None  # peak during inference, above the baseline: the model's footprint
    generation: Mapping[str, Any] | None = None
    calibration_samples_ms: Mapping[str, Sequence[float]] = field(default_factory=dict)
    calibration_probe_ms: Mapping[str, Sequence[float]] = field(default_factory=dict)  # one per sample
    seconds: float = 0.0
    warm_load_ms: float | None = None  # a second session of the same model in the same process

    @property
    def speed(self) -> Any:
        """The speed probes timed beside the model's runs (every phase): their median is the reference speed."""
        from edgekit.profiler.speed import SpeedTrace

        return SpeedTrace(probes_ms=tuple(p for ph in self.phases for p in ph.probe_ms))

    def phase(self, name: str) -> PhaseMeasurement:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "providers": list(self.providers),
            "load_ms": self.load_ms,
            "warm_load_ms": self.warm_load_ms,
            "first_inference_ms": self.first_inference_ms,
            "baseline_rss_mb": self.baseline_rss_mb,
            "runtime_overhead_mb": self.runtime_overhead_mb,
            "load_rss_mb": self.load_rss_mb,
            "load_peak_rss_mb": self.load_peak_rss_mb,
            "inference_peak_rss_mb": self.inference_peak_rss_mb,
            "phases": [p.to_dict() for p in self.phases],
            "generation": dict(self.generation) if self.generation else None,
            "speed_probe": self.speed.to_dict(),
            "seconds": self.seconds,
        }


# ------------------------------------------------------------------------------------ host conditions


def _load_average() -> tuple[float, float, float] | None:
    try:
        one, five, fifteen = os.getloadavg()
    except (AttributeError, OSError):  # Windows has no load average
        return None
    return (round(one, 2), round(five, 2), round(fifteen, 2))


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True, kw_only=True)
class HostConditions:
    """What the host was doing while it was measured: a busy host makes every timing noisy.

    The load average counts runnable tasks system-wide, so it is compared with the logical CPUs of the
    whole machine (``os.cpu_count()``), not with the threads the profile used.
    """

    cpu_model: str
    logical_cores: int
    started_at: str
    load_average_start: tuple[float, float, float] | None
    finished_at: str | None = None
    load_average_end: tuple[float, float, float] | None = None

    @property
    def max_load_1m(self) -> float | None:
        loads = [la[0] for la in (self.load_average_start, self.load_average_end) if la is not None]
        return max(loads) if loads else None

    @property
    def busy(self) -> bool:
        peak = self.max_load_1m
        return peak is not None and peak > self.logical_cores

    def finish(self) -> HostConditions:
        from dataclasses import replace

        return replace(self, finished_at=_now(), load_average_end=_load_average())

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu_model": self.cpu_model,
            "logical_cores": self.logical_cores,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "load_average_start": list(self.load_average_start) if self.load_average_start else None,
            "load_average_end": list(self.load_average_end) if self.load_average_end else None,
            "max_load_1m": self.max_load_1m,
            "busy": self.busy,
        }


def host_conditions(cpu_model: str | None = None) -> HostConditions:
    """The host's CPU, the time (UTC) and the load average now; ``.finish()`` adds them at the end."""
    if cpu_model is None:
        from edgekit.devices.host import detect_cpu

        cpu_model = detect_cpu().model
    return HostConditions(
        cpu_model=cpu_model,
        logical_cores=os.cpu_count() or 1,
        started_at=_now(),
        load_average_start=_load_average(),
    )


# ------------------------------------------------------------------------------------------ parent side


def run_job(
    job_dir: Path,
    job: Mapping[str, Any],
    *,
    on_progress: Callable[[int], None] | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Run one measurement job in a child interpreter and return its result dict."""
    job_file = job_dir / f"{job.get('kind', 'timing')}.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    env = dict(os.environ)
    # The child must import this very edgekit, whatever the caller's working directory is.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekit.profiler.measure", str(job_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    result: dict[str, Any] | None = None
    assert proc.stdout is not None
    started = time.perf_counter()
    for line in proc.stdout:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a library printed something: not ours
        if event.get("event") == "progress" and on_progress:
            on_progress(int(event["done"]))
        elif event.get("event") == "result":
            result = event
        if timeout_s is not None and time.perf_counter() - started > timeout_s:
            proc.kill()
            break
    stderr = proc.stderr.read() if proc.stderr else ""
    code = proc.wait()
    if result is None or code != 0:
        last = next((ln for ln in reversed(stderr.strip().splitlines()) if ln.strip()), "no output")
        if result and result.get("error"):
            last = result["error"]
        raise RuntimeBackendError(
            f"measuring {job.get('label', job.get('model_path'))} failed: {last}",
            hint="run with --debug for the child's traceback; check the model runs: edgekit run PKG",
        )
    return result


def measure(job_dir: Path, job: Mapping[str, Any], *, on_progress: Callable[[int], None] | None = None) -> Measurement:
    """The memory job, then the timing job, each in a fresh process; merged into one record."""
    memory = run_job(job_dir, {**job, "kind": "memory"})
    timing = run_job(job_dir, {**job, "kind": "timing"}, on_progress=on_progress)
    return measurement_from_dict({**memory, **timing, "seconds": memory["seconds"] + timing["seconds"]})


def measurement_from_dict(d: Mapping[str, Any]) -> Measurement:
    phases = tuple(
        PhaseMeasurement(
            name=p["name"],
            latency=latency_stats(p["samples_ms"]),
            samples_ms=tuple(p["samples_ms"]),
            items_per_run=p["items_per_run"],
            item=p["item"],
            top_ops=tuple(p.get("top_ops", ())),
            top_nodes=tuple(p.get("top_nodes", ())),
            probe_ms=tuple(p.get("probe_ms", ())),
        )
        for p in d["phases"]
    )
    return Measurement(
        threads=d["threads"],
        providers=tuple(d["providers"]),
        load_ms=d["load_ms"],
        warm_load_ms=d.get("warm_load_ms"),
        first_inference_ms=d["first_inference_ms"],
        phases=phases,
        baseline_rss_mb=d.get("baseline_rss_mb"),
        runtime_overhead_mb=d.get("runtime_overhead_mb"),
        load_rss_mb=d.get("load_rss_mb"),
        load_peak_rss_mb=d.get("load_peak_rss_mb"),
        inference_peak_rss_mb=d.get("inference_peak_rss_mb"),
        generation=d.get("generation"),
        calibration_samples_ms=d.get("calibration_samples_ms", {}),
        calibration_probe_ms=d.get("calibration_probe_ms", {}),
        seconds=d.get("seconds", 0.0),
    )


# ------------------------------------------------------------------------------------------- child side


def _status() -> dict[str, float]:
    """VmRSS and VmHWM in MB (10^6 bytes), or {} where /proc is missing."""
    out: dict[str, float] = {}
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024 / 1e6
    except OSError:
        pass
    return out


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak is of what follows only."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _session_options(ort: Any, threads: int, *, profile_prefix: str | None = None, shared_pool: bool = False) -> Any:
    options = ort.SessionOptions()
    if shared_pool:
        # One intra-op pool for every session of the process (set up by set_global_thread_pool_sizes): the
        # model and the calibration suite then take turns on the same threads instead of spinning against
        # each other.
        options.use_per_session_threads = False
    else:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def _tiny_model_bytes() -> bytes:
    import numpy as np

    from edgekit.devices.host import matmul_model_bytes

    return matmul_model_bytes("MatMul", "float32", np.eye(4, dtype=np.float32), "float32")


def _op_profile(session: Any, feeds: Mapping[str, Any], runs: int, top_k: int) -> tuple[list, list]:
    """Run ``runs`` times with profiling on; kernel time per op type and per node, averaged per run."""
    for _ in range(runs):
        session.run(None, feeds)
    path = session.end_profiling()
    try:
        events = json.loads(Path(path).read_text())
    finally:
        Path(path).unlink(missing_ok=True)
    by_node: dict[str, float] = defaultdict(float)
    op_of: dict[str, str] = {}
    # The first run pays one-time costs (buffer allocation, thread-pool start) that land on its first kernels:
    # count only the runs after it, so per-run kernel times add up to a warm run like the latency beside them.
    spans = sorted(
        (ev["ts"], ev["ts"] + ev.get("dur", 0))
        for ev in events
        if ev.get("cat") == "Session" and ev.get("name") == "model_run" and "ts" in ev
    )
    warm = spans[1:] if len(spans) > 1 else spans
    start = warm[0][0] if warm else float("-inf")
    runs = len(warm) or runs
    for ev in events:
        if ev.get("ts", 0) < start:
            continue
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            node = ev["name"][: -len("_kernel_time")]
            by_node[node] += ev.get("dur", 0)
            op_of[node] = ev.get("args", {}).get("op_name", "?")
    by_op: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for node, us in by_node.items():
        by_op[op_of[node]] += us
        count[op_of[node]] += 1
    total = sum(by_op.values()) or 1.0
    top_ops = [
        {"op_type": op, "time_ms": us / runs / 1e3, "share": us / total, "nodes": count[op]}
        for op, us in by_op.most_common(top_k)
    ]
    top_nodes = [
        {"node": node, "op_type": op_of[node], "time_ms": us / runs / 1e3, "share": us / total}
        for node, us in sorted(by_node.items(), key=lambda kv: -kv[1])[:top_k]
    ]
    return top_ops, top_nodes


def _median_ms(run: Callable[[], object], *, budget_s: float, min_runs: int = 5, max_runs: int = 400) -> float:
    run()
    run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (len(times) < max_runs and time.perf_counter() - start < budget_s):
        tick = time.perf_counter()
        run()
        times.append((time.perf_counter() - tick) * 1e3)
    return statistics.median(times)


GENERATION_MAX_REPEATS = 200


def _generation(job: Mapping[str, Any], threads: int) -> dict[str, Any]:
    """End to end through the runtime: tokenization, prefill, decode loop, detokenization."""
    spec = job["generation"]
    try:
        import runtimes

        model = runtimes.load(spec["package_dir"], threads=threads, verify=False)
        # One untimed call first: the first generate pays one-time costs (tokenizer set-up, ORT's first runs
        # at each shape) that made a package measured first look several times slower than the same model.
        model.generate(spec["prompt"], max_tokens=int(spec["max_tokens"]), ignore_eos=True)
        walls, ttfts, rates, tokens = [], [], [], []
        # At least ``repeats`` calls and ``min_seconds`` of them: a tiny model's 16-token call takes ~0.5 ms, and a
        # median of three such calls moved 7x with one scheduling hiccup on a loaded 2-vCPU host.
        budget_end = time.perf_counter() + float(spec.get("min_seconds", 0.0))
        while len(walls) < int(spec.get("repeats", 3)) or (
            time.perf_counter() < budget_end and len(walls) < GENERATION_MAX_REPEATS
        ):
            start = time.perf_counter()
            result = model.generate(spec["prompt"], max_tokens=int(spec["max_tokens"]), ignore_eos=True)
            wall = time.perf_counter() - start
            decode_s = float(result.timings.get("decode_seconds", 0.0))
            walls.append(wall * 1e3)
            ttfts.append((wall - decode_s) * 1e3)
            rates.append(float(result.timings.get("decode_tokens_per_second", 0.0)) or math.nan)
            tokens.append(result.usage.completion_tokens)
        return {
            "prompt_tokens": int(result.usage.prompt_tokens),
            "new_tokens": int(statistics.median(tokens)),
            "end_to_end_ms": statistics.median(walls),
            "time_to_first_token_ms": statistics.median(ttfts),
            "decode_tokens_per_s": statistics.median(rates),
            "calls": len(walls),
            "note": "median of repeated runtimes.load(...).generate() calls; time to first token includes "
            "tokenization and prefill",
        }
    except Exception as exc:  # the figure is optional: a runtime problem must not lose the measurement
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def _load_feeds(job: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    import numpy as np

    return {p["name"]: dict(np.load(p["feeds_file"], allow_pickle=False)) for p in job["phases"]}


def _providers(job: Mapping[str, Any]) -> list[str]:
    return list(job.get("providers") or ["CPUExecutionProvider"])


def _model_session(ort: Any, job: Mapping[str, Any], options: Any) -> Any:
    """The model's session as edgekit's runtime builds it (its fusion policy included), on the job's providers."""
    providers = _providers(job)
    return ort.InferenceSession(
        job["model_path"], options, providers=providers, disabled_optimizers=disabled_optimizers(providers)
    )


def _memory_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """Cold load and memory, in a process that has done nothing else (so freed memory cannot hide any)."""
    import numpy as np
    import onnxruntime as ort

    threads = int(job["threads"])
    feeds = _load_feeds(job)
    base = _status()
    tiny = ort.InferenceSession(_tiny_model_bytes(), _session_options(ort, threads), providers=["CPUExecutionProvider"])
    tiny.run(None, {"A": np.ones((4, 4), np.float32)})
    after_tiny = _status()
    peak_reset = _reset_peak()
    tick = time.perf_counter()
    session = _model_session(ort, job, _session_options(ort, threads))
    load_ms = (time.perf_counter() - tick) * 1e3
    after_load = _status()
    _reset_peak()
    first = job["phases"][0]["name"]
    tick = time.perf_counter()
    session.run(None, feeds[first])
    first_ms = (time.perf_counter() - tick) * 1e3
    for p in job["phases"]:  # a few runs of every phase: the arena reaches its steady size after the first
        for _ in range(3):
            session.run(None, feeds[p["name"]])
    after_runs = _status()
    providers = session.get_providers()
    del session
    # After the memory figures: what an app pays to re-create a session (runtime initialised, file cached).
    tick = time.perf_counter()
    again = _model_session(ort, job, _session_options(ort, threads))
    warm_load_ms = (time.perf_counter() - tick) * 1e3
    del again, tiny
    # After the memory figures: the runtime's own sessions would blur them. Not in the timing process, whose
    # shared thread pool the runtime's per-session pools cannot join.
    generation = _generation(job, threads) if job.get("generation") else None

    def above(value: float | None) -> float | None:
        return None if value is None or "VmRSS" not in base else value - base["VmRSS"]

    return {
        "generation": generation,
        "providers": providers,
        "load_ms": load_ms,
        "warm_load_ms": warm_load_ms,
        "first_inference_ms": first_ms,
        "baseline_rss_mb": base.get("VmRSS"),
        "runtime_overhead_mb": above(after_tiny.get("VmRSS")),
        "load_rss_mb": above(after_load.get("VmRSS")),
        "load_peak_rss_mb": above(after_load.get("VmHWM")) if peak_reset else None,
        "inference_peak_rss_mb": above(after_runs.get("VmHWM")) if peak_reset else above(after_runs.get("VmRSS")),
    }


def _add_op_profiles(
    ort: Any, job: Mapping[str, Any], threads: int, feeds: Mapping[str, Any], phases_out: list[dict[str, Any]]
) -> None:
    """Each phase's top ops and nodes, in its own session: profiling slows every node down."""
    prefix = str(Path(job["work_dir"]) / "ort_profile")
    for p in phases_out:
        prof = _model_session(ort, job, _session_options(ort, threads, profile_prefix=prefix, shared_pool=True))
        prof.run(None, feeds[p["name"]])
        p["top_ops"], p["top_nodes"] = _op_profile(
            prof, feeds[p["name"]], int(job["op_profile_runs"]), int(job.get("top_k", 8))
        )
        del prof


class _SuiteSession(NamedTuple):
    name: str
    session: Any
    feeds: dict[str, Any]
    probe: bool
    calls: int  # timed back to back in each pass, each call a sample (calibration.HOT_CASES)


def _calibration_sessions(ort: Any, job: Mapping[str, Any], threads: int) -> list[_SuiteSession]:
    """One per calibration case (the speed probe among them), each run twice so its first timed pass is warm."""
    import numpy as np

    suite = []
    for case in job.get("calibration", []):
        cf = dict(np.load(case["feeds_file"], allow_pickle=False))
        cs = ort.InferenceSession(
            case["path"], _session_options(ort, threads, shared_pool=True), providers=["CPUExecutionProvider"]
        )
        for _ in range(2):
            cs.run(None, cf)
        suite.append(_SuiteSession(case["name"], cs, cf, bool(case.get("probe")), max(1, int(case.get("calls", 1)))))
    return suite


_MIN_PASSES = 10  # suite passes interleaved with each phase's timed runs, at least (runs permitting)


class _Interleaved:
    """The calibration suite and the speed probe (:mod:`.speed`) between the model's blocks of runs.

    The probe is timed at every boundary (before and after each block of model runs and each suite pass); each
    sample in between is tagged with the geometric mean of the two probes around it.
    """

    def __init__(self, sessions: Sequence[_SuiteSession]) -> None:
        from edgekit.profiler import speed

        self._speed = speed
        self.cases = [s for s in sessions if not s.probe]
        self.probe = next(((s.session, s.feeds) for s in sessions if s.probe), None)
        self.samples: dict[str, list[float]] = {s.name: [] for s in self.cases}
        self.probes: dict[str, list[float]] = {s.name: [] for s in self.cases}
        self.last_probe = self.time_probe()

    def time_probe(self) -> float:
        """The fastest of a few back-to-back probe calls (one call preempted must not make the moment slow)."""
        if self.probe is None:
            return 0.0
        cs, cf = self.probe
        best = math.inf
        for _ in range(self._speed.PROBE_CALLS):
            tick = time.perf_counter()
            cs.run(None, cf)
            best = min(best, (time.perf_counter() - tick) * 1e3)
        return best

    def around(self, count: int) -> list[float]:
        """Probes for the ``count`` samples taken since the last probe; times a new one."""
        before, self.last_probe = self.last_probe, self.time_probe()
        return self._speed.moment_probes(before, self.last_probe, count) if self.probe else []

    def suite_pass(self) -> None:
        # Each case once untimed, then its calls timed one by one: the model's runs are back-to-back (warm),
        # so the suite's must be too.
        for case in self.cases:
            case.session.run(None, case.feeds)
            for _ in range(case.calls):
                tick = time.perf_counter()
                case.session.run(None, case.feeds)
                self.samples[case.name].append((time.perf_counter() - tick) * 1e3)
        for case, p in zip(self.cases, self.around(len(self.cases)), strict=False):
            self.probes[case.name] += [p] * case.calls

    def result(self) -> dict[str, Any]:
        return {
            "calibration_samples_ms": {k: v for k, v in self.samples.items() if v},
            "calibration_probe_ms": {k: v for k, v in self.probes.items() if v},
        }


def _timed_phase(
    session: Any, f: Mapping[str, Any], runs: int, warmup: int, between: _Interleaved, progress: Callable[[], None]
) -> tuple[list[float], list[float]]:
    """One phase's timed runs and the probe of each run's moment."""
    tick = time.perf_counter()
    for _ in range(warmup):
        session.run(None, f)
        progress()
    # Runs go in blocks of back-to-back calls (at least 3, about 0.1 s), a suite pass after each block:
    # the median run is then a warm one, as in an app's steady loop. At least _MIN_PASSES blocks, so that a
    # fast model (100 runs of 20 us fit in one 0.1-s block) still has the suite interleaved with its runs.
    warm_s = (time.perf_counter() - tick) / max(1, warmup)
    block = max(3, min(int(0.1 / max(warm_s, 1e-6)), runs // _MIN_PASSES))
    between.around(0)  # the probe just before the first block
    samples: list[float] = []
    probes: list[float] = []
    for i in range(runs):
        tick = time.perf_counter()
        session.run(None, f)
        samples.append((time.perf_counter() - tick) * 1e3)
        if i % block == block - 1 or i == runs - 1:
            probes += between.around(len(samples) - len(probes))
            between.suite_pass()
        progress()
    return samples, probes


def _timing_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """The timed runs, in blocks each followed by one pass over the calibration suite, the speed probe timed
    between every two.

    This host is shared with other work whose load changes from second to second, and its own speed is bimodal.
    Interleaving gives the suite and the model the same machine state, and the probes let both be normalised to
    one reference speed (:mod:`.speed`), so the calibrated estimate and the measurement agree on what "this host"
    was.
    """
    import onnxruntime as ort

    threads = int(job["threads"])
    feeds = _load_feeds(job)
    runs, warmup = int(job["runs"]), int(job["warmup"])
    ort.set_global_thread_pool_sizes(threads, 1)
    between = _Interleaved(_calibration_sessions(ort, job, threads))
    session = _model_session(ort, job, _session_options(ort, threads, shared_pool=True))
    total = len(job["phases"]) * (runs + warmup)
    done = 0

    def progress() -> None:
        nonlocal done
        done += 1
        if done % 5 == 0 or done == total:
            _emit({"event": "progress", "done": done, "total": total})

    phases_out = []
    for p in job["phases"]:
        samples, probes = _timed_phase(session, feeds[p["name"]], runs, warmup, between, progress)
        phases_out.append(
            {
                "name": p["name"],
                "samples_ms": samples,
                "probe_ms": probes,
                "items_per_run": p["items_per_run"],
                "item": p["item"],
            }
        )
    del session
    while between.cases and min(len(v) for v in between.samples.values()) < int(job.get("min_calibration_samples", 15)):
        between.suite_pass()

    if job.get("op_profile_runs", 0) > 0:
        _add_op_profiles(ort, job, threads, feeds, phases_out)
    return {"threads": threads, "phases": phases_out, **between.result()}


def _child(job_path: str) -> int:
    started = time.perf_counter()
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    job = {**job, "work_dir": str(Path(job_path).parent)}
    kind = job.get("kind", "timing")
    result = _memory_job(job) if kind == "memory" else _timing_job(job)
    _emit({"event": "result", **result, "seconds": time.perf_counter() - started})
    return 0


def _memory_child(model_path: str, threads: int) -> int:
    """Memory of one calibration model in a clean process: runtime overhead, then the model on top."""
    import numpy as np
    import onnxruntime as ort

    base = _status()
    tiny = ort.InferenceSession(_tiny_model_bytes(), _session_options(ort, threads), providers=["CPUExecutionProvider"])
    tiny.run(None, {"A": np.ones((4, 4), np.float32)})
    after_tiny = _status()
    session = ort.InferenceSession(
        model_path,
        _session_options(ort, threads),
        providers=["CPUExecutionProvider"],
        disabled_optimizers=disabled_optimizers(),
    )
    after = _status()
    del session, tiny
    if "VmRSS" not in base:
        _emit({"event": "result", "overhead_mb": None, "model_mb": None})
        return 0
    _emit(
        {
            "event": "result",
            "overhead_mb": after_tiny["VmRSS"] - base["VmRSS"],
            "model_mb": after["VmRSS"] - after_tiny["VmRSS"],
        }
    )
    return 0


def main(argv: Sequence[str]) -> int:
    try:
        if argv and argv[0] == "--memory":
            return _memory_child(argv[1], int(argv[2]))
        return _child(argv[0])
    except Exception as exc:  # the parent turns this into a RuntimeBackendError naming the model
        _emit({"event": "result", "error": f"{type(exc).__name__}: {str(exc).strip()[:500]}"})
        raise


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
