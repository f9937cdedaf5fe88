"""The speed-up guarantee: a quantized export is timed against its own fp32 graph and refused when slower.

The decision is tested with injected measurements (``exporters.speed.interleaved`` replaced by fixed per-round
times), so nothing depends on this CPU; real exports check that the manifest carries a measured speed-up, and that
a graph int8 really makes slower (a chain of narrow products, ~2.4x: far outside any noise band) is refused.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.devices.host import detect_cpu
from edgekit.errors import ConfigError, SlowerThanFp32Error, SlowerThanFp32Warning
from edgekit.package import read_manifest
from edgekit.session_policy import SPEEDUP_TOLERANCE, speedup_verdict
from exporters import export
from exporters.speed import MAX_ROUNDS, MIN_ROUNDS
from tests.conftest import assert_valid_manifest
from tests.onnx_builders import mlp_classifier, narrow_matmul_chain


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    return mlp_classifier(tmp_path_factory.mktemp("speed") / "mlp.onnx")


def test_verdict_is_the_median_with_a_stated_tolerance():
    assert speedup_verdict([0.5, 0.6, 0.55]) == (0.55, "faster")
    # one descheduled round cannot flip a clear case either way
    assert speedup_verdict([0.7, 0.7, 3.0, 0.7, 0.7])[1] == "faster"
    assert speedup_verdict([1.3, 1.4, 0.2, 1.35, 1.3])[1] == "slower"
    assert speedup_verdict([1.0 + SPEEDUP_TOLERANCE / 2] * 3)[1] == "within-noise"
    assert speedup_verdict([1.0 + 2 * SPEEDUP_TOLERANCE] * 3)[1] == "slower"


def _package_takes(monkeypatch, ratio: float) -> None:
    """Every interleaved comparison reports its first half of calls (the package at each thread set-up) at
    ``ratio`` times the second half's (the fp32 graph's) time."""
    import exporters.speed as speed

    def fake(calls, **_):
        half = max(1, len(calls) // 2)
        return [[ratio if i < half else 1.0 for i in range(len(calls))] for _ in range(7)]

    monkeypatch.setattr(speed, "interleaved", fake)


def test_a_slower_package_is_refused_and_nothing_is_written(mlp, tmp_path, monkeypatch):
    _package_takes(monkeypatch, 1.5)
    out = tmp_path / "int8"
    with pytest.raises(SlowerThanFp32Error) as err:
        export(mlp, output=out, task="tensor", recipe="int8-dynamic", progress=False)
    assert err.value.code == "slower_than_fp32" and "1.50x the time of the fp32 graph" in err.value.message
    assert "no package was written" in err.value.message and "--allow-slower" in err.value.hint
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no package, no .partial beside it


def test_warn_keeps_it_and_records_the_verdict(mlp, tmp_path, monkeypatch):
    _package_takes(monkeypatch, 1.5)
    with pytest.warns(SlowerThanFp32Warning, match="kept because on_slower='warn'"):
        export(mlp, output=tmp_path / "w", task="tensor", recipe="int4", progress=False, on_slower="warn")
    speed = read_manifest(tmp_path / "w").runtime.speedup
    assert (speed.verdict, speed.median_ratio, speed.on_slower) == ("slower", 1.5, "warn")
    assert speed.speedup == pytest.approx(1 / 1.5, abs=1e-4) and speed.rounds == 7
    # "off" does not compare at all; fp32 is never compared (it is the baseline)
    export(mlp, output=tmp_path / "o", task="tensor", recipe="int8-dynamic", progress=False, on_slower="off")
    assert read_manifest(tmp_path / "o").runtime.speedup is None
    export(mlp, output=tmp_path / "f", task="tensor", recipe="fp32", progress=False)
    runtime = read_manifest(tmp_path / "f").runtime
    assert runtime.speedup is None and runtime.session_policy is not None


def test_cli_refuses_unless_allow_slower(mlp, tmp_path, monkeypatch, capsys):
    _package_takes(monkeypatch, 1.5)
    base = ["export", str(mlp), "--task", "tensor", "--recipe", "int8-dynamic", "--json"]
    assert main([*base, "-o", str(tmp_path / "a")]) == 1
    assert json.loads(capsys.readouterr().out)["errors"][0]["code"] == "slower_than_fp32"
    assert main([*base, "-o", str(tmp_path / "b"), "--allow-slower"]) == 0
    assert read_manifest(tmp_path / "b").runtime.speedup.verdict == "slower"


def test_on_slower_is_checked():
    with pytest.raises(ConfigError, match="on_slower must be one of refuse, warn, off"):
        export("x.onnx", output="y", task="tensor", recipe="int8-dynamic", on_slower="ignore")


def test_a_real_export_records_its_measured_speedup(mlp, tmp_path):
    export(mlp, output=tmp_path / "q", task="tensor", recipe="int8-dynamic", progress=False, on_slower="warn")
    manifest = assert_valid_manifest(tmp_path / "q")  # the schema holds the new records
    speed = read_manifest(tmp_path / "q").runtime.speedup
    assert speed.speedup > 0 and speed.median_ratio == pytest.approx(1 / speed.speedup, rel=1e-3)
    assert MIN_ROUNDS <= speed.rounds <= MAX_ROUNDS and speed.threads >= 1
    assert speed.cpu == detect_cpu().model and speed.workload.startswith("median sample: x[")
    policy = manifest["runtime"]["session_policy"]
    assert policy["rule"] in ("measured", "per-node-work") and policy["work"]["host_core_ms"] > 0


def test_a_really_slower_package_is_refused_by_default_and_recorded_with_warn(tmp_path):
    """No injected timing: int8-dynamic on narrow products over many rows measures slower than fp32 itself."""
    src = narrow_matmul_chain(tmp_path / "narrow.onnx")
    with pytest.raises(SlowerThanFp32Error) as err:
        export(src, output=tmp_path / "refused", task="tensor", recipe="int8-dynamic", progress=False)
    assert "the time of the fp32 graph" in err.value.message and "no package was written" in err.value.message
    assert not (tmp_path / "refused").exists()
    with pytest.warns(SlowerThanFp32Warning):
        export(src, output=tmp_path / "kept", task="tensor", recipe="int8-dynamic", progress=False, on_slower="warn")
    speed = read_manifest(tmp_path / "kept").runtime.speedup
    assert speed.verdict == "slower" and speed.median_ratio > 1 + speed.tolerance
    # compared against the fp32 graph at its own policy's set-up, recorded beside the package's own threads
    assert speed.fp32_threads >= 1 and isinstance(speed.fp32_spinning, bool)


def test_the_fp32_graph_runs_at_its_own_policy_not_the_packages(mlp, monkeypatch):
    """Each graph's policy comes from the same rounds by the same rule: the package ties at 1 thread (1 thread
    chosen), the fp32 graph is 2x faster on 2 cores with spinning (chosen), so the package at 1 thread is compared
    with fp32 at 2. The old comparison, fp32 at the package's 1 thread, read this package as 2x faster."""
    import exporters.speed as speed

    # columns: package at 1 / 2 spinning / 2 not spinning, then the fp32 graph at the same three
    row = [1.0, 0.95, 0.96, 2.0, 1.0, 1.2]
    monkeypatch.setattr(speed, "interleaved", lambda calls, **_: [list(row) for _ in range(7)])
    workload = speed.Workload(feeds={"x": np.ones((1, 16), np.float32)}, description="one row")
    policy, record = speed.measure_speedup(mlp, mlp, workload, cores=2, cpu="test", isa=[], on_slower="refuse")
    assert policy.intra_op_threads == 1 and record.threads == 1
    assert (record.fp32_threads, record.fp32_spinning) == (2, True)
    assert record.median_ratio == 1.0 and record.verdict == "within-noise"
