"""edgekit: export, quantize, run and profile small models on edge devices.

The short API is here; heavy modules are imported inside the function that needs them, so
``import edgekit`` stays light enough for a device.
"""

from __future__ import annotations

from typing import Any

from edgekit.errors import EdgekitError, edgekit_boundary

__version__ = "0.1.0"
__all__ = ["EdgekitError", "__version__", "export", "load", "profile", "quantize"]


@edgekit_boundary
def export(source: Any, **kwargs: Any) -> Any:
    """Export a HF model directory, an ``nn.Module`` or an ``.onnx`` file to a package (see ``exporters.export``)."""
    from exporters import export as _export

    return _export(source, **kwargs)


@edgekit_boundary
def quantize(model: Any, **kwargs: Any) -> Any:
    from exporters import quantize as _quantize

    return _quantize(model, **kwargs)


@edgekit_boundary
def load(package: Any, **kwargs: Any) -> Any:
    """Load a package for inference (see ``runtimes.load``)."""
    from runtimes import load as _load

    return _load(package, **kwargs)


@edgekit_boundary
def profile(packages: Any, *args: Any, **kwargs: Any) -> Any:
    """Measure packages here and estimate them on device profiles (see ``edgekit.profiler.api.profile``)."""
    from edgekit.profiler import profile as _profile

    return _profile(packages, *args, **kwargs)
