"""``edgekit tune``: variants, per-device picks under budgets, the report, resume from the cache, Ray.

The tuned model is the hand-built MLP of tests/onnx_builders.py (MatMuls, so int4 applies), with two variants
besides fp32 so the suite stays short. One tune runs per module (``tuned``); the other cases reuse its trial
cache, which is what a repeated tune does.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import assert_valid_manifest
from onnx_builders import mlp_classifier

from edgekit.cli import main
from edgekit.errors import BudgetExceededError, MissingDependencyError, OutputExistsError, UnknownNameError, UsageError
from edgekit.progress import QUIET
from edgekit.tuning.measure import DeviceFigures
from edgekit.tuning.pareto import Budgets, choose, pareto_front
from edgekit.tuning.report import SCHEMA_PATH
from edgekit.tuning.trials import TrialResult
from edgekit.tuning.variants import FAMILIES, ModelFacts, Variant, enumerate_variants, select
from exporters.recipes import Int4Config, Int8DynamicConfig

VARIANTS = ["int8-dynamic,smoothing=false,weight_type=int8", "int4,block_size=128"]
DEVICES = ["host", "pixel-8"]
BUDGET = 0.05
COMMON = {"task": "tensor", "input_shapes": {"x": (1, 16)}, "runs": 5, "progress": False}


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mlp_classifier(tmp_path_factory.mktemp("src") / "mlp.onnx")


@pytest.fixture(scope="module")
def tuned(mlp: Path, tmp_path_factory: pytest.TempPathFactory):
    from edgekit.tuning import tune

    out = tmp_path_factory.mktemp("tune") / "out"
    result = tune(mlp, output=out, devices=DEVICES, variants=VARIANTS, max_accuracy_drop=BUDGET, **COMMON)
    return result


def _trial_mtimes(cache: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (cache / "trials").glob("*/trial.json")}


# ------------------------------------------------------------------------------------- variant families


def test_every_family_enumerates_validated_configs_when_it_applies() -> None:
    facts = ModelFacts(op_types=frozenset({"MatMul"}), has_calibration=True, max_accuracy_drop=0.01)
    variants, skipped = enumerate_variants(facts)
    assert skipped == []
    recipes = {v.recipe for v in variants}
    assert recipes == {f.recipe for f in FAMILIES}
    names = [v.name for v in variants]
    assert len(names) == len(set(names)), "variant names are unique labels"
    assert variants[0].name == "fp32"
    assert "int8-dynamic,per_channel=false,smoothing=false,weight_type=uint8" in names
    assert {"int8-static,method=entropy", "int4,accuracy_level=none,block_size=128", "int8-dynamic+mixed"} <= set(names)
    assert sum(v.recipe == "int8-dynamic" and not v.mixed for v in variants) == 12


def test_families_that_do_not_apply_say_why() -> None:
    facts = ModelFacts(op_types=frozenset({"Conv", "Gemm"}), has_calibration=False, max_accuracy_drop=None)
    variants, skipped = enumerate_variants(facts)
    reasons = {s.family: s.reason for s in skipped}
    assert set(reasons) == {"int4", "int8-static", "int8-dynamic+mixed", "int8-static+mixed"}
    assert "no MatMul" in reasons["int4"]
    assert "--calibration" in reasons["int8-static"]
    assert "--max-accuracy-drop" in reasons["int8-dynamic+mixed"]
    assert {v.recipe for v in variants} == {"fp32", "fp16", "int8-dynamic"}


def test_select_keeps_fp32_first_and_names_the_choices_when_nothing_matches() -> None:
    variants, _ = enumerate_variants(
        ModelFacts(op_types=frozenset({"MatMul"}), has_calibration=False, max_accuracy_drop=None)
    )
    chosen = select(variants, ["int4"], None)
    assert [v.recipe for v in chosen] == ["fp32", "int4", "int4", "int4", "int4"]
    assert len(select(variants, None, 3)) == 3
    with pytest.raises(UsageError) as err:
        select(variants, ["int3*"], None)
    assert "matches none" in err.value.message and "int4,block_size=128" in (err.value.hint or "")


# ----------------------------------------------------------------------------------- choosing per device


def _trial(name: str, recipe: str, drop: float, config: object) -> TrialResult:
    return TrialResult(
        key=name, source_name="m", variant=Variant(recipe=recipe, config=config), status="ok", accuracy_drop=drop
    )


def _fig(ms: float, mb: float = 10.0, fits: bool = True) -> DeviceFigures:
    return DeviceFigures(
        device="d", phase="forward", latency_ms=ms, basis="estimated", memory_mb=mb, app_memory_budget_mb=20.0,
        fits=fits, phases_ms={"forward": ms},
    )  # fmt: skip


def test_choose_applies_budgets_the_fp32_bar_and_the_front() -> None:
    from exporters.recipes import Fp32Config

    trials = [
        _trial("a", "fp32", 0.0, Fp32Config()),
        _trial("b", "int8-dynamic", 0.002, Int8DynamicConfig(smoothing=False)),  # fastest, within budget
        _trial("c", "int4", 0.03, Int4Config()),  # faster still but over the accuracy budget
        _trial("d", "int4", 0.001, Int4Config(block_size=128)),  # slower than fp32
        _trial("e", "int8-dynamic", 0.001, Int8DynamicConfig()),  # within budget, slower than b
    ]
    figures = {"a": _fig(10.0), "b": _fig(4.0), "c": _fig(3.0), "d": _fig(12.0), "e": _fig(6.0, fits=False)}
    pick = choose("m", "d", trials, figures, Budgets(max_accuracy_drop=0.01))
    assert pick.picked == trials[1].variant.name and pick.within_budget
    why = {c.variant: c.reasons for c in pick.candidates}
    assert why[trials[1].variant.name] == ()
    assert "accuracy drop 0.0300 is over the budget of 0.01" in why[trials[2].variant.name]
    assert why[trials[3].variant.name] == ("not faster than fp32 on d (12.000 ms vs 10.000 ms)",)
    assert any("the device gives one app 20 MB" in r for r in why[trials[4].variant.name])
    assert why["fp32"] == (f"slower than {trials[1].variant.name} on d (10.000 ms vs 4.000 ms)",)
    front = {c.variant for c in pick.candidates if c.pareto}
    # c (fastest), b, e (lowest quantized drop at 6 ms) and fp32 (no drop) are not dominated; d is.
    assert front == {trials[i].variant.name for i in (0, 1, 2, 4)}


def test_latencies_within_the_tie_fraction_pick_the_smaller_model_whatever_the_noise() -> None:
    from dataclasses import replace

    from exporters.recipes import Fp32Config

    trials = [
        replace(_trial("a", "fp32", 0.0, Fp32Config()), model_bytes=400),
        replace(_trial("b", "int8-dynamic", 0.004, Int8DynamicConfig(smoothing=False)), model_bytes=120),
        replace(_trial("c", "int8-dynamic", 0.002, Int8DynamicConfig()), model_bytes=100),
        replace(_trial("d", "int4", 0.003, Int4Config()), model_bytes=60),
    ]
    # Two runs of one tune on a noisy host: b and c swap places by 3 %; d is 8 % slower than the fastest.
    runs = [{"a": 10.0, "b": 4.00, "c": 4.12, "d": 4.32}, {"a": 10.0, "b": 4.12, "c": 4.00, "d": 4.32}]
    picks = [choose("m", "d", trials, {k: _fig(v) for k, v in r.items()}, Budgets()) for r in runs]
    assert [p.picked for p in picks] == [trials[2].variant.name] * 2, "c: as fast as b within 5 %, and smaller"
    why = {c.variant: c.reasons for c in picks[0].candidates}
    assert why[trials[1].variant.name] == (
        f"ties with {trials[2].variant.name} on d (4.000 ms vs 4.120 ms, within 5%), which is smaller (100 vs 120 bytes)",
    )
    assert why[trials[3].variant.name] == (f"slower than {trials[2].variant.name} on d (4.320 ms vs 4.120 ms)",)
    strict = choose("m", "d", trials, {k: _fig(v) for k, v in runs[0].items()}, Budgets(), latency_tie=0.0)
    assert strict.picked == trials[1].variant.name, "no tie fraction: the fastest measured wins"
    wide = choose("m", "d", trials, {k: _fig(v) for k, v in runs[0].items()}, Budgets(), latency_tie=0.1)
    assert wide.picked == trials[3].variant.name


def test_nothing_within_budget_falls_back_to_fp32_with_the_reason() -> None:
    from exporters.recipes import Fp32Config

    trials = [_trial("a", "fp32", 0.0, Fp32Config()), _trial("b", "int4", 0.001, Int4Config())]
    pick = choose("m", "d", trials, {"a": _fig(10.0), "b": _fig(8.0)}, Budgets(max_latency_ms=1.0))
    assert pick.picked == "fp32" and not pick.within_budget
    assert pick.reason.startswith(
        "no variant meets the budgets on d; fp32 is the fallback: estimated forward latency 10.000 ms"
    )


def test_pareto_front_ignores_dominated_points() -> None:
    assert pareto_front({"a": (1.0, 0.5), "b": (2.0, 0.1), "c": (2.5, 0.2), "d": (1.0, 0.5)}) == {"a", "b", "d"}


# --------------------------------------------------------------------------------------- a real tune


@pytest.mark.slow
def test_tune_writes_the_best_package_per_device_within_budget(tuned) -> None:
    out = tuned.output_dir
    assert tuned.within_budget and tuned.error() is None
    assert [p.device for p in tuned.picks] == DEVICES
    trials = {t.variant.name: t for t in tuned.sources[0].trials}
    assert list(trials) == ["fp32", *VARIANTS]
    assert all(t.status == "ok" for t in trials.values())
    for pick in tuned.picks:
        pkg = Path(pick.package_dir)
        assert pkg == out / pick.device
        manifest = assert_valid_manifest(pkg)
        trial = trials[pick.picked]
        assert manifest["recipe"]["name"] == trial.variant.recipe
        model = next(f for f in manifest["files"] if f["path"] == "model.onnx")
        assert model["sha256"] == trial.model_sha256
        assert manifest["accuracy"]["metrics"]["accuracy_drop"] <= BUDGET
        cands = {c.variant: c for c in pick.candidates}
        assert set(cands) == set(trials), "every variant is listed for every device"
        fp32 = cands["fp32"]
        best = cands[pick.picked]
        for c in cands.values():
            if c.status != "picked":
                assert c.reasons, f"{c.variant} lost without a reason"
        # The pick is the fastest variant no budget or the fp32 bar excludes, and is not slower than fp32.
        assert best.latency_ms <= fp32.latency_ms
        eligible = [c for c in cands.values() if not any(not r.startswith("slower than") for r in c.reasons)]
        assert best.latency_ms == min(c.latency_ms for c in eligible)
        assert best.basis == ("measured p50" if pick.device == "host" else "estimated")


@pytest.mark.slow
def test_the_report_is_valid_json_with_svg_plots(tuned) -> None:
    import jsonschema

    report = json.loads((tuned.output_dir / "tune.json").read_text())
    jsonschema.validate(report, json.loads(SCHEMA_PATH.read_text()))
    assert report["kind"] == "tune" and report["status"] == "ok"
    assert report["result"] == json.loads(json.dumps(tuned.to_dict()["result"]))
    page = (tuned.output_dir / "tune.html").read_text()
    svgs = re.findall(r"<svg .*?</svg>", page, flags=re.S)
    assert len(svgs) == 2 * len(DEVICES)  # a scatter and a memory chart per device
    for svg in svgs:
        ET.fromstring(svg)  # well-formed
    assert "pixel-8 latency, ms (estimated)" in page and "host latency, ms (measured p50)" in page
    assert page.count("accuracy drop vs fp32, %") == len(DEVICES) and "peak memory, MB" in page
    assert all(v in page for v in VARIANTS)
    table = tuned.render_table()
    assert "mlp on pixel-8:" in table and "int4,block_size=128" in table


@pytest.mark.slow
def test_a_repeated_tune_exports_and_measures_nothing(tuned, mlp: Path) -> None:
    from edgekit.tuning import tune

    cache = tuned.output_dir / ".trials"
    before = _trial_mtimes(cache)
    measured = sorted((cache / "measure").glob("*.json"))
    again = tune(mlp, output=tuned.output_dir, devices=DEVICES, variants=VARIANTS, max_accuracy_drop=BUDGET, **COMMON)
    assert again.trials_run == 0
    assert all(t.cached for t in again.sources[0].trials)
    assert _trial_mtimes(cache) == before
    assert sorted((cache / "measure").glob("*.json")) == measured
    assert [p.picked for p in again.picks] == [p.picked for p in tuned.picks]


@pytest.mark.slow
def test_an_interrupted_trial_is_the_only_one_run_again(tuned, mlp: Path, tmp_path: Path) -> None:
    from edgekit.tuning import tune

    cache = tmp_path / "cache"
    shutil.copytree(tuned.output_dir / ".trials", cache)
    lost = next(t for t in tuned.sources[0].trials if t.variant.name == VARIANTS[1])
    (cache / "trials" / lost.key / "trial.json").unlink()  # the trial was cut off before its record
    again = tune(
        mlp,
        output=tmp_path / "out",
        cache_dir=cache,
        devices=DEVICES,
        variants=VARIANTS,
        max_accuracy_drop=BUDGET,
        **COMMON,
    )
    assert again.trials_run == 1
    redone = {t.variant.name: t for t in again.sources[0].trials}
    assert not redone[VARIANTS[1]].cached and redone[VARIANTS[1]].model_sha256 == lost.model_sha256
    assert redone["fp32"].cached and redone[VARIANTS[0]].cached
    assert (tmp_path / "out" / "host" / "edgekit.json").is_file()


def test_trials_share_one_conversion_and_export_the_same_bytes(mlp: Path, tmp_path: Path, monkeypatch) -> None:
    import exporters
    from edgekit.hashing import sha256_tree
    from edgekit.tuning import conversion
    from exporters import sources

    calls: list[str] = []
    real = sources.convert_source
    monkeypatch.setattr(sources, "convert_source", lambda s, *a: calls.append(str(s)) or real(s, *a))
    conversion.register()
    shared = conversion.SharedConversion(path=str(mlp), sha256=sha256_tree(mlp), store=str(tmp_path / "store"))
    common = {"task": "tensor", "progress": False, "on_slower": "off"}  # the bytes matter here, not speed
    plain = exporters.export(mlp, output=tmp_path / "plain", recipe="int8-dynamic", **common).manifest
    got = [exporters.export(shared, output=tmp_path / r, recipe=r, **common).manifest for r in ("fp32", "int8-dynamic")]
    assert calls == [str(mlp)], "the second trial copies the stored conversion"
    assert len(list((tmp_path / "store").iterdir())) == 1
    sha = [next(f.sha256 for f in m.files if f.path == "model.onnx") for m in (plain, got[1])]
    assert sha[0] == sha[1], "the same int8 model from the shared conversion"
    assert (got[1].name, got[1].source.path, got[1].source.sha256) == (
        plain.name,
        plain.source.path,
        plain.source.sha256,
    )
    assert got[1].accuracy["metrics"] == plain.accuracy["metrics"]


@pytest.mark.slow
def test_budgets_nothing_meets_give_fp32_and_exit_3(tuned, mlp: Path, tmp_path: Path, capsys) -> None:
    args = ["tune", str(mlp), "--task", "tensor", "--input-shape", "x=1x16", "--runs", "5", "-q", "--json"]
    args += ["--cache-dir", str(tuned.output_dir / ".trials"), "-o", str(tmp_path / "out"), "--max-latency-ms", "1e-6"]
    for d in DEVICES:
        args += ["--device", d]
    for v in VARIANTS:
        args += ["--variants", v]
    assert main(args) == 3
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    import jsonschema

    jsonschema.validate(report, json.loads(SCHEMA_PATH.read_text()))
    assert report["result"]["config"]["max_latency_ms"] == 1e-6
    assert report["status"] == "failed" and report["result"]["trials_run"] == 0
    for pick in report["result"]["picks"]:
        assert pick["picked"] == "fp32" and not pick["within_budget"]
        assert "fp32 is the fallback" in pick["reason"] and "over the budget of 1e-06 ms" in pick["reason"]
        assert (tmp_path / "out" / pick["device"] / "edgekit.json").is_file()
    assert "error[budget_exceeded]: mlp on host: no variant meets the budgets on host" in captured.err


@pytest.mark.slow
def test_several_sources_give_one_report(tuned, mlp: Path, tmp_path: Path) -> None:
    from edgekit.tuning import tune

    other = mlp_classifier(tmp_path / "mlp-wide.onnx", hidden=128, seed=1)
    cache = tuned.output_dir / ".trials"
    result = tune(
        [mlp, other], output=tmp_path / "out", cache_dir=cache, devices=["pixel-8"], variants=["fp32"], **COMMON
    )
    assert [s.name for s in result.sources] == ["mlp", "mlp-wide"]
    assert result.trials_run == 1  # the first model's trial is in the cache
    assert [(p.source, p.device) for p in result.picks] == [("mlp", "pixel-8"), ("mlp-wide", "pixel-8")]
    for p in result.picks:
        assert Path(p.package_dir) == tmp_path / "out" / p.source / "pixel-8"
        assert (Path(p.package_dir) / "model.onnx").is_file()
    report = json.loads((tmp_path / "out" / "tune.json").read_text())
    assert len(report["result"]["sources"]) == 2 and len(report["result"]["picks"]) == 2


# ----------------------------------------------------------------------------------------- bad input


def test_bad_input_fails_before_any_export(mlp: Path, tmp_path: Path) -> None:
    from edgekit.tuning import tune

    with pytest.raises(UnknownNameError) as err:
        tune(mlp, output=tmp_path / "a", devices=["pixel8"], **COMMON)
    assert "Did you mean 'pixel-8'" in err.value.message
    with pytest.raises(UsageError) as err:
        tune(mlp, output=tmp_path / "b", max_accuracy_drop=1.5, **COMMON)
    assert err.value.code == "usage_error" and "max_accuracy_drop must be a fraction" in err.value.message
    with pytest.raises(UsageError, match="latency_tie must be a fraction"):
        tune(mlp, output=tmp_path / "b", latency_tie=-0.1, **COMMON)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError) as err:
        tune(mlp, output=taken, **COMMON)
    assert "is not a tune directory" in err.value.message
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_trials_tell_the_exporter_not_to_refuse_slower_packages(monkeypatch, tmp_path: Path) -> None:
    from types import SimpleNamespace

    import exporters
    from edgekit.tuning import trials

    seen: dict = {}

    def fake_export(source, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(exporters, "export", fake_export)
    monkeypatch.setattr(trials, "_shared_source", lambda spec: "src")
    settings = SimpleNamespace(
        validation_samples=8, calibration=None, validation_data=None, with_kv_cache=False, task="feature-extraction"
    )
    variant = SimpleNamespace(config={}, mixed=False, recipe="int8-dynamic")
    spec = SimpleNamespace(variant=variant, settings=settings, max_accuracy_drop=None, package_name="p", key="k")
    monkeypatch.setattr(trials, "to_dict", lambda cfg: {})
    record = trials.run_trial(spec, tmp_path)
    assert record["status"] == "failed" and "stop here" in str(record["error"])
    assert seen["on_slower"] == "off", "tune measures and reports slower variants itself"


def test_ray_without_the_extra_names_it(mlp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.tuning import tune

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(MissingDependencyError) as err:
        tune(mlp, output=tmp_path / "out", executor="ray", **COMMON)
    assert err.value.code == "missing_dependency" and "edgekit[sweep]" in (err.value.hint or "")


def test_a_failed_baseline_is_the_error_of_the_source(tmp_path: Path) -> None:
    from edgekit.errors import CorruptModelError
    from edgekit.tuning import tune

    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx model" * 10)
    with pytest.raises(CorruptModelError) as err:
        tune(bad, output=tmp_path / "out", workers=1, **{**COMMON, "input_shapes": None})
    assert err.value.code == "corrupt_model" and "the fp32 baseline of broken failed" in err.value.message


def test_budget_error_names_the_first_device_over_budget() -> None:
    from edgekit.tuning.api import TuneResult
    from edgekit.tuning.pareto import DevicePick

    over = DevicePick(
        source="m", device="pixel-8", picked="fp32", within_budget=False, reason="r", package_dir=None, candidates=()
    )
    result = TuneResult(config={}, sources=(), picks=(over,), output_dir=Path("x"), seconds=0.0, trials_run=0)
    err = result.error()
    assert isinstance(err, BudgetExceededError) and err.exit_code == 3 and err.message == "m on pixel-8: r"


# ------------------------------------------------------------------------------------------------ Ray


@pytest.mark.slow
def test_ray_trials_match_the_local_ones(tuned, mlp: Path, tmp_path: Path) -> None:
    import ray  # the sweep extra is part of the test install

    from edgekit.tuning import tune

    cache = tmp_path / "cache"
    # Same models => the measurement cache (keyed by the model's sha256) answers, and the picks must agree.
    shutil.copytree(tuned.output_dir / ".trials" / "measure", cache / "measure")
    result = tune(
        mlp, output=tmp_path / "out", cache_dir=cache, devices=DEVICES, variants=VARIANTS, max_accuracy_drop=BUDGET,
        executor="ray", **COMMON,
    )  # fmt: skip
    assert not ray.is_initialized(), "the tune shuts down the Ray instance it started"
    assert result.trials_run == 1 + len(VARIANTS)
    local = {t.variant.name: t for t in tuned.sources[0].trials}
    for t in result.sources[0].trials:
        assert t.model_sha256 == local[t.variant.name].model_sha256
        assert t.accuracy_drop == pytest.approx(local[t.variant.name].accuracy_drop, abs=1e-12)
        assert (Path(t.package_dir) / "edgekit.json").is_file()
    assert sorted((cache / "measure").glob("*.json")) != [] and result.config["executor"] == "ray"
    assert [p.picked for p in result.picks] == [p.picked for p in tuned.picks]


def test_a_package_the_profiler_cannot_run_loses_only_its_own_figures(tmp_path: Path, monkeypatch) -> None:
    from edgekit.tuning import measure

    def fake_profiler(*args, **kwargs):
        def run(packages: list[str]) -> dict:
            if "bad" in packages:
                raise ValueError("invalid model with missing inputs")  # the profiler's bug, not ours
            device = {"device": "pixel-8", "estimate": {"phases": [{"phase": "forward", "latency_ms": 2.0}], "memory_mb": 5.0},
                      "app_memory_budget_mb": 100.0, "fits": True, "measured": None}  # fmt: skip
            return {"result": {"variants": [{"devices": [device]} for _ in packages]}}

        return run

    monkeypatch.setattr(measure, "_profiler", fake_profiler)
    figures, failed = measure.measure_packages(
        {"t1": ("good", "a" * 64), "t2": ("bad", "b" * 64)},
        devices=["pixel-8"], runs=5, input_shapes=None, cache_dir=tmp_path, device_dirs=None, progress=QUIET,
    )  # fmt: skip
    assert failed == {"t2": "the profiler failed (ValueError: invalid model with missing inputs)"}
    assert [f.latency_ms for f in figures["t1"]] == [2.0] and figures["t1"][0].basis == "estimated"
    assert "t2" not in figures
    # Not cached: a later tune tries it again. A usage error (unbound input dims) is the user's, and raised.
    assert list(tmp_path.glob("*.json")) == [tmp_path / f"{measure._key('a' * 64, ['pixel-8'], 5, None)}.json"]
    monkeypatch.setattr(measure, "_profiler", lambda *a, **k: _raise(UsageError("dims not bound: x (batch)")))
    with pytest.raises(UsageError):
        measure.measure_packages(
            {"t3": ("other", "c" * 64), "t4": ("more", "d" * 64)},
            devices=["pixel-8"], runs=5, input_shapes=None, cache_dir=tmp_path, device_dirs=None, progress=QUIET,
        )  # fmt: skip


def _raise(exc: Exception):
    def run(packages: list[str]) -> dict:
        raise exc

    return run
