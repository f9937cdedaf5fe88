"""The JSON report every command can write (``--json``); terminal views render from the same dict."""

from __future__ import annotations

import json
import math
import platform
import sys
from typing import Any

from edgekit.errors import EdgekitError

REPORT_SCHEMA_VERSION = "1.0"


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["available_providers"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    from edgekit import __version__

    env["edgekit"] = __version__
    return env


def make_report(
    kind: str,
    *,
    config: dict[str, Any] | None = None,
    result: Any = None,
    error: EdgekitError | None = None,
) -> dict[str, Any]:
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": kind,
        "status": "error" if error else "ok",
        "config": config or {},
        "environment": environment(),
        "result": result,
        "errors": [error.to_dict()] if error else [],
    }


def clean(obj: Any) -> Any:
    """NaN and infinities become null; numpy scalars and paths become plain JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return clean(obj.item())
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return obj


def dumps(report: dict[str, Any]) -> str:
    return json.dumps(clean(report), indent=2, allow_nan=False)
