"""One self-contained HTML page for a profile report, with plots drawn as inline SVG by hand.

It renders the report's JSON (``ProfileReport.to_dict()``), nothing else, so the page can never disagree
with ``--json``. No plotting library, no script and no external asset: the page works offline, and the plots
are SVG elements with ``<title>`` tooltips.

Reading order: what was measured where and when (CPU, date, load average, a banner when the host was busy),
the summary table (per variant: size, x fp32, accuracy drop, and per device p50 latency, peak memory, fits),
latency heatmaps, every device estimate with its error band (held-out validation on published measurements),
memory against each device's budget, then one section per variant (load times, latency
histograms, time per op type, the top nodes with the provider each device would give them, estimates and
provider coverage).

Rules the page keeps, because a reader compares what looks comparable:

- measured values (this host) and estimates (any device, the host's own estimate included) never share a
  colour scale: they are two heatmaps, each with its own palette (blues / oranges) and legend, and the
  summary marks every estimate ``est.`` on a tinted background;
- every plot has axes with ticks and units, a legend, and the p50 / p90 / p99 labelled where latencies are
  drawn. Each plot is an ``<svg class="plot">`` with ``axis-label`` texts and a ``legend`` group (the tests
  check this).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from edgekit.profiler.report import busy_message

__all__ = ["render_html"]

_PALETTE = ["#3b6ea8", "#d1742f", "#4c9a5b", "#a34f9e", "#b8a431", "#5aa6b5", "#c4525a", "#777777"]
_FONT = "font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif"
# Sequential scales (light = fast / small, dark = slow / large), one per kind of value: ColorBrewer Blues
# and Oranges end points.
SCALES: Mapping[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "measured": ((222, 235, 247), (8, 69, 148)),
    "estimated": ((254, 230, 206), (166, 54, 3)),
}
_MEASURED_BAR, _ESTIMATED_BAR = "#2f6db3", "#e0812c"
_SHORT_EP = {
    "CPUExecutionProvider": "CPU",
    "XnnpackExecutionProvider": "XNNPACK",
    "NnapiExecutionProvider": "NNAPI",
    "CoreMLExecutionProvider": "CoreML",
    "QNNExecutionProvider": "QNN",
}


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.{digits}f}"
    if value == 0:
        return "0"
    return f"{value:.{digits + 2}f}"


def _ms(value: float | None) -> str:
    return _num(value, 2)


def _svg(width: float, height: float, body: Sequence[str], label: str, *, cls: str = "plot", id_: str = "") -> str:
    ident = f' id="{_e(id_)}"' if id_ else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{cls}"{ident} width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{_e(label)}" '
        f'style="{_FONT};font-size:11px">' + "".join(body) + "</svg>"
    )


def _text(
    x: float,
    y: float,
    s: str,
    *,
    anchor: str = "start",
    size: int = 11,
    weight: str = "normal",
    fill: str = "#222",
    cls: str = "",
    rotate: float | None = None,
) -> str:
    klass = f' class="{cls}"' if cls else ""
    turn = f' transform="rotate({rotate:.0f} {x:.1f} {y:.1f})"' if rotate is not None else ""
    return (
        f'<text{klass} x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" font-weight="{weight}" '
        f'fill="{fill}"{turn}>{_e(s)}</text>'
    )


def _rect(x: float, y: float, w: float, h: float, fill: str, title: str = "", extra: str = "") -> str:
    tip = f"<title>{_e(title)}</title>" if title else ""
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" fill="{fill}"{extra}>'
        f"{tip}</rect>"
    )


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str = "#444", extra: str = "") -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}"{extra}/>'


def _legend(items: Sequence[str]) -> str:
    return '<g class="legend">' + "".join(items) + "</g>"


# --------------------------------------------------------------------------------------------- scales


def _nice_step(span: float, count: int) -> float:
    raw = span / max(1, count)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _nice_max(v: float) -> float:
    """The first round tick at or above ``v``: an axis that ends before its longest bar misleads."""
    step = _nice_step(v, 5)
    return math.ceil(v / step - 1e-9) * step


def linear_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    step = _nice_step(hi - lo, count)
    first = math.floor(lo / step) * step
    ticks, v = [], first
    while v <= hi + step * 1e-9:
        if v >= lo - step * 1e-9:
            ticks.append(round(v, 12))
        v += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks per decade over [lo, hi] when the range is short, decades alone when it is long."""
    lo_d, hi_d = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mults = (1, 2, 5) if hi_d - lo_d <= 3 else (1,)
    ticks = [m * 10.0**d for d in range(lo_d, hi_d + 1) for m in mults]
    return [t for t in ticks if lo * 0.999 <= t <= hi * 1.001]


class _Axis:
    """Value -> pixel along one axis, linear or log."""

    def __init__(self, lo: float, hi: float, start: float, end: float, *, log: bool) -> None:
        self.log = log
        self.lo, self.hi = (math.log10(lo), math.log10(hi)) if log else (lo, hi)
        self.start, self.end = start, end

    def __call__(self, v: float) -> float:
        x = math.log10(max(v, 1e-12)) if self.log else v
        f = 0.0 if self.hi == self.lo else (x - self.lo) / (self.hi - self.lo)
        return self.start + f * (self.end - self.start)


def _tick_label(v: float) -> str:
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 1:
        return f"{v:g}"
    return f"{v:.3g}"


def _scale_color(kind: str, f: float) -> str:
    (r0, g0, b0), (r1, g1, b1) = SCALES[kind]
    f = min(1.0, max(0.0, f))
    return f"rgb({round(r0 + f * (r1 - r0))},{round(g0 + f * (g1 - g0))},{round(b0 + f * (b1 - b0))})"


def _ink(kind: str, f: float) -> str:
    """Text colour readable on the scale's colour at ``f``."""
    return "#fff" if f > 0.55 else "#111"


# ---------------------------------------------------------------------------------------------- plots


def _histogram_bins(samples: Sequence[float], bins: int, log: bool) -> tuple[list[int], float, float]:
    lo, hi = min(samples), max(samples)
    if hi <= lo:
        lo, hi = lo * 0.95 or -0.5, hi * 1.05 or 0.5
    a, b = (math.log10(lo), math.log10(hi)) if log else (lo, hi)
    counts = [0] * bins
    for s in samples:
        x = math.log10(s) if log else s
        counts[min(bins - 1, max(0, int((x - a) / (b - a) * bins)))] += 1
    return counts, lo, hi


def histogram_svg(samples: Sequence[float], latency: Mapping[str, Any], title: str, *, bins: int = 30) -> str:
    """Latency histogram: runs per bin, x in ms (log when the tail is long), p50 / p90 / p99 labelled."""
    width, height, left, right, top, bottom = 520, 290, 52, 24, 92, 46
    pw, ph = width - left - right, height - top - bottom
    body = [_text(10, 16, title, weight="bold", size=12)]
    if not samples:
        return _svg(width, height, [*body, _text(left, 60, "no samples")], title)
    log = min(samples) > 0 and max(samples) / min(samples) > 8
    counts, lo, hi = _histogram_bins(samples, bins, log)
    x = _Axis(lo, hi, left, left + pw, log=log)
    peak = _nice_max(max(counts)) if max(counts) > 4 else max(counts)
    y = _Axis(0, peak, top + ph, top, log=False)
    if log:
        step = (math.log10(hi) - math.log10(lo)) / bins
        edges = [10 ** (math.log10(lo) + i * step) for i in range(bins + 1)]
    else:
        edges = [lo + i * (hi - lo) / bins for i in range(bins + 1)]
    body += _y_axis(y, linear_ticks(0, peak, 4), left, left + pw, "runs")
    for i, c in enumerate(counts):
        x0, x1 = x(edges[i]), x(edges[i + 1])
        tip = f"{_ms(edges[i])}-{_ms(edges[i + 1])} ms: {c} runs"
        body.append(_rect(x0 + 0.5, y(c), max(0.5, x1 - x0 - 1), top + ph - y(c), _PALETTE[0], tip))
    body += _x_axis(x, lo, hi, log, top + ph, f"latency per run (ms{', log scale' if log else ''})", width)
    body += _percentile_marks(latency, x, top, ph, width)
    body.append(
        _legend(
            [
                _rect(10, 26, 10, 8, _PALETTE[0]),
                _text(24, 34, f"runs per bin ({len(samples)} runs)", size=10),
                _line(150, 30, 166, 30, "#c4525a", ' stroke-width="2" stroke-dasharray="4,3"'),
                _text(170, 34, "p50 / p90 / p99 of the runs", size=10),
            ]
        )
    )
    return _svg(width, height, body, title)


def _percentile_marks(latency: Mapping[str, Any], x: _Axis, top: float, ph: float, width: float) -> list[str]:
    """Dashed lines at p50 / p90 / p99 (the report's own figures), each labelled in its own row above the plot."""
    out = []
    marks = (("p50_ms", "#c4525a"), ("p90_ms", "#b05f00"), ("p99_ms", "#444"))
    for row, (key, color) in enumerate(marks):
        v = latency.get(key)
        if v is None:
            continue
        px = x(v)
        label_y = top - 36 + 12 * row
        near_right = px > width - 110
        label = f"{key[:3]} {_ms(v)} ms"
        lx = px - 3 if near_right else px + 3
        out.append(_line(px, label_y + 2, px, top + ph, color, ' stroke-width="1.5" stroke-dasharray="4,3"'))
        out.append(
            _text(lx, label_y, label, size=10, fill=color, cls="marker", anchor="end" if near_right else "start")
        )
    return out


def _x_axis(x: _Axis, lo: float, hi: float, log: bool, y0: float, label: str, width: float) -> list[str]:
    out = [_line(x.start, y0, x.end, y0)]
    ticks = log_ticks(lo, hi) if log else linear_ticks(lo, hi, 5)
    if len(ticks) < 2 and log:  # a narrow log range: linear ticks read better
        ticks = linear_ticks(lo, hi, 4)
    for t in ticks:
        px = x(t)
        if x.start - 0.5 <= px <= x.end + 0.5:
            out.append(_line(px, y0, px, y0 + 4))
            out.append(_text(px, y0 + 15, _tick_label(t), anchor="middle", size=10, fill="#444", cls="tick"))
    out.append(_text((x.start + x.end) / 2, y0 + 32, label, anchor="middle", cls="axis-label"))
    return out


def _y_axis(y: _Axis, ticks: Sequence[float], x0: float, x1: float, label: str) -> list[str]:
    out = [_line(x0, y.start, x0, y.end)]
    for t in ticks:
        py = y(t)
        out.append(_line(x0 - 4, py, x0, py))
        out.append(_line(x0, py, x1, py, "#eee"))
        out.append(_text(x0 - 6, py + 3.5, _tick_label(t), anchor="end", size=10, fill="#444", cls="tick"))
    mid = (y.start + y.end) / 2
    out.append(_text(x0 - 34, mid, label, anchor="middle", cls="axis-label", rotate=-90))
    return out


def op_bars_svg(measured: Sequence[Mapping[str, Any]], estimated: Mapping[str, float], title: str) -> str:
    """Horizontal bars: ONNX Runtime's kernel time per op type on the host, the host estimate's beside it."""
    ops = [o["op_type"] for o in measured][:10]
    for op in sorted(estimated, key=lambda k: -estimated[k]):
        if op not in ops and len(ops) < 10:
            ops.append(op)
    meas = {o["op_type"]: o["time_ms"] for o in measured}
    row_h, width, top = 24, 660, 48
    left = 20 + 6.5 * max((len(o) for o in ops), default=10)
    plot_w = width - left - 60
    height = top + row_h * max(1, len(ops)) + 48
    shown = [v for v in (*(meas.get(o) for o in ops), *(estimated.get(o) for o in ops)) if v and v > 0] or [1e-3]
    # One op far ahead (or a preempted profiling run on a busy host) would flatten the rest: log axis then.
    log = max(shown) / min(shown) > 30
    if log:
        lo, hi = 10 ** math.floor(math.log10(min(shown))), 10 ** math.ceil(math.log10(max(shown)))
        ticks = log_ticks(lo, hi)
    else:
        lo, hi = 0.0, _nice_max(max(shown))
        ticks = linear_ticks(lo, hi, 5)
    x = _Axis(lo, hi, left, left + plot_w, log=log)
    y_axis = top + row_h * max(1, len(ops)) + 4
    body = [_text(10, 16, title, weight="bold", size=12)]
    body.append(
        _legend(
            [
                _rect(left, 26, 10, 8, _MEASURED_BAR),
                _text(left + 14, 34, "measured on this host (ORT profile)", size=10),
                _rect(left + 220, 26, 10, 8, _ESTIMATED_BAR),
                _text(left + 234, 34, "estimated for this host (roofline)", size=10),
            ]
        )
    )
    for t in ticks:
        body.append(_line(x(t), top, x(t), y_axis, "#eee"))
    for i, op in enumerate(ops):
        y = top + 4 + i * row_h
        body.append(_text(left - 6, y + 12, op, anchor="end"))
        for value, dy, color, what in (
            (meas.get(op), 0, _MEASURED_BAR, "measured"),
            (estimated.get(op), 9, _ESTIMATED_BAR, "estimated"),
        ):
            if value is None:
                continue
            end = x(max(value, lo))
            body.append(_rect(left, y + dy, end - left, 8, color, f"{op}: {_ms(value)} ms {what}"))
            body.append(_text(end + 4, y + dy + 7, _ms(value), size=9, fill="#444"))
    label = f"kernel time per run (ms{', log scale' if log else ''})"
    body += _x_axis(x, lo, hi, log, y_axis, label, width)
    return _svg(width, height, body, title)


def heatmap_svg(
    kind: str,
    title: str,
    rows: Sequence[str],
    cols: Sequence[str],
    cells: Mapping[tuple[int, int], float],
    x_label: str,
) -> str:
    """Rows x columns of latencies coloured on ``kind``'s own log scale ("measured" or "estimated")."""
    two_line = any("\n" in c for c in cols)
    cell_w, cell_h, top = 132, 40, 72 if two_line else 58
    left = 16 + 7 * max((len(r) for r in rows), default=8)
    width = max(left + cell_w * len(cols) + 20, 420)
    grid_bottom = top + cell_h * len(rows)
    height = grid_bottom + 72
    values = [v for v in cells.values() if v and v > 0] or [1.0]
    lo, hi = min(values), max(values)
    if hi / lo < 1.5:  # a flat range would turn tiny differences into the full palette
        lo, hi = lo / 1.25, hi * 1.25
    scale = _Axis(lo, hi, 0.0, 1.0, log=True)
    body = [_text(10, 16, title, weight="bold", size=12)]
    body.append(
        _text(
            left + cell_w * len(cols) / 2,
            top - 24 - (14 if two_line else 0),
            x_label,
            anchor="middle",
            cls="axis-label",
        )
    )
    body += _column_headers(cols, left, cell_w, top)
    body.append(_text(left - 8, top - 8, "variant", anchor="end", cls="axis-label", fill="#555"))
    for i, row in enumerate(rows):
        body.append(_text(left - 8, top + i * cell_h + cell_h / 2 + 4, row, anchor="end", weight="bold"))
    for (i, j), v in cells.items():
        f = scale(v) if v and v > 0 else 0.0
        x, y = left + j * cell_w, top + i * cell_h
        tip = f"{rows[i]}, {cols[j]}: {_ms(v)} ms ({kind})"
        body.append(_rect(x + 1, y + 1, cell_w - 2, cell_h - 2, _scale_color(kind, f), tip, f' class="cell-{kind}"'))
        label = f"{_ms(v)} ms" + (" est." if kind == "estimated" else "")
        body.append(
            _text(x + cell_w / 2, y + cell_h / 2 + 4, label, anchor="middle", weight="bold", fill=_ink(kind, f))
        )
    legend_w = min(280.0, width - 40.0)
    body.append(
        _color_legend(kind, lo, hi, 20, grid_bottom + 30, f"colour: {kind} p50 latency (ms, log scale)", legend_w)
    )
    return _svg(width, height, body, title, cls=f"plot heatmap heatmap-{kind}", id_=f"heatmap-{kind}")


def _column_headers(cols: Sequence[str], left: float, cell_w: float, top: float) -> list[str]:
    """One line per column, or for "group\nsub" labels the group once over its run of columns, sub below."""
    out = []
    j = 0
    while j < len(cols):
        group, _, sub = cols[j].partition("\n")
        span = 1
        while sub and j + span < len(cols) and cols[j + span].partition("\n")[0] == group:
            span += 1
        if sub:
            mid = left + (j + span / 2) * cell_w
            out.append(_text(mid, top - 22, group, anchor="middle", weight="bold"))
            out.append(_line(left + j * cell_w + 6, top - 18, left + (j + span) * cell_w - 6, top - 18, "#bbb"))
            for k in range(span):
                label = cols[j + k].partition("\n")[2]
                out.append(_text(left + (j + k + 0.5) * cell_w, top - 6, label, anchor="middle", fill="#444"))
        else:
            out.append(_text(left + (j + 0.5) * cell_w, top - 8, group, anchor="middle", weight="bold"))
        j += span
    return out


def _legend_ticks(lo: float, hi: float) -> list[float]:
    ticks = log_ticks(lo, hi)
    if len(ticks) < 3:  # a narrow range: the ends and the geometric middle, to 3 significant digits
        mid = math.sqrt(lo * hi)
        ticks = sorted({float(f"{t:.3g}") for t in (lo * 1.001, mid, hi * 0.999, *ticks)})
    return ticks


def _color_legend(kind: str, lo: float, hi: float, x0: float, y0: float, label: str, width: float) -> str:
    """The colour bar of one scale, with its ticks: 40 steps (no gradient ids to collide between plots)."""
    steps = 40
    parts = [_text(x0, y0 - 4, label, cls="axis-label", size=10)]
    parts += [
        _rect(x0 + k * width / steps, y0, width / steps + 0.5, 12, _scale_color(kind, k / (steps - 1)))
        for k in range(steps)
    ]
    parts.append(_rect(x0, y0, width, 12, "none", extra=' stroke="#888"'))
    axis = _Axis(lo, hi, x0, x0 + width, log=True)
    last = -1e9
    for t in _legend_ticks(lo, hi):
        px = axis(t)
        if px - last < 34:
            continue
        last = px
        parts.append(_line(px, y0 + 12, px, y0 + 16))
        parts.append(_text(px, y0 + 27, _tick_label(t), anchor="middle", size=10, fill="#444", cls="tick"))
    return f'<g class="legend" data-scale="{kind}">' + "".join(parts) + "</g>"


def latency_panels(variants: Sequence[Mapping[str, Any]]) -> str:
    """Two heatmaps, each on its own scale: the host's measured p50s, and every device's estimates."""
    if not variants:
        return ""
    rows = [v["label"] for v in variants]
    phases = [p["name"] for p in variants[0]["phases"]]
    measured: dict[tuple[int, int], float] = {}
    for i, v in enumerate(variants):
        by_name = {p["name"]: p["latency"]["p50_ms"] for p in v["measurement"]["phases"]}
        for j, ph in enumerate(phases):
            if by_name.get(ph) is not None:
                measured[(i, j)] = by_name[ph]
    devices = [d["device"] for d in variants[0]["devices"]]
    cols = [(d, ph) for d in devices for ph in phases]
    estimated: dict[tuple[int, int], float] = {}
    for i, v in enumerate(variants):
        est = {(d["device"], e["phase"]): e["latency_ms"] for d in v["devices"] for e in d["estimate"]["phases"]}
        for j, key in enumerate(cols):
            if est.get(key) is not None:
                estimated[(i, j)] = est[key]
    multi = len(phases) > 1
    col_names = [f"{d}\n{ph}" if multi else d for d, ph in cols]
    left = heatmap_svg("measured", "Measured on this host (p50)", rows, phases, measured, "phase (measured, this host)")
    right = heatmap_svg(
        "estimated", "Estimated per device (roofline)", rows, col_names, estimated, "device (estimate for the CPU EP)"
    )
    return (
        '<div class="panels"><div class="panel panel-measured">' + left + "</div>"
        '<div class="panel panel-estimated">' + right + "</div></div>"
        '<p class="note">Two colour scales on purpose: blue cells are measured here, orange cells are estimates '
        "(the host's own estimate included, so it can be compared with the measurement beside it). "
        "Never compare a blue cell with an orange one by colour.</p>"
    )


def band_label(est: Mapping[str, Any]) -> str:
    """``est 30 ms ±25 %, validated on 12 published arm-dotprod rows (4 on this device)``; the host's own
    estimate is checked against the measurement beside it, a device without published rows says so."""
    band = est.get("error_band")
    head = f"est {_ms(est.get('latency_ms'))} ms"
    if not band:
        return head + " (host: compare with the measurement)"
    return f"{head} {band['label']}" if band.get("validated") else f"{head}, {band['label']}"


def _band_rows(variants: Sequence[Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    multi_v, rows = len(variants) > 1, []
    for v in variants:
        for d in v["devices"]:
            for e in d["estimate"]["phases"]:
                if e.get("latency_ms"):
                    name = " ".join(x for x in (v["label"] if multi_v else "", d["device"], e["phase"]) if x)
                    rows.append((name, e))
    return rows


def estimate_bands_svg(variants: Sequence[Mapping[str, Any]]) -> str:
    """Each device estimate as a point with its error band (the held-out validation's 80th percentile) drawn
    as a shaded bar with whiskers, on one log axis in ms; estimates without a band are marked as such."""
    rows = _band_rows(variants)
    if not rows:
        return ""
    spans = []
    for _, e in rows:
        b = e.get("error_band") or {}
        f = b["band_pct"] / 100 if b.get("validated") else 0.0
        spans.append((e["latency_ms"] * (1 - min(f, 0.9)), e["latency_ms"] * (1 + f)))
    lo, hi = min(a for a, _ in spans) / 1.3, max(b for _, b in spans) * 1.3
    left = 16 + 6.5 * max(len(n) for n, _ in rows)
    plot_w, row_h, top = 360.0, 24, 44
    width = left + plot_w + 470
    y0 = top + row_h * len(rows)
    x = _Axis(lo, hi, left, left + plot_w, log=True)
    body = [_text(10, 16, "Device estimates with their error bands", weight="bold", size=12)]
    for i, ((name, e), (a, b)) in enumerate(zip(rows, spans, strict=True)):
        cy = top + i * row_h + row_h / 2
        band = e.get("error_band") or {}
        body.append(_text(left - 8, cy + 4, name, anchor="end"))
        if band.get("validated"):
            tip = band_label(e)
            body.append(_rect(x(a), cy - 6, x(b) - x(a), 12, "#f6c99f", tip, ' class="error-band"'))
            body += [_line(x(a), cy - 6, x(a), cy + 6, "#a63603"), _line(x(b), cy - 6, x(b), cy + 6, "#a63603")]
            body.append(_line(x(a), cy, x(b), cy, "#a63603", ' class="error-bar"'))
        fill = _ESTIMATED_BAR if band.get("validated") else "#999"
        body.append(f'<circle cx="{x(e["latency_ms"]):.1f}" cy="{cy:.1f}" r="4" fill="{fill}" class="estimate"/>')
        body.append(_text(left + plot_w + 10, cy + 4, band_label(e), size=10, fill="#444", cls="band-label"))
    body += _x_axis(x, lo, hi, True, y0 + 4, "estimated latency (ms, log scale)", plot_w)
    legend_y = y0 + 52
    body.append(
        _legend(
            [
                f'<circle cx="{left + 6}" cy="{legend_y - 4}" r="4" fill="{_ESTIMATED_BAR}"/>',
                _text(left + 16, legend_y, "estimate (ms)", size=10),
                _rect(left + 110, legend_y - 10, 24, 12, "#f6c99f", extra=' stroke="#a63603"'),
                _text(left + 140, legend_y, "error band: 80 % of held-out published rows fall within it", size=10),
                f'<circle cx="{left + 446}" cy="{legend_y - 4}" r="4" fill="#999"/>',
                _text(left + 456, legend_y, "no band (host, or not validated)", size=10),
            ]
        )
    )
    return _svg(width, legend_y + 16, body, "device estimates with error bands", cls="plot bands", id_="bands")


def _memory_rows(variants: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[tuple[str, str, float, bool]], float]]:
    """Per device: (device header, [(variant, basis, MB, fits)], budget MB)."""
    groups = []
    for gi, dev in enumerate(variants[0]["devices"] if variants else []):
        bars = []
        for v in variants:
            d = v["devices"][gi]
            measured = (d.get("measured") or {}).get("memory_mb")
            if measured:
                bars.append((v["label"], "measured", measured, d["fits"]))
            if d["estimate"]["memory_mb"]:
                bars.append((v["label"], "estimated", d["estimate"]["memory_mb"], d["fits"]))
        header = dev["device"] + (f" ({dev['display_name']})" if dev.get("display_name") else "")
        groups.append((header, bars, float(dev["app_memory_budget_mb"])))
    return groups


def memory_svg(variants: Sequence[Mapping[str, Any]]) -> str:
    """Horizontal bars per device (log MB): measured (blue) and estimated (orange) peaks, budget lines labelled."""
    groups = _memory_rows(variants)
    left, plot_w, top, row_h, head_h = 200, 620, 56, 18, 24
    width = left + plot_w + 150
    n_rows = sum(len(b) for _, b, _ in groups)
    height = top + n_rows * row_h + len(groups) * (head_h + 8) + 56
    values = [mb for _, bars, budget in groups for (_, _, mb, _) in bars] + [budget for *_, budget in groups]
    lo = 10 ** math.floor(math.log10(max(min(values or [1.0]), 1e-3)))
    hi = 10 ** math.ceil(math.log10(max(values or [10.0]) * 1.2))
    x = _Axis(lo, hi, left, left + plot_w, log=True)
    title = "Peak memory per device against the memory one app may use (MB, log scale)"
    body = [_text(10, 16, title, weight="bold", size=12)]
    body.append(
        _legend(
            [
                _rect(left, 26, 10, 8, _MEASURED_BAR),
                _text(left + 14, 34, "measured on this host (peak during inference)", size=10),
                _rect(left + 260, 26, 10, 8, _ESTIMATED_BAR),
                _text(left + 274, 34, "estimated peak", size=10),
                _line(left + 380, 24, left + 380, 36, "#8b1a1a", ' stroke-width="2"'),
                _text(left + 386, 34, "app memory budget of the device", size=10),
            ]
        )
    )
    y = top
    for t in log_ticks(lo, hi):
        body.append(_line(x(t), top, x(t), height - 48, "#eee"))
    for header, bars, budget in groups:
        body.append(_text(10, y + 15, header, weight="bold"))
        y += head_h
        y0 = y
        for label, basis, mb, fits in bars:
            color = _MEASURED_BAR if basis == "measured" else _ESTIMATED_BAR
            tip = f"{label} on {header}: {_num(mb)} MB {basis}; budget {budget:,.0f} MB"
            body.append(_text(left - 6, y + 12, f"{label} ({basis})", anchor="end", size=10))
            body.append(_rect(left, y + 2, x(mb) - left, row_h - 5, color, tip))
            verdict = "fits" if fits else "DOES NOT FIT"
            body.append(_text(x(mb) + 4, y + 12, f"{_num(mb)} MB, {verdict}", size=10, fill="#333" if fits else "#b00"))
            y += row_h
        bx = x(budget)
        body.append(_line(bx, y0 - 4, bx, y + 2, "#8b1a1a", ' stroke-width="2" class="budget"'))
        body.append(_text(bx + 4, y0 - 6, f"budget {budget:,.0f} MB", size=10, fill="#8b1a1a", cls="budget-label"))
        y += 8
    body += _x_axis(x, lo, hi, True, height - 48, "peak resident memory (MB, log scale)", width)
    return _svg(width, height, body, "memory per device", id_="memory")


# ---------------------------------------------------------------------------------------------- tables


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, cls: str = "", id_: str = "") -> str:
    attrs = (f' class="{cls}"' if cls else "") + (f' id="{_e(id_)}"' if id_ else "")
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(
    text: str, *, field: str, value: Any, cls: str = "", device: str = "", title: str = "", note: str = ""
) -> str:
    """A summary cell carrying its JSON value (``data-value``) so a test can hold the page to the JSON."""
    data = f' data-field="{_e(field)}" data-value="{_e("" if value is None else repr(value))}"'
    if device:
        data += f' data-device="{_e(device)}"'
    tip = f' title="{_e(title)}"' if title else ""
    small = f' <small class="metric">{_e(note)}</small>' if note else ""
    return f'<td class="{cls}"{data}{tip}><span class="value">{_e(text)}</span>{small}</td>'


def _accuracy_text(acc: Mapping[str, Any] | None) -> tuple[str, str]:
    if not acc or acc.get("accuracy_drop") is None:
        return "-", "no accuracy report in the manifest (a bare .onnx, or exported without validation)"
    metric = acc.get("primary_metric") or "metric"
    value = acc.get("primary_value")
    detail = f"{metric} {_num(value, 2)} vs fp32" if value is not None else metric
    return f"{acc['accuracy_drop']:.3g}", f"{detail} on {acc.get('samples')} samples (measured at export)"


def _metric_note(acc: Mapping[str, Any] | None) -> str:
    return f"({acc['primary_metric']})" if acc and acc.get("primary_metric") else ""


def summary_table(variants: Sequence[Mapping[str, Any]]) -> str:
    """Per variant: size, x fp32, accuracy drop; per device: p50 per phase, peak memory, fits."""
    if not variants:
        return ""
    phases = [p["name"] for p in variants[0]["phases"]]
    devices = variants[0]["devices"]
    top = "".join(f'<th rowspan="2">{h}</th>' for h in ("variant", "model MB", "× fp32", "accuracy drop"))
    sub = ""
    for d in devices:
        basis = "measured" if d.get("measured") else "estimated"
        top += f'<th colspan="{len(phases) + 2}" class="{basis[:4]}">{_e(d["device"])} <small>({basis})</small></th>'
        sub += "".join(f"<th>{_e(ph)} p50 ms</th>" for ph in phases) + "<th>peak MB</th><th>fits</th>"
    rows = []
    for v in variants:
        pkg = v.get("package") or {}
        acc_text, acc_tip = _accuracy_text(pkg.get("accuracy"))
        drop = (pkg.get("accuracy") or {}).get("accuracy_drop")
        ratio = pkg.get("size_vs_fp32")
        cells = [
            f'<th scope="row" data-field="label">{_e(v["label"])}</th>',
            _cell(_num((pkg.get("model_bytes") or 0) / 1e6, 2), field="model_bytes", value=pkg.get("model_bytes")),
            _cell("-" if ratio is None else f"{ratio:.2f}×", field="size_vs_fp32", value=ratio),
            _cell(acc_text, field="accuracy_drop", value=drop, title=acc_tip, note=_metric_note(pkg.get("accuracy"))),
        ]
        for d in v["devices"]:
            cells += _device_cells(d, phases)
        rows.append(f'<tr data-variant="{_e(v["label"])}">' + "".join(cells) + "</tr>")
    return (
        f'<table id="summary" class="summary"><thead><tr>{top}</tr><tr>{sub}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _device_cells(d: Mapping[str, Any], phases: Sequence[str]) -> list[str]:
    measured = d.get("measured") or {}
    cells = []
    for ph in phases:
        m = (measured.get("phases") or {}).get(ph)
        e = next((p for p in d["estimate"]["phases"] if p["phase"] == ph), None)
        if m:
            tip = f"measured p50; the host estimate was {_ms(m.get('estimate_ms'))} ms"
            cells.append(
                _cell(
                    _ms(m["p50_ms"]), field=f"p50_ms:{ph}", value=m["p50_ms"], cls="meas", device=d["device"], title=tip
                )
            )
        else:
            value = e["latency_ms"] if e else None
            tip = band_label(e) if e else ""
            cells.append(
                _cell(f"{_ms(value)} est.", field=f"p50_ms:{ph}", value=value, cls="est", device=d["device"], title=tip)
            )
    mem = measured.get("memory_mb")
    if mem is not None:
        cells.append(_cell(_num(mem), field="memory_mb", value=mem, cls="meas", device=d["device"]))
    else:
        est = d["estimate"]["memory_mb"]
        cells.append(_cell(f"{_num(est)} est.", field="memory_mb", value=est, cls="est", device=d["device"]))
    budget = f"app budget {d['app_memory_budget_mb']:,.0f} MB"
    fits = "yes" if d["fits"] else "NO"
    cells.append(
        _cell(
            fits, field="fits", value=d["fits"], cls="fit" if d["fits"] else "nofit", device=d["device"], title=budget
        )
    )
    return cells


def _short_ep(name: str | None) -> str:
    if name is None:
        return "?"
    return " + ".join(_SHORT_EP.get(p, p.replace("ExecutionProvider", "")) for p in name.split(" + "))


def node_table(v: Mapping[str, Any], phase: str) -> str:
    """The top nodes by measured time, with the provider each device's coverage would give them."""
    rows = [n for n in v.get("nodes", []) if n["phase"] == phase]
    if not rows:
        return "<p class='note'>No per-node profile (ONNX Runtime's profiler was off: op_profile_runs=0).</p>"
    devices = [d["device"] for d in v["devices"]]
    head = "".join(f"<th>{h}</th>" for h in ("#", "node", "op type", "time ms/run", "share"))
    head += "".join(f'<th class="ep">EP on {_e(d)}</th>' for d in devices)
    body = []
    for i, n in enumerate(rows, 1):
        stored = n.get("stored_nodes") or []
        origin = n.get("mapping", "")
        if stored and stored != [n["node"]]:
            origin += ": " + ", ".join(stored[:6]) + (" …" if len(stored) > 6 else "")
        cells = [
            f"<td>{i}</td>",
            f'<td class="node" title="{_e(origin)}"><code>{_e(n["node"])}</code></td>',
            f"<td>{_e(n['op_type'])}</td>",
            f'<td class="num" data-value="{n["time_ms"]!r}">{_ms(n["time_ms"])}</td>',
            f"<td class='num'>{n['share']:.1%}</td>",
        ]
        for d in devices:
            ep = (n.get("providers") or {}).get(d)
            tip = (
                "unknown: no stored node to look up, or a provider without an op list comes first" if ep is None else ep
            )
            cells.append(f'<td class="ep" data-device="{_e(d)}" title="{_e(tip)}">{_e(_short_ep(ep))}</td>')
        body.append(f'<tr data-node="{_e(n["node"])}">' + "".join(cells) + "</tr>")
    return (
        f'<table class="nodes" id="nodes-{_e(v["label"])}-{_e(phase)}" data-phase="{_e(phase)}"><thead><tr>{head}'
        f"</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


# ---------------------------------------------------------------------------------------------- page


def _load_table(m: Mapping[str, Any]) -> str:
    return _table(
        [
            "first load ms (fresh process)",
            "warm load ms (2nd session)",
            "first inference ms",
            "load adds MB",
            "peak during inference MB",
            "ORT overhead MB",
            "threads",
            "providers",
        ],
        [
            [
                _num(m["load_ms"]),
                _num(m.get("warm_load_ms")),
                _num(m["first_inference_ms"]),
                _num(m["load_rss_mb"]),
                _num(m["inference_peak_rss_mb"]),
                _num(m["runtime_overhead_mb"]),
                str(m["threads"]),
                ", ".join(_short_ep(p) for p in m.get("providers", [])),
            ]
        ],
        cls="load",
    )


def _static_table(s: Mapping[str, Any]) -> str:
    return _table(
        ["parameters", "weights MB", "FLOPs (first phase)", "bytes moved MB", "peak activations MB", "nodes"],
        [
            [
                f"{s['parameter_count']:,}",
                _num(s["weight_bytes"] / 1e6),
                f"{s['flops']:,}",
                _num(s["bytes_moved"] / 1e6),
                _num(s["peak_activation_bytes"] / 1e6),
                str(s["node_count"]),
            ]
        ],
    )


def _phase_table(m: Mapping[str, Any]) -> str:
    rows = []
    for p in m["phases"]:
        lat = p["latency"]
        rows.append(
            [p["name"], str(lat["runs"])]
            + [_ms(lat[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms")]
            + [f"{_num(p['throughput_per_s'])} {p['throughput_unit']}"]
        )
    return _table(["phase", "runs", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "throughput"], rows)


def _estimate_rows(v: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for d in v["devices"]:
        for e in d["estimate"]["phases"]:
            meas = ((d.get("measured") or {}).get("phases") or {}).get(e["phase"])
            err = meas.get("estimate_error") if meas else None
            rows.append(
                [
                    d["device"],
                    e["phase"],
                    _ms(e["latency_ms"]),
                    _band_cell(e),
                    _ms(meas["p50_ms"]) if meas else "-",
                    _ms(meas.get("check_ms")) if meas else "-",
                    f"{err:+.0%}" if err is not None else "-",
                    _ms(e.get("compute_bound_ms")),
                    _ms(e.get("memory_bound_ms")),
                    _ms(e.get("overhead_ms")),
                    ", ".join(d["estimate"]["inherits_unverified"]) or "-",
                ]
            )
    return rows


def _band_cell(e: Mapping[str, Any]) -> str:
    band = e.get("error_band")
    if not band:
        return "- (measured here)"
    return (
        f"±{band['band_pct']:.0f} % ({band['class_rows']} published rows)" if band.get("validated") else "not validated"
    )


def _coverage_rows(v: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for d in v["devices"]:
        for p in d["coverage"]["providers"]:
            rows.append(
                [
                    d["device"],
                    _short_ep(p["provider"]),
                    "-" if p["nodes_supported"] is None else f"{p['nodes_supported']}/{p['nodes_total']}",
                    "-" if p["partitions"] is None else str(p["partitions"]),
                    p["suitability"] or "-",
                    ", ".join(p["unsupported_ops"][:6]) or "-",
                    p["source"],
                ]
            )
    return rows


def _variant_section(v: Mapping[str, Any]) -> str:
    m = v["measurement"]
    pkg = v.get("package") or {}
    size = f", package {_num(pkg['package_bytes'] / 1e6, 2)} MB" if pkg.get("package_bytes") else ""
    parts = [
        f'<h2 id="variant-{_e(v["label"])}">{_e(v["label"])}</h2>',
        f"<p>{_e(v['task'])}, recipe {_e(v['recipe'] or '-')}{_e(size)}, <code>{_e(v['path'])}</code></p>",
        "<h3>Loading and memory on this host (measured)</h3>",
        _load_table(m),
        _static_table(v["static"]),
        "<h3>Latency on this host (measured)</h3>",
        _phase_table(m),
    ]
    g = m.get("generation")
    if g and not g.get("error"):
        parts.append(
            f"<p>End to end (tokenization included): time to first token {_num(g['time_to_first_token_ms'])}"
            f" ms, decode {_num(g['decode_tokens_per_s'])} tokens/s ({g.get('new_tokens')} new tokens after a "
            f"{g.get('prompt_tokens')}-token prompt).</p>"
        )
    plots = [
        histogram_svg(p["samples_ms"], p["latency"], f"{v['label']} {p['name']}: host latency") for p in m["phases"]
    ]
    parts.append('<div class="plots">' + "".join(plots) + "</div>")
    host = next((d for d in v["devices"] if d.get("measured")), None)
    est_ops = host["estimate"]["phases"][0].get("by_op_ms", {}) if host is not None else {}
    if m["phases"]:
        first = m["phases"][0]
        parts.append(
            op_bars_svg(
                first.get("top_ops", []), est_ops, f"{v['label']} {first['name']}: time per op type on the host"
            )
        )
    for p in m["phases"]:
        parts.append(f"<h3>Top nodes by time ({_e(p['name'])}) and the execution provider each device would use</h3>")
        parts.append(node_table(v, p["name"]))
    parts.append("<h3>Estimates</h3>")
    headers = [
        "device",
        "phase",
        "estimate ms",
        "error band",
        "measured p50 ms",
        "at the probe's speed ms",
        "error",
        "compute-bound ms",
        "memory-bound ms",
    ]
    parts.append(_table([*headers, "overhead ms", "inherits unverified"], _estimate_rows(v)))
    parts.append("<h3>Execution-provider coverage</h3>")
    parts.append(
        _table(["device", "provider", "nodes", "partitions", "ORT verdict", "refused ops", "source"], _coverage_rows(v))
    )
    return "<section>" + "".join(parts) + "</section>"


def _when(iso: str | None) -> str:
    return "-" if not iso else iso.replace("T", " ").replace("+00:00", " UTC")


def _load_text(load: Sequence[float] | None) -> str:
    return "unknown" if not load else " / ".join(f"{x:.2f}" for x in load)


def _generation_note(config: Mapping[str, Any]) -> str:
    parts = []
    if config.get("prompt_tokens"):
        parts.append(f"{config['prompt_tokens']}-token prompt")
    if config.get("new_tokens"):
        parts.append(f"{config['new_tokens']} new tokens end to end")
    return "; " + ", ".join(parts) if parts else ""


def _meta(report: Mapping[str, Any]) -> str:
    result, env = report["result"], report.get("environment", {})
    host, config = result.get("host") or {}, result["config"]
    providers = ", ".join(_short_ep(p) for p in config.get("providers") or ["CPUExecutionProvider"])
    rows = [
        ("date", f"{_when(host.get('started_at'))} to {_when(host.get('finished_at'))}"),
        ("host CPU", f"{host.get('cpu_model', '-')}, {host.get('logical_cores', '-')} logical CPUs"),
        (
            "load average (1 / 5 / 15 min)",
            f"{_load_text(host.get('load_average_start'))} before, {_load_text(host.get('load_average_end'))} after",
        ),
        (
            "measurement",
            f"{config['runs']} timed runs per phase after {config.get('warmup_runs', '-')} warm-up, "
            f"{config['threads']} threads, providers {providers}" + _generation_note(config),
        ),
        ("software", f"edgekit {env.get('edgekit')}, onnxruntime {env.get('onnxruntime')}, Python {env.get('python')}"),
        ("platform", str(env.get("platform"))),
    ]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="meta" id="meta"><tbody>{body}</tbody></table>'


_STYLE = (
    f"body{{{_FONT};margin:24px;color:#222;max-width:1360px}} h1{{margin-bottom:6px}}"
    " table{border-collapse:collapse;margin:8px 0 16px} td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;"
    "text-align:left} th{background:#f4f4f4} td.num{text-align:right} .plots{display:flex;flex-wrap:wrap;gap:12px}"
    " .panels{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start} .panel{border:1px solid #ddd;padding:6px}"
    " .panel-measured{border-top:4px solid #2f6db3} .panel-estimated{border-top:4px solid #e0812c}"
    " .note{color:#555;font-size:12px;max-width:1100px} table.meta th{width:210px}"
    " .summary td.meas{background:#eef4fb} .summary td.est{background:#fff1e3;font-style:italic}"
    " .summary th.meas{background:#dce8f6} .summary th.esti{background:#fde3c8} td.nofit{color:#b00;font-weight:bold}"
    " .banner{padding:10px 12px;margin:10px 0;border-radius:4px;font-size:14px}"
    " .busy{background:#fff4cc;border:1px solid #d9a400} .fail{background:#fbe3e4;border:1px solid #c4525a}"
    " section{margin-top:28px;border-top:2px solid #eee} svg{margin:6px 0} code{font-size:12px}"
)


def render_html(report: Mapping[str, Any]) -> str:
    result = report["result"]
    variants = result["variants"]
    failures = result.get("budget_failures", [])
    busy = busy_message(result.get("host") or {})
    banners = ""
    if busy:
        text = busy.removeprefix("busy host: ")
        banners += f'<div class="banner busy" id="busy-host"><strong>Busy host:</strong> {_e(text)}.</div>'
    if failures:
        banners += (
            '<div class="banner fail" id="budget-failures"><strong>Budget exceeded.</strong><br>'
            + "<br>".join(_e(f["message"]) for f in failures)
            + "</div>"
        )
    body = [
        "<h1>edgekit profile: " + _e(", ".join(v["label"] for v in variants)) + "</h1>",
        _meta(report),
        banners,
        "<h2>Summary</h2>",
        summary_table(variants),
        "<p class='note'>Blue cells are measured on this host (p50 latency, peak resident memory during inference "
        "above the process baseline); orange italic cells marked est. are roofline estimates for the device's CPU "
        "execution provider, calibrated on this host. × fp32 is the model file against the fp32 ONNX model the "
        "exporter validated against; the accuracy drop is the manifest's (primary metric, fp32 minus this "
        "variant). Fits: the estimated peak memory within the device's app budget.</p>",
        "<h2>Latency</h2>",
        latency_panels(variants),
        estimate_bands_svg(variants),
        "<h2>Memory</h2>",
        memory_svg(variants),
        *(_variant_section(v) for v in variants),
        "<p class='note'>The report's JSON (edgekit profile --json) holds every figure shown here.</p>",
    ]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>edgekit profile</title>"
        f"<style>{_STYLE}</style></head><body>" + "".join(body) + "</body></html>\n"
    )
