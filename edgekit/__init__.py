"""edgekit: export, quantize, run and profile small models on edge devices.

The short API is here; heavy modules are imported inside the function that needs them, so
``import edgekit`` stays light enough for a device. ``export``, ``quantize`` and ``profile`` run the
third-party libraries quietly, as the CLI does (``edgekit.quiet``); to see their output, wrap the call in
``with edgekit.quiet.third_party_quiet(1):``.
"""

from __future__ import annotations

from typing import Any

from edgekit._version import __version__
from edgekit.errors import EdgekitError, edgekit_boundary

__all__ = ["EdgekitError", "__version__", "export", "load", "profile", "quantize", "tune"]


@edgekit_boundary
def export(source: Any, *, devices: Any = None, device_dirs: Any = None, **kwargs: Any) -> Any:
    """Export a HF model directory, an ``nn.Module`` or an ``.onnx`` file to a package (see ``exporters.export``).

    ``devices``: device profile names on which the profiler estimates a quantized package against its fp32
    graph (``runtime.speedup.devices``; ``on_device_slower="refuse"`` refuses one estimated slower there)."""
    from edgekit.quiet import third_party_quiet
    from exporters import export as _export

    with third_party_quiet():
        return _export(source, **_with_devices(kwargs, devices, device_dirs))


@edgekit_boundary
def quantize(model: Any, *, devices: Any = None, device_dirs: Any = None, **kwargs: Any) -> Any:
    """Quantize an ``.onnx`` file or an fp32 package (see ``exporters.quantize``); ``devices`` as in :func:`export`."""
    from edgekit.quiet import third_party_quiet
    from exporters import quantize as _quantize

    with third_party_quiet():
        return _quantize(model, **_with_devices(kwargs, devices, device_dirs))


def _with_devices(kwargs: dict[str, Any], devices: Any, device_dirs: Any) -> dict[str, Any]:
    """``kwargs`` with the profiler's estimator for ``devices`` (exporters never import the profiler)."""
    if not devices:
        return kwargs
    from edgekit.errors import UsageError
    from edgekit.profiler.speedup import DeviceEstimator

    if kwargs.get("device_speedup") is not None:
        raise UsageError("give devices or device_speedup, not both", param="devices")
    names = [devices] if isinstance(devices, str) else list(devices)
    return {**kwargs, "device_speedup": DeviceEstimator.for_devices(names, device_dirs)}


@edgekit_boundary
def load(package: Any, **kwargs: Any) -> Any:
    """Load a package for inference (see ``runtimes.load``)."""
    from runtimes import load as _load

    return _load(package, **kwargs)


@edgekit_boundary
def profile(packages: Any, *args: Any, **kwargs: Any) -> Any:
    """Measure packages here and estimate them on device profiles (see ``edgekit.profiler.api.profile``)."""
    from edgekit.profiler import profile as _profile
    from edgekit.quiet import third_party_quiet

    with third_party_quiet():
        return _profile(packages, *args, **kwargs)


@edgekit_boundary
def tune(sources: Any, **kwargs: Any) -> Any:
    """The best package per device under budgets (see ``edgekit.tuning.tune``): export trials, then profile them."""
    from edgekit.quiet import third_party_quiet
    from edgekit.tuning import tune as _tune

    with third_party_quiet():
        return _tune(sources, **kwargs)
