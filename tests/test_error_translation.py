"""The translation table of edgekit.errors, walked row by row with real foreign exceptions.

Each case makes the foreign library fail for real (a truncated .onnx, a 0-byte .npz, an .npy renamed .npz,
non-UTF-8 text, corrupt tokenizer.json and safetensors, an unwritable path, ...) and checks the edgekit
error it becomes: class, code, a message fragment and a hint. A table row without a case fails the suite.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit import errors
from edgekit.errors import (
    TRANSLATIONS,
    EdgekitError,
    InternalError,
    edgekit_boundary,
    error_classes,
    render_error_table,
    translate,
)

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- error-table:begin -->", "<!-- error-table:end -->"


def _relu(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _truncated_onnx(tmp: Path) -> Path:
    data = _relu(tmp / "ok.onnx").read_bytes()
    (tmp / "cut.onnx").write_bytes(data[: len(data) - 7])
    return tmp / "cut.onnx"


def _dangling_onnx(tmp: Path) -> Path:
    import onnx
    from onnx import helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [], [])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(tmp / "bad.onnx"))
    return tmp / "bad.onnx"


def _session(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ort_fail(tmp: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([3], np.int64), "s")],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(tmp / "r.onnx"))
    _session(tmp / "r.onnx").run(None, {"x": np.zeros(4, np.float32)})


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _npz_bytes(tmp: Path) -> bytes:
    np.savez(tmp / "ok.npz", x=np.zeros(64, np.float32))
    return (tmp / "ok.npz").read_bytes()


def _raise_scale_issue(tmp: Path) -> None:
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    nan = np.array(np.nan, np.float32)
    compute_scale_zp(nan, nan, np.array(0, np.uint8), np.array(255, np.uint8), False)


def _bad_tokenizer(tmp: Path) -> None:
    from tokenizers import Tokenizer

    path = tmp / "tokenizer.json"
    path.write_text('{"version": "1.0", "model": ', encoding="utf-8")
    Tokenizer.from_file(str(path))


def _bad_safetensors(tmp: Path) -> None:
    from safetensors.numpy import load_file

    path = tmp / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage}")
    load_file(str(path))


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _non_utf8(tmp: Path) -> None:
    path = tmp / "calibration.txt"
    path.write_bytes(b"caf\xe9 au lait\n")
    _read_text(path)


def _bad_toml(tmp: Path) -> None:
    import tomllib

    path = tmp / "device.toml"
    path.write_text("name = = 1", encoding="utf-8")
    tomllib.loads(_read_text(path))


def _bad_json(tmp: Path) -> None:
    path = tmp / "config.json"
    path.write_text("{", encoding="utf-8")
    json.loads(_read_text(path))


def _disk_full(tmp: Path) -> None:
    with open("/dev/full", "w") as f:  # Linux: every write fails with ENOSPC
        f.write("x")
        f.flush()


def _unwritable(tmp: Path) -> None:
    # sysfs refuses new files even to root, unlike permission bits
    open("/sys/edgekit-probe.html", "w").close()


def _bad_fd(tmp: Path) -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    os.read(fd, 1)


def _open(path: Path, mode: str = "r") -> None:
    with open(path, mode):
        pass


def _wrong_keyword(tmp: Path) -> None:
    from exporters.api import ExportOptions

    ExportOptions(task="tensor", bogus_option=1)  # type: ignore[call-arg]


# name of the table row -> (make the foreign library fail, code, message fragment (regex))
CASES: dict[str, tuple[Callable[[Path], Any], str, str]] = {
    "onnxruntime NoSuchFile": (lambda t: _session(t / "missing.onnx"), "file_not_found", "found no model file"),
    "onnxruntime InvalidProtobuf": (lambda t: _session(_truncated_onnx(t)), "corrupt_model", "truncated or not"),
    "onnxruntime InvalidGraph / invalid model at load": (
        lambda t: _session(_dangling_onnx(t)),
        "corrupt_model",
        "rejects the graph: .*Invalid model",
    ),
    "onnxruntime InvalidArgument": (
        lambda t: _session(_relu(t / "m.onnx")).run(None, {"x": np.zeros(1, np.int64)}),
        "invalid_input",
        "rejects the inputs: Unexpected input data type",
    ),
    "onnxruntime missing feeds": (
        lambda t: _session(_relu(t / "m.onnx")).run(None, {"z": np.zeros(1, np.float32)}),
        "invalid_input",
        "inputs are missing",
    ),
    "onnxruntime Fail / RuntimeException": (_ort_fail, "runtime_error", "ONNX Runtime failed: Non-zero status"),
    "onnxruntime quantizer 'scale issue'": (_raise_scale_issue, "calibration_mismatch", "NaN or infinite"),
    "protobuf DecodeError": (
        lambda t: __import__("onnx").load(str(_truncated_onnx(t))),
        "corrupt_model",
        r"cut\.onnx\) is truncated",
    ),
    "onnx checker ValidationError": (
        lambda t: __import__("onnx").checker.check_model(str(_dangling_onnx(t))),
        "corrupt_model",
        "graph.* is invalid",
    ),
    "safetensors SafetensorError": (_bad_safetensors, "corrupt_model", r"\.safetensors weights file .*corrupt"),
    "tokenizers parse error": (_bad_tokenizer, "corrupt_file", r"tokenizer file .*cannot be parsed: EOF"),
    "zipfile BadZipFile": (
        lambda t: (t / "cut.npz").write_bytes(_npz_bytes(t)[:100]) and _load_npz(t / "cut.npz"),
        "corrupt_file",
        r"cut\.npz\) .*not a zip file",
    ),
    "zlib error": (lambda t: zlib.decompress(b"not deflate"), "corrupt_file", "compressed member"),
    "numpy pickled data": (
        lambda t: (t / "p.npz").write_bytes(pickle.dumps({"a": 1})) and np.load(t / "p.npz", allow_pickle=False),
        "corrupt_file",
        "pickled Python objects",
    ),
    "numpy empty file (EOFError)": (
        lambda t: (t / "empty.npz").touch() or _load_npz(t / "empty.npz"),
        "corrupt_file",
        r"empty\.npz\) is empty or cut short",
    ),
    "numpy .npy where .npz is expected": (
        lambda t: np.save(t / "a.npy", np.zeros(3)) or os.rename(t / "a.npy", t / "a.npz") or _load_npz(t / "a.npz"),
        "corrupt_file",
        "one bare .npy array",
    ),
    "UnicodeDecodeError": (_non_utf8, "invalid_encoding", r"calibration\.txt\) is not valid UTF-8: .*0xe9"),
    "UnicodeEncodeError (lone surrogates)": (
        lambda t: "caf\udce9".encode(),
        "invalid_encoding",
        "lone surrogates",
    ),
    "tomllib TOMLDecodeError": (_bad_toml, "invalid_device_profile", "TOML file .*invalid: Invalid value"),
    "json JSONDecodeError": (_bad_json, "corrupt_file", r"config\.json\) cannot be parsed"),
    "OSError ENOSPC": (_disk_full, "disk_full", "no space left"),
    "OSError EROFS": (
        lambda t: (_ for _ in ()).throw(OSError(errno.EROFS, os.strerror(errno.EROFS), "/ro/pkg")),
        "read_only_filesystem",
        "/ro/pkg is on a read-only",
    ),
    "PermissionError": (_unwritable, "permission_denied", "permission denied: /sys/edgekit-probe.html"),
    "FileNotFoundError": (lambda t: _open(t / "nope.txt"), "file_not_found", r"no such file .*nope\.txt"),
    "FileExistsError": (
        lambda t: (t / "f").touch() or (t / "f").mkdir(parents=True, exist_ok=True),
        "invalid_path",
        "already exists and is not a directory",
    ),
    "IsADirectoryError": (lambda t: _open(t), "invalid_path", "is a directory"),
    "NotADirectoryError": (
        lambda t: (t / "f").touch() or _open(t / "f" / "x.npz", "w"),
        "invalid_path",
        "is a file, where a directory",
    ),
    "other OSError": (_bad_fd, "io_error", "Bad file descriptor"),
    "MemoryError": (lambda t: np.zeros(10**15), "out_of_memory", "Unable to allocate"),
    "ModuleNotFoundError of a foreign framework": (
        # transformers' fallback import; built by hand so a machine with TensorFlow installed runs it too
        lambda t: (_ for _ in ()).throw(ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")),
        "corrupt_model",
        "not a PyTorch or safetensors checkpoint",
    ),
    "ModuleNotFoundError": (
        lambda t: __import__("edgekit_no_such_module"),
        "missing_dependency",
        "'edgekit_no_such_module'",
    ),
    "TypeError from a wrong keyword": (_wrong_keyword, "invalid_config", "unexpected keyword argument 'bogus_option'"),
}


def test_every_row_has_a_case() -> None:
    assert sorted(CASES) == sorted(row.name for row in TRANSLATIONS)


@pytest.mark.parametrize("row", TRANSLATIONS, ids=lambda r: r.name)
def test_row_translates_a_real_exception(row: errors.Translation, tmp_path: Path) -> None:
    make, code, fragment = CASES[row.name]
    with pytest.raises(Exception) as info:  # any: the point is which foreign one
        make(tmp_path)
    assert not isinstance(info.value, EdgekitError)
    assert row.matches(info.value), f"{row.name} does not match {type(info.value).__name__}: {info.value}"
    err = translate(info.value)
    assert isinstance(err, row.target) and err.code == code
    assert re.search(fragment, err.message), err.message
    assert err.hint and len(err.hint) > 10
    assert err.__cause__ is info.value
    # The first matching row is this one: no earlier row shadows it.
    first = next(r for r in TRANSLATIONS if r.matches(info.value))
    assert first is row


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("boom"), KeyError("k"), ZeroDivisionError("division by zero"), AttributeError("x"), Exception("odd")],
    ids=lambda e: type(e).__name__,
)
def test_unforeseen_exceptions_are_internal(exc: Exception) -> None:
    err = translate(exc)
    assert type(err) is InternalError and err.code == "internal" and err.exit_code == 1
    assert err.message.startswith(f"unexpected {type(exc).__name__}")
    assert "--debug" in err.hint and "report" in err.hint


def test_context_prefixes_the_message(tmp_path: Path) -> None:
    (tmp_path / "empty.npz").touch()
    with pytest.raises(EOFError) as info:
        _load_npz(tmp_path / "empty.npz")
    err = translate(info.value, context="--input empty.npz")
    assert err.code == "corrupt_file" and err.message.startswith("--input empty.npz: a data file")


def test_edgekit_errors_pass_through_unchanged() -> None:
    original = errors.ConfigError("x must be 1", hint="set x=1", param="x")
    assert translate(original) is original


def test_boundary_decorator_raises_only_edgekit_errors(tmp_path: Path) -> None:
    @edgekit_boundary
    def read(path: Path) -> str:
        """Read a file."""
        return path.read_text(encoding="utf-8")

    assert read.__name__ == "read" and read.__doc__ == "Read a file."
    (tmp_path / "t.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(errors.EncodingError) as info:
        read(tmp_path / "t.txt")
    assert isinstance(info.value.__cause__, UnicodeDecodeError) and "t.txt" in info.value.message
    with pytest.raises(errors.ConfigError, match="unexpected keyword argument 'bogus'"):
        read(tmp_path / "t.txt", bogus=1)  # type: ignore[call-arg]
    with pytest.raises(InternalError):
        edgekit_boundary(lambda: {}["missing"])()


def test_public_entry_points_are_boundaries() -> None:
    import edgekit
    import exporters
    import runtimes.model

    for fn in (edgekit.export, edgekit.quantize, edgekit.load, edgekit.profile, runtimes.model.load):
        assert hasattr(fn, "__wrapped__"), fn
    for fn in (exporters.export, exporters.quantize, exporters.export_torch):
        assert hasattr(fn, "__wrapped__"), fn


def test_every_error_class_has_a_unique_code_and_a_hint() -> None:
    classes = error_classes()
    assert len(classes) >= 25
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))
    for cls in classes:
        assert cls.__doc__ and cls.default_hint, cls
        assert cls(f"{cls.__name__} message").hint == cls.default_hint
        assert 1 <= cls.exit_code <= 3 and 400 <= cls.http_status <= 599
    assert errors.UsageError("x", hint="own hint").hint == "own hint"


def _render_readme(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    return head + BEGIN + "\n" + render_error_table() + END + rest.split(END, 1)[1]


def test_readme_section_is_rendered_from_the_table() -> None:
    text = README.read_text(encoding="utf-8")
    assert "## What edgekit refuses, and why" in text
    assert text == _render_readme(text), "the README's error table is stale: python -m tests.test_error_translation"
    section = text.split(BEGIN, 1)[1].split(END, 1)[0]
    for cls in error_classes():
        assert f"`{cls.code}`" in section


if __name__ == "__main__":  # rewrite the README's generated section after changing edgekit/errors.py
    README.write_text(_render_readme(README.read_text(encoding="utf-8")), encoding="utf-8")
