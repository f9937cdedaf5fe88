"""Export-time timing: the package's typical call, its thread policy, and its speed-up over the fp32 graph.

The decisions live in :mod:`edgekit.session_policy`; this module only times. Peers are always compared in
interleaved rounds within one run (the order rotates each round), and every comparison is a per-round ratio,
so a machine that slows down mid-measurement slows both sides of a round alike. Each session is built as
edgekit's runtime builds it (memory policy, the settling run at load) and each round runs a *block* of calls
of one peer (:data:`ROUND_TARGET_S`, the block's median call kept), as a user's repeated calls run: a single
call alternating with another session's measured the other session's spinning workers and cold caches
(2026-12-02 d: ResNet-18 int8 at 0.65x its fp32 graph by the guarantee, 0.33x by benchmarks/cnn_int8.py).
Budget: :data:`MIN_ROUNDS`-:data:`MAX_ROUNDS` rounds within :data:`BUDGET_S` seconds per comparison: a tiny
model costs milliseconds, an EfficientNet a few seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import SlowerThanFp32Error, SlowerThanFp32Warning
from edgekit.manifest import GenerationSpec, RuntimeInfo
from edgekit.ort_policy import apply_memory_policy, disabled_optimizers, settle_run_entries
from edgekit.session_policy import (
    ALL,
    THREADS_TOLERANCE,
    CallWork,
    DeviceSpeedupEstimator,
    SessionPolicy,
    SpeedupRecord,
    choose_policy,
    speedup_verdict,
)
from exporters import graph
from runtimes.decoder_feeds import fit_to_graph
from runtimes.samples import decode_step_feeds

# More rounds than a quiet host needs: on a shared one (load 4 on 2 vCPU) two exports of one EfficientNet int8
# graph read 1.53x and 0.57x its fp32 graph with 5-7 rounds; a median over more rounds moves less.
MIN_ROUNDS = 7
MAX_ROUNDS = 21
BUDGET_S = 3.0
ROUND_TARGET_S = 0.02  # one peer's block per round: long against a thread pool's spin-down and a cache refill
MAX_BLOCK_CALLS = 50
WARMUP_CALLS = 3  # first run allocates, the second records the memory plan (when planned), the third is steady
DECODE_PAST_TOKENS = 32

Clock = Callable[[], float]


@dataclass(frozen=True, kw_only=True)
class Workload:
    """The call a package repeats in use, and how the record names it."""

    feeds: dict[str, np.ndarray]
    description: str


def typical_call(
    kind: str,
    generation: GenerationSpec | None,
    samples: Sequence[Mapping[str, np.ndarray]],
    input_names: Sequence[str] = (),
) -> Workload:
    """A decode step for a KV-cache generator (what it runs per token), else the median-sized sample.

    A graph with inputs the decode step does not fill (an architecture's extra input) is timed on its samples."""
    if kind == "generation" and generation is not None and generation.with_kv_cache:
        past = max(0, min(DECODE_PAST_TOKENS, generation.max_context_tokens - 1))
        feeds = decode_step_feeds(generation, past=past)
        if input_names:  # the graph may take GroupQueryAttention's lengths for the mask
            feeds = fit_to_graph(feeds, input_names)
        if all(name in feeds for name in input_names):
            return Workload(feeds=feeds, description=f"decode step: 1 token over {past} cached tokens")
    ordered = sorted(samples, key=lambda s: sum(int(np.asarray(v).size) for v in s.values()))
    sample = ordered[len(ordered) // 2]
    shapes = ", ".join(f"{k}{list(np.asarray(v).shape)}" for k, v in sample.items())
    return Workload(feeds={k: np.asarray(v) for k, v in sample.items()}, description=f"median sample: {shapes}")


_ORT_FLOATS = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def timed_call(model_path: Path, feeds: Mapping[str, np.ndarray], *, threads: int, spinning: bool) -> Callable[[], Any]:
    """A zero-argument call running ``model_path`` once on CPU, its session built as edgekit's runtime builds it.

    Same options as ``runtimes.session`` on the CPU provider: the memory policy (no memory-pattern plan on a
    CPU-only session) and, for a static-shape graph, the settling run at load with the arena shrunk after it,
    so the call timed is the call a user of the package repeats."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    apply_memory_policy(so, low_memory=False, cpu_only=True)
    providers = ["CPUExecutionProvider"]
    sess = ort.InferenceSession(
        str(model_path), so, providers=providers, disabled_optimizers=disabled_optimizers(providers)
    )
    # The fp16 recipe may change float I/O types: each session gets the feeds in its own dtypes.
    own = {}
    fitted = fit_to_graph(feeds, {spec.name for spec in sess.get_inputs()})
    for spec in sess.get_inputs():
        arr = fitted[spec.name]
        target = _ORT_FLOATS.get(spec.type)
        own[spec.name] = arr.astype(target) if target is not None and arr.dtype != target else arr
    names = [o.name for o in sess.get_outputs()]
    static = all(isinstance(d, int) and d > 0 for spec in sess.get_inputs() for d in spec.shape)
    entries = settle_run_entries(static_shapes=static, cpu_only=True)
    if entries:
        options = ort.RunOptions()
        for key, value in entries.items():
            options.add_run_config_entry(key, value)
        sess.run(names, own, options)
    return lambda: sess.run(names, own)


def interleaved(
    calls: Sequence[Callable[[], Any]], *, budget_s: float = BUDGET_S, clock: Clock = time.perf_counter
) -> list[list[float]]:
    """Seconds per call of each of ``calls``, per round: ``result[round][i]``, the median call of i's block.

    Each round runs a block of consecutive calls per peer, sized once after :data:`WARMUP_CALLS` so a block
    spans about :data:`ROUND_TARGET_S`: a user repeats one model's call, so its caches stay warm and its thread
    pool's spinning tail hits only the block's first call, which the median discards."""
    reps = []
    for call in calls:
        for _ in range(WARMUP_CALLS):
            call()
        t0 = clock()
        call()
        reps.append(max(3, min(MAX_BLOCK_CALLS, round(ROUND_TARGET_S / max(clock() - t0, 1e-6)))))
    rounds: list[list[float]] = []
    start = clock()
    while len(rounds) < MAX_ROUNDS and (len(rounds) < MIN_ROUNDS or clock() - start < budget_s):
        r = len(rounds)
        row = [0.0] * len(calls)
        for j in range(len(calls)):
            i = (j + r) % len(calls)  # rotate who goes first
            times = []
            for _ in range(reps[i]):
                t0 = clock()
                calls[i]()
                times.append(clock() - t0)
            row[i] = statistics.median(times)
        rounds.append(row)
    return rounds


def per_round_ratios(rounds: Sequence[Sequence[float]], num: int, den: int) -> list[float]:
    return [row[num] / row[den] for row in rounds if row[den] > 0]


@functools.lru_cache(maxsize=1)
def host_core_gflops() -> float:
    """This host's single-core fp32 MatMul rate on a 256-square product (tens of ms, once per process)."""
    import onnxruntime as ort

    from edgekit.devices.host import matmul_model_bytes

    n = 256
    weight = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(
        matmul_model_bytes("MatMul", "float32", weight, "float32"), so, providers=["CPUExecutionProvider"]
    )
    name = sess.get_inputs()[0].name
    x = np.ones((n, n), np.float32)
    sess.run(None, {name: x})
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / max(statistics.median(times), 1e-9) / 1e9


Call = Callable[[], Any]


def measure_policy(
    model_path: Path, workload: Workload, *, cores: int, cpu: str, clock: Clock = time.perf_counter
) -> tuple[SessionPolicy, Call]:
    """1 thread against ``cores`` threads (and spinning off against on, when all threads win).

    Returns the policy and the package's call built with it, for the speed-up comparison to reuse."""
    one = timed_call(model_path, workload.feeds, threads=1, spinning=False)
    many = timed_call(model_path, workload.feeds, threads=cores, spinning=True) if cores > 1 else None
    rounds = interleaved([one, many] if many else [one], clock=clock)
    work = _call_work(model_path, workload, rounds, 0, host_core_gflops())
    one_vs_all = per_round_ratios(rounds, 0, 1) if many else None
    spin: list[float] | None = None
    quiet = None
    if one_vs_all and statistics.median(one_vs_all) > 1.0 + THREADS_TOLERANCE:
        quiet = timed_call(model_path, workload.feeds, threads=cores, spinning=False)
        spin = per_round_ratios(interleaved([quiet, many], clock=clock), 0, 1)  # type: ignore[list-item]
    policy = choose_policy(one_vs_all=one_vs_all, spin_off_vs_on=spin, all_threads=cores, work=work, cpu=cpu)
    if policy.intra_op_threads != ALL or many is None:
        return policy, one
    return policy, many if policy.allow_spinning or quiet is None else quiet


def _call_work(
    model_path: Path, workload: Workload, rounds: Sequence[Sequence[float]], one_thread: int, gflops: float
) -> CallWork:
    """The per-node work the policy rule reads: the graph's nodes and its one-thread call (column ``one_thread``)."""
    return CallWork(
        workload=workload.description,
        nodes=_node_count(model_path),
        host_core_ms=round(statistics.median(r[one_thread] for r in rounds) * 1e3, 4),
        host_core_gflops=round(gflops, 2),
    )


def setup_calls(model_path: Path, feeds: Mapping[str, np.ndarray], *, cores: int) -> list[tuple[int, bool, Call]]:
    """The set-ups a thread policy chooses from, (threads, spinning, call): one thread, and all cores with
    spinning on and off (the candidates of :func:`measure_policy`)."""
    ups = [(1, False)] + ([(cores, True), (cores, False)] if cores > 1 else [])
    return [(n, spin, timed_call(model_path, feeds, threads=n, spinning=spin)) for n, spin in ups]


def _choice(rounds: Sequence[Sequence[float]], first: int, cores: int, work: CallWork, cpu: str) -> SessionPolicy:
    """The policy the rule takes from set-up columns ``first`` (1 thread), +1 (all, spinning), +2 (all, not)."""
    if cores <= 1:
        return choose_policy(one_vs_all=None, spin_off_vs_on=None, all_threads=cores, work=work, cpu=cpu)
    one_vs_all = per_round_ratios(rounds, first, first + 1)
    spin = per_round_ratios(rounds, first + 2, first + 1)
    return choose_policy(one_vs_all=one_vs_all, spin_off_vs_on=spin, all_threads=cores, work=work, cpu=cpu)


def _column(policy: SessionPolicy, first: int, cores: int) -> int:
    if cores <= 1 or policy.intra_op_threads != ALL:
        return first
    return first + 1 if policy.allow_spinning else first + 2


def measure_speedup(
    fp32_path: Path,
    model_path: Path,
    workload: Workload,
    *,
    cores: int,
    cpu: str,
    isa: Sequence[str],
    on_slower: str,
    clock: Clock = time.perf_counter,
) -> tuple[SessionPolicy, SpeedupRecord]:
    """The package's thread policy, and the package at that policy against the fp32 graph at *its* policy.

    One interleaved run times both graphs at every set-up (package's first, then fp32's), and the same rule
    (:func:`edgekit.session_policy.choose_policy`) picks each graph's policy from it: what a user runs is the
    package at its policy, and without it the fp32 package at its own. Why not the fp32 graph at the package's
    threads: EfficientNet-B0 int8-static, whose policy was one thread, measured 1.01x the fp32 graph at one thread
    while the fp32 graph at two threads ran 1.4x faster than it; and a policy measured apart from the comparison
    (under another load) could pick one thread for the package and two for the fp32 graph."""
    ups = setup_calls(model_path, workload.feeds, cores=cores)
    refs = setup_calls(fp32_path, workload.feeds, cores=cores)
    rounds = interleaved([call for _, _, call in ups + refs], clock=clock)
    gflops = host_core_gflops()
    policy = _choice(rounds, 0, cores, _call_work(model_path, workload, rounds, 0, gflops), cpu)
    fp32_work = _call_work(fp32_path, workload, rounds, len(ups), gflops)  # the rule reads each graph's own work
    fp32_policy = _choice(rounds, len(ups), cores, fp32_work, cpu)
    mine, theirs = _column(policy, 0, cores), _column(fp32_policy, len(ups), cores)
    median, verdict = speedup_verdict(per_round_ratios(rounds, mine, theirs))
    record = SpeedupRecord(
        speedup=round(1.0 / median, 4),
        median_ratio=round(median, 4),
        verdict=verdict,
        rounds=len(rounds),
        threads=ups[mine][0],
        fp32_threads=refs[theirs - len(ups)][0],
        fp32_spinning=refs[theirs - len(ups)][1],
        workload=workload.description,
        cpu=cpu,
        isa=list(isa),
        on_slower=on_slower,
    )
    return policy, record


def _node_count(model_path: Path) -> int:
    model = graph.load_model(model_path, load_weights=False, check=False)
    return sum(1 for n in model.graph.node if n.op_type != "Constant")


def runtime_checks(
    *,
    kind: str,
    generation: GenerationSpec | None,
    samples: Sequence[Mapping[str, np.ndarray]],
    model_path: Path,
    fp32_path: Path | None,
    on_slower: str,
    recipe: str,
    log: Callable[[str], None],
    device_estimator: DeviceSpeedupEstimator | None = None,
    on_device_slower: str = "warn",
) -> RuntimeInfo:
    """The thread policy of ``model_path`` and, when ``fp32_path`` is given, its speed-up over that graph.

    A slower package (verdict ``slower``) raises :class:`SlowerThanFp32Error` unless ``on_slower`` is
    ``"warn"``; ``"off"`` skips the comparison. ``device_estimator`` adds the target devices' estimates of the
    same call (:mod:`exporters.device_speedup`: a slower one warns, or refuses with ``on_device_slower``)."""
    from edgekit.devices.host import detect_cpu
    from runtimes.session import physical_cores

    host = detect_cpu()
    cores = physical_cores()
    inputs, _ = graph.io_specs(graph.load_model(model_path, load_weights=False, check=False))
    workload = typical_call(kind, generation, samples, [spec.name for spec in inputs])
    if fp32_path is None or on_slower == "off":
        policy, _ = measure_policy(model_path, workload, cores=cores, cpu=host.model)
        log(f"session policy: {policy.intra_op_threads} thread(s), {policy.reason}")
        if device_estimator is not None:
            why = "the recipe is the fp32 baseline" if fp32_path is None else "on_slower='off' skips the comparison"
            log(f"target devices not estimated: {why}")
        return RuntimeInfo(session_policy=policy)
    policy, record = measure_speedup(
        fp32_path, model_path, workload, cores=cores, cpu=host.model, isa=host.isa_features, on_slower=on_slower
    )
    log(f"session policy: {policy.intra_op_threads} thread(s), {policy.reason}")
    log(f"speed-up over fp32: {record.speedup:.2f}x ({record.verdict}, {record.rounds} rounds)")
    if record.verdict == "slower":
        what = (
            f"the {recipe} package runs {record.workload} in {record.median_ratio:.2f}x the time of the fp32 graph"
            f" of this export on this host ({host.model}, {record.threads} thread(s) against the fp32 graph at"
            f" {record.fp32_threads}, its own policy, median of {record.rounds}"
            f" interleaved rounds, tolerance {record.tolerance:.0%})"
        )
        if on_slower == "refuse":
            raise SlowerThanFp32Error(
                f"{what}; no package was written",
                hint="pass on_slower='warn' (CLI: --allow-slower) to keep it anyway, or try another recipe",
                param="on_slower",
            )
        # one warning (the CLI shows it as its own log line); the progress log would say it twice
        warnings.warn(
            f"{what}; kept because on_slower='warn' (--allow-slower)",
            SlowerThanFp32Warning,
            # export()'s line: edgekit's quiet scope drops warnings attributed to modules outside edgekit
            stacklevel=2,
        )
    if device_estimator is not None:
        from exporters.device_speedup import device_checks

        devices = device_checks(
            device_estimator,
            fp32_path=fp32_path,
            model_path=model_path,
            feeds=workload.feeds,
            on_device_slower=on_device_slower,
            recipe=recipe,
            log=log,
        )
        record = dataclasses.replace(record, devices=devices, on_device_slower=on_device_slower)
    return RuntimeInfo(session_policy=policy, speedup=record)
