"""The host's speed of the moment, from a speed probe timed beside every block of runs.

This host's speed is not one number. With nothing else running, one MobileNet-v2 session timed in 2-s windows
gave 5.1-5.6 ms or 8.0-8.7 ms (1.73x apart, no steal time); other jobs on the cores slow it further, in bursts.
The model's timed runs and the calibration suite's cases are interleaved, but each figure used to be a median of
its own samples, and the median of a two-mode mixture flips with a few percent of them: the model's median and
a case's median could sit in different modes, and the host estimate (made from the cases) then missed the
measurement by the ratio of the modes, not by any error of the estimator.

So the measurement times one reference kernel, the **probe** (``calibration``'s ``probe`` case: two 3x3
convolutions 64->64 at 14x14 with Relu, ~0.1-0.2 ms, on the model's thread pool), before and after every block
of the model's runs and every pass over the suite. A probe is the fastest of ``PROBE_CALLS`` back-to-back
calls: one call preempted by another job must not make the moment look slow. Each sample (a model run, a case)
is divided by the probe of its moment (the geometric mean of the probes just before and just after its block)
and multiplied by one **reference probe** time, the median probe over the model's runs: every figure is then
"at the reference speed". If a mode change scales the model and the probe alike, ``t x ref / probe`` does not
move with it, so the model's figure and the cases' figures agree on the speed whatever mode each sample fell
in; and since the reference is the median of the probes beside the model's runs, the model's normalised median
equals its raw p50 when the speed is the only thing that changes (a monotone rescaling keeps the median's rank).

Both sides then take the same low quantile of their normalised samples (``SPEED_QUANTILE``, the first quartile):
once the speed is divided out, what is left above the low samples is other jobs preempting a run or a case, and
the factors are solved by subtracting one case from another, so a preempted case sample moves them far more than
it moves the case (one run under load here: light_squeezenet's estimate 47 ms from the cases' medians, 7 ms from
their first quartiles, against 4 ms on a quiet host). The report keeps p50 as the latency; the host estimate is
checked against the model's normalised first quartile (``check_ms``), the same figure as p50 within a few
percent on a steady host, and says so where the two differ. What neither removes: other jobs holding the cores
for every one of a long model's runs (a 40-ms run is preempted when a 0.2-ms probe is not); the report's busy
warning and the spread of the probes (``SpeedTrace.spread``) say when that happened.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PROBE_CALLS", "SPEED_QUANTILE", "SpeedTrace", "moment_probes", "normalised", "quantile"]

PROBE_CALLS = 3  # back-to-back calls per probe; the fastest counts
SPEED_QUANTILE = 0.25  # of the normalised samples, on both sides: the model's check figure and each case


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    s = sorted(values)
    if not s:
        return math.nan
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def moment_probes(before: float, after: float, count: int) -> list[float]:
    """The probe of each of ``count`` samples taken between two probes: their geometric mean (a speed ratio)."""
    return [math.sqrt(before * after)] * count


def normalised(samples_ms: Sequence[float], probes_ms: Sequence[float], reference_ms: float) -> list[float]:
    """Each sample at the reference speed: ``t x reference / probe``; the samples as they are without probes
    (an old measurement, or a probe that failed)."""
    if not probes_ms or len(probes_ms) != len(samples_ms) or not reference_ms > 0:
        return list(samples_ms)
    return [t * reference_ms / p if p > 0 else t for t, p in zip(samples_ms, probes_ms, strict=True)]


@dataclass(frozen=True, kw_only=True)
class SpeedTrace:
    """The probes timed beside a model's runs, and the reference speed every figure is normalised to."""

    probes_ms: tuple[float, ...]

    @property
    def reference_ms(self) -> float:
        return quantile(self.probes_ms, 0.5) if self.probes_ms else 0.0

    @property
    def spread(self) -> float:
        """p90 / p10 of the probes: 1.0 on a steady host, ~1.7 when it switched modes during the runs."""
        if len(self.probes_ms) < 2:
            return 1.0
        return quantile(self.probes_ms, 0.9) / quantile(self.probes_ms, 0.1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference_ms": self.reference_ms or None,
            "probes": len(self.probes_ms),
            "p10_ms": quantile(self.probes_ms, 0.1) if self.probes_ms else None,
            "p90_ms": quantile(self.probes_ms, 0.9) if self.probes_ms else None,
            "spread_p90_over_p10": self.spread,
            "quantile": SPEED_QUANTILE,
            "note": "a reference kernel timed before and after every block of runs and suite pass; samples are "
            "normalised to the reference (the median probe during the model's runs): edgekit/profiler/speed.py",
        }
