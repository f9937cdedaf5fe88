"""Hostile outputs: --force over the user's files, unwritable -o, signals mid-export, tampered quantize sources.

Each case asserts the error type, ``code``, a message fragment and a hint (or the safe outcome), and that nothing
is left on disk: no ``.NAME.*.partial`` beside -o, no work dir in $TMPDIR, the user's files intact.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import exporters
import exporters.api as api
import runtimes
from edgekit.cli import main
from edgekit.errors import ChecksumError, OutputExistsError, OutputNotWritableError
from tests.conftest import assert_valid_manifest
from tests.hostile_helpers import check_error, copy_package, edit_manifest, export_mlp, leftovers, snapshot
from tests.onnx_builders import mlp_classifier

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private $TMPDIR (the export work dir lands there) and user cache per test."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp


@pytest.fixture(scope="module")
def pkg_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_mlp(tmp_path_factory.mktemp("outputs") / "mlp-a")


def _export(model: Path, out: Path, **kw: object) -> exporters.ExportResult:
    return exporters.export(model, output=out, task="tensor", progress=False, validation_samples=2, **kw)


def _no_work_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refusals must come before the long work: conversion is never reached."""

    def never(*a: object, **k: object) -> None:
        raise AssertionError("conversion started before the output was checked")

    monkeypatch.setattr(api, "convert_source", never)


# ------------------------------------------------------------------------------------------------ --force


def _user_dir(p: Path) -> None:
    p.mkdir()
    (p / "thesis.tex").write_text("years of work")
    (p / "data").mkdir()
    (p / "data" / "results.csv").write_text("1,2,3")


def _fake_manifest(p: Path, text: str) -> None:
    _user_dir(p)
    (p / "edgekit.json").write_text(text)


FORCE_REFUSED = {
    "user-dir": (_user_dir, "holds files that are not an edgekit package"),
    "hidden-file-only": (lambda p: (p.mkdir(), (p / ".git").mkdir()), "not an edgekit package"),
    "manifest-not-json": (lambda p: _fake_manifest(p, "{not json"), "not an edgekit package"),
    "manifest-not-manifest": (lambda p: _fake_manifest(p, '{"name": "my notes"}'), "not an edgekit package"),
    "manifest-is-array": (lambda p: _fake_manifest(p, "[]"), "not an edgekit package"),
    "manifest-is-dir": (lambda p: (_user_dir(p), (p / "edgekit.json").mkdir()), "not an edgekit package"),
    "regular-file": (lambda p: p.write_text("my file"), "is a file, not a package directory"),
    "symlink-to-user-dir": (
        lambda p: (_user_dir(p.parent / "real"), p.symlink_to(p.parent / "real")),
        "is a symbolic link",
    ),
    "dangling-symlink": (lambda p: p.symlink_to(p.parent / "nowhere"), "is a symbolic link"),
}


@pytest.mark.parametrize("case", sorted(FORCE_REFUSED))
def test_force_never_replaces_the_users_files(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    src = mlp_classifier(tmp_path / "m.onnx")
    out = tmp_path / "out"
    make, fragment = FORCE_REFUSED[case]
    make(out)
    before = snapshot(tmp_path)
    _no_work_started(monkeypatch)
    with pytest.raises(OutputExistsError) as err:
        _export(src, out, force=True)
    check_error(err.value, OutputExistsError, "output_exists", fragment)
    assert "--force replaces only an edgekit package or an empty directory" in err.value.message
    assert snapshot(tmp_path) == before
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["empty-dir", "package", "package-with-extra-files"])
def test_force_replaces_a_package_or_an_empty_dir(tmp_path: Path, pkg_a: Path, kind: str) -> None:
    src = mlp_classifier(tmp_path / "m.onnx", seed=3)
    out = tmp_path / "out"
    if kind == "empty-dir":
        out.mkdir()
    else:
        copy_package(pkg_a, out)
        if kind == "package-with-extra-files":
            (out / "old-notes.txt").write_text("stale")
    _export(src, out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["edgekit.json", "model.onnx"]
    x = np.ones((1, 16), np.float32)
    assert runtimes.load(out, threads=1).run({"x": x})["logits"].shape == (1, 4)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["empty-dir", "package", "user-file"])
def test_existing_output_without_force(tmp_path: Path, pkg_a: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    src = mlp_classifier(tmp_path / "m.onnx")
    out = tmp_path / "out"
    {"empty-dir": out.mkdir, "package": lambda: copy_package(pkg_a, out), "user-file": lambda: out.write_text("x")}[
        kind
    ]()
    before = snapshot(tmp_path)
    _no_work_started(monkeypatch)
    with pytest.raises(OutputExistsError) as err:
        _export(src, out)
    check_error(err.value, OutputExistsError, "output_exists", "already exists")
    assert "--force" in err.value.hint
    assert snapshot(tmp_path) == before


def test_files_appearing_in_the_output_during_export_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """-o is checked again just before the rename: the user may have used the empty directory meanwhile."""
    src = mlp_classifier(tmp_path / "m.onnx")
    out = tmp_path / "out"
    out.mkdir()
    real = api.write_package

    def user_saves_a_file(*a: object, **k: object) -> object:
        (out / "report.docx").write_text("saved while exporting")
        return real(*a, **k)

    monkeypatch.setattr(api, "write_package", user_saves_a_file)
    with pytest.raises(OutputExistsError, match="not an edgekit package"):
        _export(src, out, force=True)
    assert (out / "report.docx").read_text() == "saved while exporting"
    assert sorted(p.name for p in out.iterdir()) == ["report.docx"]
    assert leftovers(tmp_path) == []


def test_cli_force_on_user_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = mlp_classifier(tmp_path / "m.onnx")
    out = tmp_path / "mine"
    _user_dir(out)
    before = snapshot(out)
    code = main(["export", str(src), "--task", "tensor", "-o", str(out), "--force", "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error[output_exists]" in err and "not an edgekit package" in err and "hint:" in err
    assert snapshot(out) == before


# ------------------------------------------------------------------------------------------ unwritable -o


def _under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "afile").write_text("x")
    return tmp_path / "afile" / "pkg"


def _deep_under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "afile").write_text("x")
    return tmp_path / "afile" / "a" / "b" / "pkg"


UNWRITABLE = {
    "under-a-file": (_under_a_file, "is a file, not a directory"),
    "deep-under-a-file": (_deep_under_a_file, "is a file, not a directory"),
    "in-proc": (lambda t: Path("/proc/self/edgekit-out"), "is not writable"),
    "in-sys": (lambda t: Path("/sys/edgekit/out"), "is not writable"),
}


@pytest.mark.parametrize("case", sorted(UNWRITABLE))
def test_unwritable_output_is_refused_before_work(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    src = mlp_classifier(tmp_path / "m.onnx")
    make, fragment = UNWRITABLE[case]
    out = make(tmp_path)
    before = snapshot(tmp_path)
    _no_work_started(monkeypatch)
    with pytest.raises(OutputNotWritableError) as err:
        _export(src, out)
    check_error(err.value, OutputNotWritableError, "output_not_writable", fragment)
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == []


def test_read_only_dir_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only directory (EROFS, or permissions for a non-root user), seen through the write probe."""
    src = mlp_classifier(tmp_path / "m.onnx")
    ro = tmp_path / "ro"
    ro.mkdir()
    real = tempfile.mkdtemp

    def read_only(*a: object, dir: object = None, **k: object) -> str:
        if dir is not None and Path(str(dir)) == ro:
            raise OSError(30, "Read-only file system")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    _no_work_started(monkeypatch)
    with pytest.raises(OutputNotWritableError) as err:
        _export(src, ro / "pkg")
    check_error(err.value, OutputNotWritableError, "output_not_writable", "Read-only file system")
    assert list(ro.iterdir()) == []


def test_chmod_read_only_dir(tmp_path: Path) -> None:
    """The probe is truthful: refused for a normal user; root really can write there, so it is allowed."""
    src = mlp_classifier(tmp_path / "m.onnx")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    try:
        if os.geteuid() == 0:
            _export(src, ro / "pkg")
            assert (ro / "pkg" / "edgekit.json").is_file()
        else:
            with pytest.raises(OutputNotWritableError, match="is not writable"):
                _export(src, ro / "pkg")
            assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_cli_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = mlp_classifier(tmp_path / "m.onnx")
    code = main(["export", str(src), "--task", "tensor", "-o", str(_under_a_file(tmp_path)), "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "error[output_not_writable]" in err and "hint: choose an -o path" in err


# ------------------------------------------------------------------------------------- clean packages


def test_package_has_ordinary_modes_and_no_host_paths(tmp_path: Path) -> None:
    (tmp_path / "private-project").mkdir()
    src = mlp_classifier(tmp_path / "private-project" / "m.onnx")
    old = os.umask(0o022)
    try:
        _export(src, tmp_path / "pkg")
    finally:
        os.umask(old)
    pkg = tmp_path / "pkg"
    assert pkg.stat().st_mode & 0o777 == 0o755
    assert {p.name: p.stat().st_mode & 0o777 for p in pkg.iterdir()} == {"edgekit.json": 0o644, "model.onnx": 0o644}
    text = (pkg / "edgekit.json").read_text()
    assert str(tmp_path) not in text and "private-project" not in text
    assert json.loads(text)["source"]["path"] == "m.onnx"
    assert_valid_manifest(pkg)


def test_umask_is_respected(tmp_path: Path) -> None:
    src = mlp_classifier(tmp_path / "m.onnx")
    old = os.umask(0o077)
    try:
        _export(src, tmp_path / "pkg")
    finally:
        os.umask(old)
    assert (tmp_path / "pkg").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "pkg" / "model.onnx").stat().st_mode & 0o777 == 0o600


# ------------------------------------------------------------------------------ quantize a tampered source


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


TAMPERED_SOURCES = {
    "model-edited": (lambda p: _flip(p / "model.onnx"), "model.onnx does not match"),
    "files-emptied": (
        lambda p: (_flip(p / "model.onnx"), edit_manifest(p, lambda m: m.update(files=[]))),
        "model.onnx is not listed",
    ),
    "entry-leads-out": (
        lambda p: edit_manifest(p, lambda m: m["files"].append({"path": "../x", "bytes": 1, "sha256": "0" * 64})),
        "climbs out",
    ),
}


@pytest.mark.parametrize("via", ["quantize", "export"])
@pytest.mark.parametrize("case", sorted(TAMPERED_SOURCES))
def test_tampered_source_package_is_verified_first(
    tmp_path: Path, pkg_a: Path, isolated: Path, case: str, via: str
) -> None:
    from edgekit.errors import PackageError

    src = copy_package(pkg_a, tmp_path / "fp32")
    change, fragment = TAMPERED_SOURCES[case]
    change(src)
    out = tmp_path / "int8"
    with pytest.raises(PackageError) as err:
        if via == "quantize":
            exporters.quantize(src, output=out, recipe="int8-dynamic", progress=False)
        else:
            exporters.export(src, output=out, task="tensor", recipe="int8-dynamic", progress=False)
    assert fragment in err.value.message and err.value.hint
    if case != "entry-leads-out":
        assert isinstance(err.value, ChecksumError) and err.value.code == "checksum_mismatch"
    assert not out.exists() and leftovers(tmp_path) == [] and list(isolated.iterdir()) == []


def test_quantize_carries_only_listed_files(tmp_path: Path, pkg_a: Path) -> None:
    src = copy_package(pkg_a, tmp_path / "fp32")
    (src / "planted.json").write_text('{"not": "listed"}')
    exporters.quantize(
        src, output=tmp_path / "int8", recipe="int8-dynamic", progress=False, validation_samples=2, on_slower="warn"
    )
    assert not (tmp_path / "int8" / "planted.json").exists()
    assert runtimes.load(tmp_path / "int8", threads=1).verified


# ------------------------------------------------------------------------------------------------ signals

_CHILD = r"""
import os, signal, sys, time

stage, hold_s, ignore_hup = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
# A terminal's dispositions, whatever the test run inherited: a shell starts background jobs with SIGINT ignored
# and nohup ignores SIGHUP, and a child keeps both (the suite run as `nohup .ci/run &` failed these cases).
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGHUP, signal.SIG_IGN if ignore_hup else signal.SIG_DFL)

import exporters.api as api

def hold():
    sys.__stdout__.write("READY\n")  # edgekit points sys.stdout elsewhere while a command runs
    sys.__stdout__.flush()
    time.sleep(hold_s)

def after(fn):
    def wrapped(*a, **k):
        out = fn(*a, **k)
        hold()
        return out
    return wrapped

if stage == "convert":
    api.convert_source = after(api.convert_source)
else:
    api.write_package = after(api.write_package)  # the .partial beside -o holds the files now

from edgekit.cli import main
sys.exit(main(sys.argv[4:]))
"""


def _work_dirs(tmpdir: Path) -> list[str]:
    return [p.name for p in tmpdir.iterdir() if p.name.startswith("edgekit-")]


def _run_child(tmp_path: Path, isolated: Path, stage: str, sig: int, *, hold_s: float = 60, ignore_hup: bool = False):
    src = mlp_classifier(tmp_path / "m.onnx")
    out = tmp_path / "out" / "pkg"
    env = {**os.environ, "TMPDIR": str(isolated), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    argv = ["export", str(src), "--task", "tensor", "-o", str(out), "-q", "--validation-samples", "2"]
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, stage, str(hold_s), "1" if ignore_hup else "0", *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "READY", (line, child.stderr.read() if child.poll() is not None else "")
        assert _work_dirs(isolated), "no work dir mid-export"
        if stage == "write":
            assert any(p.name.endswith(".partial") for p in out.parent.iterdir())
        child.send_signal(sig)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    return child.returncode, err, out


@pytest.mark.parametrize("stage", ["convert", "write"])
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_signal_mid_export_cleans_up(tmp_path: Path, isolated: Path, stage: str, sig: str) -> None:
    signum = getattr(signal, sig)
    code, err, out = _run_child(tmp_path, isolated, stage, signum)
    if signum == signal.SIGINT:
        assert code == 130 and "error[interrupted]" in err
    else:
        assert code == -signum, (code, err)  # after cleaning up, the process ends by the signal, as it should
    assert "Traceback" not in err
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no .pkg.*.partial beside -o
    assert _work_dirs(isolated) == []  # no edgekit-export-* work dir in $TMPDIR


def test_ignored_sighup_stays_ignored(tmp_path: Path, isolated: Path) -> None:
    """Under nohup (SIGHUP ignored) the export carries on and writes its package."""
    code, err, out = _run_child(tmp_path, isolated, "write", signal.SIGHUP, hold_s=1.0, ignore_hup=True)
    assert code == 0, err
    assert (out / "edgekit.json").is_file() and _work_dirs(isolated) == []
