"""The tune report: JSON (``kind: "tune"``), the terminal Pareto table and an HTML page, all from one dict.

The HTML page has, per (source, device), an SVG plot of latency (ms) against accuracy drop (%) with the
Pareto front, the pick ringed, a legend by recipe, and a bar chart of peak memory (MB) beside it; then the
table of every variant with why it lost. The JSON Schema is ``edgekit/schemas/tune_report.schema.json``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import BudgetExceededError, EdgekitError
from edgekit.report import clean, dumps, make_report

if TYPE_CHECKING:
    from edgekit.tuning.api import TuneResult
    from edgekit.tuning.trials import TrialResult

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "edgekit" / "schemas" / "tune_report.schema.json"
# One colour per recipe, so the legend reads the same on every device's plot.
RECIPE_COLOURS = {
    "fp32": "#444444",
    "fp16": "#8c564b",
    "int8-dynamic": "#1f77b4",
    "int8-static": "#2ca02c",
    "int4": "#d62728",
}
_OTHER_COLOUR = "#9467bd"


def make(result: TuneResult) -> dict[str, Any]:
    report = make_report("tune", config=dict(result.config), result=result.result_dict())
    if not result.within_budget:
        report["status"] = "failed"
    return clean(report)


def budget_error(result: TuneResult) -> BudgetExceededError | None:
    over = [p for p in result.picks if not p.within_budget]
    if not over:
        return None
    first = over[0]
    more = f" (and {len(over) - 1} more)" if len(over) > 1 else ""
    return BudgetExceededError(
        f"{first.source} on {first.device}: {first.reason}{more}",
        hint="see the reasons per variant in tune.json / tune.html; raise a budget or add variants",
        param="budgets",
    )


def error_from(trial: TrialResult) -> EdgekitError:
    """The baseline's recorded failure as the error class with its code (it ran in another process)."""
    err = trial.error or {}
    cls = _error_class(err.get("code"))
    return cls(f"the fp32 baseline of {trial.source_name} failed: {err.get('message')}", hint=err.get("hint"))


def _error_class(code: str | None) -> type[EdgekitError]:
    stack: list[type[EdgekitError]] = [EdgekitError]
    while stack:
        cls = stack.pop()
        if cls.code == code:
            return cls
        stack.extend(cls.__subclasses__())
    return EdgekitError


def write(result: TuneResult, json_path: Path, html_path: Path) -> None:
    report = make(result)
    json_path.write_text(dumps(report))
    html_path.write_text(render_html(report))


# --------------------------------------------------------------------------------------------- terminal


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def render_table(report: Mapping[str, Any]) -> str:
    res = report["result"]
    lines = []
    for pick in res["picks"]:
        head = f"{pick['source']} on {pick['device']}: "
        head += f"{pick['picked']} -> {pick['package_dir']}" if pick["picked"] else "nothing written"
        lines += ["", head + ("" if pick["within_budget"] else "  [OVER BUDGET]"), f"  {pick['reason']}"]
        lines.append(f"  {'variant':<46} {'drop':>8} {'ms':>9} {'MB':>7} {'pareto':>6}  status / why")
        for c in sorted(pick["candidates"], key=lambda c: (c["latency_ms"] is None, c["latency_ms"] or 0)):
            why = c["status"] + (": " + "; ".join(c["reasons"]) if c["reasons"] else "")
            lines.append(
                f"  {c['variant'][:46]:<46} {_fmt(c['accuracy_drop'], '.4f'):>8} {_fmt(c['latency_ms'], '.3f'):>9}"
                f" {_fmt(c['memory_mb'], '.1f'):>7} {'*' if c['pareto'] else '':>6}  {why}"
            )
    lines.append(
        f"\n{res['trials_total']} trials ({res['trials_run']} exported now, the rest cached), {res['seconds']:.1f}s"
    )
    return "\n".join(lines).lstrip("\n")


# ------------------------------------------------------------------------------------------------- HTML

_W, _H, _PAD = 520, 320, 56


def _scale(lo: float, hi: float, a: float, b: float) -> Any:
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _scatter(pick: Mapping[str, Any]) -> str:
    pts = [c for c in pick["candidates"] if c["latency_ms"] is not None]
    if not pts:
        return "<p>no package was measured</p>"
    xs = [c["latency_ms"] for c in pts]
    ys = [100 * (c["accuracy_drop"] or 0.0) for c in pts]
    x = _scale(0.0, max(xs) * 1.1, _PAD, _W - 16)
    y = _scale(0.0, max(max(ys) * 1.1, 1e-3), _H - _PAD, 16)
    e = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" role="img">']
    parts.append(f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - 16}" y2="{_H - _PAD}" stroke="#000"/>')
    parts.append(f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_PAD}" y2="16" stroke="#000"/>')
    for i in range(5):
        xv, yv = max(xs) * 1.1 * i / 4, max(max(ys) * 1.1, 1e-3) * i / 4
        parts.append(f'<text x="{x(xv):.1f}" y="{_H - _PAD + 16}" font-size="10" text-anchor="middle">{xv:.3g}</text>')
        parts.append(f'<text x="{_PAD - 6}" y="{y(yv) + 3:.1f}" font-size="10" text-anchor="end">{yv:.3g}</text>')
    basis = pts[0]["basis"] or ""
    parts.append(
        f'<text x="{(_W + _PAD) / 2}" y="{_H - 18}" font-size="12" text-anchor="middle">'
        f"{e(pick['device'])} latency, ms ({e(basis)})</text>"
    )
    parts.append(
        f'<text x="14" y="{_H / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {_H / 2})">'
        "accuracy drop vs fp32, %</text>"
    )
    front = sorted((c for c in pts if c["pareto"]), key=lambda c: c["latency_ms"])
    if len(front) > 1:
        path = " ".join(f"{x(c['latency_ms']):.1f},{y(100 * (c['accuracy_drop'] or 0.0)):.1f}" for c in front)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#999" stroke-dasharray="4 3"/>')
    for c in pts:
        cx, cy = x(c["latency_ms"]), y(100 * (c["accuracy_drop"] or 0.0))
        colour = RECIPE_COLOURS.get(c["recipe"], _OTHER_COLOUR)
        parts.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{colour}"><title>{e(c["variant"])}: '
            f"{c['latency_ms']:.3f} ms, drop {100 * (c['accuracy_drop'] or 0):.3f} %</title></circle>"
        )
        if c["status"] == "picked":
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="8" fill="none" stroke="#000" stroke-width="2"/>')
    parts.append(_legend(sorted({c["recipe"] for c in pts})))
    parts.append("</svg>")
    return "".join(parts)


def _legend(recipes: Sequence[str]) -> str:
    x0 = _W - 150
    out = []
    for i, r in enumerate(recipes):
        yy = 24 + 14 * i
        colour = RECIPE_COLOURS.get(r, _OTHER_COLOUR)
        out.append(f'<circle cx="{x0}" cy="{yy - 4}" r="4" fill="{colour}"/>')
        out.append(f'<text x="{x0 + 10}" y="{yy}" font-size="10">{html.escape(r)}</text>')
    yy = 24 + 14 * len(recipes)
    out.append(f'<circle cx="{x0}" cy="{yy - 4}" r="6" fill="none" stroke="#000" stroke-width="2"/>')
    out.append(f'<text x="{x0 + 10}" y="{yy}" font-size="10">picked</text>')
    yy += 14
    out.append(f'<line x1="{x0 - 6}" y1="{yy - 4}" x2="{x0 + 6}" y2="{yy - 4}" stroke="#999" stroke-dasharray="4 3"/>')
    out.append(f'<text x="{x0 + 10}" y="{yy}" font-size="10">Pareto front</text>')
    return "".join(out)


def _memory_bars(pick: Mapping[str, Any]) -> str:
    pts = [c for c in pick["candidates"] if c["memory_mb"] is not None]
    if not pts:
        return ""
    top = max(c["memory_mb"] for c in pts) or 1.0
    row, width, left = 16, 220, 220
    h = row * len(pts) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 60}" height="{h}" role="img">']
    for i, c in enumerate(pts):
        yy = 10 + i * row
        w = width * c["memory_mb"] / top
        colour = RECIPE_COLOURS.get(c["recipe"], _OTHER_COLOUR)
        parts.append(
            f'<text x="{left - 6}" y="{yy + 11}" font-size="10" text-anchor="end">{html.escape(c["variant"][:44])}</text>'
        )
        parts.append(f'<rect x="{left}" y="{yy}" width="{w:.1f}" height="{row - 4}" fill="{colour}"/>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{yy + 11}" font-size="10">{c["memory_mb"]:.1f}</text>')
    parts.append(f'<text x="{left + width / 2}" y="{h - 8}" font-size="12" text-anchor="middle">peak memory, MB</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(pick: Mapping[str, Any]) -> str:
    e = html.escape
    rows = [
        "<tr><th>variant</th><th>accuracy drop</th><th>latency, ms</th><th>memory, MB</th><th>model, MB</th>"
        "<th>Pareto</th><th>status</th><th>why</th></tr>"
    ]
    for c in pick["candidates"]:
        size = None if c["model_bytes"] is None else c["model_bytes"] / 1e6
        rows.append(
            f"<tr class='{e(c['status'])}'><td>{e(c['variant'])}</td><td>{_fmt(c['accuracy_drop'], '.4f')}</td>"
            f"<td>{_fmt(c['latency_ms'], '.3f')}</td><td>{_fmt(c['memory_mb'], '.1f')}</td><td>{_fmt(size, '.2f')}</td>"
            f"<td>{'yes' if c['pareto'] else ''}</td><td>{e(c['status'])}</td><td>{e('; '.join(c['reasons']))}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def render_html(report: Mapping[str, Any]) -> str:
    e = html.escape
    res = report["result"]
    body = [f"<h1>edgekit tune</h1><p>{res['trials_total']} trials, {res['seconds']:.1f} s. Budgets: "]
    cfg = report["config"]
    body.append(
        e(
            ", ".join(
                f"{k} {cfg.get(k)}"
                for k in ("max_accuracy_drop", "max_latency_ms", "max_memory_mb")
                if cfg.get(k) is not None
            )
            or "none"
        )
        + ". Accuracy is validated on this host's kernels; other devices' latency and memory are estimates.</p>"
    )
    for pick in res["picks"]:
        status = "" if pick["within_budget"] else " — over budget"
        body.append(f"<h2>{e(pick['source'])} on {e(pick['device'])}: {e(str(pick['picked']))}{status}</h2>")
        body.append(f"<p>{e(pick['reason'])}</p><div class='plots'>{_scatter(pick)}{_memory_bars(pick)}</div>")
        body.append(_table(pick))
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px}.picked{background:#e6f4e6}.failed{color:#a00}"
        ".plots{display:flex;gap:2em;align-items:flex-start;flex-wrap:wrap}"
    )
    data = json.dumps(report).replace("</", "<\\/")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>edgekit tune</title><style>{style}</style></head>"
        f"<body>{''.join(body)}<script type='application/json' id='tune-report'>{data}</script></body></html>"
    )
