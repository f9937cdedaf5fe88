"""The export's device check: a quantized graph's speed-up over its fp32 graph, estimated on target devices.

The exporter times the package against its fp32 graph on the export host (``exporters.speed``) and, for the
devices the user names, calls a :class:`~edgekit.session_policy.DeviceSpeedupEstimator` with both graphs and the
call it timed. :class:`DeviceEstimator` is that estimator: the edgekit layer (``edgekit export --device``,
``edgekit.export(devices=...)``) builds it, so exporters never import the profiler.

Each graph is estimated exactly as ``edgekit profile`` estimates it on the device: the graph ONNX Runtime's CPU
provider runs (:func:`.static.runtime_graph`), analysed on the call's inputs, through the roofline at the device's
rates from its profile and the kernel table (:func:`.estimate.device_rates`), which carry the held-out error
band of the device's ISA class (:mod:`.validation`). ``host`` is measured, not estimated: it is skipped here.

    >>> from edgekit.profiler.speedup import DeviceEstimator
    >>> DeviceEstimator.for_devices(["raspberry-pi-5", "pixel-8"]).device_names
    ('raspberry-pi-5', 'pixel-8')
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.devices import DeviceKind, DeviceProfile, get_device
from edgekit.session_policy import DeviceSpeedup, device_speedup_verdict

__all__ = ["CALL_PHASE", "DeviceEstimator", "estimate_call"]

CALL_PHASE = "call"  # the phase name of the one call the export times


def estimate_call(
    model_path: Path, feeds: Mapping[str, Any], devices: Sequence[DeviceProfile], work: Path
) -> list[Any]:
    """The profiler's latency estimate (:class:`.estimate.PhaseEstimate`) of one call of ``model_path`` on
    ``feeds``, per device in ``devices`` (none of them ``host``: its rates need the calibration suite)."""
    from edgekit.profiler import estimate, static

    runtime_path = static.runtime_graph(model_path, work / f"{model_path.stem}.runtime.onnx")
    analysis = static.analyze_model(static.load_onnx(runtime_path), feeds=feeds)
    return [estimate.estimate_latency(CALL_PHASE, analysis, estimate.device_rates(d, None, None)) for d in devices]


@dataclass(frozen=True, kw_only=True)
class DeviceEstimator:
    """Estimates the package against the fp32 graph on each of ``devices`` (a DeviceSpeedupEstimator)."""

    devices: tuple[DeviceProfile, ...]

    @classmethod
    def for_devices(cls, names: Sequence[str], device_dirs: Sequence[str] | None = None) -> DeviceEstimator:
        """The named profiles (bundled, ``device_dirs``, ``EDGEKIT_DEVICE_PATH``), each once, ``host`` left out.

        An unknown name raises UnknownNameError with the known names, before any export work starts."""
        profiles: list[DeviceProfile] = []
        for name in dict.fromkeys(names):
            profile = get_device(name, extra_dirs=device_dirs)
            if profile.kind != DeviceKind.HOST:  # measured by the export itself (runtime.speedup)
                profiles.append(profile)
        return cls(devices=tuple(profiles))

    @property
    def device_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.devices)

    def __call__(self, fp32_model: Path, package_model: Path, feeds: Mapping[str, Any]) -> list[DeviceSpeedup]:
        if not self.devices:
            return []
        with tempfile.TemporaryDirectory(prefix="edgekit-device-speedup-") as tmp:
            work = Path(tmp)
            (work / "fp32").mkdir()
            (work / "package").mkdir()
            fp32 = estimate_call(fp32_model, feeds, self.devices, work / "fp32")
            package = estimate_call(package_model, feeds, self.devices, work / "package")
        return [_record(d, f, p) for d, f, p in zip(self.devices, fp32, package, strict=True)]


def _record(device: DeviceProfile, fp32: Any, package: Any) -> DeviceSpeedup:
    band = fp32.error_band  # the device's class band (both estimates carry the same one)
    ratio = package.latency_ms / fp32.latency_ms
    return DeviceSpeedup(
        device=device.name,
        speedup=round(fp32.latency_ms / package.latency_ms, 4),
        fp32_ms=round(fp32.latency_ms, 6),
        package_ms=round(package.latency_ms, 6),
        threads=device.default_threads,
        isa_class=band.isa_class,
        band_pct=band.band_pct,
        band=band.label(),
        verdict=device_speedup_verdict(ratio, band.band_pct),
    )
