"""The speed-up guarantee on target devices: the injected estimate, its warnings and the refusal when asked.

Exporters do not estimate devices themselves (the profiler sits beside them, not below: import-linter's
``layers`` contract): the caller passes a :class:`~edgekit.session_policy.DeviceSpeedupEstimator`
(``edgekit.profiler.speedup.DeviceEstimator``, which ``edgekit export --device`` and
``edgekit.export(devices=...)`` build) and this module acts on what it returns. A device estimated slower than
fp32 beyond its error band warns, naming the device, the ratio and the band; with ``on_device_slower="refuse"``
(``--require-device-speedup``) it refuses the package. The default is to warn because the figure is an estimate
from a device profile, with a band of tens of percent, not a measurement: refusing a package that the host
measured faster on an estimate alone would turn the estimator's error into the export's failure.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgekit.errors import DeviceSlowerThanFp32Error, DeviceSlowerThanFp32Warning
from edgekit.session_policy import DeviceSpeedup, DeviceSpeedupEstimator

__all__ = ["device_checks", "describe"]


def describe(record: DeviceSpeedup, recipe: str) -> str:
    """``the int4 package is estimated at 1.60x the time of the fp32 graph on pixel-8 (5 thread(s); error band
    ±27 %, validated on 6 published arm-i8mm rows (none on this device))``"""
    return (
        f"the {recipe} package is estimated at {record.ratio:.2f}x the time of the fp32 graph on {record.device}"
        f" ({record.threads} thread(s); error band {record.band})"
    )


def device_checks(
    estimator: DeviceSpeedupEstimator,
    *,
    fp32_path: Path,
    model_path: Path,
    feeds: Mapping[str, Any],
    on_device_slower: str,
    recipe: str,
    log: Callable[[str], None],
) -> list[DeviceSpeedup]:
    """The estimator's records; a ``slower`` one warns, or raises with ``on_device_slower="refuse"``.

    An estimate with no validated band (``not-validated``) is never ``slower``: it warns when its ratio is
    above 1 and never refuses, since nothing says how far off it may be."""
    records = list(estimator(fp32_path, model_path, feeds))
    for r in records:
        log(f"estimated speed-up on {r.device}: {r.speedup:.2f}x ({r.summary()})")
    slower = [r for r in records if r.verdict == "slower"]
    if slower and on_device_slower == "refuse":
        raise DeviceSlowerThanFp32Error(
            "; ".join(describe(r, recipe) for r in slower) + "; no package was written",
            hint="drop --require-device-speedup (on_device_slower='refuse') to keep it with a warning,"
            " or try another recipe for these devices",
            param="on_device_slower",
        )
    for r in _worth_a_warning(records):
        why = "beyond its error band" if r.verdict == "slower" else "without a validated band, so it is not refused"
        warnings.warn(
            f"{describe(r, recipe)}: slower {why}; kept (on_device_slower={on_device_slower!r})",
            DeviceSlowerThanFp32Warning,
            stacklevel=3,  # export()'s line, as the host's warning
        )
    return records


def _worth_a_warning(records: Sequence[DeviceSpeedup]) -> list[DeviceSpeedup]:
    return [r for r in records if r.verdict == "slower" or (r.verdict == "not-validated" and r.ratio > 1.0)]
