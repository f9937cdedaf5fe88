"""``edgekit tune``: the best package per device under budgets (``exporters.tune``).

    variants   the recipe variant families and their grids     trials   cached export jobs, local pool or Ray
    measure    host measurement and per-device estimates       pareto   budgets, the fp32 bar, the front, picks
    report     JSON, terminal table, HTML with SVG plots        api      ``tune(...)``

The package is named ``tuning`` so that ``exporters.tune`` stays the function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exporters.tuning.api import TuneResult

__all__ = ["TuneResult", "tune"]


def tune(sources: Any, **kwargs: Any) -> TuneResult:
    """Tune ``sources`` for devices under budgets; see :func:`exporters.tuning.api.tune`."""
    from exporters.tuning.api import tune as _tune

    return _tune(sources, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "TuneResult":
        from exporters.tuning.api import TuneResult

        return TuneResult
    raise AttributeError(f"module 'exporters.tuning' has no attribute {name!r}")
