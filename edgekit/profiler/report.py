"""The profile report: records, their JSON (``kind: "profile"``), and the terminal table rendered from it.

The JSON is the one source: the terminal table (:func:`render_table`) and the HTML page
(:mod:`edgekit.profiler.html`) are both renderings of ``ProfileReport.to_dict()``, so whatever the terminal
shows, the JSON holds. Units are in the key names (``_ms``, ``_mb``, ``_bytes``, ``_per_s``); missing
figures are ``null``. The JSON Schema is ``edgekit/schemas/profile_report.schema.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.report import clean, dumps, make_report

__all__ = ["BudgetFailure", "DeviceResult", "ProfileReport", "VariantResult", "busy_message", "render_table"]

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "profile_report.schema.json"


@dataclass(frozen=True, kw_only=True)
class BudgetFailure:
    variant: str
    device: str
    figure: str  # "latency_ms" or "memory_mb"
    phase: str | None
    value: float
    budget: float
    basis: str  # "measured" (host) or "estimated"

    @property
    def message(self) -> str:
        what = f"{self.phase} latency" if self.figure == "latency_ms" else "peak memory"
        unit = "ms" if self.figure == "latency_ms" else "MB"
        return (
            f"{self.variant} on {self.device}: {self.basis} {what} {self.value:.1f} {unit} exceeds the "
            f"budget of {self.budget:g} {unit}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "device": self.device,
            "figure": self.figure,
            "phase": self.phase,
            "value": self.value,
            "budget": self.budget,
            "basis": self.basis,
            "message": self.message,
        }


@dataclass(frozen=True, kw_only=True)
class DeviceResult:
    device: str
    display_name: str
    kind: str
    rates: Mapping[str, Any]
    phases: Sequence[Mapping[str, Any]]  # PhaseEstimate.to_dict() per phase
    memory: Mapping[str, float]
    app_memory_budget_mb: float
    fits: bool
    coverage: Mapping[str, Any]
    inherits_unverified: Sequence[str] = ()
    derived_fields: Sequence[str] = ()
    measured: Mapping[str, Any] | None = None  # host only: what the estimate is checked against

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "display_name": self.display_name,
            "kind": self.kind,
            "estimate": {
                "phases": [dict(p) for p in self.phases],
                "memory_mb": self.memory.get("total_mb"),
                "memory_breakdown_mb": {k: v for k, v in self.memory.items() if k != "total_mb"},
                "rates": dict(self.rates),
                "inherits_unverified": list(self.inherits_unverified),
                "derived_fields": list(self.derived_fields),
            },
            "app_memory_budget_mb": self.app_memory_budget_mb,
            "fits": self.fits,
            "coverage": dict(self.coverage),
            "measured": dict(self.measured) if self.measured is not None else None,
        }


@dataclass(frozen=True, kw_only=True)
class VariantResult:
    label: str
    path: str
    task: str
    recipe: str | None
    phases: Sequence[Mapping[str, Any]]  # name, description, input_shapes, static figures
    static: Mapping[str, Any]  # the stored graph at the first phase
    measurement: Mapping[str, Any]
    host_efficiency: Mapping[str, Any]
    devices: Sequence[DeviceResult]
    package: Mapping[str, Any] | None = None  # sizes, size vs fp32, the manifest's accuracy drop
    nodes: Sequence[Mapping[str, Any]] = ()  # the top nodes by measured time, with each device's provider

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "path": self.path,
            "task": self.task,
            "recipe": self.recipe,
            "phases": [dict(p) for p in self.phases],
            "static": dict(self.static),
            "measurement": dict(self.measurement),
            "host_efficiency": dict(self.host_efficiency),
            "devices": [d.to_dict() for d in self.devices],
            "package": dict(self.package) if self.package is not None else None,
            "nodes": [dict(n) for n in self.nodes],
        }


@dataclass(frozen=True, kw_only=True)
class ProfileReport:
    """What ``edgekit.profile(...)`` returns: one variant per package, each with every device."""

    config: Mapping[str, Any]
    variants: Sequence[VariantResult]
    budget_failures: Sequence[BudgetFailure] = ()
    memory_calibration: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    host: Mapping[str, Any] = field(default_factory=dict)  # HostConditions.to_dict(): CPU, date, load

    def result_dict(self) -> dict[str, Any]:
        return {
            "config": dict(self.config),
            "variants": [v.to_dict() for v in self.variants],
            "budget_failures": [b.to_dict() for b in self.budget_failures],
            "memory_calibration": dict(self.memory_calibration),
            "seconds": self.seconds,
            "host": dict(self.host),
        }

    def to_dict(self) -> dict[str, Any]:
        """The full JSON report (envelope included), NaN-free."""
        report = make_report("profile", config=dict(self.config), result=self.result_dict())
        if self.budget_failures:
            report["status"] = "failed"
        return clean(report)

    def to_json(self) -> str:
        return dumps(self.to_dict())

    def render_table(self) -> str:
        return render_table(self.to_dict())

    def write_html(self, path: str | Path) -> Path:
        from edgekit.profiler.html import render_html

        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_html(self.to_dict()), encoding="utf-8")
        return out

    def write_json(self, path: str | Path) -> Path:
        out = Path(path)
        out.write_text(self.to_json(), encoding="utf-8")
        return out


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------ terminal


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) < 1:
        return f"{value:.{digits + 1}f}"
    return f"{value:.{digits}f}"


def _pct(err: float | None) -> str:
    return "" if err is None else f" ({err:+.0%})"


def _coverage_text(coverage: Mapping[str, Any]) -> str:
    short = {
        "QNNExecutionProvider": "QNN",
        "NnapiExecutionProvider": "NNAPI",
        "CoreMLExecutionProvider": "CoreML",
        "XnnpackExecutionProvider": "XNNPACK",
    }
    parts = []
    for p in coverage.get("providers", []):
        if p["provider"] == "CPUExecutionProvider":
            continue
        name = short.get(p["provider"], p["provider"].replace("ExecutionProvider", ""))
        if not p["known"]:
            parts.append(f"{name} ?")
        else:
            parts.append(f"{name} {p['nodes_supported']}/{p['nodes_total']} in {p['partitions']}p")
    return ", ".join(parts) if parts else "CPU only"


_CHECK_SHOWN = 0.05  # the check figure is printed beside p50 when it differs by more than this


def _latency_cell(device: Mapping[str, Any], phase: str) -> str:
    est = next((p for p in device["estimate"]["phases"] if p["phase"] == phase), None)
    measured = (device.get("measured") or {}).get("phases", {}).get(phase)
    if measured:
        err = measured.get("estimate_error")
        cell = f"{_fmt(measured['p50_ms'])} (est {_fmt(est['latency_ms'] if est else None)}{_pct(err)}"
        check, p50 = measured.get("check_ms"), measured["p50_ms"]
        if check and p50 and abs(check / p50 - 1) > _CHECK_SHOWN:
            # the error is against the runs at the reference speed (speed.py); say so where that is not the p50
            cell += f" of {_fmt(check)} at the probe's speed"
        return cell + ")"
    return f"est {_fmt(est['latency_ms'] if est else None)}{_band(est)}"


def _band(est: Mapping[str, Any] | None) -> str:
    """`` ±25 % (12 rows)`` from the held-out validation of the device's class, `` (not validated)`` without."""
    band = (est or {}).get("error_band")
    if not band:
        return ""
    if not band.get("validated"):
        return " (not validated)"
    return f" ±{band['band_pct']:.0f} % ({band['class_rows']} rows)"


def _memory_cell(device: Mapping[str, Any]) -> str:
    est = device["estimate"]["memory_mb"]
    measured = device.get("measured") or {}
    if measured.get("memory_mb") is not None:
        return f"{_fmt(measured['memory_mb'])} (est {_fmt(est)}{_pct(measured.get('memory_error'))})"
    return f"est {_fmt(est)} / {device['app_memory_budget_mb']:,.0f}"


def busy_message(host: Mapping[str, Any]) -> str | None:
    """The warning a busy host deserves (1-min load average above its logical CPUs), or None."""
    if not host.get("busy"):
        return None
    return (
        f"busy host: the 1-min load average reached {host['max_load_1m']:.1f} on {host['logical_cores']} "
        "logical CPUs while measuring, so the host timings are noisy (and the estimates calibrated on them); "
        "re-run on an idle machine for figures to rely on"
    )


def render_table(report: Mapping[str, Any]) -> str:
    """Variants x devices: latency (ms, p50 measured on host, estimated elsewhere), memory, fits, coverage."""
    result = report["result"]
    rows: list[list[str]] = []
    header = ["variant", "device", "phase", "latency ms", "memory MB", "fits", "accelerator coverage"]
    marks: dict[str, list[str]] = {}
    for variant in result["variants"]:
        phases = [p["name"] for p in variant["phases"]]
        for device in variant["devices"]:
            name = device["device"] + (" *" if device["estimate"]["inherits_unverified"] else "")
            if device["estimate"]["inherits_unverified"]:
                marks[device["device"]] = list(device["estimate"]["inherits_unverified"])
            for i, phase in enumerate(phases):
                first = i == 0
                rows.append(
                    [
                        variant["label"] if first else "",
                        name if first else "",
                        phase,
                        _latency_cell(device, phase),
                        _memory_cell(device) if first else "",
                        ("yes" if device["fits"] else "NO") if first else "",
                        _coverage_text(device["coverage"]) if first else "",
                    ]
                )
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    previous = None
    for r in rows:
        if r[0] and previous is not None:
            out.append("")
        out.append(line(r))
        previous = r
    notes = []
    gen = [(v["label"], v["measurement"].get("generation")) for v in result["variants"]]
    for label, g in gen:
        if g and g.get("error") is None:
            notes.append(
                f"{label}: end to end (tokenization included) time to first token "
                f"{_fmt(g['time_to_first_token_ms'])} ms, decode {_fmt(g['decode_tokens_per_s'])} tokens/s "
                f"({g['new_tokens']} new tokens after a {g['prompt_tokens']}-token prompt)"
            )
    notes.append(
        "host: measured p50 (estimate and its error in brackets); other devices: estimates for the CPU "
        "execution provider, accelerators shown as nodes taken / total in N partitions"
    )
    for device, fields in sorted(marks.items()):
        notes.append(f"* {device}: the estimate inherits unverified profile figures: {', '.join(fields)}")
    for failure in result.get("budget_failures", []):
        notes.append(f"BUDGET EXCEEDED: {failure['message']}")
    busy = busy_message(result.get("host") or {})
    if busy:
        notes.append(f"NOTE: {busy}")
    return "\n".join(out + [""] + notes)
