"""Device profiles: the bundled files, the loader and registry, validation messages, and host calibration."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgekit.devices import (
    BUNDLED_DIR,
    DEVICE_PATH_ENV,
    KNOWN_PROVIDERS,
    DeviceProfile,
    Precision,
    device_names,
    get_device,
    list_devices,
    load_profile,
)
from edgekit.devices import host as host_module
from edgekit.errors import DeviceProfileError, UnknownNameError

REQUIRED_DEVICES = {
    "raspberry-pi-4",
    "raspberry-pi-5",
    "jetson-orin-nano",
    "pixel-8",
    "galaxy-s24-snapdragon",
    "iphone-15-pro",
    "lowend-a53-phone",
    "intel-n100",
    "rk3588",
    "qcs6490",
    "imx8m-plus",
}
BUNDLED_FILES = sorted(BUNDLED_DIR.glob("*.toml"))
PEAK_FIELDS = {
    "peak_fp32_gflops": Precision.FP32,
    "peak_fp16_gflops": Precision.FP16,
    "peak_int8_gops": Precision.INT8,
}


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own EDGEKIT_DEVICE_PATH must not leak into the bundled-profile tests.
    monkeypatch.delenv(DEVICE_PATH_ENV, raising=False)


def _profile_text(stem: str = "raspberry-pi-5") -> str:
    return (BUNDLED_DIR / f"{stem}.toml").read_text(encoding="utf-8")


def _write_profile(directory: Path, name: str, text: str | None = None) -> Path:
    """A copy of the Raspberry Pi 5 profile renamed to ``name`` (file stem and name field)."""
    directory.mkdir(parents=True, exist_ok=True)
    body = (text or _profile_text()).replace('name = "raspberry-pi-5"', f'name = "{name}"', 1)
    path = directory / f"{name}.toml"
    path.write_text(body, encoding="utf-8")
    return path


def _valid_dict() -> dict:
    return load_profile(BUNDLED_DIR / "raspberry-pi-5.toml").to_dict()


# --- the bundled profiles ------------------------------------------------------------------------------


def test_required_devices_are_bundled() -> None:
    assert {path.stem for path in BUNDLED_FILES} >= REQUIRED_DEVICES
    assert set(device_names()) >= REQUIRED_DEVICES
    assert "host" in device_names()


@pytest.mark.parametrize("path", BUNDLED_FILES, ids=lambda p: p.stem)
def test_bundled_profile_loads_and_round_trips(path: Path) -> None:
    profile = load_profile(path)
    assert profile.name == path.stem
    data = profile.to_dict()
    json.dumps(data)  # reports embed it as JSON
    again = DeviceProfile.from_dict(data)
    assert again == profile
    assert again.to_dict() == data
    assert hash(again) == hash(profile)


@pytest.mark.parametrize("path", BUNDLED_FILES, ids=lambda p: p.stem)
def test_bundled_peaks_match_their_derivation(path: Path) -> None:
    profile = load_profile(path)
    for field_name, precision in PEAK_FIELDS.items():
        stated = getattr(profile, field_name)
        # The clusters' cores x GHz x ops/cycle must add up to the stated peak...
        assert profile.cluster_peak_gops(precision) == pytest.approx(stated, rel=0.01), field_name
        # ...and so must the formula written in its source, each term being one of the clusters.
        source = profile.sources[field_name]
        match = re.match(r"derived: ([0-9.x+ ]+)=\s*([0-9.]+)", source)
        assert match, f"{path.stem}: {field_name} source must start with 'derived: <formula> = <value>'"
        terms = [[float(factor) for factor in term.split("x")] for term in match.group(1).split("+")]
        assert sum(cores * ghz * ops for cores, ghz, ops in terms) == pytest.approx(stated, rel=0.01), source
        assert float(match.group(2)) == pytest.approx(stated, rel=0.01), source
        for cores, ghz, ops in terms:
            assert any(
                c.cores == cores
                and c.max_ghz == pytest.approx(ghz)
                and c.peak_gops(precision) == pytest.approx(cores * ghz * ops)
                for c in profile.cpu_clusters
            ), f"{path.stem}: {field_name} term {cores} x {ghz} x {ops} matches no cluster"


@pytest.mark.parametrize("path", BUNDLED_FILES, ids=lambda p: p.stem)
def test_bundled_profile_is_sourced_and_ends_on_the_cpu(path: Path) -> None:
    profile = load_profile(path)
    assert profile.provider_names[-1] == "CPUExecutionProvider"  # the fallback every ORT build has
    assert profile.app_memory_budget_mb < profile.memory_gb * 1024
    for name in profile.unverified:
        assert name in profile.sources, f"{path.stem}: unverified {name} has no source"


def test_known_provider_names_are_onnxruntime_names() -> None:
    assert set(KNOWN_PROVIDERS.names()) <= set(ort.get_all_providers())


def test_profile_values() -> None:
    pi5 = get_device("raspberry-pi-5")
    assert pi5.peak_fp32_gflops == 153.6
    assert pi5.cores == 4
    assert pi5.memory_bandwidth_gbps == 17.0
    assert pi5.provider_names == ("XnnpackExecutionProvider", "CPUExecutionProvider")
    assert not pi5.is_unverified("memory_bandwidth_gbps")
    assert [p.name for p in list_devices()] == [path.stem for path in BUNDLED_FILES]


# --- user directories ------------------------------------------------------------------------------------


def test_user_dir_argument_adds_a_device(tmp_path: Path) -> None:
    _write_profile(tmp_path / "mine", "my-board")
    profile = get_device("my-board", extra_dirs=[tmp_path / "mine"])
    assert profile.name == "my-board"
    assert "my-board" in device_names([tmp_path / "mine"])
    assert "my-board" not in device_names()


def test_user_dir_env_var_adds_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_profile(tmp_path / "a", "board-a")
    _write_profile(tmp_path / "b", "board-b")
    monkeypatch.setenv(DEVICE_PATH_ENV, os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")]))
    assert get_device("board-a").name == "board-a"
    assert get_device("board-b").name == "board-b"
    assert {"board-a", "board-b"} <= {p.name for p in list_devices()}


def test_duplicate_of_a_bundled_device_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "raspberry-pi-5.toml"
    path.write_text(_profile_text(), encoding="utf-8")
    with pytest.raises(DeviceProfileError) as info:
        get_device("raspberry-pi-5", extra_dirs=[tmp_path])
    message = str(info.value)
    assert "'raspberry-pi-5' is already defined by" in message
    assert str(path) in message and str(BUNDLED_DIR / "raspberry-pi-5.toml") in message


def test_a_file_may_not_claim_the_host_name(tmp_path: Path) -> None:
    _write_profile(tmp_path, "host")
    with pytest.raises(DeviceProfileError, match="'host' is already defined by detected at run time"):
        device_names([tmp_path])


def test_name_must_match_file_name(tmp_path: Path) -> None:
    path = tmp_path / "other-name.toml"
    path.write_text(_profile_text(), encoding="utf-8")
    with pytest.raises(DeviceProfileError, match="field 'name' must match the file name 'other-name'"):
        load_profile(path)


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DeviceProfileError, match="does not exist"):
        device_names([tmp_path / "nope"])


def test_invalid_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "broken"\nmemory_gb = \n', encoding="utf-8")
    with pytest.raises(DeviceProfileError, match=r"broken\.toml: not valid TOML"):
        load_profile(path)


# --- validation messages -----------------------------------------------------------------------------------


def test_missing_field_is_named(tmp_path: Path) -> None:
    text = re.sub(r"(?m)^memory_bandwidth_gbps = .*\n", "", _profile_text())
    path = _write_profile(tmp_path, "no-bandwidth", text)
    with pytest.raises(DeviceProfileError) as info:
        load_profile(path)
    assert str(info.value) == f"device profile {path}: field 'memory_bandwidth_gbps' is missing"
    assert info.value.param == "memory_bandwidth_gbps"
    assert info.value.code == "invalid_device_profile"


def test_missing_nested_field_is_named() -> None:
    data = _valid_dict()
    del data["cpu_clusters"][0]["max_ghz"]
    with pytest.raises(DeviceProfileError, match=r"field 'cpu_clusters\[0\]\.max_ghz' is missing"):
        DeviceProfile.from_dict(data)


def test_negative_bandwidth_is_refused(tmp_path: Path) -> None:
    text = _profile_text().replace("memory_bandwidth_gbps = 17.0", "memory_bandwidth_gbps = -17.0")
    path = _write_profile(tmp_path, "negative", text)
    with pytest.raises(DeviceProfileError) as info:
        load_profile(path)
    assert str(info.value) == (
        f"device profile {path}: field 'memory_bandwidth_gbps' must be a positive number (got -17.0)"
    )
    assert info.value.param == "memory_bandwidth_gbps"


@pytest.mark.parametrize(
    ("field_name", "value", "expected"),
    [
        ("memory_gb", "8", "field 'memory_gb' must be a positive number"),
        ("memory_gb", True, "field 'memory_gb' must be a positive number"),
        ("default_threads", 2.5, "field 'default_threads' must be a positive integer"),
        ("default_threads", 9, "field 'default_threads' must not exceed the 4 cores"),
        ("app_memory_budget_mb", 9000, "field 'app_memory_budget_mb' must not exceed memory_gb"),
        ("kind", "laptop", "field 'kind' must be one of phone, sbc, jetson, mini-pc, iot, host"),
        ("name", "Raspberry Pi", "field 'name' must be lowercase letters"),
        ("execution_providers", [], "field 'execution_providers' must not be empty"),
        ("unverified", ["memory_bandwith_gbps"], "Did you mean 'memory_bandwidth_gbps'"),
    ],
)
def test_invalid_values_are_refused_with_the_field_named(field_name: str, value: object, expected: str) -> None:
    data = _valid_dict()
    data[field_name] = value
    with pytest.raises(DeviceProfileError, match=re.escape(expected)):
        DeviceProfile.from_dict(data, origin="x.toml")


def test_unknown_execution_provider_is_refused_with_a_suggestion() -> None:
    data = _valid_dict()
    data["execution_providers"][0]["name"] = "NNAPIExecutionProvider"
    with pytest.raises(DeviceProfileError) as info:
        DeviceProfile.from_dict(data, origin="x.toml")
    message = str(info.value)
    assert message.startswith("device profile x.toml: field 'execution_providers[0].name' is invalid")
    assert "ONNX Runtime spells it 'NnapiExecutionProvider'" in message
    assert info.value.param == "execution_providers[0].name"
    data["execution_providers"][0]["name"] = "XnnpakExecutionProvider"
    with pytest.raises(DeviceProfileError, match="Did you mean 'XnnpackExecutionProvider'"):
        DeviceProfile.from_dict(data)


def test_unknown_constraint_and_duplicate_provider_are_refused() -> None:
    data = _valid_dict()
    data["execution_providers"][0]["constraints"] = ["static_shape"]
    with pytest.raises(DeviceProfileError, match=r"constraints\[0\]' is invalid.*Did you mean 'static_shapes'"):
        DeviceProfile.from_dict(data)
    data = _valid_dict()
    data["execution_providers"][1]["name"] = data["execution_providers"][0]["name"]
    with pytest.raises(DeviceProfileError, match=r"execution_providers\[1\]\.name' repeats"):
        DeviceProfile.from_dict(data)


def test_unknown_key_is_refused() -> None:
    data = _valid_dict()
    data["memory_bandwith_gbps"] = 17.0
    with pytest.raises(DeviceProfileError, match="unknown field 'memory_bandwith_gbps'. Did you mean"):
        DeviceProfile.from_dict(data)
    data = _valid_dict()
    data["cpu_clusters"][0]["ghz"] = 2.4
    with pytest.raises(DeviceProfileError, match=r"unknown field 'ghz'.* in 'cpu_clusters\[0\]'"):
        DeviceProfile.from_dict(data)


def test_every_figure_needs_a_source() -> None:
    data = _valid_dict()
    del data["sources"]["peak_int8_gops"]
    with pytest.raises(DeviceProfileError, match="field 'sources' must say where .* missing: peak_int8_gops"):
        DeviceProfile.from_dict(data)


def test_accelerator_rules() -> None:
    data = _valid_dict()
    data["accelerators"][0]["tops"] = 1.0
    with pytest.raises(DeviceProfileError, match=r"accelerators\[0\]\.precision' is missing"):
        DeviceProfile.from_dict(data)
    data["accelerators"][0].update(precision="int8", execution_provider="QNNExecutionProvider")
    with pytest.raises(DeviceProfileError, match="not in execution_providers"):
        DeviceProfile.from_dict(data)


def test_direct_construction_is_validated_too() -> None:
    profile = DeviceProfile.from_dict(_valid_dict())
    kwargs = {name: getattr(profile, name) for name in profile.to_dict()}
    kwargs["memory_bandwidth_gbps"] = 0
    with pytest.raises(DeviceProfileError, match="field 'memory_bandwidth_gbps' must be a positive number"):
        DeviceProfile(**kwargs)


# --- lookup by name ------------------------------------------------------------------------------------------


def test_unknown_device_suggests_the_close_name() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_device("pixel8")
    assert "unknown device 'pixel8'" in str(info.value)
    assert "Did you mean 'pixel-8'" in str(info.value)
    assert info.value.hint and DEVICE_PATH_ENV in info.value.hint


# --- the host ------------------------------------------------------------------------------------------------


def test_host_detection() -> None:
    cpu = host_module.detect_cpu()
    assert cpu.cores >= 1
    assert 1 <= cpu.threads <= cpu.cores
    assert all(cluster.cores >= 1 for cluster in cpu.clusters)
    memory = host_module.detect_memory()
    assert memory.available_mb > 0
    assert memory.total_mb > 0


def test_matmul_model_writer_builds_a_model_onnxruntime_runs() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 8)).astype(np.float32)
    b = rng.standard_normal((8, 8)).astype(np.float32)
    session = ort.InferenceSession(
        host_module.matmul_model_bytes("MatMul", "float32", b, "float32"), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(session.run(None, {"A": a})[0], a @ b, rtol=1e-5, atol=1e-5)
    qa = rng.integers(0, 128, (8, 8), dtype=np.uint8)
    qb = rng.integers(-64, 64, (8, 8), dtype=np.int8)
    session = ort.InferenceSession(
        host_module.matmul_model_bytes("MatMulInteger", "uint8", qb, "int32"), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_array_equal(session.run(None, {"A": qa})[0], qa.astype(np.int32) @ qb.astype(np.int32))


@pytest.fixture(scope="module")
def calibration_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edgekit-cache")


@pytest.fixture(scope="module")
def first_calibration(calibration_dir: Path) -> host_module.HostCalibration:
    return host_module.calibrate(cache_dir=calibration_dir)


def test_calibration_is_positive_and_cached(
    calibration_dir: Path, first_calibration: host_module.HostCalibration
) -> None:
    result = first_calibration
    assert not result.from_cache
    assert result.fp32_gflops > 0 and result.int8_gops > 0 and result.memory_bandwidth_gbps > 0
    assert result.fp16_gflops is None or result.fp16_gflops > 0
    assert result.seconds < 5
    cache_file = calibration_dir / host_module.CACHE_FILE
    assert cache_file.is_file()
    document = json.loads(cache_file.read_text(encoding="utf-8"))
    assert document["entries"][result.key] == result.to_dict()
    again = host_module.calibrate(cache_dir=calibration_dir)
    assert again.from_cache
    assert again.to_dict() == result.to_dict()


def test_recalibrate_measures_again(
    calibration_dir: Path, first_calibration: host_module.HostCalibration, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake_measure(cpu, memory, key, version):  # the real one is covered above; keep the suite fast
        calls.append(key)
        return host_module.HostCalibration(**{**first_calibration.to_dict(), "fp32_gflops": 1.5})

    monkeypatch.setattr(host_module, "_measure", fake_measure)
    result = host_module.calibrate(cache_dir=calibration_dir, recalibrate=True)
    assert calls and not result.from_cache and result.fp32_gflops == 1.5
    assert host_module.calibrate(cache_dir=calibration_dir).fp32_gflops == 1.5
    # Put the real figures back for the host-profile test below.
    monkeypatch.setattr(host_module, "_measure", lambda *args: first_calibration)
    host_module.calibrate(cache_dir=calibration_dir, recalibrate=True)


def test_corrupt_cache_is_a_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / host_module.CACHE_FILE).write_text("{not json", encoding="utf-8")
    sentinel = host_module.HostCalibration(
        key="k", fp32_gflops=1.0, fp16_gflops=None, int8_gops=2.0, memory_bandwidth_gbps=3.0, threads=1,
        gemm_size=8, copy_mib=8, onnxruntime_version=ort.__version__, seconds=0.1, measured_at="now",
    )  # fmt: skip
    monkeypatch.setattr(host_module, "_measure", lambda *args: sentinel)
    assert host_module.calibrate(cache_dir=tmp_path) == sentinel
    assert json.loads((tmp_path / host_module.CACHE_FILE).read_text(encoding="utf-8"))["schema_version"] == 1


def test_host_profile(
    calibration_dir: Path, first_calibration: host_module.HostCalibration, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(host_module.CACHE_DIR_ENV, str(calibration_dir))
    profile = get_device("host")
    assert profile.name == "host" and profile.kind.value == "host"
    assert profile.cores >= 1
    assert profile.peak_fp32_gflops == first_calibration.fp32_gflops
    assert profile.peak_int8_gops == first_calibration.int8_gops
    assert profile.memory_bandwidth_gbps == first_calibration.memory_bandwidth_gbps
    assert profile.sources["peak_fp32_gflops"].startswith("measured:")
    assert "CPUExecutionProvider" in profile.provider_names
    assert "AzureExecutionProvider" not in profile.provider_names
    assert profile.cluster_peak_gops("fp32") == pytest.approx(profile.peak_fp32_gflops, rel=0.01)
    assert DeviceProfile.from_dict(profile.to_dict()) == profile
