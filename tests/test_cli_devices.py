"""``edgekit devices`` and ``edgekit devices show NAME`` through ``main(argv)``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgekit.cli import main
from edgekit.devices import BUNDLED_DIR

BUNDLED = sorted(p.stem for p in BUNDLED_DIR.glob("*.toml"))


def _own_profile(directory: Path, name: str, text: str | None = None) -> Path:
    """A copy of the Raspberry Pi 5 profile under another name."""
    directory.mkdir(parents=True, exist_ok=True)
    text = text or (BUNDLED_DIR / "raspberry-pi-5.toml").read_text(encoding="utf-8")
    path = directory / f"{name}.toml"
    path.write_text(re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', text, count=1), encoding="utf-8")
    return path


def test_devices_lists_every_bundled_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    for name in BUNDLED:
        assert name in out
    assert "fp32 GFLOPS" in out and "providers" in out


def test_devices_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "devices" and report["status"] == "ok"
    rows = {d["name"]: d for d in report["result"]["devices"]}
    assert sorted(rows) == BUNDLED
    pi = rows["raspberry-pi-5"]
    assert pi["peak_fp32_gflops"] == 153.6 and pi["execution_providers"][-1] == "CPUExecutionProvider"
    assert pi["origin"].endswith("raspberry-pi-5.toml")


def test_devices_show_prints_figures_with_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "show", "pixel-8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("pixel-8: Google Pixel 8")
    assert "Cortex-X3" in out and "source: derived: 1 x 2.91 x 32" in out
    assert "(unverified)" in out and "NnapiExecutionProvider [static_shapes" in out


def test_devices_show_json_round_trips_the_profile(capsys: pytest.CaptureFixture[str]) -> None:
    from edgekit.devices import DeviceProfile, get_device

    assert main(["devices", "show", "raspberry-pi-5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["result"]
    assert DeviceProfile.from_dict(data) == get_device("raspberry-pi-5")


def test_unknown_device_suggests_close_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "show", "pixel8"]) == 2
    err = capsys.readouterr().err
    assert "error[unknown_name]: unknown device 'pixel8'. Did you mean 'pixel-8'?" in err
    assert "hint:" in err


def test_show_needs_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "show"]) == 2
    assert "needs a device name" in capsys.readouterr().err


def test_device_dir_adds_a_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _own_profile(tmp_path / "mine", "my-board")
    assert main(["devices", "--device-dir", str(tmp_path / "mine")]) == 0
    assert "my-board" in capsys.readouterr().out
    assert main(["devices", "show", "my-board", "--device-dir", str(tmp_path / "mine")]) == 0
    assert capsys.readouterr().out.startswith("my-board:")


def test_invalid_profile_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (BUNDLED_DIR / "raspberry-pi-5.toml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^memory_bandwidth_gbps = .*$", "memory_bandwidth_gbps = -1", text)
    _own_profile(tmp_path / "bad", "bad-board", text)
    assert main(["devices", "--device-dir", str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err
    assert "error[invalid_device_profile]" in err
    assert "field 'memory_bandwidth_gbps' must be a positive number (got -1)" in err
