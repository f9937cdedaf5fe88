"""Choosing per device: budgets, the fp32 bar, the Pareto front, and why each variant lost.

For one model on one device every variant gets a list of reasons it cannot be picked: its export failed, its
accuracy drop is over the budget, its latency or peak memory is over the budget, it does not fit in the memory
the device gives one app, or it is not faster than fp32 there (a quantized model that is not faster buys
nothing). Of the variants with no reason the fastest wins; the others lost to it. Variants within
``LATENCY_TIE`` (5 %) of the fastest are ties (a measurement's noise on a shared host), broken by what the
export fixed: the smaller model, then the smaller accuracy drop, then enumeration order; so repeated tunes,
local or on Ray, agree. When no variant is left, fp32 is the fallback, marked as over budget with its own reasons.

The Pareto front is over (latency, accuracy drop): a variant is on it when no other is at least as good in
both and better in one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgekit.tuning.measure import DeviceFigures
from edgekit.tuning.trials import TrialResult

# Latencies within this fraction of the fastest are ties: host measurements (and the device estimates scaled
# from them) move by a few percent between runs on a busy machine, so without it two runs of the same tune
# could pick different variants that are equally fast.
LATENCY_TIE = 0.05


@dataclass(frozen=True, kw_only=True)
class Budgets:
    max_accuracy_drop: float | None = None
    max_latency_ms: float | None = None
    max_memory_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_accuracy_drop": self.max_accuracy_drop,
            "max_latency_ms": self.max_latency_ms,
            "max_memory_mb": self.max_memory_mb,
        }


@dataclass(frozen=True, kw_only=True)
class Candidate:
    variant: str
    recipe: str
    status: str  # "picked" | "lost" | "failed"
    reasons: tuple[str, ...]
    accuracy_drop: float | None
    latency_ms: float | None
    basis: str | None
    memory_mb: float | None
    model_bytes: int | None
    pareto: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "recipe": self.recipe,
            "status": self.status,
            "reasons": list(self.reasons),
            "accuracy_drop": self.accuracy_drop,
            "latency_ms": self.latency_ms,
            "basis": self.basis,
            "memory_mb": self.memory_mb,
            "model_bytes": self.model_bytes,
            "pareto": self.pareto,
        }


@dataclass(frozen=True, kw_only=True)
class DevicePick:
    source: str
    device: str
    picked: str | None  # variant name
    within_budget: bool
    reason: str
    package_dir: str | None  # where the picked package was written
    candidates: tuple[Candidate, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "device": self.device,
            "picked": self.picked,
            "within_budget": self.within_budget,
            "reason": self.reason,
            "package_dir": self.package_dir,
            "candidates": [c.to_dict() for c in self.candidates],
        }


def _budget_reasons(t: TrialResult, f: DeviceFigures, b: Budgets) -> list[str]:
    out = []
    if b.max_accuracy_drop is not None and (t.accuracy_drop or 0.0) > b.max_accuracy_drop:
        out.append(f"accuracy drop {t.accuracy_drop:.4f} is over the budget of {b.max_accuracy_drop:g}")
    if b.max_latency_ms is not None and f.latency_ms > b.max_latency_ms:
        out.append(f"{f.basis} {f.phase} latency {f.latency_ms:.3f} ms is over the budget of {b.max_latency_ms:g} ms")
    if b.max_memory_mb is not None and f.memory_mb is not None and f.memory_mb > b.max_memory_mb:
        out.append(f"peak memory {f.memory_mb:.1f} MB is over the budget of {b.max_memory_mb:g} MB")
    if not f.fits:
        out.append(f"needs {f.memory_mb:.1f} MB; the device gives one app {f.app_memory_budget_mb:g} MB")
    return out


def pareto_front(points: Mapping[str, tuple[float, float]]) -> set[str]:
    """Names whose (latency, drop) no other point matches or beats in both and beats in one."""

    def dominated(a: tuple[float, float]) -> bool:
        return any(b[0] <= a[0] and b[1] <= a[1] and b != a for b in points.values())

    return {name for name, p in points.items() if not dominated(p)}


def choose(
    source: str,
    device: str,
    trials: Sequence[TrialResult],
    figures: Mapping[str, DeviceFigures],
    budgets: Budgets,
    *,
    unmeasured: Mapping[str, str] | None = None,
    latency_tie: float = LATENCY_TIE,
) -> DevicePick:
    """The pick for ``device`` among ``trials`` (fp32 first), with every variant's reasons."""
    base = trials[0]
    base_fig = figures.get(base.key)
    reasons: dict[str, list[str]] = {}
    for t in trials:
        f = figures.get(t.key)
        if t.status != "ok":
            reasons[t.key] = [f"export failed: {(t.error or {}).get('message', 'no package')}"]
            continue
        if f is None:
            reasons[t.key] = [f"not measured: {(unmeasured or {}).get(t.key, 'no figures for this device')}"]
            continue
        r = _budget_reasons(t, f, budgets)
        if t is not base and base_fig is not None and f.latency_ms >= base_fig.latency_ms:
            r.append(f"not faster than fp32 on {device} ({f.latency_ms:.3f} ms vs {base_fig.latency_ms:.3f} ms)")
        reasons[t.key] = r
    ok = [t for t in trials if t.status == "ok" and t.key in figures]
    front = pareto_front({t.key: (figures[t.key].latency_ms, t.accuracy_drop or 0.0) for t in ok})
    eligible = [t for t in ok if not reasons[t.key]]
    if eligible:
        best, ties = _fastest(eligible, figures, latency_tie)
        within, why = True, _why_best(best, base, figures, device, len(eligible))
        for t in eligible:
            if t is best:
                continue
            a, b = figures[t.key].latency_ms, figures[best.key].latency_ms
            if t.key in ties:
                reasons[t.key].append(
                    f"ties with {best.variant.name} on {device} ({a:.3f} ms vs {b:.3f} ms, within "
                    f"{latency_tie:.0%}), which is {_tie_edge(best, t)}"
                )
            else:
                reasons[t.key].append(f"slower than {best.variant.name} on {device} ({a:.3f} ms vs {b:.3f} ms)")
    elif base.status == "ok" and base_fig is not None:
        best, within = base, False
        why = f"no variant meets the budgets on {device}; fp32 is the fallback: " + "; ".join(reasons[base.key])
    else:
        best, within, why = None, False, f"no package: fp32 itself failed on {device}"
    candidates = tuple(_candidate(t, figures.get(t.key), t is best, reasons[t.key], t.key in front) for t in trials)
    return DevicePick(
        source=source,
        device=device,
        picked=best.variant.name if best else None,
        within_budget=within,
        reason=why,
        package_dir=None,
        candidates=candidates,
    )


def _fastest(
    eligible: Sequence[TrialResult], figures: Mapping[str, DeviceFigures], latency_tie: float
) -> tuple[TrialResult, set[str]]:
    """The pick and the variants it tied with: of those within ``latency_tie`` of the fastest, the smallest
    model, then the smallest accuracy drop, then the first enumerated (all fixed by the export, not the clock)."""
    fastest = min(figures[t.key].latency_ms for t in eligible)
    ties = [t for t in eligible if figures[t.key].latency_ms <= fastest * (1 + latency_tie)]
    order = {t.key: i for i, t in enumerate(eligible)}
    best = min(ties, key=lambda t: (t.model_bytes or 0, t.accuracy_drop or 0.0, order[t.key]))
    return best, {t.key for t in ties}


def _tie_edge(best: TrialResult, other: TrialResult) -> str:
    if (best.model_bytes or 0) < (other.model_bytes or 0):
        return f"smaller ({best.model_bytes} vs {other.model_bytes} bytes)"
    if (best.accuracy_drop or 0.0) < (other.accuracy_drop or 0.0):
        return f"more accurate (drop {best.accuracy_drop or 0.0:.4f} vs {other.accuracy_drop or 0.0:.4f})"
    return "as small and as accurate, and enumerated first"


def _why_best(best: TrialResult, base: TrialResult, figures: Mapping[str, DeviceFigures], device: str, n: int) -> str:
    f = figures[best.key]
    if best is base:
        return f"no quantized variant within budget is faster than fp32 on {device}"
    speedup = figures[base.key].latency_ms / f.latency_ms if f.latency_ms > 0 else float("nan")
    return (
        f"fastest of {n} variant(s) within budget on {device}: {f.latency_ms:.3f} ms ({f.basis}), "
        f"{speedup:.2f}x fp32, accuracy drop {best.accuracy_drop or 0.0:.4f}"
    )


def _candidate(t: TrialResult, f: DeviceFigures | None, picked: bool, reasons: list[str], front: bool) -> Candidate:
    status = "failed" if t.status != "ok" else ("picked" if picked else "lost")
    return Candidate(
        variant=t.variant.name,
        recipe=t.variant.recipe,
        status=status,
        reasons=tuple(reasons) if not picked else tuple(r for r in reasons if not r.startswith("slower than")),
        accuracy_drop=t.accuracy_drop,
        latency_ms=f.latency_ms if f else None,
        basis=f.basis if f else None,
        memory_mb=f.memory_mb if f else None,
        model_bytes=t.model_bytes,
        pareto=front,
    )
