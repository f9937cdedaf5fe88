"""int8-static on small CNNs (EfficientNet's SiLU blocks, MobileNetV2 / ResNet's residual blocks): which ops get
int8, what ORT's optimizer leaves of the QDQ pairs, and that the fused int8 kernels agree with the QDQ graph's own
arithmetic.

Measured failures shaped the recipe (tests/test_architecture_matrix.py's tiny EfficientNet, MobileNetV2 and DeiT):
ORT's QLinearAveragePool returns 0 for transformers' EfficientNet pooler (a window wider than its input), so such a
pool becomes GlobalAveragePool first; SiLU runs as ORT's float QuickGelu between int8 convs and squeeze-excite
gates as QLinearSigmoid / QLinearMul (exporters/static_rewrites.py); MLAS's AVX2
u8s8 kernel saturates its int16 pair sums with 8-bit int8 weights, so int8 weights are stored 7-bit; quantized
residual Adds ahead of LayerNorm cost DeiT's cosine, so those stay float. The ops ORT folds into integer kernels
(Relu / Clip into the QLinearConv, residual Add, pooling, Concat) are quantized: a ReLU CNN runs int8 from its
input's QuantizeLinear to its output's DequantizeLinear. The fused-vs-unfused comparison fails on a CPU whose fused
kernel saturates.
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import numpy as np
import pytest

CHANNELS, SIZE, CLASSES = 8, 16, 4


def _silu_cnn(path: Path, seed: int = 0) -> Path:
    """x[1,3,16,16] -> Conv -> SiLU -> depthwise Conv -> SiLU -> squeeze-excite gate -> pool -> Gemm."""
    from onnx import helper

    rng = np.random.default_rng(seed)

    def he(*shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    inits = {
        "w1": he(CHANNELS, 3, 3, 3),
        "b1": np.zeros(CHANNELS, np.float32),
        "w2": he(CHANNELS, 1, 3, 3),
        "b2": np.zeros(CHANNELS, np.float32),
        "wh": he(CLASSES, CHANNELS),
        "bh": np.zeros(CLASSES, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Sigmoid", ["c1"], ["s1"], name="sig1"),
        helper.make_node("Mul", ["c1", "s1"], ["a1"], name="silu1"),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=CHANNELS, name="dwconv"),
        helper.make_node("Sigmoid", ["c2"], ["s2"], name="sig2"),
        helper.make_node("Mul", ["c2", "s2"], ["a2"], name="silu2"),
        helper.make_node("GlobalAveragePool", ["a2"], ["p"], name="pool"),
        helper.make_node("Sigmoid", ["p"], ["gate"], name="se_sig"),
        helper.make_node("Mul", ["a2", "gate"], ["g"], name="se_mul"),
        helper.make_node("GlobalAveragePool", ["g"], ["p2"], name="pool2"),
        helper.make_node("Flatten", ["p2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wh", "bh"], ["logits"], transB=1, name="head"),
    ]
    return _save_cnn(path, "silu_cnn", nodes, inits)


def _save_cnn(path: Path, name: str, nodes: list, inits: dict[str, np.ndarray]) -> Path:
    """A 3-channel SIZE x SIZE image in, CLASSES logits out, opset 17."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, CLASSES])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _inputs(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 3, SIZE, SIZE)).astype(np.float32)


def _session(path: Path, *, fused: bool):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if fused else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("static-vision")
    src = _silu_cnn(root / "cnn.onnx")
    cal = root / "cal.npz"
    np.savez(cal, x=_inputs(1, 16)[:, 0])
    out = {"src": src}
    # "int8" is the recipe's default (7-bit int8 weights); uint8 weights are the option that cannot saturate either.
    for wtype, options in (("uint8", {"weight_type": "uint8"}), ("int8", {})):
        out[wtype] = _export(src, root / wtype, cal, options)
    return out


def _export(src: Path, out: Path, cal: Path, options: dict[str, object]):
    from exporters import export

    return export(
        src,
        output=out,
        task="tensor",
        recipe="int8-static",
        calibration=cal,
        recipe_options=options,
        progress=False,
        on_slower="warn",
        validation_samples=4,
    )


def _model_file(result) -> Path:
    return next(Path(result.package_dir).glob("*.onnx"))


def _optimized_ops(model: Path, tmp_path: Path) -> dict[str, int]:
    """Op counts of the graph ORT runs: the session's level-ALL optimized model, read back."""
    from collections import Counter

    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def test_silu_runs_as_one_float_kernel_and_the_gate_in_int8(exported, tmp_path: Path) -> None:
    """What ORT's QDQ fusion makes of the SiLU CNN: integer Conv / Gemm / pooling kernels, each SiLU one float
    QuickGelu between a DequantizeLinear and a QuantizeLinear, the squeeze-excite gate QLinearSigmoid / QLinearMul."""
    from exporters.recipes import STATIC_OP_TYPES

    ops = _optimized_ops(_model_file(exported["int8"]), tmp_path)
    assert ops["QLinearConv"] == 2 and ops["QGemm"] == 1 and ops["QLinearGlobalAveragePool"] == 2, ops
    assert ops["QuickGelu"] == 2 and ops["QLinearSigmoid"] == 1 and ops["QLinearMul"] == 1, ops
    assert not ops["Sigmoid"] and not ops["Mul"], ops
    # one round trip per SiLU, plus the input's QuantizeLinear and the output's DequantizeLinear
    assert ops["QuantizeLinear"] == 3 and ops["DequantizeLinear"] == 3, ops
    step = next(s for s in exported["int8"].steps if s["name"] == "quantize")
    assert step["details"]["op_types_quantized"] == list(STATIC_OP_TYPES)
    assert step["details"]["weight_type"] == "int8" and step["details"]["reduce_range"] is True
    pre = next(s for s in exported["int8"].steps if s["name"] == "preprocess")
    assert pre["details"]["silu_fused"] == 2


def test_silu_int8_keeps_sigmoid_and_mul_as_qdq(exported, tmp_path: Path) -> None:
    """``silu="int8"`` (providers that take QDQ graphs only): every Sigmoid / Mul is an int8 kernel, no float op."""
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=_inputs(1, 16)[:, 0])
    result = _export(exported["src"], tmp_path / "silu-int8", cal, {"silu": "int8"})
    ops = _optimized_ops(_model_file(result), tmp_path)
    assert ops["QLinearSigmoid"] == 3 and ops["QLinearMul"] == 3 and not ops["QuickGelu"], ops
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1, ops
    ref, fused = _session(exported["src"], fused=True), _session(_model_file(result), fused=True)
    for x in _inputs(7, 4):
        assert _cosine(fused.run(None, {"x": x})[0], ref.run(None, {"x": x})[0]) >= 0.99


def test_a_pool_wider_than_its_input_becomes_global_and_stays_exact(tmp_path: Path) -> None:
    """transformers' EfficientNet pooler, AvgPool2d(1280, ceil_mode=True) over 4x4 here: ORT's QLinearAveragePool
    divides by the whole window and returns 0; rewritten to GlobalAveragePool it is the same float value and int8."""
    from onnx import helper

    inits = {"wh": np.eye(CLASSES, 3, dtype=np.float32), "bh": np.zeros(CLASSES, np.float32)}
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["m"], kernel_shape=[4, 4], strides=[4, 4], name="maxpool"),
        helper.make_node(
            "AveragePool", ["m"], ["p"], kernel_shape=[1280, 1280], strides=[1280, 1280], ceil_mode=1, name="pooler"
        ),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wh", "bh"], ["logits"], transB=1, name="head"),
    ]
    src = _save_cnn(tmp_path / "pooler.onnx", "pooler", nodes, inits)
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=_inputs(1, 16)[:, 0])
    result = _export(src, tmp_path / "int8", cal, {})
    pre = next(s for s in result.steps if s["name"] == "preprocess")
    assert pre["details"]["global_average_pools"] == ["pooler"]
    ops = _optimized_ops(_model_file(result), tmp_path)
    assert ops["QLinearGlobalAveragePool"] == 1 and not ops["QLinearAveragePool"], ops
    ref, fused = _session(src, fused=True), _session(_model_file(result), fused=True)
    for x in _inputs(7, 4):
        r, f = ref.run(None, {"x": x})[0], fused.run(None, {"x": x})[0]
        assert float(np.abs(r).max()) > 0 and _cosine(f, r) >= 0.99, (f, r)


def test_a_zero_pad_before_a_valid_conv_folds_into_its_pads(tmp_path: Path) -> None:
    """transformers' EfficientNet: ZeroPad2d (asymmetric, 1 before / 2 after) then a VALID stride-2 depthwise Conv.
    Folded into the Conv's own pads the float graph gives the same values and has no Pad left."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from exporters.static_rewrites import fold_pads

    rng = np.random.default_rng(0)
    inits = {
        "pads": np.array([0, 0, 1, 1, 0, 0, 2, 2], np.int64),
        "zero": np.array(0.0, np.float32),
        "w": rng.standard_normal((3, 1, 5, 5)).astype(np.float32),
        "wh": rng.standard_normal((CLASSES, 3)).astype(np.float32),
        "bh": np.zeros(CLASSES, np.float32),
    }
    nodes = [
        helper.make_node("Pad", ["x", "pads", "zero"], ["xp"], mode="constant", name="pad"),
        helper.make_node("Conv", ["xp", "w"], ["c"], group=3, strides=[2, 2], auto_pad="VALID", name="dw"),
        helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wh", "bh"], ["logits"], transB=1, name="head"),
    ]
    src = _save_cnn(tmp_path / "pad.onnx", "pad", nodes, inits)
    model = onnx.load(str(src))
    assert fold_pads(model) == ["pad"]
    assert [n.op_type for n in model.graph.node][0] == "Conv" and {"pads", "zero"}.isdisjoint(
        i.name for i in model.graph.initializer
    )
    onnx.save(model, str(tmp_path / "folded.onnx"))
    before = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(str(tmp_path / "folded.onnx"), providers=["CPUExecutionProvider"])
    for x in _inputs(7, 3):
        np.testing.assert_allclose(after.run(None, {"x": x})[0], before.run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_only_gates_of_sigmoid_and_mul_are_quantized() -> None:
    """A Mul fed by a Sigmoid (a gate) and a Sigmoid feeding only gates are int8; a scale Mul, GELU's
    ``x * 0.5`` and a Sigmoid read by anything else stay float."""
    from onnx import TensorProto, helper, numpy_helper

    from exporters.static_rewrites import float_sigmoid_muls

    nodes = [
        helper.make_node("Sigmoid", ["x"], ["g"], name="gate_sigmoid"),
        helper.make_node("Mul", ["x", "g"], ["gx"], name="gate_mul"),
        helper.make_node("Mul", ["gx", "half"], ["h"], name="scale_mul"),
        helper.make_node("Sigmoid", ["h"], ["y"], name="output_sigmoid"),
    ]
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph(nodes, "gates", [x], [y], [half]))
    assert float_sigmoid_muls(model) == ["scale_mul", "output_sigmoid"]


@pytest.mark.parametrize("wtype", ["uint8", "int8"])
def test_fused_kernels_match_the_qdq_graph_and_fp32(exported, wtype: str) -> None:
    """ORT's fused int8 kernels vs the same QDQ graph run unfused (dequantize -> float op -> quantize).

    Both are the same integer arithmetic, so they differ only where a requantization rounds the other way
    (a step of an intermediate activation). Measured on AVX2 without VNNI: 0.0 of the logits' span for uint8
    and 7-bit int8 weights, 0.028 for 8-bit int8 weights (the u8s8 kernel's int16 pair sums saturating), which
    the 0.01 bound refuses. The fp32 cosine floor leaves 10x the measured loss (worst 0.9990) for other CPUs.
    """
    qpath = _model_file(exported[wtype])
    fused, plain, ref = _session(qpath, fused=True), _session(qpath, fused=False), _session(exported["src"], fused=True)
    for x in _inputs(7, 8):
        r = ref.run(None, {"x": x})[0]
        f, p = fused.run(None, {"x": x})[0], plain.run(None, {"x": x})[0]
        span = float(r.max() - r.min())
        assert float(np.max(np.abs(f - p))) <= 0.01 * span, (f, p)
        assert _cosine(f, r) >= 0.99, (f, r)


def test_int8_weights_are_stored_in_seven_bits(exported) -> None:
    import onnx
    from onnx import numpy_helper

    step = next(s for s in exported["int8"].steps if s["name"] == "quantize")
    assert step["details"]["reduce_range"] is True
    model = onnx.load(str(_model_file(exported["int8"])))
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert weights, "no int8 weights in the quantized graph"
    # 7-bit: [-64, 64], so two uint8 x int8 products (255 * 64 * 2) fit int16 on AVX2's vpmaddubsw.
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64


def test_unknown_op_types_are_refused_by_name() -> None:
    from edgekit.errors import ConfigError
    from exporters.recipes import Int8StaticConfig

    with pytest.raises(ConfigError, match="'Bogus'") as err:
        Int8StaticConfig(op_types=("Conv", "Bogus"))
    assert err.value.code == "invalid_config"
    assert "Conv" in str(err.value)


def _residual_cnn(path: Path, seed: int = 0) -> Path:
    """MobileNetV2 / ResNet blocks: Conv+Relu, a Conv+Clip(0,6)+Conv branch added back, MaxPool, Concat, pool, Gemm."""
    from onnx import helper

    rng = np.random.default_rng(seed)

    def he(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * np.sqrt(2.0 / int(np.prod(shape[1:])))).astype(np.float32)

    c = CHANNELS
    inits = {f"w{i}": w for i, w in enumerate((he(c, 3, 3, 3), he(c, c, 1, 1), he(c, c, 1, 1), he(c, c, 3, 3)))}
    inits |= {f"b{i}": (rng.standard_normal(c) * 0.1).astype(np.float32) for i in range(4)}
    inits |= {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32), "wh": he(CLASSES, 2 * c)}
    inits["bh"] = np.zeros(CLASSES, np.float32)
    conv = lambda i, x, y, k: helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [y], pads=[k // 2] * 4, name=f"conv{i}")  # noqa: E731
    nodes = [
        conv(0, "x", "c0", 3),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        conv(1, "r0", "c1", 1),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6"),
        conv(2, "r1", "c2", 1),
        helper.make_node("Add", ["r0", "c2"], ["res"], name="residual"),
        helper.make_node("MaxPool", ["res"], ["mp"], kernel_shape=[2, 2], strides=[2, 2], name="maxpool"),
        conv(3, "mp", "c3", 3),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("Concat", ["mp", "r3"], ["cat"], axis=1, name="concat"),
        helper.make_node("GlobalAveragePool", ["cat"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wh", "bh"], ["logits"], transB=1, name="head"),
    ]
    return _save_cnn(path, "residual_cnn", nodes, inits)


@pytest.fixture(scope="module")
def residual(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("static-residual")
    src = _residual_cnn(root / "cnn.onnx")
    cal = root / "cal.npz"
    np.savez(cal, x=_inputs(1, 16)[:, 0])
    return {"src": src, "int8": _export(src, root / "int8", cal, {})}


def test_a_relu_cnn_runs_int8_from_input_to_output(residual, tmp_path: Path) -> None:
    """ORT's level-ALL graph of the residual CNN: one QuantizeLinear at the input, one DequantizeLinear at the
    output, Relu / Clip folded into the QLinearConvs, the residual Add, Concat and pooling in integer kernels.
    The previous op set (Conv / MatMul / Gemm, uint8 weights) left 4 QuantizeLinear and 5 DequantizeLinear."""
    ops = _optimized_ops(_model_file(residual["int8"]), tmp_path)
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1, ops
    assert ops["QLinearConv"] == 4 and ops["QLinearAdd"] == 1 and ops["QLinearConcat"] == 1, ops
    assert ops["QLinearGlobalAveragePool"] == 1 and ops["QGemm"] == 1, ops
    assert not {"Relu", "Clip", "Add", "Concat", "GlobalAveragePool", "Conv"} & set(ops), ops


def test_the_int8_residual_cnn_matches_its_qdq_graph_and_fp32(residual) -> None:
    """Fused kernels vs the unfused QDQ graph (same integer arithmetic; a saturating kernel breaks it) and fp32."""
    qpath = _model_file(residual["int8"])
    fused, plain = _session(qpath, fused=True), _session(qpath, fused=False)
    ref = _session(residual["src"], fused=True)
    for x in _inputs(7, 8):
        r = ref.run(None, {"x": x})[0]
        f, p = fused.run(None, {"x": x})[0], plain.run(None, {"x": x})[0]
        assert float(np.max(np.abs(f - p))) <= 0.01 * float(r.max() - r.min()), (f, p)
        assert _cosine(f, r) >= 0.99, (f, r)


def test_adds_with_a_constant_or_ahead_of_a_normalization_stay_float() -> None:
    """A transformer block's bias and residual Adds stay float; a CNN's merge of two branches is quantized."""
    from onnx import TensorProto, helper, numpy_helper

    from exporters.static_ops import float_adds

    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="proj"),
        helper.make_node("Add", ["mm", "bias"], ["mmb"], name="bias_add"),
        helper.make_node("Add", ["x", "mmb"], ["res"], name="residual_add"),
        helper.make_node("LayerNormalization", ["res", "gamma"], ["ln"], name="ln"),
        helper.make_node("Relu", ["ln"], ["a"], name="relu"),
        helper.make_node("Relu", ["ln"], ["b"], name="relu2"),
        helper.make_node("Add", ["a", "b"], ["y"], name="branch_merge"),
    ]
    inits = [numpy_helper.from_array(np.ones(v, np.float32), k) for k, v in (("w", (4, 4)), ("bias", 4), ("gamma", 4))]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph(nodes, "block", [x], [y], inits))
    assert float_adds(model) == ["bias_add", "residual_add"]


# An AVX2-only x86 CPU (Haswell: AVX2 + FMA, no AVX-512, no VNNI) emulated by qemu-user: MLAS picks its kernels
# from CPUID, so the emulated process runs the u8s8 vpmaddubsw kernels CI's AVX2 hosts run, whatever this host has.
QEMU = shutil.which("qemu-x86_64")
AVX2_ONLY_CPU = "Haswell"


@pytest.mark.skipif(QEMU is None or platform.machine() != "x86_64", reason="needs qemu-user (qemu-x86_64)")
def test_default_int8_weights_do_not_saturate_on_an_avx2_only_cpu(residual, exported, tmp_path: Path) -> None:
    """The default 7-bit int8 weights keep the fused kernels on the QDQ graph's arithmetic on AVX2 (measured 0.0
    of the output span); 8-bit int8 weights (``reduce_range=False``) saturate there (measured 0.025 on the
    residual CNN, 0.034 on the SiLU CNN) while on a VNNI host they are exact: the ISA, not the graph, decides."""
    import json
    import subprocess
    import sys

    cal = tmp_path / "cal.npz"
    np.savez(cal, x=_inputs(1, 16)[:, 0])
    eight_bit = _export(residual["src"], tmp_path / "8bit", cal, {"reduce_range": False})
    models = [_model_file(residual["int8"]), _model_file(exported["int8"]), _model_file(eight_bit)]
    script = Path(__file__).with_name("qdq_parity.py")
    out = subprocess.run(
        [QEMU, "-cpu", AVX2_ONLY_CPU, sys.executable, str(script), *map(str, models)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    worst = json.loads(out.stdout.strip().splitlines()[-1])
    seven_res, seven_silu, eight = (worst[str(m)] for m in models)
    assert seven_res <= 0.01 and seven_silu <= 0.01, worst
    assert eight > 0.01, worst  # the emulated CPU really runs the saturating kernel
