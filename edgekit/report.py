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
    from edgekit._version import __version__

    env["edgekit"] = __version__
    env["cpu"] = cpu_info()
    return env


def cpu_info() -> dict[str, Any]:
    """The CPU model and the ISA features the kernels care about (avx2, avx512_vnni, neon dotprod, ...)."""
    from edgekit.devices.host import detect_cpu

    cpu = detect_cpu()
    return {"model": cpu.model, "arch": cpu.arch, "cores": cpu.cores, "isa_features": list(cpu.isa_features)}


def version_text() -> str:
    """``edgekit --version``: one line each for edgekit, onnxruntime and its providers, Python and the CPU."""
    env = environment()
    cpu = env["cpu"]
    ort = env["onnxruntime"] or "not installed"
    lines = [
        f"edgekit {env['edgekit']}",
        f"onnxruntime {ort}",
        f"providers {', '.join(env.get('available_providers') or []) or '-'}",
        f"python {env['python']} ({sys.executable})",
        f"platform {env['platform']}",
        f"cpu {cpu['model']} ({cpu['arch']}, {cpu['cores']} cores)",
        f"isa {' '.join(cpu['isa_features']) or '-'}",
    ]
    return "\n".join(lines)


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
