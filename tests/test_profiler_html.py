"""The HTML report read back with the stdlib's html.parser: its figures are the JSON's, its plots are readable.

One real profile of two exported packages (an MLP, fp32 and int8-dynamic, so the manifest has sizes and an
accuracy report) on the host and two device profiles. The page is parsed into a small tree and checked:
the summary table holds the JSON's values, every plot has axis labels with units and a legend, measured and
estimated latencies sit on two colour scales, the busy-host banner follows the load average, the per-node
table lists the top nodes with a provider column per device. The look in a real browser is
``make report-screenshot``.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from profiler_graphs import chain

from edgekit.cli import main
from edgekit.errors import UsageError
from edgekit.profiler import api, measure
from edgekit.profiler.html import render_html
from edgekit.profiler.nodes import GraphIndex, stored_sources
from edgekit.profiler.report import load_schema, render_table

DEVICES = ["host", "raspberry-pi-5", "pixel-8"]
_VOID = {"meta", "br", "img", "input", "hr", "link"}


# ------------------------------------------------------------------------------------------- a tiny DOM


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.data: list[str] = []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        return "".join(self.data) + "".join(c.text() for c in self.children)

    def iter(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        out = []
        for c in self.children:
            if (tag is None or c.tag == tag) and (cls is None or cls in c.classes):
                out.append(c)
            out += c.iter(tag, cls)
        return out

    def by_id(self, ident: str) -> Node:
        found = [n for n in self.iter() if n.attrs.get("id") == ident]
        assert len(found) == 1, f"{len(found)} elements with id {ident!r}"
        return found[0]


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.children.append(node)
        if tag not in _VOID:
            self.cur = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.cur.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.cur))

    def handle_endtag(self, tag: str) -> None:
        node = self.cur
        while node is not self.root and node.tag != tag:
            node = node.parent  # type: ignore[assignment]
        assert node is not self.root, f"</{tag}> closes nothing"
        self.cur = node.parent  # type: ignore[assignment]

    def handle_data(self, data: str) -> None:
        self.cur.data.append(data)


def parse(page: str) -> Node:
    tree = _Tree()
    tree.feed(page)
    tree.close()
    assert tree.cur is tree.root, f"unclosed <{tree.cur.tag}>"
    return tree.root


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mlp_packages(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from onnx_builders import mlp_classifier

    from exporters import export

    root = tmp_path_factory.mktemp("html")
    source = mlp_classifier(root / "mlp.onnx", features=16, hidden=64, classes=4)
    out = []
    for recipe in ("fp32", "int8-dynamic"):
        export(
            source,
            output=root / recipe,
            task="tensor",
            recipe=recipe,
            progress=False,
            validation_samples=8,
            on_slower="warn",
        )
        out.append(root / recipe)
    return out


@pytest.fixture(scope="module")
def report(mlp_packages: list[Path]) -> dict[str, Any]:
    """One real profile (~20 s on two shared cores), with --threads 1 --providers cpu passed through."""
    result = api.profile(
        mlp_packages,
        devices=DEVICES,
        runs=15,
        input_shapes={"x": (1, 16)},
        progress=False,
        threads=1,
        providers=["cpu"],
    )
    return result.to_dict()


@pytest.fixture(scope="module")
def page(report: dict[str, Any]) -> Node:
    return parse(render_html(report))


# The tests on the page share one real profile (~20 s on two shared cores): marked slow.
slow = pytest.mark.slow


# ------------------------------------------------------------------------------------------- the page


@slow
def test_report_json_validates_and_carries_the_new_figures(report: dict[str, Any]) -> None:
    import jsonschema

    jsonschema.validate(report, load_schema())
    result = report["result"]
    assert result["config"]["threads"] == 1
    assert result["config"]["providers"] == ["CPUExecutionProvider"]
    host = result["host"]
    assert host["logical_cores"] >= 1 and host["cpu_model"]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", host["started_at"])
    for v in result["variants"]:
        m = v["measurement"]
        assert m["threads"] == 1 and m["providers"] == ["CPUExecutionProvider"]
        assert m["load_ms"] > 0 and m["warm_load_ms"] > 0
        pkg = v["package"]
        assert pkg["model_bytes"] == (Path(v["path"]) / "model.onnx").stat().st_size
        assert pkg["size_vs_fp32"] == pytest.approx(pkg["model_bytes"] / pkg["reference_model_bytes"])
        manifest = json.loads((Path(v["path"]) / "edgekit.json").read_text())
        assert pkg["accuracy"]["accuracy_drop"] == manifest["accuracy"]["metrics"]["accuracy_drop"]
    fp32, int8 = (v["package"] for v in result["variants"])
    assert int8["model_bytes"] < fp32["model_bytes"]  # int8 weights: the x fp32 column must show it


@slow
def test_summary_rows_equal_the_json(report: dict[str, Any], page: Node) -> None:
    variants = report["result"]["variants"]
    rows = page.by_id("summary").iter("tbody")[0].iter("tr")
    assert [r.attrs["data-variant"] for r in rows] == [v["label"] for v in variants]
    for row, v in zip(rows, variants, strict=True):
        cells = {(c.attrs.get("data-device", ""), c.attrs["data-field"]): c for c in row.iter("td")}
        value = {k: c.attrs["data-value"] for k, c in cells.items()}
        assert int(value[("", "model_bytes")]) == v["package"]["model_bytes"]
        assert float(value[("", "size_vs_fp32")]) == v["package"]["size_vs_fp32"]
        assert float(value[("", "accuracy_drop")]) == v["package"]["accuracy"]["accuracy_drop"]
        assert cells[("", "size_vs_fp32")].text().strip() == f"{v['package']['size_vs_fp32']:.2f}×"
        for d in v["devices"]:
            dev = d["device"]
            p50, mem = cells[(dev, "p50_ms:forward")], cells[(dev, "memory_mb")]
            if dev == "host":  # measured: the host's p50 and peak memory, on the measured tint
                assert float(p50.attrs["data-value"]) == d["measured"]["phases"]["forward"]["p50_ms"]
                assert float(mem.attrs["data-value"]) == d["measured"]["memory_mb"]
                assert "meas" in p50.classes and "est." not in p50.text()
            else:  # estimated, and says so in the cell itself
                assert float(p50.attrs["data-value"]) == d["estimate"]["phases"][0]["latency_ms"]
                assert float(mem.attrs["data-value"]) == d["estimate"]["memory_mb"]
                assert "est" in p50.classes and p50.text().strip().endswith("est.")
            assert cells[(dev, "fits")].attrs["data-value"] == repr(d["fits"])
            assert cells[(dev, "fits")].text().strip() == ("yes" if d["fits"] else "NO")


@slow
def test_every_plot_has_axis_labels_with_units_and_a_legend(page: Node, report: dict[str, Any]) -> None:
    plots = [s for s in page.iter("svg") if "plot" in s.classes]
    assert plots == page.iter("svg"), "every svg on the page is a plot held to these rules"
    # two heatmaps, the error bands and the memory chart, then per variant a histogram per phase and the op bars
    assert len(plots) == 4 + 2 * len(report["result"]["variants"])
    for svg in plots:
        name = svg.attrs["aria-label"]
        labels = [t.text() for t in svg.iter("text", "axis-label")]
        assert any(re.search(r"\((ms|MB)\b", t) for t in labels), f"{name}: no axis label with a unit: {labels}"
        legends = svg.iter("g", "legend")
        assert legends and all(g.iter("rect") or g.iter("line") for g in legends), f"{name}: no legend"
        assert len(svg.iter("text", "tick")) >= 2, f"{name}: fewer than two ticks"
    memory = page.by_id("memory")
    budgets = [t.text() for t in memory.iter("text", "budget-label")]
    assert len(budgets) == len(DEVICES) and all(re.fullmatch(r"budget [\d,]+ MB", b) for b in budgets)
    # the title is inside the drawing's width (the old chart clipped it)
    assert int(memory.attrs["width"]) >= 7 * len(memory.iter("text")[0].text())


@slow
def test_histograms_label_the_reports_own_percentiles(page: Node, report: dict[str, Any]) -> None:
    hist = [s for s in page.iter("svg") if s.attrs["aria-label"].endswith("host latency")]
    for svg, v in zip(hist, report["result"]["variants"], strict=True):
        lat = v["measurement"]["phases"][0]["latency"]
        marks = [t.text() for t in svg.iter("text", "marker")]
        assert [m.split()[0] for m in marks] == ["p50", "p90", "p99"]
        for mark, key in zip(marks, ("p50_ms", "p90_ms", "p99_ms"), strict=True):
            assert float(mark.split()[1]) == pytest.approx(lat[key], rel=0.01, abs=0.006)


def _fills(svg: Node, cls: str) -> list[tuple[int, ...]]:
    return [tuple(int(x) for x in re.findall(r"\d+", r.attrs["fill"])) for r in svg.iter("rect", cls)]


@slow
def test_measured_and_estimated_latencies_use_distinct_colour_scales(page: Node, report: dict[str, Any]) -> None:
    measured, estimated = page.by_id("heatmap-measured"), page.by_id("heatmap-estimated")
    assert measured.iter("rect", "cell-measured") and not measured.iter("rect", "cell-estimated")
    assert estimated.iter("rect", "cell-estimated") and not estimated.iter("rect", "cell-measured")
    assert [g.attrs["data-scale"] for g in measured.iter("g", "legend")] == ["measured"]
    assert [g.attrs["data-scale"] for g in estimated.iter("g", "legend")] == ["estimated"]
    # blues against oranges: no cell colour of one scale can be read on the other's legend
    assert all(b > r for r, _, b in _fills(measured, "cell-measured"))
    assert all(r > b for r, _, b in _fills(estimated, "cell-estimated"))
    variants = report["result"]["variants"]
    assert len(measured.iter("rect", "cell-measured")) == len(variants)  # one phase, host only
    assert len(estimated.iter("rect", "cell-estimated")) == len(variants) * len(DEVICES)
    first = variants[0]["measurement"]["phases"][0]["latency"]["p50_ms"]
    assert f"{first:.4f} ms (measured)" in measured.iter("rect", "cell-measured")[0].text()


@slow
def test_per_node_table_lists_the_top_nodes_with_an_ep_column_per_device(page: Node, report: dict[str, Any]) -> None:
    for v in report["result"]["variants"]:
        table = page.by_id(f"nodes-{v['label']}-forward")
        head = [th.text() for th in table.iter("th")]
        assert head[:5] == ["#", "node", "op type", "time ms/run", "share"]
        assert head[5:] == [f"EP on {d}" for d in DEVICES]
        rows = table.iter("tbody")[0].iter("tr")
        nodes = [n for n in v["nodes"] if n["phase"] == "forward"]
        top = v["measurement"]["phases"][0]["top_nodes"]
        assert [r.attrs["data-node"] for r in rows] == [n["node"] for n in nodes] == [n["node"] for n in top]
        times = [n["time_ms"] for n in nodes]
        assert times == sorted(times, reverse=True) and times
        for row, n in zip(rows, nodes, strict=True):
            eps = {c.attrs["data-device"]: c.text() for c in row.iter("td", "ep")}
            assert eps["host"] == "CPU"  # the host profile runs the CPU provider only
            assert set(eps) == set(DEVICES)
            assert n["stored_nodes"], f"{n['node']} was not traced to the stored graph"
    fp32, int8 = report["result"]["variants"]
    # The Raspberry Pi's XNNPACK takes the 2D Gemm (+ Relu) of the fp32 MLP, but has no kernel for the
    # int8 variant's DynamicQuantizeMatMul.
    assert any(n["providers"]["raspberry-pi-5"] == "XnnpackExecutionProvider" for n in fp32["nodes"])
    quant = [n for n in int8["nodes"] if n["op_type"] == "DynamicQuantizeMatMul"]
    assert quant and all(n["providers"]["raspberry-pi-5"] == "CPUExecutionProvider" for n in quant)


@slow
def test_load_times_cpu_and_load_average_are_on_the_page(page: Node, report: dict[str, Any]) -> None:
    host = report["result"]["host"]
    meta = page.by_id("meta").text()
    assert host["cpu_model"] in meta and f"{host['logical_cores']} logical CPUs" in meta
    assert f"{host['load_average_start'][0]:.2f}" in meta
    assert host["started_at"][:10] in meta
    for table, v in zip(page.iter("table", "load"), report["result"]["variants"], strict=True):
        head = [th.text() for th in table.iter("th")]
        cells = [td.text() for td in table.iter("td")]
        row = dict(zip(head, cells, strict=True))
        m = v["measurement"]
        assert float(row["first load ms (fresh process)"].replace(",", "")) == pytest.approx(m["load_ms"], abs=0.06)
        assert float(row["warm load ms (2nd session)"].replace(",", "")) == pytest.approx(m["warm_load_ms"], abs=0.06)


# ------------------------------------------------------------------------------------------- busy host


@slow
@pytest.mark.parametrize(("load", "busy"), [(None, False), (0.5, False), (64.0, True)])
def test_busy_banner_follows_the_load_average(
    report: dict[str, Any], monkeypatch: pytest.MonkeyPatch, load: float | None, busy: bool
) -> None:
    import os

    cores = os.cpu_count() or 1

    def getloadavg() -> tuple[float, float, float]:
        if load is None:
            raise OSError("no load average here")
        return (load * cores, 1.0, 1.0)

    monkeypatch.setattr(os, "getloadavg", getloadavg)
    conditions = measure.host_conditions(cpu_model="Test CPU").finish()
    assert conditions.busy is busy
    doc = {**report, "result": {**report["result"], "host": conditions.to_dict()}}
    tree = parse(render_html(doc))
    banners = [n for n in tree.iter("div") if n.attrs.get("id") == "busy-host"]
    table = render_table(doc)
    if busy:
        assert len(banners) == 1
        assert f"{64.0 * cores:.1f} on {cores} logical CPUs" in banners[0].text()
        assert "noisy" in banners[0].text() and "busy host" in table
    else:
        assert not banners and "busy host" not in table
        if load is None:
            assert conditions.to_dict()["load_average_start"] is None
            assert "unknown before" in tree.by_id("meta").text()


# ------------------------------------------------------------------------------------------- options


def test_cli_passes_the_new_options_through(
    mlp_packages: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}

    def fake_profile(packages: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise UsageError("stop here")

    monkeypatch.setattr(api, "profile", fake_profile)
    argv = ["profile", str(mlp_packages[0]), "--threads", "3", "--providers", "xnnpack", "cpu"]
    assert main([*argv, "--prompt-tokens", "64", "--new-tokens", "8"]) == 2
    assert seen["threads"] == 3 and seen["providers"] == ["xnnpack", "cpu"]
    assert seen["prompt_tokens"] == 64 and seen["new_tokens"] == 8
    assert "stop here" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threads", "0"], "threads must be a positive integer (got 0)"),
        (["--providers", "xnnpak"], "Did you mean 'xnnpack'"),
        (["--providers", "cuda"], "CUDAExecutionProvider is not in this onnxruntime build"),
        (["--prompt-tokens", "16"], "--prompt-tokens applies to text-generation packages"),
        (["--new-tokens", "-1"], "new_tokens must be a positive integer"),
    ],
)
def test_bad_options_are_usage_errors_before_measuring(
    mlp_packages: list[Path], argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["profile", str(mlp_packages[0]), "--input-shape", "x=1x16", *argv]) == 2
    err = capsys.readouterr().err
    assert "error[usage_error]" in err or "error[unknown_name]" in err
    assert message in err


def _gen_target(label: str = "lm", ids: str = "input_ids") -> Any:
    gen = SimpleNamespace(input_ids_name=ids)
    return SimpleNamespace(label=label, manifest=SimpleNamespace(generation=gen))


def test_prompt_tokens_bind_only_the_generation_input() -> None:
    lm, plain = _gen_target(), SimpleNamespace(label="mlp", manifest=None)
    assert api._shapes_for(lm, {"x": (1, 4)}, 48) == {"x": (1, 4), "input_ids": (1, 48)}
    assert api._shapes_for(plain, {"x": (1, 4)}, 48) == {"x": (1, 4)}
    api._check_generation_options([lm, plain], None, 48, 8)  # one generation package is enough
    with pytest.raises(UsageError, match="both set the prompt length") as info:
        api._check_generation_options([lm], {"input_ids": (1, 8)}, 48, None)
    assert info.value.param == "prompt_tokens"


# ------------------------------------------------------------------------------------------- node tracing


def _runtime_index(nodes: list[tuple[str, list[str], list[str]]]) -> GraphIndex:
    return GraphIndex(
        names=frozenset(n for n, _, _ in nodes),
        producer={o: n for n, _, outs in nodes for o in outs},
        inputs={n: tuple(i) for n, i, _ in nodes},
        outputs={n: tuple(o) for n, _, o in nodes},
    )


def test_measured_nodes_are_traced_to_the_stored_graph() -> None:
    stored = GraphIndex.of(chain())  # x -> relu1 -> a -> tile -> b -> relu2 -> y
    runtime = _runtime_index([("relu1", ["x"], ["a"]), ("Tile_Relu_fused", ["a", "reps"], ["y"])])
    assert stored_sources("relu1", runtime, stored) == (["relu1"], "stored node")
    sources, how = stored_sources("Tile_Relu_fused", runtime, stored)
    assert sources == ["tile", "relu2"] and how == "fused by ONNX Runtime from 2 stored node(s)"
    assert stored_sources("relu2/SomeFusion", runtime, stored) == (["relu2"], "renamed by ONNX Runtime")
    assert stored_sources("ReorderInput_7", runtime, stored)[0] == []


@slow
def test_every_device_estimate_is_drawn_with_its_error_band(page: Node, report: dict[str, Any]) -> None:
    """The band plot has one row per estimate; a validated one draws its band from est x (1 -+ band)."""
    bands = page.by_id("bands")
    estimates = [e for v in report["result"]["variants"] for d in v["devices"] for e in d["estimate"]["phases"]]
    labels = [t.text() for t in bands.iter("text", "band-label")]
    assert len(labels) == len(estimates) == len(bands.iter("circle", "estimate"))
    validated = [e for e in estimates if (e.get("error_band") or {}).get("validated")]
    assert validated and len(bands.iter("rect", "error-band")) == len(validated)
    for e in validated:
        b = e["error_band"]
        want = f"est {_ms_text(e['latency_ms'])} ms ±{b['band_pct']:.0f} %, validated on {b['class_rows']} published"
        assert any(t.startswith(want) for t in labels), (want, labels)
    assert any("compare with the measurement" in t for t in labels)  # the host: no band, said so


def _ms_text(v: float) -> str:
    from edgekit.profiler.html import _ms

    return _ms(v)


def test_band_plot_draws_bars_and_says_not_validated() -> None:
    from edgekit.profiler.html import estimate_bands_svg

    def est(ms: float, band: dict[str, Any] | None) -> dict[str, Any]:
        return {"phase": "forward", "latency_ms": ms, "error_band": band}

    ok = {"validated": True, "band_pct": 25.0, "class_rows": 12, "label": "±25 %, validated on 12 published rows"}
    no = {"validated": False, "band_pct": None, "class_rows": 0, "label": "not validated (no published x86 rows)"}
    variants = [
        {
            "label": "m",
            "devices": [
                {"device": "pi", "estimate": {"phases": [est(30.0, ok)]}},
                {"device": "n100", "estimate": {"phases": [est(8.0, no)]}},
            ],
        }
    ]
    svg = parse(estimate_bands_svg(variants)).by_id("bands")
    labels = [t.text() for t in svg.iter("text", "band-label")]
    assert labels == [
        "est 30.00 ms ±25 %, validated on 12 published rows",
        "est 8.00 ms, not validated (no published x86 rows)",
    ]
    (bar,) = svg.iter("rect", "error-band")
    assert "±25 %" in bar.text()
    assert any("(ms, log scale)" in t.text() for t in svg.iter("text", "axis-label"))
    assert svg.iter("g", "legend") and len(svg.iter("text", "tick")) >= 2
