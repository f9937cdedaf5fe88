"""The CNNs the device validation and the profiler benchmark use, built in code with random weights.

torchvision is not importable here, so each architecture is either a transformers model (its config class
sized to the published variant) or a plain torch module written below. Weights are random (fixed seed);
a benchmark that times a model redraws them with ``he_scaled`` first (transformers' init drives EfficientNet's
activations to 0, 7-10x slower on Intel). Each model is exported to ONNX once and cached.

    from benchmarks._cnn import CNNS, export_cnn
    path = export_cnn("mobilenet_v2", Path(".cache/cnn"))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True, kw_only=True)
class CnnSpec:
    name: str
    build: Callable[[], Any]  # -> torch.nn.Module returning logits
    input_size: int = 224
    note: str = ""


def _hf(model_cls: str, config_cls: str, **config: Any) -> Callable[[], Any]:
    def build() -> Any:
        import torch
        import transformers

        torch.manual_seed(0)
        cfg = getattr(transformers, config_cls)(**config)
        model = getattr(transformers, model_cls)(cfg).eval()

        class Logits(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, x: Any) -> Any:
                return self.model(pixel_values=x).logits

        return Logits().eval()

    return build


def _shufflenet_v2(width: float) -> Callable[[], Any]:
    """ShuffleNet V2 (Ma et al. 2018), torchvision's layout: stages of 4/8/4 units, channel split and shuffle."""
    stage_out = {0.5: [24, 48, 96, 192, 1024], 1.0: [24, 116, 232, 464, 1024]}[width]

    def build() -> Any:
        import torch
        from torch import nn

        def shuffle(x: Any) -> Any:
            b, c, h, w = x.shape
            return x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)

        def branch(cin: int, cout: int, stride: int) -> Any:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, stride, 1, groups=cout, bias=False),
                nn.BatchNorm2d(cout),
                nn.Conv2d(cout, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        class Unit(nn.Module):
            def __init__(self, cin: int, cout: int, stride: int) -> None:
                super().__init__()
                self.stride = stride
                half = cout // 2
                if stride > 1:
                    self.left = nn.Sequential(
                        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                        nn.BatchNorm2d(cin),
                        nn.Conv2d(cin, half, 1, bias=False),
                        nn.BatchNorm2d(half),
                        nn.ReLU(inplace=True),
                    )
                    self.right = branch(cin, half, stride)
                else:
                    self.right = branch(half, half, 1)

            def forward(self, x: Any) -> Any:
                if self.stride > 1:
                    out = torch.cat((self.left(x), self.right(x)), 1)
                else:
                    a, b = x.chunk(2, dim=1)
                    out = torch.cat((a, self.right(b)), 1)
                return shuffle(out)

        class ShuffleNetV2(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.stem = nn.Sequential(
                    nn.Conv2d(3, stage_out[0], 3, 2, 1, bias=False), nn.BatchNorm2d(stage_out[0]), nn.ReLU(True)
                )
                self.pool = nn.MaxPool2d(3, 2, 1)
                layers, cin = [], stage_out[0]
                for repeats, cout in zip((4, 8, 4), stage_out[1:4], strict=True):
                    layers += [Unit(cin, cout, 2)] + [Unit(cout, cout, 1) for _ in range(repeats - 1)]
                    cin = cout
                self.stages = nn.Sequential(*layers)
                self.head = nn.Sequential(
                    nn.Conv2d(cin, stage_out[4], 1, bias=False), nn.BatchNorm2d(stage_out[4]), nn.ReLU(True)
                )
                self.fc = nn.Linear(stage_out[4], 1000)

            def forward(self, x: Any) -> Any:
                x = self.head(self.stages(self.pool(self.stem(x))))
                return self.fc(x.mean((2, 3)))

        torch.manual_seed(0)
        return ShuffleNetV2().eval()

    return build


def _squeezenet_1_1() -> Any:
    """SqueezeNet 1.1 (Iandola et al.), torchvision's layout: Fire modules between three max-pools."""
    import torch
    from torch import nn

    class Fire(nn.Module):
        def __init__(self, cin: int, squeeze: int, expand: int) -> None:
            super().__init__()
            self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU(True))
            self.e1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU(True))
            self.e3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU(True))

        def forward(self, x: Any) -> Any:
            s = self.squeeze(x)
            return torch.cat((self.e1(s), self.e3(s)), 1)

    torch.manual_seed(0)
    pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, 2),
        nn.ReLU(True),
        pool(),
        Fire(64, 16, 64),
        Fire(128, 16, 64),
        pool(),
        Fire(128, 32, 128),
        Fire(256, 32, 128),
        pool(),
        Fire(256, 48, 192),
        Fire(384, 48, 192),
        Fire(384, 64, 256),
        Fire(512, 64, 256),
        nn.Conv2d(512, 1000, 1),
        nn.ReLU(True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ).eval()


CNNS: dict[str, CnnSpec] = {
    s.name: s
    for s in (
        # MobileNetV2Config() defaults to TF "same" padding; torchvision-style padding is what ncnn/AI Hub run
        CnnSpec(
            name="mobilenet_v2",
            build=_hf("MobileNetV2ForImageClassification", "MobileNetV2Config", tf_padding=False, image_size=224),
        ),
        CnnSpec(
            name="resnet18",
            build=_hf(
                "ResNetForImageClassification",
                "ResNetConfig",
                layer_type="basic",
                depths=[2, 2, 2, 2],
                hidden_sizes=[64, 128, 256, 512],
            ),
        ),
        CnnSpec(name="resnet50", build=_hf("ResNetForImageClassification", "ResNetConfig")),
        # EfficientNetConfig() is B7: B0 is width 1.0, depth 1.0, 224 px, head 1280
        CnnSpec(
            name="efficientnet_b0",
            build=_hf(
                "EfficientNetForImageClassification",
                "EfficientNetConfig",
                width_coefficient=1.0,
                depth_coefficient=1.0,
                image_size=224,
                hidden_dim=1280,
            ),
        ),
        CnnSpec(name="shufflenet_v2_x1_0", build=_shufflenet_v2(1.0)),
        CnnSpec(name="shufflenet_v2_x0_5", build=_shufflenet_v2(0.5)),
        CnnSpec(name="squeezenet1_1", build=_squeezenet_1_1),
    )
}


def export_cnn(name: str, cache: Path, *, input_size: int | None = None) -> Path:
    """``name`` as ONNX (opset 17, batch 1, static shape) under ``cache``; exported once."""
    spec = CNNS[name]
    size = input_size or spec.input_size
    path = cache / f"{name}_{size}.onnx"
    if path.exists():
        return path
    import torch

    cache.mkdir(parents=True, exist_ok=True)
    model = spec.build()
    x = torch.randn(1, 3, size, size)
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(tmp), input_names=["pixel_values"], opset_version=17, dynamo=False)
    tmp.replace(path)
    return path


def quantize_qdq(src: Path, dst: Path, *, seed: int = 0) -> Path:
    """int8 QDQ (per-channel weights, static activations from a few random images): AI Hub's ``w8a8`` export."""
    if dst.exists():
        return dst
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # fold the exporter's BatchNorm-into-bias subgraphs first: QDQ Conv fusion needs constant biases, else ORT
    # keeps most convolutions in fp32 between DequantizeLinear / QuantizeLinear
    pre = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    src = pre
    model = onnx.load(str(src), load_external_data=False)
    inp = model.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = [{inp.name: rng.standard_normal(shape).astype(np.float32)} for _ in range(2)]

        def get_next(self) -> dict | None:
            return self.left.pop() if self.left else None

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return dst


def he_scaled(src: Path, dst: Path, seed: int = 0) -> Path:
    """``src`` with every Conv / Gemm weight redrawn N(0, 2 / fan_in), so activations keep their scale.

    Why a benchmark that times these models needs it: with transformers' init (std 0.02) EfficientNet-B0's
    activations shrink block by block, through denormals, to an all-zero output. On the Intel Xeon (AMX) host of
    2026-12-02 that graph ran 7-10x slower than the He-scaled one, interleaved (283-309 ms against 31-44 ms;
    ORT's session.set_denormal_as_zero recovered part, 174-183 ms); the AMD hosts before showed no such gap. A
    trained model's activations do not vanish, so the He-scaled graph is the one that says what a user's model costs."""
    if dst.exists():
        return dst
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    weights = {n.input[1] for n in model.graph.node if n.op_type in ("Conv", "Gemm")}
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        if init.name in weights:
            shape = tuple(init.dims)
            fan_in = int(np.prod(shape[1:]))
            init.CopyFrom(
                numpy_helper.from_array(rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32), init.name)
            )
    onnx.save(model, str(dst))
    return dst
