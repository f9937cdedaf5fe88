"""Small helpers shared by the benchmarks: interleaved timing, ratios, markdown tables, environment.

Timing on a shared machine is noisy, so peers are never timed one after another. :func:`interleave`
runs every peer in each round (the order rotating), a fixed block of calls per peer per round, and keeps
the median call time of each block. A peer's latency is the median over rounds; a ratio between two
peers is the median of their per-round ratios, so load that comes and goes hits both sides of a ratio.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Timing:
    """Per-round block medians (seconds per call) of one peer."""

    name: str
    calls_per_block: int
    rounds: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.rounds) * 1e3

    @property
    def iqr_ms(self) -> tuple[float, float]:
        q = statistics.quantiles(self.rounds, n=4) if len(self.rounds) > 1 else [self.rounds[0]] * 3
        return q[0] * 1e3, q[2] * 1e3


def _block(fn: Callable[[], Any], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleave(
    fns: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    block_seconds: float = 0.02,
    warmup: int = 3,
    min_calls: int = 3,
    max_calls: int = 200,
    budget_seconds: float | None = None,
    min_rounds: int = 5,
) -> dict[str, Timing]:
    """Time each callable in ``fns``: up to ``rounds`` rounds, each peer running one block per round.

    The block size per peer is set once, after warm-up, so one block takes about ``block_seconds`` (within
    ``min_calls``..``max_calls``). With ``budget_seconds``, rounds stop once the budget is spent and ``min_rounds``
    are done: a loaded host then gets fewer rounds rather than a benchmark that never ends.
    """
    names = list(fns)
    timings: dict[str, Timing] = {}
    t0 = time.perf_counter()
    for name in names:
        fn = fns[name]
        for _ in range(warmup):
            fn()
        one = _block(fn, min_calls)
        n = max(min_calls, min(max_calls, int(block_seconds / max(one, 1e-6))))
        timings[name] = Timing(name=name, calls_per_block=n)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            timings[name].rounds.append(_block(fns[name], timings[name].calls_per_block))
        if budget_seconds is not None and r + 1 >= min_rounds and time.perf_counter() - t0 > budget_seconds:
            break
    return timings


def ratio(a: Timing, b: Timing) -> float:
    """Median over rounds of ``a / b`` (both timed in the same rounds)."""
    return statistics.median(x / y for x, y in zip(a.rounds, b.rounds, strict=True))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(extra_dists: Sequence[str] = ()) -> dict[str, Any]:
    """Library versions (distribution names), CPU, ISA features that matter for int8 kernels, load."""
    import os
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("numpy", "onnx", "onnxruntime", *extra_dists):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = None
    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm") if f in flags]
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": cpu_model(),
        "load_average": load,  # 1/5/15 min: other work on the host inflates every latency
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "isa": isa,
        "versions": versions,
    }
