"""The speed probe: the host estimate and its check share one speed whatever mode each sample fell in."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgekit.profiler import api, calibration, measure, speed
from edgekit.profiler.estimate import DeviceRates, estimate_latency

MODES = 1.73  # the ratio of this host's two speed modes (benchmarks/README.md, profiler section)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> list[calibration.SuiteCase]:
    return calibration.build_suite(tmp_path_factory.mktemp("suite"))


def _rates() -> DeviceRates:
    """Plausible factors for this kind of host, to give every case a realistic steady time."""
    return DeviceRates(
        device="host",
        threads=2,
        gemm_gflops={"fp32": 150.0, "int8": 400.0},
        conv_gflops={"fp32": 180.0},
        vector_gflops=8.0,
        normalization_gflops=3.0,
        lrn_gflops=1.0,
        bandwidth_gbps=40.0,
        dram_bandwidth_gbps=15.0,
        cache_bytes=32 << 20,
        conv_half_reduction=60.0,
        attention_gflops={"fp32": 30.0},
        call_overhead_us={"conv": 8.0, "gemm": 3.0, "attention_core": 6.0},
        node_overhead_us=1.0,
        parallel_node_overhead_us=4.0,
        run_overhead_ms=0.01,
        io_overhead_us=0.5,
        basis="test",
    )


def _steady_ms(suite: list[calibration.SuiteCase]) -> dict[str, float]:
    rates = _rates()
    return {c.name: estimate_latency(c.name, c.analysis, rates).latency_ms for c in suite if not c.probe}


def _bimodal(n: int, slow_share: float) -> list[float]:
    """Per pass, the host's slow-down: 1 in the fast mode, MODES in the slow one (the slow passes first)."""
    slow = round(n * slow_share)
    return [MODES] * slow + [1.0] * (n - slow)


def _fitted(fit: calibration.HostEfficiency) -> dict[str, float]:
    return {
        "gemm": fit.gemm_gflops["fp32"],
        "int8": fit.gemm_gflops["int8"],
        "conv": fit.conv_peak_gflops,
        "depthwise": fit.depthwise_gflops,
        "vector": fit.vector_gflops,
        "bandwidth": fit.bandwidth_gbps,
        "node_us": fit.node_overhead_us,
        "run_ms": fit.run_overhead_ms,
    }


def test_normalised_calibration_gives_the_steady_rates_under_an_injected_slow_down(
    suite: list[calibration.SuiteCase],
) -> None:
    steady = _steady_ms(suite)
    probe_ms = 0.15
    factors = _bimodal(20, slow_share=0.8)  # the slow mode holds most passes: the raw first quartile lands in it
    samples = {k: [t * f for f in factors] for k, t in steady.items()}
    probes = {k: [probe_ms * f for f in factors] for k in steady}
    reference = probe_ms  # the model ran in the fast mode

    want = _fitted(calibration.fit(suite, {k: [t] for k, t in steady.items()}, 2))
    got = _fitted(calibration.fit(suite, samples, 2, probes_ms=probes, reference_ms=reference))
    raw = _fitted(calibration.fit(suite, samples, 2))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9), key
    # without the probe the fit describes the slow mode: every rate 1.73x lower than the model's speed
    assert raw["gemm"] == pytest.approx(want["gemm"] / MODES, rel=1e-6)
    assert raw["conv"] == pytest.approx(want["conv"] / MODES, rel=1e-6)

    # the same calibration taken wholly in the slow mode, the model in it too: the reference moves the rates
    slow = calibration.fit(
        suite,
        {k: [t * MODES] * 5 for k, t in steady.items()},
        2,
        probes_ms={k: [probe_ms * MODES] * 5 for k in steady},
        reference_ms=probe_ms * MODES,
    )
    assert slow.gemm_gflops["fp32"] == pytest.approx(want["gemm"] / MODES, rel=1e-9)


def test_both_sides_take_the_first_quartile_of_their_normalised_samples() -> None:
    assert calibration.CASE_QUANTILE == speed.SPEED_QUANTILE == 0.25
    # preempted samples (the slow half) do not move the first quartile; without probes the samples as they are
    assert calibration.case_times({"run": [1.0, 1.0, 1.0, 1.0, 9.0, 9.0, 30.0, 100.0, 100.0]}) == {"run": 1.0}
    # with probes: 2 ms at a probe twice the reference is 1 ms at the reference speed
    assert calibration.case_times({"run": [2.0, 2.0, 1.0]}, {"run": [0.2, 0.2, 0.1]}, 0.1) == {"run": 1.0}
    # a probe list that does not match the samples (an old measurement) is not used
    assert speed.normalised([1.0, 2.0], [0.1], 0.1) == [1.0, 2.0]


def _phase(samples: tuple[float, ...], probes: tuple[float, ...]) -> measure.PhaseMeasurement:
    """A forward phase whose every run has the speed probe of its moment beside it."""
    return measure.PhaseMeasurement(
        name="forward",
        latency=measure.latency_stats(samples),
        samples_ms=samples,
        items_per_run=1,
        item="inputs",
        probe_ms=probes,
    )


def test_the_model_check_equals_p50_when_only_the_speed_changes() -> None:
    factors = _bimodal(30, slow_share=0.48)  # a near-even mixture: the case the median flips on
    probes = tuple(0.15 * f for f in factors)
    samples = tuple(5.0 * f for f in factors)
    phase = _phase(samples, probes)
    trace = speed.SpeedTrace(probes_ms=probes)
    # at the reference (the probes' median) the runs' median is exactly their p50 ...
    assert phase.normalised_ms(trace.reference_ms) == pytest.approx(phase.latency.p50_ms, rel=1e-12)
    # ... and a reference in either mode gives the latency of that mode, whatever the mixture
    assert phase.normalised_ms(0.15) == pytest.approx(5.0, rel=1e-12)
    assert phase.normalised_ms(0.15 * MODES) == pytest.approx(5.0 * MODES, rel=1e-12)
    assert trace.spread == pytest.approx(MODES, rel=1e-12)


def test_host_check_compares_the_estimate_with_the_runs_at_the_reference_speed() -> None:
    # the model's runs in two speed modes, the probe beside each run seeing its mode
    factors = [1.0, 1.0, 1.0, 2.0] * 10
    samples = tuple(4.0 * f for f in factors)
    probes = tuple(0.2 * f for f in factors)
    phase = _phase(samples, probes)
    m = SimpleNamespace(phase=lambda name: phase, speed=speed.SpeedTrace(probes_ms=probes), inference_peak_rss_mb=10.0)
    check = api._host_check(m, [SimpleNamespace(phase="forward", latency_ms=4.4)], 10.0)["phases"]["forward"]
    assert check["check_ms"] == pytest.approx(4.0)
    assert check["estimate_error"] == pytest.approx(0.1)
    assert check["estimate_error_vs_p50"] == pytest.approx(0.1)


def test_the_timing_child_tags_every_sample_with_a_probe(suite: list[calibration.SuiteCase], tmp_path: Path) -> None:
    cases = [c for c in suite if c.name in ("run", "nodes", "vector", "probe")]
    feeds = tmp_path / "forward.npz"
    np.savez(feeds, x=np.ones((1, 4), np.float32))
    job = {
        "kind": "timing",
        "model_path": str(next(c.path for c in suite if c.name == "run")),
        "threads": 1,
        "runs": 30,
        "warmup": 2,
        "phases": [{"name": "forward", "feeds_file": str(feeds), "items_per_run": 1, "item": "inputs"}],
        "calibration": calibration.suite_job_entries(cases),
        "min_calibration_samples": 4,
    }
    result = measure.run_job(tmp_path, job)
    (phase,) = result["phases"]
    assert len(phase["probe_ms"]) == len(phase["samples_ms"]) == 30
    assert all(p > 0 for p in phase["probe_ms"])
    # a fast model still gets the suite between its runs: 30 runs in 10 blocks of 3, each with its own moment
    assert len(set(phase["probe_ms"])) == 10
    assert set(result["calibration_samples_ms"]) == {"run", "nodes", "vector"}  # the probe is not a fitted case
    for name, samples in result["calibration_samples_ms"].items():
        assert len(result["calibration_probe_ms"][name]) == len(samples) >= 4
    # the fixed-cost cases give HOT_CALLS back-to-back samples a pass, each tagged with that pass's moment
    samples, probes = result["calibration_samples_ms"], result["calibration_probe_ms"]
    passes, hot = len(samples["vector"]), calibration.HOT_CALLS
    assert hot > 1 and {c.name: c.calls for c in cases if not c.probe} == {"run": hot, "nodes": hot, "vector": 1}
    assert len(samples["run"]) == len(samples["nodes"]) == hot * passes
    assert [probes["run"][i * hot : (i + 1) * hot] for i in range(passes)] == [[p] * hot for p in probes["vector"]]
    m = measure.measurement_from_dict({**result, "providers": [], "load_ms": 0.0, "first_inference_ms": 0.0})
    assert m.speed.reference_ms > 0
    assert json.loads(json.dumps(m.to_dict()))["speed_probe"]["probes"] == 30
