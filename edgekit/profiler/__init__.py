"""The profiler: static analysis, measurement on this host, estimates per device profile, reports.

    >>> from edgekit.profiler import profile
    >>> report = profile(["pkg-fp32", "pkg-int8"], devices=["host", "raspberry-pi-5", "pixel-8"], runs=50)  # doctest: +SKIP
    >>> print(report.render_table())  # doctest: +SKIP

Importing this package is cheap: onnx, onnxruntime and numpy load when ``profile`` runs.
``edgekit/profiler/README.md`` says what each figure means and how far the estimates can be trusted.

    feeds        what each task's phases run on          static       FLOPs, bytes, weights, liveness
    measure      this host, in fresh processes            calibration  the estimator's suite and fits
    estimate     roofline per device profile              coverage     execution providers' node coverage
    report       records, JSON, terminal table            html         one page with inline SVG plots
    api          ``profile(...)``, budgets
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.profiler.report import ProfileReport

__all__ = ["ProfileReport", "profile"]


def profile(packages: Any, *args: Any, **kwargs: Any) -> ProfileReport:
    """Measure ``packages`` on this host and estimate them on ``devices``; see :func:`edgekit.profiler.api.profile`."""
    from edgekit.profiler.api import profile as _profile

    return _profile(packages, *args, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "ProfileReport":
        from edgekit.profiler.report import ProfileReport

        return ProfileReport
    raise AttributeError(f"module 'edgekit.profiler' has no attribute {name!r}")
