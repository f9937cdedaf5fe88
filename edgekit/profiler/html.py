"""One self-contained HTML page for a profile report, with plots drawn as inline SVG by hand.

It renders the report's JSON (``ProfileReport.to_dict()``), nothing else, so the page can never disagree
with ``--json``. No plotting library and no script: the plots are SVG elements with ``<title>`` tooltips.

Plots: the variants x devices matrix (a heatmap of the first phase's latency), the host latency histogram
of every phase, ONNX Runtime's per-op breakdown on the host next to the estimate's, and memory bars
against each device's app budget (log scale: budgets are gigabytes, small models megabytes).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_html"]

_PALETTE = ["#3b6ea8", "#d1742f", "#4c9a5b", "#a34f9e", "#b8a431", "#5aa6b5", "#c4525a", "#777777"]
_FONT = "font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.{digits}f}"
    return f"{value:.{digits + 2}f}"


def _svg(width: int, height: int, body: Sequence[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}" style="{_FONT};font-size:11px">'
        + "".join(body)
        + "</svg>"
    )


def _text(
    x: float, y: float, s: str, *, anchor: str = "start", size: int = 11, weight: str = "normal", fill: str = "#222"
) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" font-weight="{weight}" '
        f'fill="{fill}">{_e(s)}</text>'
    )


def _rect(x: float, y: float, w: float, h: float, fill: str, title: str = "") -> str:
    tip = f"<title>{_e(title)}</title>" if title else ""
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" fill="{fill}">{tip}</rect>'


# --------------------------------------------------------------------------------------------- plots


def histogram_svg(samples: Sequence[float], title: str, *, bins: int = 24) -> str:
    """Latency histogram with the p50 / p90 / p99 marked."""
    width, height, left, bottom, top = 360, 170, 40, 30, 22
    plot_w, plot_h = width - left - 10, height - top - bottom
    body = [_text(left, 14, title, weight="bold")]
    if not samples:
        return _svg(width, height, body + [_text(left, 60, "no samples")], title)
    lo, hi = min(samples), max(samples)
    span = (hi - lo) or max(hi * 0.01, 1e-6)
    counts = [0] * bins
    for s in samples:
        counts[min(bins - 1, int((s - lo) / span * bins))] += 1
    peak = max(counts)
    bw = plot_w / bins
    for i, c in enumerate(counts):
        h = plot_h * c / peak
        body.append(
            _rect(
                left + i * bw + 0.5,
                top + plot_h - h,
                bw - 1,
                h,
                _PALETTE[0],
                f"{_num(lo + i * span / bins, 2)}-{_num(lo + (i + 1) * span / bins, 2)} ms: {c} runs",
            )
        )
    ordered = sorted(samples)
    for q, color in ((0.5, "#c4525a"), (0.9, "#d1742f"), (0.99, "#777")):
        v = ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]
        x = left + (v - lo) / span * plot_w
        body.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="{color}" '
            f'stroke-dasharray="3,2"><title>p{int(q * 100)} {_num(v, 2)} ms</title></line>'
        )
    body.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#444"/>')
    body.append(_text(left, height - 12, f"{_num(lo, 2)} ms"))
    body.append(_text(left + plot_w, height - 12, f"{_num(hi, 2)} ms", anchor="end"))
    body.append(_text(left + plot_w / 2, height - 12, "p50 / p90 / p99 dashed", anchor="middle", fill="#666"))
    body.append(_text(left - 4, top + 8, str(peak), anchor="end", fill="#666"))
    return _svg(width, height, body, title)


def op_bars_svg(measured: Sequence[Mapping[str, Any]], estimated: Mapping[str, float], title: str) -> str:
    """Horizontal bars: ONNX Runtime's kernel time per op type on the host, with the estimate's beside it."""
    ops = [o["op_type"] for o in measured][:10]
    for op in sorted(estimated, key=lambda k: -estimated[k]):
        if op not in ops and len(ops) < 10:
            ops.append(op)
    meas = {o["op_type"]: o["time_ms"] for o in measured}
    row_h, left, width = 26, 170, 560
    height = 34 + row_h * max(1, len(ops)) + 20
    top = 30
    biggest = max([*meas.values(), *(estimated.get(o, 0) for o in ops), 1e-9])
    plot_w = width - left - 70
    body = [
        _text(10, 16, title, weight="bold"),
        _rect(left, 21, 10, 6, _PALETTE[0]),
        _text(left + 14, 27, "measured (ORT profile)", size=10),
        _rect(left + 150, 21, 10, 6, _PALETTE[1]),
        _text(left + 164, 27, "estimated (host roofline)", size=10),
    ]
    for i, op in enumerate(ops):
        y = top + 8 + i * row_h
        body.append(_text(left - 6, y + 12, op, anchor="end"))
        m, e = meas.get(op), estimated.get(op)
        if m is not None:
            body.append(_rect(left, y, plot_w * m / biggest, 9, _PALETTE[0], f"{op}: {_num(m, 2)} ms measured"))
            body.append(_text(left + plot_w * m / biggest + 4, y + 8, f"{_num(m, 2)}", size=9, fill="#444"))
        if e is not None:
            body.append(_rect(left, y + 10, plot_w * e / biggest, 9, _PALETTE[1], f"{op}: {_num(e, 2)} ms estimated"))
            body.append(_text(left + plot_w * e / biggest + 4, y + 18, f"{_num(e, 2)}", size=9, fill="#444"))
    return _svg(width, height, body, title)


def memory_svg(variants: Sequence[Mapping[str, Any]]) -> str:
    """Grouped bars per device (log scale): each variant's memory, and the device's app budget as a line."""
    devices = [d["device"] for d in variants[0]["devices"]] if variants else []
    group_w, bar_gap, left, top, bottom = 40 + 22 * len(variants), 3, 60, 30, 60
    width = max(420, left + group_w * len(devices) + 20)
    height = 280
    plot_h = height - top - bottom
    values = [1.0]
    for v in variants:
        for d in v["devices"]:
            values += [
                x
                for x in (
                    d["estimate"]["memory_mb"],
                    d["app_memory_budget_mb"],
                    (d.get("measured") or {}).get("memory_mb"),
                )
                if x
            ]
    lo, hi = 1.0, max(values) * 1.5
    lo_l, hi_l = math.log10(lo), math.log10(hi)

    def y(v: float) -> float:
        return top + plot_h * (1 - (math.log10(max(v, lo)) - lo_l) / (hi_l - lo_l))

    body = [
        _text(
            10,
            16,
            "Memory per device (MB, log scale): estimated peak, measured on host; line = app budget",
            weight="bold",
        )
    ]
    decade = 10 ** math.floor(lo_l)
    while decade <= hi:
        body.append(f'<line x1="{left}" y1="{y(decade):.1f}" x2="{width - 10}" y2="{y(decade):.1f}" stroke="#eee"/>')
        body.append(_text(left - 4, y(decade) + 4, f"{decade:,.0f}", anchor="end", fill="#666"))
        decade *= 10
    for gi, dev in enumerate(devices):
        gx = left + 10 + gi * group_w
        budget = variants[0]["devices"][gi]["app_memory_budget_mb"]
        for vi, v in enumerate(variants):
            d = v["devices"][gi]
            mem = (d.get("measured") or {}).get("memory_mb") or d["estimate"]["memory_mb"]
            basis = "measured" if (d.get("measured") or {}).get("memory_mb") else "estimated"
            x = gx + vi * 22
            color = _PALETTE[vi % len(_PALETTE)] if d["fits"] else "#c4525a"
            body.append(
                _rect(
                    x,
                    y(mem),
                    22 - bar_gap,
                    top + plot_h - y(mem),
                    color,
                    f"{v['label']} on {dev}: {_num(mem)} MB {basis}; budget {budget:,.0f} MB",
                )
            )
        bx1, bx2 = gx - 4, gx + 22 * len(variants) + 2
        body.append(
            f'<line x1="{bx1:.1f}" y1="{y(budget):.1f}" x2="{bx2:.1f}" y2="{y(budget):.1f}" stroke="#222" '
            f'stroke-width="2"><title>{_e(dev)} app budget {budget:,.0f} MB</title></line>'
        )
        body.append(
            f'<g transform="translate({gx + 4:.1f},{top + plot_h + 12}) rotate(30)">' + _text(0, 0, dev) + "</g>"
        )
    legend_y = height - 8
    for vi, v in enumerate(variants):
        body.append(_rect(left + vi * 150, legend_y - 8, 10, 8, _PALETTE[vi % len(_PALETTE)]))
        body.append(_text(left + vi * 150 + 14, legend_y, v["label"], size=10))
    return _svg(width, height, body, "memory per device")


def matrix_svg(variants: Sequence[Mapping[str, Any]]) -> str:
    """Heatmap: rows variants, columns devices, color = first phase's latency (log scale)."""
    if not variants:
        return ""
    devices = [d["device"] for d in variants[0]["devices"]]
    cell_w, cell_h, left, top = 150, 54, 170, 40
    width, height = left + cell_w * len(devices) + 10, top + cell_h * len(variants) + 30
    cells = []
    for v in variants:
        phase = v["phases"][0]["name"]
        for d in v["devices"]:
            meas = ((d.get("measured") or {}).get("phases") or {}).get(phase)
            est = next(p["latency_ms"] for p in d["estimate"]["phases"] if p["phase"] == phase)
            cells.append((v, d, meas["p50_ms"] if meas else est, bool(meas)))
    lats = [c[2] for c in cells if c[2] and c[2] > 0] or [1.0]
    lo, hi = math.log10(min(lats)), math.log10(max(lats))

    def color(ms: float) -> str:
        f = 0.0 if hi == lo else (math.log10(ms) - lo) / (hi - lo)
        r, g, b = int(76 + f * (196 - 76)), int(154 - f * (154 - 82)), int(91 - f * (91 - 90))
        return f"rgb({r},{g},{b})"

    body = [
        _text(10, 16, "Variants x devices: latency of the first phase (green fast, red slow; log scale)", weight="bold")
    ]
    for j, dev in enumerate(devices):
        body.append(_text(left + j * cell_w + cell_w / 2, top - 8, dev, anchor="middle", weight="bold"))
    for i, v in enumerate(variants):
        body.append(_text(left - 8, top + i * cell_h + cell_h / 2 + 4, v["label"], anchor="end", weight="bold"))
    for k, (v, d, ms, measured) in enumerate(cells):
        i, j = k // len(devices), k % len(devices)
        x, y = left + j * cell_w, top + i * cell_h
        mem = (d.get("measured") or {}).get("memory_mb") or d["estimate"]["memory_mb"]
        tip = (
            f"{v['label']} on {d['device']}: {_num(ms, 2)} ms ({'measured p50' if measured else 'estimated'}), "
            f"{_num(mem)} MB, {'fits' if d['fits'] else 'does not fit'}"
        )
        body.append(_rect(x + 1, y + 1, cell_w - 2, cell_h - 2, color(ms), tip))
        body.append(
            _text(
                x + cell_w / 2,
                y + 22,
                f"{_num(ms, 2)} ms{'' if measured else ' (est)'}",
                anchor="middle",
                weight="bold",
                fill="#fff",
            )
        )
        body.append(
            _text(
                x + cell_w / 2,
                y + 40,
                f"{_num(mem)} MB  {'fits' if d['fits'] else 'NO FIT'}",
                anchor="middle",
                fill="#fff",
                size=10,
            )
        )
    return _svg(width, height, body, "variants by devices")


# ---------------------------------------------------------------------------------------------- page


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _variant_section(v: Mapping[str, Any]) -> str:
    parts = [
        f"<h2>{_e(v['label'])}</h2>",
        f"<p>{_e(v['task'])}, recipe {_e(v['recipe'] or '-')}, <code>{_e(v['path'])}</code></p>",
    ]
    s = v["static"]
    parts.append(
        _table(
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
    )
    m = v["measurement"]
    parts.append(
        _table(
            [
                "cold load ms",
                "load adds MB",
                "load peak MB",
                "first inference ms",
                "peak during inference MB",
                "ORT overhead MB",
                "threads",
            ],
            [
                [
                    _num(m["load_ms"]),
                    _num(m["load_rss_mb"]),
                    _num(m["load_peak_rss_mb"]),
                    _num(m["first_inference_ms"]),
                    _num(m["inference_peak_rss_mb"]),
                    _num(m["runtime_overhead_mb"]),
                    str(m["threads"]),
                ]
            ],
        )
    )
    rows = []
    for p in m["phases"]:
        lat = p["latency"]
        rows.append(
            [
                p["name"],
                str(lat["runs"]),
                _num(lat["p50_ms"], 2),
                _num(lat["p90_ms"], 2),
                _num(lat["p99_ms"], 2),
                _num(lat["mean_ms"], 2),
                _num(lat["std_ms"], 2),
                f"{_num(p['throughput_per_s'])} {p['throughput_unit']}",
            ]
        )
    parts.append(_table(["phase", "runs", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "throughput"], rows))
    g = m.get("generation")
    if g and not g.get("error"):
        parts.append(
            f"<p>End to end (tokenization included): time to first token {_num(g['time_to_first_token_ms'])}"
            f" ms, decode {_num(g['decode_tokens_per_s'])} tokens/s.</p>"
        )
    host = next((d for d in v["devices"] if d.get("measured")), None)
    plots = []
    for p in m["phases"]:
        plots.append(histogram_svg(p["samples_ms"], f"{v['label']} {p['name']}: host latency"))
    parts.append('<div class="plots">' + "".join(plots) + "</div>")
    est_ops = {}
    if host is not None:
        first = host["estimate"]["phases"][0]
        est_ops = first.get("by_op_ms", {})
    if m["phases"]:
        parts.append(
            op_bars_svg(
                m["phases"][0].get("top_ops", []),
                est_ops,
                f"{v['label']} {m['phases'][0]['name']}: time per op type on the host (ms)",
            )
        )
    rows = []
    for d in v["devices"]:
        for e in d["estimate"]["phases"]:
            meas = ((d.get("measured") or {}).get("phases") or {}).get(e["phase"])
            rows.append(
                [
                    d["device"],
                    e["phase"],
                    _num(e["latency_ms"], 2),
                    _num(meas["p50_ms"], 2) if meas else "-",
                    f"{meas['estimate_error']:+.0%}" if meas and meas["estimate_error"] is not None else "-",
                    _num(e["compute_bound_ms"], 2),
                    _num(e["memory_bound_ms"], 2),
                    _num(e["overhead_ms"], 2),
                    ", ".join(d["estimate"]["inherits_unverified"]) or "-",
                ]
            )
    parts.append("<h3>Estimates</h3>")
    parts.append(
        _table(
            [
                "device",
                "phase",
                "estimate ms",
                "measured p50 ms",
                "error",
                "compute-bound ms",
                "memory-bound ms",
                "overhead ms",
                "inherits unverified",
            ],
            rows,
        )
    )
    rows = []
    for d in v["devices"]:
        for p in d["coverage"]["providers"]:
            rows.append(
                [
                    d["device"],
                    p["provider"],
                    "-" if p["nodes_supported"] is None else f"{p['nodes_supported']}/{p['nodes_total']}",
                    "-" if p["partitions"] is None else str(p["partitions"]),
                    p["suitability"] or "-",
                    ", ".join(p["unsupported_ops"][:6]) or "-",
                    p["source"],
                ]
            )
    parts.append("<h3>Execution-provider coverage</h3>")
    parts.append(_table(["device", "provider", "nodes", "partitions", "ORT verdict", "refused ops", "source"], rows))
    return "<section>" + "".join(parts) + "</section>"


def render_html(report: Mapping[str, Any]) -> str:
    result = report["result"]
    variants = result["variants"]
    env = report.get("environment", {})
    failures = result.get("budget_failures", [])
    banner = ""
    if failures:
        banner = '<div class="fail">' + "<br>".join(_e(f["message"]) for f in failures) + "</div>"
    body = [
        "<h1>edgekit profile</h1>",
        f"<p class='meta'>edgekit {_e(env.get('edgekit'))}, onnxruntime {_e(env.get('onnxruntime'))}, "
        f"{_e(env.get('platform'))}; {result['config']['runs']} runs per phase, "
        f"{result['config']['threads']} threads; status {_e(report.get('status'))}</p>",
        banner,
        matrix_svg(variants),
        memory_svg(variants),
        *(_variant_section(v) for v in variants),
        "<p class='meta'>Host figures are measured; other devices are roofline estimates for the CPU execution "
        "provider with efficiencies calibrated on this host. The report's JSON holds every figure shown here.</p>",
    ]
    style = (
        f"body{{{_FONT};margin:24px;color:#222;max-width:1200px}} table{{border-collapse:collapse;margin:8px 0 16px}}"
        " td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;text-align:left} th{background:#f4f4f4}"
        " .plots{display:flex;flex-wrap:wrap;gap:12px} .meta{color:#666;font-size:12px}"
        " .fail{background:#fbe3e4;border:1px solid #c4525a;padding:8px;margin:8px 0} section{margin-top:28px}"
        " svg{margin:6px 0}"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>edgekit profile</title>"
        f"<style>{style}</style></head><body>" + "".join(body) + "</body></html>\n"
    )
