"""int8-dynamic's accuracy steps: SmoothQuant-style smoothing and pair-safe int8 weight scales."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporters import export
from exporters.recipes import Int8DynamicConfig, resolve_weight_type
from exporters.smoothing import pair_safe_scale, quantize_weight_sim, step_smooth
from tests.onnx_builders import mlp_classifier

FEATURES, OUTLIER = 128, 3


def _layernorm_matmul(path: Path, seed: int = 0) -> Path:
    """x -> LayerNormalization (channel 3's gamma is 100x the rest: an outlier channel) -> MatMul -> y."""
    rng = np.random.default_rng(seed)
    gamma = np.ones(FEATURES, np.float32)
    gamma[OUTLIER] = 100.0
    w = (rng.standard_normal((FEATURES, 48)) / np.sqrt(FEATURES)).astype(np.float32)
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["h"], axis=-1, name="ln"),
        helper.make_node("MatMul", ["h", "w"], ["y"], name="proj"),
    ]
    inits = [
        numpy_helper.from_array(gamma, "gamma"),
        numpy_helper.from_array(np.zeros(FEATURES, np.float32), "beta"),
        numpy_helper.from_array(w, "w"),
    ]
    g = helper.make_graph(
        nodes,
        "ln_mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 48])],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _inits(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def _rel_error(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.abs(got - ref).mean() / np.abs(ref).mean())


def test_smoothing_folds_into_the_layernorm_and_keeps_the_float_function(tmp_path: Path) -> None:
    src = _layernorm_matmul(tmp_path / "src.onnx")
    rng = np.random.default_rng(1)
    samples = [{"x": rng.standard_normal((16, FEATURES)).astype(np.float32)} for _ in range(8)]
    ctx = SimpleNamespace(calibration=None, samples=samples, work=tmp_path, log=lambda _m: None)
    cfg = Int8DynamicConfig(weight_type="uint8")
    changed, info = step_smooth(src, tmp_path / "smoothed.onnx", cfg, ctx)

    assert changed and info["smoothed"] == 1 and info["folded"] == 1 and info["muls_inserted"] == 0
    layer = info["layers"][0]
    assert layer["nodes"] == ["proj"] and layer["error_after"] < layer["error_before"]
    before, after = _inits(src), _inits(tmp_path / "smoothed.onnx")
    s = before["gamma"] / after["gamma"]  # 1/s went into gamma, s into the weight rows
    assert s[OUTLIER] == pytest.approx(s.max()) and s[OUTLIER] > 2
    np.testing.assert_allclose(after["w"], before["w"] * s[:, None], rtol=1e-5)

    x = np.random.default_rng(2).standard_normal((64, FEATURES)).astype(np.float32)
    np.testing.assert_allclose(_run(tmp_path / "smoothed.onnx", x), _run(src, x), rtol=1e-4, atol=1e-4)


def test_smoothed_int8_model_is_closer_to_float_than_unsmoothed(tmp_path: Path) -> None:
    src = _layernorm_matmul(tmp_path / "src.onnx")
    x = np.random.default_rng(3).standard_normal((64, FEATURES)).astype(np.float32)
    ref = _run(src, x)
    errors = {}
    for smoothing in (False, True):
        out = tmp_path / f"q{smoothing}"
        export(
            src,
            output=out,
            task="tensor",
            recipe="int8-dynamic",
            recipe_options={"smoothing": smoothing, "weight_type": "uint8", "fusions": False},
            progress=False,
            on_slower="warn",
        )
        errors[smoothing] = _rel_error(ref, _run(out / "model.onnx", x))
    assert errors[True] < 0.6 * errors[False], errors


def _pair_sums(q: np.ndarray) -> np.ndarray:
    a = np.abs(q.astype(np.int32))
    if a.shape[0] % 2:
        a = np.concatenate([a, np.zeros((1, a.shape[1]), np.int32)])
    return a[0::2] + a[1::2]


def test_pair_safe_scale_bounds_every_pair_of_quantized_weights() -> None:
    rng = np.random.default_rng(4)
    w = rng.standard_normal((65, 24)).astype(np.float32)  # odd K: the last row pairs with zero
    w[10:12, 5] = [3.9, -4.0]  # a pair of large weights in one column
    for per_channel in (True, False):
        scale = pair_safe_scale(w, per_channel=per_channel)
        q = np.clip(np.round(w / scale[None, :]), -127, 127)
        assert _pair_sums(q).max() <= 128  # 255 x 128 fits int16: vpmaddubsw cannot saturate
    # plain symmetric int8 (max|w| / 127) puts that pair at 127 + 124
    plain = np.abs(w).max(axis=0, keepdims=True) / 127
    assert _pair_sums(np.round(w / plain)).max() > 128
    # pair-safe costs under a bit against plain int8 on Gaussian weights
    err_safe = np.abs(quantize_weight_sim(w, weight_type="int8-pair-safe", per_channel=True) - w).mean()
    err_plain = np.abs(quantize_weight_sim(w, weight_type="int8", per_channel=True) - w).mean()
    assert err_plain < err_safe < 2 * err_plain


def test_int8_pair_safe_export_stores_pair_safe_int8_weights(tmp_path: Path) -> None:
    src = mlp_classifier(tmp_path / "mlp.onnx", features=16, hidden=64)
    out = tmp_path / "q"
    res = export(
        src,
        output=out,
        task="tensor",
        recipe="int8-dynamic",
        recipe_options={"weight_type": "int8-pair-safe"},
        progress=False,
        on_slower="warn",
    )
    steps = {s["name"]: s for s in res.steps}
    assert steps["quantize"]["details"]["weight_type"] == "int8-pair-safe"
    weights = [a for a in _inits(out / "model.onnx").values() if a.dtype == np.int8 and a.ndim == 2]
    assert len(weights) == 2
    for q in weights:
        assert _pair_sums(q).max() <= 128
    x = np.random.default_rng(5).standard_normal((8, 16)).astype(np.float32)
    ref, got = _run(src, x), _run(out / "model.onnx", x)
    assert _rel_error(ref, got) < 0.05


@pytest.mark.parametrize(
    ("machine", "flags", "expected"),
    [
        ("x86_64", "flags : fpu avx2 fma avx512f avx512_vnni", "int8"),
        ("x86_64", "flags : fpu avx2 avx_vnni", "int8"),
        ("x86_64", "flags : fpu avx2 fma", "int8-pair-safe"),
        ("aarch64", "", "int8"),
    ],
)
def test_auto_weight_type_follows_the_cpu(machine: str, flags: str, expected: str) -> None:
    chosen, reason = resolve_weight_type("auto", machine=machine, cpu_flags=flags)
    assert chosen == expected and reason
    assert resolve_weight_type("uint8", machine=machine, cpu_flags=flags) == ("uint8", "requested")


def test_pair_safe_scales_follow_a_transposed_gemm_weight(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    w = rng.standard_normal((24, 32)).astype(np.float32)  # N x K, used as B^T
    w[:, 6:8] = 3.5  # every output row has a large pair along K
    node = helper.make_node("Gemm", ["x", "w"], ["y"], transB=1, name="fc")
    g = helper.make_graph(
        [node],
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 24])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "gemm.onnx"))
    out = tmp_path / "q"
    opts = {"weight_type": "int8-pair-safe", "fusions": False, "smoothing": False}
    export(
        tmp_path / "gemm.onnx",
        output=out,
        task="tensor",
        recipe="int8-dynamic",
        recipe_options=opts,
        progress=False,
        on_slower="warn",
    )
    (q,) = [a for a in _inits(out / "model.onnx").values() if a.dtype == np.int8 and a.ndim == 2]
    k_first = q if q.shape == (32, 24) else q.T  # pairs run along K
    assert _pair_sums(k_first).max() <= 128
    x = rng.standard_normal((8, 32)).astype(np.float32)
    assert _rel_error(_run(tmp_path / "gemm.onnx", x), _run(out / "model.onnx", x)) < 0.05
