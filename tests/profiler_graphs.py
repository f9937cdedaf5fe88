"""Tiny ONNX graphs for the profiler tests, built by hand with fixed shapes and seeds.

Each builder returns a ``ModelProto``; :func:`save` writes it. The numbers the tests expect (FLOPs, bytes,
peak activation memory) are computed by hand in the tests from the shapes given here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _model(nodes: list, inputs: list, outputs: list, inits: list, *, opset: int = 17, ms: bool = False) -> Any:
    import onnx
    from onnx import helper

    imports = [helper.make_opsetid("", opset)]
    if ms:
        imports.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=imports)
    model.ir_version = 8
    if not ms:
        onnx.checker.check_model(model)
    return model


def save(model: Any, path: Path) -> Path:
    import onnx

    onnx.save(model, str(path))
    return path


def _f32(name: str, shape: list) -> Any:
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _w(name: str, shape: tuple, seed: int = 0) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def matmul(m: int, k: int, n: int) -> Any:
    """x[m, k] @ w[k, n] -> y[m, n]."""
    from onnx import helper

    return _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [_f32("x", [m, k])],
        [_f32("y", [m, n])],
        [_w("w", (k, n))],
    )


def gemm_bias(m: int, k: int, n: int) -> Any:
    from onnx import helper

    return _model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm")],
        [_f32("x", [m, k])],
        [_f32("y", [m, n])],
        [_w("w", (k, n)), _w("b", (n,), 1)],
    )


def conv(n: int, c: int, h: int, w: int, m: int, k: int, group: int = 1) -> Any:
    """Conv with same padding: [n, c, h, w] -> [n, m, h, w], kernel k x k."""
    from onnx import helper

    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[k // 2] * 4, group=group, name="conv")
    return _model([node], [_f32("x", [n, c, h, w])], [_f32("y", [n, m, h, w])], [_w("w", (m, c // group, k, k))])


def chain() -> Any:
    """x[1, 256] -> Relu -> a[1, 256] -> Tile(x4) -> b[1, 1024] -> Relu -> y[1, 1024] (float32)."""
    from onnx import helper, numpy_helper

    reps = numpy_helper.from_array(np.array([1, 4], np.int64), "reps")
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu1"),
        helper.make_node("Tile", ["a", "reps"], ["b"], name="tile"),
        helper.make_node("Relu", ["b"], ["y"], name="relu2"),
    ]
    return _model(nodes, [_f32("x", [1, 256])], [_f32("y", [1, 1024])], [reps])


def diamond() -> Any:
    """x[1, 1000] -> Relu -> a; x -> Sigmoid -> b; Add(a, b) -> y: a and b are live together with x."""
    from onnx import helper

    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="left"),
        helper.make_node("Sigmoid", ["x"], ["b"], name="right"),
        helper.make_node("Add", ["a", "b"], ["y"], name="join"),
    ]
    return _model(nodes, [_f32("x", [1, 1000])], [_f32("y", [1, 1000])], [])


def folded_weight() -> Any:
    """A weight made by ConstantOfShape at load (as the onnx package's light_* models do), then a MatMul."""
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([8, 4], np.int64), "w_shape")
    nodes = [
        helper.make_node(
            "ConstantOfShape", ["w_shape"], ["w"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])
        ),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
    ]
    return _model(nodes, [_f32("x", [2, 8])], [_f32("y", [2, 4])], [shape])


def conv_erf_conv() -> Any:
    """Conv -> Erf -> Conv on [1, 4, 8, 8]: NNAPI has Conv but not Erf, so it makes two partitions."""
    from onnx import helper

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Erf", ["a"], ["b"], name="erf"),
        helper.make_node("Conv", ["b", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    return _model(
        nodes, [_f32("x", [1, 4, 8, 8])], [_f32("y", [1, 4, 8, 8])], [_w("w1", (4, 4, 3, 3)), _w("w2", (4, 4, 3, 3), 1)]
    )


def contrib_gelu() -> Any:
    """com.microsoft Gelu, which ONNX shape inference cannot type: the ONNX Runtime probe must."""
    from onnx import helper

    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Gelu", ["h"], ["y"], domain="com.microsoft", name="gelu"),
    ]
    return _model(nodes, [_f32("x", ["batch", 8])], [_f32("y", ["batch", 16])], [_w("w", (8, 16))], ms=True)


def matmul_3d() -> Any:
    """A batched (3D) MatMul: XNNPACK takes only 2D ones."""
    from onnx import helper

    return _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm3")],
        [_f32("x", [2, 3, 8])],
        [_f32("y", [2, 3, 4])],
        [_w("w", (8, 4))],
    )
