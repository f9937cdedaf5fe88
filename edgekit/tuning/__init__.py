"""``edgekit tune``: the best package per device under budgets (``edgekit.tune`` / ``edgekit.tuning.tune``).

    variants   the recipe variant families and their grids     trials   cached export jobs, local pool or Ray
    measure    host measurement and per-device estimates       pareto   budgets, the fp32 bar, the front, picks
    report     JSON, terminal table, HTML with SVG plots        api      ``tune(...)``

It sits above both the exporters and the profiler (it exports trials, then profiles them), so it lives here, not in ``exporters``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.tuning.api import TuneResult

__all__ = ["TuneResult", "tune"]


def tune(sources: Any, **kwargs: Any) -> TuneResult:
    """Tune ``sources`` for devices under budgets; see :func:`edgekit.tuning.api.tune`."""
    from edgekit.tuning.api import tune as _tune

    return _tune(sources, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "TuneResult":
        from edgekit.tuning.api import TuneResult

        return TuneResult
    raise AttributeError(f"module 'edgekit.tuning' has no attribute {name!r}")
