"""The speed-up guarantee on target devices: the profiler's estimate of the package against its fp32 graph.

Exporters take the estimate as an injected callable (they may not import the profiler); the edgekit layer
(``edgekit.export(devices=...)``, ``edgekit export --device``) supplies the profiler's. The record read back from
the manifest is checked against a direct ``edgekit.profile`` call; the warn and refuse paths use an injected
estimate and an injected host measurement, so they do not depend on this CPU or on the kernel table's figures.
"""

from __future__ import annotations

import json

import pytest

import edgekit
from edgekit.cli import main
from edgekit.devices import get_device
from edgekit.errors import (
    ConfigError,
    DeviceSlowerThanFp32Error,
    DeviceSlowerThanFp32Warning,
    SlowerThanFp32Error,
    UnknownNameError,
)
from edgekit.package import read_manifest
from edgekit.profiler.speedup import DeviceEstimator
from edgekit.session_policy import DEVICE_VERDICTS, DeviceSpeedup, device_speedup_verdict
from exporters import export
from exporters.api import _pre_quant_path
from exporters.recipes import RECIPES
from tests.conftest import SCHEMA, assert_valid_manifest
from tests.onnx_builders import mlp_classifier

DEVICES = ["raspberry-pi-5", "pixel-8"]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    return mlp_classifier(tmp_path_factory.mktemp("device-speed") / "mlp.onnx")


def _host_takes(monkeypatch, ratio: float) -> None:
    """Every interleaved host comparison reports its first half of calls (the package's set-ups) at ``ratio``
    times the second half's (the fp32 graph's) time."""
    import exporters.speed as speed

    def fake(calls, **_):
        half = max(1, len(calls) // 2)
        return [[ratio if i < half else 1.0 for i in range(len(calls))] for _ in range(7)]

    monkeypatch.setattr(speed, "interleaved", fake)


def _estimate(ratio: float, band_pct: float | None = 27.0, device: str = "pixel-8"):
    """An estimator that says the package takes ``ratio`` times the fp32 graph's time on ``device``."""
    calls = []

    def estimator(fp32_model, package_model, feeds):
        calls.append((fp32_model, package_model, {k: v.shape for k, v in feeds.items()}))
        return [
            DeviceSpeedup(
                device=device,
                speedup=round(1 / ratio, 4),
                fp32_ms=1.0,
                package_ms=ratio,
                threads=5,
                isa_class="arm-i8mm",
                band_pct=band_pct,
                band=f"±{band_pct:g} %, validated on 6 published arm-i8mm rows" if band_pct else "not validated",
                verdict=device_speedup_verdict(ratio, band_pct),
            )
        ]

    estimator.calls = calls  # type: ignore[attr-defined]
    return estimator


def test_verdict_is_beyond_the_band_either_way_or_undecided():
    assert device_speedup_verdict(1.5, 37.0) == "slower"
    assert device_speedup_verdict(1.3, 37.0) == "within-band"  # slower, but inside the estimate's error
    assert device_speedup_verdict(0.7, 37.0) == "within-band"
    assert device_speedup_verdict(0.5, 37.0) == "faster"
    assert device_speedup_verdict(3.0, None) == "not-validated"  # no band: no verdict either way
    enum = json.loads(SCHEMA.read_text())["properties"]["runtime"]["oneOf"][1]["properties"]["speedup"]["oneOf"][1]
    assert enum["properties"]["devices"]["items"]["properties"]["verdict"]["enum"] == list(DEVICE_VERDICTS)


@pytest.mark.slow  # ~14 s loaded: profile() measures both graphs in fresh processes beside its calibration suite
def test_the_record_matches_a_direct_profiler_call(mlp, tmp_path, monkeypatch):
    _host_takes(monkeypatch, 0.5)  # the host's own comparison is tested elsewhere
    # int4 has one step, so the graph before quantizing is the source graph itself: profile can take both
    res = edgekit.export(mlp, output=tmp_path / "q", task="tensor", recipe="int4", progress=False, devices=DEVICES)
    assert_valid_manifest(tmp_path / "q")
    speed = read_manifest(tmp_path / "q").runtime.speedup
    assert speed.devices == res.manifest.runtime.speedup.devices and speed.on_device_slower == "warn"
    assert [d.device for d in speed.devices] == DEVICES
    assert speed.workload == "median sample: x[1, 16]"
    report = edgekit.profile(
        [mlp, tmp_path / "q"], devices=DEVICES, input_shapes={"x": (1, 16)}, runs=3, progress=False
    )
    fp32, package = ({d.device: d for d in v.devices} for v in report.variants)
    for record in speed.devices:
        f, p = fp32[record.device].phases[0], package[record.device].phases[0]
        assert record.fp32_ms == pytest.approx(f["latency_ms"], rel=1e-4)
        assert record.package_ms == pytest.approx(p["latency_ms"], rel=1e-4)
        assert record.speedup == pytest.approx(f["latency_ms"] / p["latency_ms"], rel=1e-3)
        band = f["error_band"]
        assert (record.band_pct, record.band, record.isa_class) == (band["band_pct"], band["label"], band["isa_class"])
        assert record.threads == get_device(record.device).default_threads
        assert record.verdict == device_speedup_verdict(record.ratio, band["band_pct"])


def test_a_device_estimated_slower_warns_naming_device_ratio_and_band(mlp, tmp_path, monkeypatch):
    _host_takes(monkeypatch, 0.5)  # the host measures it faster: only the device says otherwise
    estimator = _estimate(1.6)
    with pytest.warns(DeviceSlowerThanFp32Warning) as caught:
        export(
            mlp, output=tmp_path / "w", task="tensor", recipe="int8-dynamic", progress=False, device_speedup=estimator
        )
    (message,) = [str(w.message) for w in caught if w.category is DeviceSlowerThanFp32Warning]
    assert message.startswith("the int8-dynamic package is estimated at 1.60x the time of the fp32 graph on pixel-8")
    assert "error band ±27 %" in message and "slower beyond its error band; kept" in message
    # the graph before quantizing and the package's, on the call the host timed
    fp32_model, package_model, shapes = estimator.calls[0]
    assert fp32_model == _pre_quant_path(fp32_model.parent, RECIPES.get("int8-dynamic")) != package_model
    assert shapes == {"x": (1, 16)}
    (record,) = read_manifest(tmp_path / "w").runtime.speedup.devices
    assert (record.device, record.verdict, record.speedup, record.band_pct) == ("pixel-8", "slower", 0.625, 27.0)
    assert_valid_manifest(tmp_path / "w")


def test_within_band_or_faster_is_quiet_and_unvalidated_warns_without_refusing(mlp, tmp_path, monkeypatch):
    import warnings

    _host_takes(monkeypatch, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeviceSlowerThanFp32Warning)
        export(
            mlp,
            output=tmp_path / "a",
            task="tensor",
            recipe="int8-dynamic",
            progress=False,
            device_speedup=_estimate(1.2),
        )
    assert read_manifest(tmp_path / "a").runtime.speedup.devices[0].verdict == "within-band"
    with pytest.warns(DeviceSlowerThanFp32Warning, match="without a validated band, so it is not refused"):
        export(
            mlp,
            output=tmp_path / "b",
            task="tensor",
            recipe="int8-dynamic",
            progress=False,
            device_speedup=_estimate(3.0, band_pct=None),
            on_device_slower="refuse",
        )
    assert read_manifest(tmp_path / "b").runtime.speedup.devices[0].verdict == "not-validated"
    # fp32 is the baseline, "off" compares nothing: the estimator is not called
    unused = _estimate(3.0)
    for name, kwargs in (("c", {"recipe": "fp32"}), ("d", {"recipe": "int8-dynamic", "on_slower": "off"})):
        export(mlp, output=tmp_path / name, task="tensor", progress=False, device_speedup=unused, **kwargs)
        assert read_manifest(tmp_path / name).runtime.speedup is None
    assert unused.calls == []


def test_require_device_speedup_refuses_and_writes_nothing(mlp, tmp_path, monkeypatch):
    _host_takes(monkeypatch, 0.5)
    out = tmp_path / "r"
    with pytest.raises(DeviceSlowerThanFp32Error) as err:
        export(
            mlp,
            output=out,
            task="tensor",
            recipe="int8-dynamic",
            progress=False,
            device_speedup=_estimate(1.6),
            on_device_slower="refuse",
        )
    assert err.value.code == "slower_than_fp32_on_device" and isinstance(err.value, SlowerThanFp32Error)
    assert "estimated at 1.60x the time of the fp32 graph on pixel-8" in err.value.message
    assert "±27 %" in err.value.message and err.value.message.endswith("no package was written")
    assert "--require-device-speedup" in err.value.hint
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no package, no .partial beside it


def test_cli_device_options(mlp, tmp_path, monkeypatch, capsys):
    _host_takes(monkeypatch, 0.5)
    monkeypatch.setattr(DeviceEstimator, "__call__", lambda self, *a: _estimate(1.6, device=self.device_names[0])(*a))
    base = ["quantize", str(mlp), "--task", "tensor", "--recipe", "int8-dynamic", "--device", "raspberry-pi-5"]
    assert main([*base, "--device", "host", "-o", str(tmp_path / "k")]) == 0  # host is measured, not estimated
    err = capsys.readouterr().err
    assert "WARNING the int8-dynamic package is estimated at 1.60x the time of the fp32 graph on raspberry-pi-5" in err
    (record,) = read_manifest(tmp_path / "k").runtime.speedup.devices
    assert record.device == "raspberry-pi-5"
    assert main([*base, "--require-device-speedup", "--json", "-o", str(tmp_path / "r")]) == 1
    assert json.loads(capsys.readouterr().out)["errors"][0]["code"] == "slower_than_fp32_on_device"
    assert not (tmp_path / "r").exists()


def test_device_options_are_checked_before_any_work(mlp, tmp_path):
    with pytest.raises(UnknownNameError, match="raspbery-pi-5"):
        edgekit.export(mlp, output=tmp_path / "u", task="tensor", recipe="int8-dynamic", devices=["raspbery-pi-5"])
    with pytest.raises(ConfigError, match="needs target devices to estimate"):
        export(mlp, output=tmp_path / "n", task="tensor", recipe="int8-dynamic", on_device_slower="refuse")
    with pytest.raises(ConfigError, match="on_device_slower must be one of warn, refuse"):
        export(mlp, output=tmp_path / "v", task="tensor", recipe="int8-dynamic", on_device_slower="ignore")
    with pytest.raises(ConfigError, match="which on_slower='off' skips"):
        export(
            mlp,
            output=tmp_path / "o",
            task="tensor",
            recipe="int8-dynamic",
            on_slower="off",
            on_device_slower="refuse",
            device_speedup=_estimate(1.6),
        )
    assert list(tmp_path.iterdir()) == []


def test_exporters_reach_the_profiler_only_through_the_injected_estimate():
    import grimp

    graph = grimp.build_graph("exporters", "edgekit", "runtimes")
    for importer in ("exporters.api", "exporters.speed", "exporters.device_speedup"):
        assert graph.find_shortest_chain(importer=importer, imported="edgekit.profiler.speedup") is None
        assert graph.find_shortest_chain(importer=importer, imported="edgekit.profiler") is None


def test_cli_json_report_with_real_estimates_is_valid_and_quiet(mlp, tmp_path, monkeypatch, capsys):
    from tests.test_json_reports import _report, third_party_lines

    _host_takes(monkeypatch, 0.5)
    argv = ["export", str(mlp), "--task", "tensor", "--recipe", "int8-dynamic", "-o", str(tmp_path / "p")]
    report, err = _report([*argv, "--device", "raspberry-pi-5", "--device", "intel-n100"], capsys)
    devices = report["result"]["manifest"]["runtime"]["speedup"]["devices"]
    assert [d["device"] for d in devices] == ["raspberry-pi-5", "intel-n100"]
    assert devices[1]["verdict"] == "not-validated" and devices[1]["band_pct"] is None
    assert third_party_lines(err) == []  # ONNX Runtime's optimizer runs quietly
    assert "estimated speed-up on raspberry-pi-5" in err
