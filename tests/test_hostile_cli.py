"""Hostile input over the CLI and the Python API: every case ends in a clear error, never a traceback.

Each case runs ``edgekit.cli.main(argv)`` and asserts the exit code, ``error[code]:`` with a message fragment,
a ``hint:`` line, no traceback on stderr, and that nothing was left on disk: the test's directory holds
exactly what it held before (no output, no ``.partial``) and the temporary directory stays empty. Bad files
are made for real (a truncated .onnx, a 0-byte .npz, an .npy renamed .npz, non-UTF-8 text and TOML, a
corrupt tokenizer.json, NaN calibration data, unwritable outputs).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_fixtures import *  # noqa: F403

from edgekit.cli import main
from edgekit.errors import EdgekitError
from tests.onnx_builders import mlp_classifier

DEVICES = Path(__file__).resolve().parents[1] / "edgekit" / "devices"
# The optimized-graph cache a successful load writes beside a package is not an output of the command.
IGNORED = {".edgekit-cache"}

Maker = Callable[[Path, Callable[[str], Path]], None]


# ------------------------------------------------------------------------------------------- bad files


def _x(n: int = 8, dtype: Any = np.float32, width: int = 16) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, width)).astype(dtype)


def _npz(**arrays: Any) -> Maker:
    return lambda p, fx: np.savez(p, **arrays)


def _bytes(data: bytes) -> Maker:
    return lambda p, fx: p.write_bytes(data)


def _npy_renamed(p: Path, fx: Callable[[str], Path]) -> None:
    np.save(p.with_suffix(".npy"), _x())
    os.replace(p.with_suffix(".npy"), p)


def _object_npz(p: Path) -> None:
    with open(p, "wb") as f:
        np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)


def _truncated_npz(p: Path, fx: Callable[[str], Path]) -> None:
    np.savez(p, x=_x())
    p.write_bytes(p.read_bytes()[:200])


def _truncated_mlp(p: Path, fx: Callable[[str], Path]) -> None:
    data = fx("mlp").read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _dangling_onnx(p: Path, fx: Callable[[str], Path]) -> None:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Relu", ["nowhere"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(p))


def _image_dir(p: Path, fx: Callable[[str], Path]) -> None:
    from PIL import Image

    p.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(p / "a.png")


def _package(fixture: str, breaks: Callable[[Path], None]) -> Maker:
    """A copy of a package fixture, broken by ``breaks``."""

    def make(p: Path, fx: Callable[[str], Path]) -> None:
        shutil.copytree(fx(fixture), p, ignore=shutil.ignore_patterns(".edgekit-cache"))
        breaks(p)

    return make


def _cut(name: str) -> Callable[[Path], None]:
    def breaks(root: Path) -> None:
        data = (root / name).read_bytes()
        (root / name).write_bytes(data[: len(data) // 2])

    return breaks


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda root: (root / name).write_bytes(data)


def _device_dir(edit: Callable[[str], str] | bytes) -> Maker:
    """A --device-dir holding mydev.toml: the bundled intel-n100 profile renamed, then edited."""

    def make(p: Path, fx: Callable[[str], Path]) -> None:
        p.mkdir()
        base = (DEVICES / "intel-n100.toml").read_text(encoding="utf-8").replace('"intel-n100"', '"mydev"')
        data = edit if isinstance(edit, bytes) else edit(base).encode("utf-8")
        (p / "mydev.toml").write_bytes(data)

    return make


def _sub(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert re.search(old, text, flags=re.M), old
        return re.sub(old, new, text, count=1, flags=re.M)

    return edit


def _hf_dir(breaks: Callable[[Path], None], *, weights: bool = True) -> Maker:
    """A tiny BERT directory (seeded random weights), broken by ``breaks``."""

    def make(p: Path, fx: Callable[[str], Path]) -> None:
        import torch
        from transformers import BertConfig, BertModel

        cfg = BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
        torch.manual_seed(0)
        if weights:
            BertModel(cfg).save_pretrained(p)
        else:
            cfg.save_pretrained(p)
        breaks(p)

    return make


FILES: dict[str, Maker] = {
    "empty.npz": _bytes(b""),
    "arr.npz": _npy_renamed,
    "cut.npz": _truncated_npz,
    "pickled.npz": _bytes(pickle.dumps({"x": [1, 2, 3]})),
    "object.npz": lambda p, fx: _object_npz(p),
    "cal.npz": _npz(x=_x()),
    "wrongname.npz": _npz(y=_x()),
    "float64.npz": _npz(x=_x(dtype=np.float64)),
    "narrow.npz": _npz(x=_x(width=15)),
    "scalar.npz": _npz(x=np.float32(1.0)),
    "labelsonly.npz": _npz(labels=np.arange(8)),
    "nan.npz": _npz(x=np.full((8, 16), np.nan, np.float32)),
    "inf.npz": _npz(x=np.full((8, 16), np.inf, np.float32)),
    "strlabels.npz": _npz(x=_x(), labels=np.array(["cat"] * 8)),
    "shortlabels.npz": _npz(x=_x(), labels=np.arange(3)),
    "rangelabels.npz": _npz(x=_x(), labels=np.arange(8) + 10),
    "neglabels.npz": _npz(x=_x(), labels=-np.ones(8, np.int64)),
    "halflabels.npz": _npz(x=_x(), labels=np.full(8, 0.5)),
    "matrixlabels.npz": _npz(x=_x(), labels=np.zeros((8, 4), np.int64)),
    "cal.csv": _bytes(b"1,2,3\n"),
    "latin1.txt": _bytes(b"caf\xe9 au lait\nna\xefve\n"),
    "blank.txt": _bytes(b"\n   \n"),
    "lines.txt": _bytes(b"hello\nworld\n"),
    "images": _image_dir,
    "cut.onnx": _truncated_mlp,
    "zero.onnx": _bytes(b""),
    "garbage.onnx": _bytes(b"\x00\xffnot an onnx model" * 20),
    "text.onnx": _bytes(b"ir_version: 9\ngraph { name: 'g' }\n"),
    "dangling.onnx": _dangling_onnx,
    "onnxdir.onnx": lambda p, fx: p.mkdir(),
    "emptydir": lambda p, fx: p.mkdir(),
    "existing": lambda p, fx: (p.mkdir(), (p / "mine.txt").write_text("keep me")),
    "afile": _bytes(b"a file, not a directory"),
    "in_x.npz": _npz(x=np.ones((1, 4), np.float32), ids=np.array([3], np.int64)),
    "in_names.npz": _npz(z=np.ones((1, 4), np.float32)),
    "in_dtype.npz": _npz(x=np.ones((1, 4), np.int32), ids=np.array([3], np.int64)),
    "in_rank.npz": _npz(x=np.ones((1, 4, 1), np.float32), ids=np.array([3], np.int64)),
    "in_width.npz": _npz(x=np.ones((1, 5), np.float32), ids=np.array([3], np.int64)),
    "notimage.png": _bytes(b"this is not a png"),
    "notwav.wav": _bytes(b"RIFF....WAVEfmt garbage"),
    "pkg_badjson": _package("tensor", _write("edgekit.json", b"{not json")),
    "pkg_listjson": _package("tensor", _write("edgekit.json", b"[1, 2, 3]")),
    "pkg_emptyjson": _package("tensor", _write("edgekit.json", b"")),
    "pkg_latin1json": _package("tensor", _write("edgekit.json", b'{"task": "caf\xe9"}')),
    "pkg_cutmodel": _package("tensor", _cut("model.onnx")),
    "pkg_nomodel": _package("tensor", lambda root: (root / "model.onnx").unlink()),
    "pkg_badtok": _package("embed", _write("tokenizer.json", b'{"version": "1.0", "model": ')),
    "pkg_cuttok": _package("embed", _cut("tokenizer.json")),
    "hf_badjson": _hf_dir(_write("config.json", b"{bad"), weights=False),
    "hf_latin1": _hf_dir(_write("config.json", b'{"model_type": "caf\xe9"}'), weights=False),
    "hf_badst": _hf_dir(_write("model.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage}")),
    "hf_badbin": _hf_dir(
        lambda p: ((p / "model.safetensors").unlink(), (p / "pytorch_model.bin").write_bytes(b"not a checkpoint"))
    ),
    "hf_badtok": _hf_dir(_write("tokenizer.json", b'{"version": ')),
    "dev_latin1": _device_dir(b'name = "mydev"\ndisplay_name = "caf\xe9"\n'),
    "dev_binary": _device_dir(b"\x00\xff\xfe\x00" * 16),
    "dev_syntax": _device_dir(_sub(r"^kind = .*$", "kind = = 'mini-pc'")),
    "dev_empty": _device_dir(b""),
    "dev_missing": _device_dir(_sub(r"^memory_gb = .*$", "")),
    "dev_type": _device_dir(_sub(r"^memory_gb = .*$", 'memory_gb = "sixteen"')),
    "dev_negative": _device_dir(_sub(r"^memory_gb = .*$", "memory_gb = -16.0")),
    "dev_unknown": _device_dir(_sub(r"^memory_gb = .*$", "memory_gb = 16.0\nmemory_gigs = 16")),
    "dev_name": _device_dir(_sub(r'^name = "mydev"$', 'name = "otherdev"')),
    "dev_cores": _device_dir(_sub(r"^cores = 4$", "cores = 0")),
    "dev_provider": _device_dir(_sub(r'^name = "CPUExecutionProvider"$', 'name = "WarpDriveExecutionProvider"')),
    "dev_threads": _device_dir(_sub(r"^default_threads = .*$", "default_threads = 'all'")),
}


# ------------------------------------------------------------------------------------------------ cases


@dataclass(frozen=True)
class Case:
    id: str
    argv: str | tuple[str, ...]  # a shell line (shlex) or the argv itself; {placeholders} are filled in
    exit: int
    code: str
    message: str  # a regex searched in the error line


def c(id: str, argv: str | tuple[str, ...], exit: int, code: str, message: str) -> Case:
    return Case(id, argv, exit, code, message)


EXPORT = "export {mlp} --task tensor -o {out}"
DYN = EXPORT + " --recipe int8-dynamic --allow-slower"
STATIC = EXPORT + " --recipe int8-static --allow-slower"
INT4 = EXPORT + " --recipe int4 --allow-slower"
RUN_T = "run {tensor}"
RUN_P = "run {tensor} --prompt hi"  # generation options are checked before the package loads
PROFILE = "profile {tensor} --runs 2"

CLI_CASES = [
    # --- argument parsing
    c("unknown-command", "bogus", 2, "usage_error", "invalid choice: 'bogus'"),
    c("export-no-args", "export", 2, "usage_error", "required"),
    c("run-no-package", "run", 2, "usage_error", "required: PACKAGE"),
    c("int-not-int", EXPORT + " --validation-samples abc", 2, "usage_error", "invalid int value: 'abc'"),
    c("threads-not-int", RUN_T + " --threads many", 2, "usage_error", "invalid int value"),
    c("runs-float", PROFILE + " --runs 1.5", 2, "usage_error", "invalid int value"),
    c("format-choice", EXPORT + " --format zip", 2, "usage_error", "invalid choice: 'zip'"),
    c("truncate-choice", RUN_P + " --truncate right", 2, "usage_error", "invalid choice: 'right'"),
    c("unknown-flag", EXPORT + " --frobnicate", 2, "usage_error", "unrecognized arguments: --frobnicate"),
    c("devices-bad-action", "devices remove x", 2, "usage_error", "invalid choice: 'remove'"),
    # --- export options and recipes
    c("recipe-unknown", EXPORT + " --recipe int9", 2, "unknown_name", "unknown recipe 'int9'"),
    c("task-unknown", "export {mlp} --task bogus -o {out}", 2, "unknown_name", "unknown task 'bogus'"),
    c("option-no-equals", EXPORT + " --option block_size", 2, "usage_error", "takes key=value"),
    c("option-unknown-key", EXPORT + " --option bogus_key=1", 2, "invalid_config", "bogus_key"),
    c("op-types-bogus", DYN + " --option op_types='[\"Bogus\"]'", 2, "invalid_config", "'Bogus'.*quantizes.*MatMul"),
    c("op-types-typo", DYN + " --option op_types='[\"Matmul\"]'", 2, "invalid_config", "'Matmul'"),
    c("op-types-string", DYN + " --option op_types=MatMul", 2, "invalid_config", "op_types must be a list"),
    c("op-types-empty", DYN + " --option op_types=[]", 2, "invalid_config", "at least one op type"),
    c("op-types-number", DYN + " --option op_types=[1]", 2, "invalid_config", "cannot quantize: 1"),
    c("op-types-object", DYN + " --option op_types='{\"a\": 1}'", 2, "invalid_config", "must be a list"),
    c("op-types-absent", DYN + " --option op_types='[\"Conv\"]'", 2, "invalid_config", r"\['Conv'\] match no node"),
    c(
        "exclude-unknown-dyn",
        DYN + " --option nodes_to_exclude='[\"nope\"]'",
        2,
        "invalid_config",
        "names 'nope', which the graph being quantized does not have",
    ),
    c(
        "exclude-fused-name",
        DYN + " --option nodes_to_exclude='[\"fc1\"]'",
        2,
        "invalid_config",
        "Did you mean 'fc1/MatMulAddFusion'",
    ),
    c("exclude-typo-int4", INT4 + " --option nodes_to_exclude='[\"fc3\"]'", 2, "invalid_config", "Did you mean 'fc2'"),
    c(
        "exclude-unknown-static",
        STATIC + " --calibration {in}/cal.npz --option nodes_to_exclude='[\"ghost\"]'",
        2,
        "invalid_config",
        "names 'ghost'",
    ),
    c("exclude-string", DYN + " --option nodes_to_exclude=fc1", 2, "invalid_config", "must be a list"),
    c("block-size-odd", INT4 + " --option block_size=20", 2, "invalid_config", "power of two"),
    c("block-size-text", INT4 + " --option block_size=big", 2, "invalid_config", "must be an integer"),
    c("accuracy-level", INT4 + " --option accuracy_level=9", 2, "invalid_config", "accuracy_level must be 0-4"),
    c("smoothing-alpha", DYN + " --option smoothing_alpha=1.5", 2, "invalid_config", r"smoothing_alpha must be in"),
    c("smoothing-samples", DYN + " --option smoothing_samples=0", 2, "invalid_config", "smoothing_samples must be"),
    c("weight-type", DYN + " --option weight_type=int3", 2, "invalid_config", "weight_type must be one of"),
    c("static-method", STATIC + " --option method=bogus", 2, "invalid_config", "method must be one of"),
    c("static-percentile-0", STATIC + " --option percentile=0", 2, "invalid_config", "percentile must be in"),
    c("static-percentile-101", STATIC + " --option percentile=101", 2, "invalid_config", "percentile must be in"),
    c("calib-samples-0", STATIC + " --option max_calibration_samples=0", 2, "out_of_bounds", r"\[1, 10000\]"),
    c("calib-samples-huge", STATIC + " --option max_calibration_samples=100000000", 2, "out_of_bounds", "100000000"),
    c("calib-samples-neg", STATIC + " --option max_calibration_samples=-1", 2, "out_of_bounds", "got -1"),
    c(
        "fp16-block-typo",
        EXPORT + " --recipe fp16 --option op_block_list='[\"Rellu\"]'",
        2,
        "invalid_config",
        "names 'Rellu', which is no ONNX op type.*Did you mean 'Relu'",
    ),
    c("fp16-bool", EXPORT + " --recipe fp16 --option keep_io_types=maybe", 2, "invalid_config", "true or false"),
    c("fp32-bool", EXPORT + " --option fusions=1", 2, "invalid_config", "fusions must be true or false"),
    c("val-samples-0", EXPORT + " --validation-samples 0", 2, "out_of_bounds", "--validation-samples must be"),
    c("val-samples-neg", EXPORT + " --validation-samples -3", 2, "out_of_bounds", "got -3"),
    c("val-samples-huge", EXPORT + " --validation-samples 100000000", 2, "out_of_bounds", r"\[1, 10000\]"),
    c("drop-2", EXPORT + " --max-accuracy-drop 2", 2, "invalid_config", r"max_accuracy_drop must be in \[0, 1\)"),
    c("drop-neg", EXPORT + " --max-accuracy-drop -0.5", 2, "invalid_config", "max_accuracy_drop"),
    c("drop-nan", EXPORT + " --max-accuracy-drop nan", 2, "invalid_config", "max_accuracy_drop"),
    c("static-no-calibration", STATIC, 1, "calibration_mismatch", "int8-static needs calibration data"),
    # --- export sources and outputs
    c("source-missing", "export {in}/nope.onnx --task tensor -o {out}", 1, "source_not_found", "does not exist"),
    c("source-truncated", "export {in}/cut.onnx --task tensor -o {out}", 1, "corrupt_model", "cut.onnx"),
    c("source-zero-bytes", "export {in}/zero.onnx --task tensor -o {out}", 1, "corrupt_model", "zero.onnx"),
    c("source-garbage", "export {in}/garbage.onnx --task tensor -o {out}", 1, "corrupt_model", "garbage.onnx"),
    c("source-text", "export {in}/text.onnx --task tensor -o {out}", 1, "corrupt_model", "text.onnx"),
    c("source-dangling", "export {in}/dangling.onnx --task tensor -o {out}", 1, "corrupt_model", "dangling.onnx"),
    c("source-onnx-dir", "export {in}/onnxdir.onnx --task tensor -o {out}", 1, "source_not_found", "onnxdir.onnx"),
    c("source-empty-dir", "export {in}/emptydir --task tensor -o {out}", 2, "usage_error", "what kind of model"),
    c("hf-bad-config", "export {in}/hf_badjson --task feature-extraction -o {out}", 1, "corrupt_model", "config.json"),
    c("hf-latin1-config", "export {in}/hf_latin1 --task feature-extraction -o {out}", 2, "invalid_encoding", "config"),
    c(
        "hf-bad-safetensors",
        "export {in}/hf_badst --task feature-extraction -o {out}",
        1,
        "corrupt_model",
        r"safetensors weights file.* is corrupt",
    ),
    c("hf-bad-bin", "export {in}/hf_badbin --task feature-extraction -o {out}", 1, "corrupt_model", "not a PyTorch"),
    c(
        "hf-bad-tokenizer",
        "export {in}/hf_badtok --task feature-extraction -o {out}",
        1,
        "corrupt_file",
        "a tokenizer file.* cannot be parsed: EOF",
    ),
    c("quantize-bad-manifest", "quantize {in}/pkg_badjson --recipe int8-dynamic -o {out}", 1, "invalid_package", ""),
    c("output-exists", "export {mlp} --task tensor -o {in}/existing", 1, "output_exists", "existing"),
    c("output-sysfs", "export {mlp} --task tensor -o /sys/edgekit-out", 1, "output_not_writable", "/sys"),
    c(
        "output-through-file",
        "export {mlp} --task tensor -o {in}/afile/pkg",
        1,
        "output_not_writable",
        "afile is a file",
    ),
    c(
        "output-deep-under-file",
        "export {mlp} --task tensor -o {in}/afile/a/b/pkg",
        1,
        "output_not_writable",
        "afile is a file",
    ),
    c(
        "output-proc",
        "export {mlp} --task tensor -o /proc/version/pkg",
        1,
        "output_not_writable",
        "/proc/version is a file",
    ),
    # --- calibration and validation data
    c("calib-missing", STATIC + " --calibration {in}/nope.npz", 1, "source_not_found", "calibration data not found"),
    c("calib-empty", STATIC + " --calibration {in}/empty.npz", 1, "corrupt_file", r"empty\.npz\) is empty"),
    c("calib-npy", STATIC + " --calibration {in}/arr.npz", 1, "corrupt_file", "one bare .npy array"),
    c("calib-truncated", STATIC + " --calibration {in}/cut.npz", 1, "corrupt_file", "not a zip file"),
    c("calib-pickled", STATIC + " --calibration {in}/pickled.npz", 1, "calibration_mismatch", "pickled"),
    c("calib-object", STATIC + " --calibration {in}/object.npz", 1, "calibration_mismatch", "allow_pickle=False"),
    c("calib-names", STATIC + " --calibration {in}/wrongname.npz", 1, "calibration_mismatch", "unknown: y"),
    c("calib-dtype", STATIC + " --calibration {in}/float64.npz", 1, "calibration_mismatch", "dtype float64"),
    c("calib-shape", STATIC + " --calibration {in}/narrow.npz", 1, "calibration_mismatch", r"shape \[1, 15\]"),
    c("calib-scalar", STATIC + " --calibration {in}/scalar.npz", 1, "calibration_mismatch", "no samples"),
    c("calib-no-arrays", STATIC + " --calibration {in}/labelsonly.npz", 1, "calibration_mismatch", "holds no arrays"),
    c("calib-format", STATIC + " --calibration {in}/cal.csv", 1, "calibration_mismatch", "unknown format"),
    c("calib-nan", STATIC + " --calibration {in}/nan.npz", 1, "calibration_mismatch", "NaN or infinite"),
    c("calib-inf", STATIC + " --calibration {in}/inf.npz", 1, "calibration_mismatch", "NaN or infinite"),
    c("calib-text-no-tokenizer", STATIC + " --calibration {in}/lines.txt", 1, "calibration_mismatch", "no text"),
    c("calib-images-no-image", STATIC + " --calibration {in}/images", 1, "calibration_mismatch", "takes no images"),
    c(
        "calib-latin1-text",
        "quantize {embed} --recipe int8-static -o {out} --calibration {in}/latin1.txt",
        2,
        "invalid_encoding",
        r"latin1\.txt\) is not valid UTF-8",
    ),
    c(
        "calib-blank-text",
        "quantize {embed} --recipe int8-static -o {out} --calibration {in}/blank.txt",
        1,
        "calibration_mismatch",
        "holds no samples",
    ),
    c("labels-strings", EXPORT + " --validation-data {in}/strlabels.npz", 1, "calibration_mismatch", "are strings"),
    c("labels-short", EXPORT + " --validation-data {in}/shortlabels.npz", 1, "calibration_mismatch", "3 labels for 8"),
    c("labels-range", EXPORT + " --validation-data {in}/rangelabels.npz", 1, "calibration_mismatch", r"\[0, 4\)"),
    c("labels-negative", EXPORT + " --validation-data {in}/neglabels.npz", 1, "calibration_mismatch", r"\[-1, -1\]"),
    c("labels-float", EXPORT + " --validation-data {in}/halflabels.npz", 1, "calibration_mismatch", "integer class"),
    c("labels-matrix", EXPORT + " --validation-data {in}/matrixlabels.npz", 1, "calibration_mismatch", "32 labels"),
    c("val-data-empty", EXPORT + " --validation-data {in}/empty.npz", 1, "corrupt_file", "empty or cut short"),
    c("val-data-truncated", EXPORT + " --validation-data {in}/cut.npz", 1, "corrupt_file", "not a zip file"),
    # --- run: bounds and generation options (checked before the package loads)
    c("threads-0", RUN_P + " --threads 0", 2, "out_of_bounds", r"--threads must be an integer in \[1, "),
    c("threads-neg", RUN_P + " --threads -1", 2, "out_of_bounds", "got -1"),
    c("threads-huge", RUN_P + " --threads 100000", 2, "out_of_bounds", "got 100000"),
    c("batch-0", "run {tensor} --text a --batch-size 0", 2, "out_of_bounds", "--batch-size"),
    c("batch-huge", "run {tensor} --text a --batch-size 1000000", 2, "out_of_bounds", "--batch-size"),
    c("max-tokens-0", RUN_P + " --max-tokens 0", 2, "invalid_config", "max_tokens must be an integer >= 1"),
    c("max-tokens-huge", RUN_P + " --max-tokens 1000000000", 2, "out_of_bounds", r"--max-tokens .*\[1, 32768\]"),
    c("temperature-neg", RUN_P + " --temperature -1", 2, "invalid_config", "temperature must be"),
    c("temperature-nan", RUN_P + " --temperature nan", 2, "invalid_config", "temperature must be"),
    c("temperature-inf", RUN_P + " --temperature inf", 2, "invalid_config", "temperature must be"),
    c("top-p-0", RUN_P + " --top-p 0", 2, "invalid_config", "top_p must be"),
    c("top-p-big", RUN_P + " --top-p 1.5", 2, "invalid_config", "top_p must be"),
    c("top-p-nan", RUN_P + " --top-p nan", 2, "invalid_config", "top_p must be"),
    c("top-k-neg", RUN_P + " --top-k -1", 2, "invalid_config", "top_k must be"),
    c("penalty-0", RUN_P + " --repetition-penalty 0", 2, "invalid_config", "repetition_penalty must be"),
    c("penalty-neg", RUN_P + " --repetition-penalty -2", 2, "invalid_config", "repetition_penalty must be"),
    c("penalty-inf", RUN_P + " --repetition-penalty inf", 2, "invalid_config", "repetition_penalty must be"),
    c("seed-neg", RUN_P + " --seed -1", 2, "invalid_config", "seed must be"),
    c("no-input", RUN_T, 2, "usage_error", "give exactly one kind of input"),
    c("two-inputs", RUN_T + " --prompt a --text b", 2, "usage_error", "got --prompt, --text"),
    # --- run: prompts
    c("prompt-empty", ("run", "{lm}", "--prompt", ""), 2, "invalid_input", "the prompt is empty"),
    c("prompt-surrogate", ("run", "{lm}", "--prompt", "caf\udce9"), 2, "invalid_encoding", "lone surrogate"),
    c("prompt-high-surrogate", ("run", "{lm}", "--prompt", "\ud800x"), 2, "invalid_encoding", "offset 0"),
    c("prompt-on-tensor", "run {tensor} --prompt hello", 2, "usage_error", "generate"),
    c("text-on-lm", "run {lm} --text hello", 2, "usage_error", r"no classify\(\)"),
    # --- run: input and output files
    c("input-missing", "run {tensor} --input {in}/nope.npz", 2, "invalid_input", "input file not found"),
    c("input-empty", "run {tensor} --input {in}/empty.npz", 1, "corrupt_file", "--input .*empty or cut short"),
    c("input-npy", "run {tensor} --input {in}/arr.npz", 1, "corrupt_file", "--input .*one bare .npy"),
    c("input-truncated", "run {tensor} --input {in}/cut.npz", 1, "corrupt_file", "--input .*not a zip"),
    c("input-pickled", "run {tensor} --input {in}/pickled.npz", 1, "corrupt_file", "pickled"),
    c("input-names", "run {tensor} --input {in}/in_names.npz", 2, "invalid_input", "z"),
    c("input-dtype", "run {tensor} --input {in}/in_dtype.npz", 2, "invalid_input", "int32"),
    c("input-rank", "run {tensor} --input {in}/in_rank.npz", 2, "invalid_input", "x"),
    c("input-width", "run {tensor} --input {in}/in_width.npz", 2, "invalid_input", "x"),
    c("output-sys", "run {tensor} --input {in}/in_x.npz --output /sys/o.npz", 1, "permission_denied", "/sys"),
    c("output-dir", "run {tensor} --input {in}/in_x.npz --output {in}/emptydir", 2, "invalid_path", "is a directory"),
    c("output-no-parent", "run {tensor} --input {in}/in_x.npz --output {in}/no/o.npz", 2, "invalid_path", "not exist"),
    c("output-under-file", "run {tensor} --input {in}/in_x.npz --output {in}/afile/o.npz", 2, "invalid_path", ""),
    c("image-not-image", "run {image} --image {in}/notimage.png", 2, "invalid_input", "notimage.png"),
    c("audio-not-wav", "run {audio} --audio {in}/notwav.wav", 2, "invalid_input", "notwav.wav"),
    # --- run: broken packages
    c("pkg-missing", "run {in}/nopkg --text a", 1, "source_not_found", "no model package at .*nopkg"),
    c("pkg-bad-json", "run {in}/pkg_badjson --input {in}/in_x.npz", 1, "invalid_package", "not valid JSON"),
    c("pkg-list-json", "run {in}/pkg_listjson --input {in}/in_x.npz", 1, "invalid_package", ""),
    c("pkg-empty-json", "run {in}/pkg_emptyjson --input {in}/in_x.npz", 1, "invalid_package", ""),
    c("pkg-latin1-json", "run {in}/pkg_latin1json --input {in}/in_x.npz", 1, "invalid_package", "edgekit.json"),
    c("pkg-cut-model", "run {in}/pkg_cutmodel --input {in}/in_x.npz", 1, "checksum_mismatch", "model.onnx"),
    c(
        "pkg-cut-model-noverify",
        "run {in}/pkg_cutmodel --input {in}/in_x.npz --no-verify",
        1,
        "corrupt_model",
        "not a valid ONNX model \\(truncated or corrupt\\)",
    ),
    c("pkg-no-model", "run {in}/pkg_nomodel --input {in}/in_x.npz", 1, "checksum_mismatch", "model.onnx"),
    c("pkg-bad-tokenizer", "run {in}/pkg_badtok --text a --no-verify", 1, "corrupt_file", "tokenizer.json"),
    c("pkg-cut-tokenizer", "run {in}/pkg_cuttok --text a --no-verify", 1, "corrupt_file", "tokenizer"),
    c("run-device-unknown", "run {tensor} --input {in}/in_x.npz --device bogus", 2, "unknown_name", "'bogus'"),
    # --- profile
    c("runs-0", "profile {tensor} --runs 0", 2, "out_of_bounds", r"--runs must be an integer in \[1, 100000\]"),
    c("runs-huge", "profile {tensor} --runs 1000000000", 2, "out_of_bounds", "--runs"),
    c("warmup-neg", PROFILE + " --warmup -1", 2, "out_of_bounds", "--warmup"),
    c("warmup-huge", PROFILE + " --warmup 100000000", 2, "out_of_bounds", "--warmup"),
    c("shape-zero", PROFILE + " --input-shape x=0x4", 2, "usage_error", "--input-shape takes NAME=DIMxDIM"),
    c("shape-letters", PROFILE + " --input-shape x=1xa", 2, "usage_error", "--input-shape takes"),
    c("shape-no-name", PROFILE + " --input-shape =1x4", 2, "usage_error", "--input-shape takes"),
    c("shape-no-dims", PROFILE + " --input-shape x", 2, "usage_error", "--input-shape takes"),
    c("shape-negative", PROFILE + " --input-shape x=1x-4", 2, "usage_error", "--input-shape takes"),
    c("shape-absurd", PROFILE + " --input-shape x=100000x100000x100000", 2, "out_of_bounds", "elements"),
    c("shape-twice", PROFILE + " --input-shape x=1x4 --input-shape x=2x4", 2, "usage_error", "twice"),
    c("html-sysfs", PROFILE + " --html /sys/report.html", 1, "permission_denied", "/sys"),
    c("html-dir", PROFILE + " --html {in}/emptydir", 2, "invalid_path", "is a directory"),
    c("html-no-parent", PROFILE + " --html {in}/no/report.html", 2, "invalid_path", "does not exist"),
    c("html-under-file", PROFILE + " --html {in}/afile/report.html", 2, "invalid_path", "afile"),
    c("latency-neg", PROFILE + " --max-latency-ms -1", 2, "usage_error", "max_latency_ms must be a positive"),
    c("memory-zero", PROFILE + " --max-memory-mb 0", 2, "usage_error", "max_memory_mb must be a positive"),
    c("profile-device-unknown", PROFILE + " --device bogus", 2, "unknown_name", "'bogus'"),
    # --- device profiles
    c("dev-latin1", "devices --device-dir {in}/dev_latin1", 2, "invalid_encoding", r"mydev\.toml\) is not valid"),
    c("dev-binary", "devices --device-dir {in}/dev_binary", 2, "invalid_encoding", "not valid UTF-8"),
    c("dev-syntax", "devices --device-dir {in}/dev_syntax", 1, "invalid_device_profile", "not valid TOML"),
    c("dev-empty", "devices --device-dir {in}/dev_empty", 1, "invalid_device_profile", "mydev.toml"),
    c("dev-missing", "devices --device-dir {in}/dev_missing", 1, "invalid_device_profile", "memory_gb"),
    c("dev-type", "devices --device-dir {in}/dev_type", 1, "invalid_device_profile", "memory_gb"),
    c("dev-negative", "devices --device-dir {in}/dev_negative", 1, "invalid_device_profile", "memory_gb"),
    c("dev-unknown-key", "devices --device-dir {in}/dev_unknown", 1, "invalid_device_profile", "memory_gigs"),
    c("dev-name", "devices show otherdev --device-dir {in}/dev_name", 1, "invalid_device_profile", "must match"),
    c("dev-cores", "devices --device-dir {in}/dev_cores", 1, "invalid_device_profile", "cores"),
    c("dev-threads", "devices --device-dir {in}/dev_threads", 1, "invalid_device_profile", "default_threads"),
    c("dev-show-unknown", "devices show no-such-device", 2, "unknown_name", "no-such-device"),
    c("dev-show-no-name", "devices show", 2, "usage_error", "needs a device name"),
    c("dev-extra-arg", "devices list pixel-8", 2, "usage_error", "unexpected argument"),
    c("dev-bare-name", "devices pixel-8", 2, "usage_error", "invalid choice: 'pixel-8'"),
    c(
        "profile-bad-device-dir",
        PROFILE + " --device mydev --device-dir {in}/dev_syntax",
        1,
        "invalid_device_profile",
        "",
    ),
]

# A few cases again with --json: the error is also one JSON document on stdout.
JSON_CASES = {
    "int-not-int",
    "unknown-command",
    "recipe-unknown",
    "calib-empty",
    "threads-huge",
    "op-types-bogus",
    "dev-latin1",
    "prompt-surrogate",
}


# ------------------------------------------------------------------------------------------------ runner


class _LiveStderr:
    """A stream that is whatever ``sys.stderr`` is when written to."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture(autouse=True)
def _library_log_handlers_on_live_stderr() -> None:
    """torch, transformers and optimum bind their log handlers to sys.stderr when first used. Inside a test
    that is the test's capture, closed afterwards, and a later warning would print logging's own traceback
    into another test's stderr; such handlers write to the live stderr instead (a test artifact only: the
    CLI runs once per process)."""
    import logging

    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler and not isinstance(handler.stream, _LiveStderr):
                handler.stream = _LiveStderr()  # not setStream(): it flushes a possibly closed stream first
                handler.__dict__.pop("flush", None)  # transformers pins flush to the stderr of its first use


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mlp_classifier(tmp_path_factory.mktemp("hostile") / "mlp.onnx")


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not IGNORED.intersection(p.parts)}


def _argv(case: Case, fill: dict[str, str]) -> list[str]:
    items = shlex.split(case.argv) if isinstance(case.argv, str) else list(case.argv)
    out = []
    for item in items:
        for key, value in fill.items():
            item = item.replace("{" + key + "}", value)
        out.append(item)
    return out


def _prepare(case: Case, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    def fx(name: str) -> Path:
        return request.getfixturevalue("mlp_path") if name == "mlp" else request.getfixturevalue(f"{name}_package")

    text = " ".join(case.argv) if isinstance(case.argv, tuple) else case.argv
    fill = {"in": str(tmp_path / "in"), "out": str(tmp_path / "out")}
    for name in ("mlp", "tensor", "embed", "image", "audio", "lm"):
        if "{" + name + "}" in text:
            fill[name] = str(fx(name))
    (tmp_path / "in").mkdir()
    for name, make in FILES.items():
        if "{in}/" + name in text:
            make(tmp_path / "in" / name, fx)
    return fill


def run_case(
    case: Case, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str], *, json_out: bool
) -> None:
    fill = _prepare(case, request, tmp_path)
    work_tmp = tmp_path / "tmp"
    work_tmp.mkdir()
    mp = request.getfixturevalue("monkeypatch")
    mp.setattr(tempfile, "tempdir", str(work_tmp))
    before = _snapshot(tmp_path)
    capsys.readouterr()
    argv = _argv(case, fill) + (["--json"] if json_out else [])
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    assert code == case.exit, f"{argv}: exit {code}\n{err}"
    lines = err.splitlines()
    error_line = next((ln for ln in lines if ln.startswith("error[")), "")
    assert error_line.startswith(f"error[{case.code}]: "), err
    assert re.search(case.message, error_line), f"{case.message!r} not in {error_line!r}"
    hint = lines[lines.index(error_line) + 1] if lines.index(error_line) + 1 < len(lines) else ""
    assert hint.startswith("  hint: ") and len(hint) > len("  hint: ") + 5, err
    assert _snapshot(tmp_path) == before, "the command left files behind"
    assert not any(work_tmp.iterdir()), "the command left its work directory behind"
    if json_out:
        report = json.loads(out)
        assert report["status"] == "error" and report["errors"][0]["code"] == case.code
        assert report["errors"][0]["hint"] == hint.removeprefix("  hint: ")


# Cases over ~10 s on 2 cores: the first HF directory imports torch and transformers; int8-static with
# symbolic shape inference.
SLOW_CASES = {"hf-bad-config", "exclude-unknown-static"}


@pytest.mark.parametrize(
    "case",
    [pytest.param(cs, marks=pytest.mark.slow) if cs.id in SLOW_CASES else cs for cs in CLI_CASES],
    ids=lambda cs: cs.id,
)
def test_hostile_cli(case: Case, request: pytest.FixtureRequest, tmp_path: Path, capsys: Any) -> None:
    run_case(case, request, tmp_path, capsys, json_out=False)


@pytest.mark.parametrize("case", [cs for cs in CLI_CASES if cs.id in JSON_CASES], ids=lambda cs: cs.id)
def test_hostile_cli_json(case: Case, request: pytest.FixtureRequest, tmp_path: Path, capsys: Any) -> None:
    run_case(case, request, tmp_path, capsys, json_out=True)


def test_case_ids_are_unique_and_enough() -> None:
    ids = [cs.id for cs in CLI_CASES]
    assert len(ids) == len(set(ids))
    assert len(CLI_CASES) >= 120
    assert set(ids) >= JSON_CASES | SLOW_CASES


# ------------------------------------------------------------------------------------------- Python API


def _api_load_missing(fx: Callable[[str], Path], tmp: Path) -> Any:
    import edgekit

    return edgekit.load(tmp / "nopkg")


def _api_load_cut(fx: Callable[[str], Path], tmp: Path) -> Any:
    import edgekit

    FILES["pkg_cutmodel"](tmp / "pkg", fx)
    return edgekit.load(tmp / "pkg", verify=False)


def _api_load_bad_kwarg(fx: Callable[[str], Path], tmp: Path) -> Any:
    import edgekit

    return edgekit.load(fx("tensor"), threadz=2)


def _api_export(tmp: Path, fx: Callable[[str], Path], **kwargs: Any) -> Any:
    import exporters

    return exporters.export(fx("mlp"), output=tmp / "out", task="tensor", progress=False, **kwargs)


def _api_quantize_cut(fx: Callable[[str], Path], tmp: Path) -> Any:
    import edgekit

    FILES["cut.onnx"](tmp / "cut.onnx", fx)
    return edgekit.quantize(tmp / "cut.onnx", output=tmp / "out", recipe="int8-dynamic", progress=False)


def _api_generate(prompt: Any) -> Callable[[Callable[[str], Path], Path], Any]:
    def call(fx: Callable[[str], Path], tmp: Path) -> Any:
        import edgekit

        return edgekit.load(fx("lm"), threads=1).generate(prompt, max_tokens=2)

    return call


API_CASES: list[tuple[str, Callable[[Callable[[str], Path], Path], Any], str, str]] = [
    ("load-missing", _api_load_missing, "source_not_found", "no model package"),
    ("load-truncated-noverify", _api_load_cut, "corrupt_model", "not a valid ONNX model \\(truncated or corrupt\\)"),
    ("load-bad-keyword", _api_load_bad_kwarg, "invalid_config", "unexpected keyword argument 'threadz'"),
    (
        "export-op-types",
        lambda fx, t: _api_export(t, fx, recipe="int8-dynamic", recipe_options={"op_types": ["Bogus"]}),
        "invalid_config",
        "'Bogus'",
    ),
    (
        "export-bad-keyword",
        lambda fx, t: _api_export(t, fx, validation_sample=3),
        "invalid_config",
        "validation_sample",
    ),
    (
        "export-samples-0",
        lambda fx, t: _api_export(t, fx, validation_samples=0),
        "out_of_bounds",
        "validation_samples",
    ),
    ("export-task", lambda fx, t: _api_export(t, fx, recipe="int4", task_="x"), "invalid_config", "task_"),
    ("quantize-truncated", _api_quantize_cut, "corrupt_model", "cut.onnx"),
    ("generate-bad-utf8", _api_generate(b"caf\xe9"), "invalid_encoding", "not valid UTF-8: byte 0xe9 at offset 3"),
    ("generate-surrogate", _api_generate("\udcff"), "invalid_encoding", "lone surrogate"),
    ("generate-float-ids", _api_generate([1.5, 2.0]), "invalid_input", "token ids must be integers"),
    ("generate-bool-ids", _api_generate([True]), "invalid_input", "token ids must be integers"),
    ("generate-empty", _api_generate(""), "invalid_input", "empty"),
]


@pytest.mark.parametrize(("name", "call", "code", "message"), API_CASES, ids=[c[0] for c in API_CASES])
def test_hostile_api(name: str, call: Any, code: str, message: str, request: pytest.FixtureRequest, tmp_path: Path):
    def fx(fixture: str) -> Path:
        return request.getfixturevalue("mlp_path" if fixture == "mlp" else f"{fixture}_package")

    with pytest.raises(EdgekitError) as info:
        call(fx, tmp_path)
    err = info.value
    assert err.code == code and re.search(message, err.message), (err.code, err.message)
    assert err.hint
    assert not (tmp_path / "out").exists()


def test_valid_utf8_bytes_prompt_generates(lm_package: Path) -> None:
    import edgekit

    model = edgekit.load(lm_package, threads=1)
    assert model.generate("héllo".encode(), max_tokens=3).text == model.generate("héllo", max_tokens=3).text


# ------------------------------------------------------------------------------------- safe outcomes


def test_a_step_that_changes_nothing_says_so(tensor_package: Path, tmp_path: Path, capsys: Any) -> None:
    # The tensor model (Mul, Cast, Unsqueeze, Add) has no op dynamic int8 quantizes.
    assert (
        main(
            [
                "quantize",
                str(tensor_package),
                "--recipe",
                "int8-dynamic",
                "-o",
                str(tmp_path / "q"),
                "-q",
                "--allow-slower",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "note: step quantize changed nothing: no node of op types" in out
    manifest = json.loads((tmp_path / "q" / "edgekit.json").read_text())
    step = next(s for s in manifest["recipe"]["steps"] if s["name"] == "quantize")
    assert step["changed"] is False and "stays float32" in step["details"]["reason"]


def _text_cls_validation(tmp: Path, labels: np.ndarray) -> Path:
    ids = np.random.default_rng(5).integers(3, 200, size=(12, 6)).astype(np.int64)
    np.savez(tmp / f"val-{labels.dtype.kind}.npz", input_ids=ids, labels=labels)
    return tmp / f"val-{labels.dtype.kind}.npz"


def test_string_labels_map_through_the_package_labels(text_cls_package: Path, tmp_path: Path) -> None:
    import exporters

    names = np.array(["negative", "neutral", "positive"])
    ids = np.arange(12) % 3
    metrics = {}
    for labels in (names[ids], ids):
        result = exporters.quantize(
            text_cls_package,
            output=tmp_path / f"q-{labels.dtype.kind}",
            recipe="fp32",
            validation_data=_text_cls_validation(tmp_path, labels),
            progress=False,
        )
        metrics[labels.dtype.kind] = result.manifest.accuracy["metrics"]
    # Strings are mapped to the same class ids, so the labeled accuracy is the same (not 0.0).
    assert metrics["U"]["top1_accuracy"] == metrics["i"]["top1_accuracy"]
    assert metrics["U"]["top1_accuracy_reference"] == metrics["i"]["top1_accuracy_reference"]
    with pytest.raises(EdgekitError, match="not label names of the model"):
        exporters.quantize(
            text_cls_package,
            output=tmp_path / "bad",
            recipe="fp32",
            validation_data=_text_cls_validation(tmp_path, np.array(["happy"] * 12)),
            progress=False,
        )
    assert not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------------------- closed stdout


@pytest.mark.parametrize("what", ["stream", "json"])
def test_closed_stdout_ends_quietly(what: str, lm_package: Path, embed_package: Path) -> None:
    """`edgekit run --stream | head`: the reader is gone before the first write; no traceback, a quiet exit."""
    argv = (
        ["run", str(lm_package), "--prompt", "the", "--stream", "--max-tokens", "20", "--ignore-eos", "--threads", "1"]
        if what == "stream"
        else ["run", str(embed_package), "--text", "a", "--text", "b", "--json"]
    )
    cwd = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekit", *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    proc.stdout.close()  # like `head` exiting at once
    _, err = proc.communicate(timeout=180)
    text = err.decode("utf-8", "replace")
    assert proc.returncode in (0, 141), text
    assert "Traceback" not in text and "BrokenPipeError" not in text and "Exception ignored" not in text


# ------------------------------------------------------------------------------------ the CLI boundary


def test_an_unforeseen_exception_is_internal_and_debug_shows_it(monkeypatch: Any, tmp_path: Path, capsys: Any) -> None:
    import edgekit.inspect

    def boom(path: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(edgekit.inspect, "inspect_path", boom)
    assert main(["inspect", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "error[internal]: unexpected RuntimeError: boom" in err
    assert "  hint: a bug in edgekit: rerun with --debug and report it" in err and "Traceback" not in err
    assert main(["inspect", str(tmp_path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["errors"][0]["code"] == "internal" and report["errors"][0]["type"] == "InternalError"
    with pytest.raises(RuntimeError, match="boom"):
        main(["inspect", str(tmp_path), "--debug"])


def test_interrupt_has_a_hint(monkeypatch: Any, tmp_path: Path, capsys: Any) -> None:
    import edgekit.inspect

    def interrupted(path: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(edgekit.inspect, "inspect_path", interrupted)
    assert main(["inspect", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "error[interrupted]" in err and "  hint: " in err


def test_every_unchanged_step_records_a_reason(mlp_path: Path, tmp_path: Path) -> None:
    import exporters

    result = exporters.export(mlp_path, output=tmp_path / "p", task="tensor", recipe="fp32", progress=False)
    unchanged = [s for s in result.steps if not s["changed"]]
    assert unchanged, "the MLP has no decoder to fuse: that step changes nothing"
    assert all(s["details"]["reason"] for s in unchanged)
