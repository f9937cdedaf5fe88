"""int8-dynamic's ISA records (exporters/isa.py): the record follows the injected CPU, and its GELU choice."""

from __future__ import annotations

from math import erf, sqrt
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporters.isa import ISA_CHOICES, detect_isa
from exporters.recipes import RECIPES, resolve_gelu, resolve_weight_type, step_gelu

ZEN4 = "flags : fpu sse2 avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16"
ALDER_LAKE = "flags : fpu sse2 avx2 fma avx_vnni"
ZEN2 = "flags : fpu sse2 avx2 fma"


@pytest.mark.parametrize(
    ("machine", "flags", "isa", "weight_type", "gelu"),
    [
        ("x86_64", ZEN4, "x86-avx512-vnni", "int8", "tanh"),
        ("x86_64", ALDER_LAKE, "x86-avx-vnni", "int8", "exact"),
        ("x86_64", ZEN2, "x86-avx2", "int8-pair-safe", "exact"),
        # a flag name inside another word is not the flag
        ("x86_64", "flags : fpu avx2 fma avx512_vnnix", "x86-avx2", "int8-pair-safe", "exact"),
        ("aarch64", "", "arm64", "int8", "exact"),
        ("riscv64", "flags : avx512_vnni", "other", "int8", "exact"),  # x86 flags mean nothing elsewhere
    ],
)
def test_the_isa_record_follows_the_injected_cpu(machine: str, flags: str, isa: str, weight_type: str, gelu: str):
    assert detect_isa(machine=machine, cpu_flags=flags) == isa
    record = ISA_CHOICES[isa]
    assert resolve_weight_type("auto", machine=machine, cpu_flags=flags) == (weight_type, record.weight_reason)
    assert resolve_gelu("auto", machine=machine, cpu_flags=flags) == (gelu, record.gelu_reason)
    # an explicit option wins over the record on every CPU
    assert resolve_gelu("exact", machine=machine, cpu_flags=flags) == ("exact", "requested")
    assert resolve_weight_type("uint8", machine=machine, cpu_flags=flags) == ("uint8", "requested")


def test_int8_dynamic_runs_the_gelu_step_before_padding_removal():
    names = [name for name, _ in RECIPES.get("int8-dynamic").steps]
    assert names == ["optimize", "gelu", "encoder_attention", "unpad", "smooth", "quantize"]


def _bias_gelu(path: Path, b: np.ndarray) -> Path:
    g = helper.make_graph(
        [helper.make_node("BiasGelu", ["x", "b"], ["y"], domain="com.microsoft", name="gelu")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", b.size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", b.size])],
        [numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize(("gelu", "op", "changed"), [("tanh", "FastGelu", True), ("exact", "BiasGelu", False)])
def test_the_gelu_step_swaps_the_kernel_only_for_tanh(tmp_path: Path, gelu: str, op: str, changed: bool):
    rng = np.random.default_rng(0)
    b = rng.standard_normal(64).astype(np.float32)
    x = (rng.standard_normal((16, 64)) * 3).astype(np.float32)
    src = _bias_gelu(tmp_path / "src.onnx", b)
    did, details = step_gelu(src, tmp_path / "dst.onnx", SimpleNamespace(gelu=gelu), None)  # type: ignore[arg-type]
    assert did is changed and details["gelu"] == gelu
    assert [n.op_type for n in onnx.load(str(tmp_path / "dst.onnx")).graph.node] == [op]
    z = (x + b).astype(np.float64)
    exact = z * 0.5 * (1 + np.vectorize(erf)(z / sqrt(2)))
    err = np.abs(_run(tmp_path / "dst.onnx", x) - exact).max()
    if gelu == "tanh":  # the tanh approximation: close to erf GELU, not equal
        assert 1e-5 < err < 2e-3, err
    else:
        assert err < 1e-5, err
