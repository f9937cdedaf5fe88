"""Tiny vision and audio models with their Hugging Face processors, built in code (fixed seeds, no downloads).

Each :class:`ProcessorCase` is one processor configuration as an architecture ships it (non-default sizes so
every rule is exercised: crop_pct, resize before crop, shortest edge, rescale offset, include_top, resample);
``build_model`` writes a random model of that architecture beside it, small enough to export in seconds.
Config pitfalls avoided: ``EfficientNetConfig()`` is B7 (600 px) and ``MobileNetV2Config()`` pads like
TensorFlow, so both get explicit tiny settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LABELS = {0: "cat", 1: "dog", 2: "bird"}


@dataclass(frozen=True)
class ProcessorCase:
    name: str  # test id
    model_type: str
    make_processor: Callable[[], Any]
    build_model: Callable[[], Any] | None = None  # a random model of this architecture (None: processor-only case)


def _reinit(model: Any) -> Any:
    """Fan-in scaled weights: the classes' own inits give some tiny nets (MobileNetV2) logits near 1e-26."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, p[0].numel() ** -0.5)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
    return model.eval()


def _labels() -> dict[str, Any]:
    return {"id2label": dict(LABELS), "label2id": {v: k for k, v in LABELS.items()}}


def _vit() -> Any:
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        **_labels(),
    )
    return ViTForImageClassification(cfg)


def _deit() -> Any:
    from transformers import DeiTConfig, DeiTForImageClassification

    cfg = DeiTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        **_labels(),
    )
    return DeiTForImageClassification(cfg)


def _mobilenet_v2() -> Any:
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    cfg = MobileNetV2Config(
        image_size=32, depth_multiplier=0.25, min_depth=4, tf_padding=False, finegrained_output=False, **_labels()
    )
    return MobileNetV2ForImageClassification(cfg)


def _resnet() -> Any:
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", **_labels())
    return ResNetForImageClassification(cfg)


def _convnext() -> Any:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    cfg = ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, **_labels())
    return ConvNextForImageClassification(cfg)


def _efficientnet() -> Any:
    from transformers import EfficientNetConfig, EfficientNetForImageClassification

    # hidden_dim must equal round_filters(1280 * width_coefficient) = 320: the top conv's width.
    cfg = EfficientNetConfig(image_size=32, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320, **_labels())
    return EfficientNetForImageClassification(cfg)


def _p(cls_name: str, **kwargs: Any) -> Callable[[], Any]:
    def make() -> Any:
        import transformers

        return getattr(transformers, cls_name)(**kwargs)

    return make


IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
IMAGE_CASES = [
    ProcessorCase("vit", "vit", _p("ViTImageProcessor", size={"height": 32, "width": 32}), _vit),
    ProcessorCase("vit-nonsquare", "vit", _p("ViTImageProcessor", size={"height": 24, "width": 40}, resample=3)),
    ProcessorCase(
        "deit",  # resize 40x40 (bicubic) then crop 32
        "deit",
        _p("DeiTImageProcessor", size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32}, **IMAGENET),
        _deit,
    ),
    ProcessorCase("deit-defaults", "deit", _p("DeiTImageProcessor")),  # 256 -> crop 224
    ProcessorCase(
        "mobilenet_v2",  # shortest edge 36 keeping the aspect ratio, then crop 32
        "mobilenet_v2",
        _p("MobileNetV2ImageProcessor", size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}),
        _mobilenet_v2,
    ),
    ProcessorCase("mobilenet_v1", "mobilenet_v1", _p("MobileNetV1ImageProcessor")),
    ProcessorCase(
        "resnet",  # ResNet ships ConvNextImageProcessor: short side to int(32 / 0.875) = 36, crop 32, bicubic
        "resnet",
        _p("ConvNextImageProcessor", size={"shortest_edge": 32}, crop_pct=0.875, resample=3, **IMAGENET),
        _resnet,
    ),
    ProcessorCase(
        "convnext",
        "convnext",
        _p("ConvNextImageProcessor", size={"shortest_edge": 32}, crop_pct=0.9),
        _convnext,
    ),
    ProcessorCase("convnext-384-warp", "convnext", _p("ConvNextImageProcessor")),  # >= 384: warp, no crop
    ProcessorCase(
        "efficientnet",  # include_top: a second division by std; nearest-neighbour resize
        "efficientnet",
        _p("EfficientNetImageProcessor", size={"height": 32, "width": 32}, **IMAGENET),
        _efficientnet,
    ),
    ProcessorCase(
        "efficientnet-offset-crop",  # rescale 1/127.5 with offset -> [-1, 1]; resize then crop; no include_top
        "efficientnet",
        _p(
            "EfficientNetImageProcessor",
            size={"height": 40, "width": 36},
            do_center_crop=True,
            crop_size={"height": 32, "width": 32},
            rescale_factor=1 / 127.5,
            rescale_offset=True,
            include_top=False,
            do_normalize=False,
        ),
    ),
    ProcessorCase("bit", "bit", _p("BitImageProcessor", size={"shortest_edge": 40}, crop_size=32)),
    ProcessorCase("beit", "beit", _p("BeitImageProcessor", size={"height": 36, "width": 30}, crop_size=28)),
]


def _wav2vec2(model_type: str) -> Callable[[], Any]:
    def build() -> Any:
        import transformers

        prefix = {"wav2vec2": "Wav2Vec2", "hubert": "Hubert"}[model_type]
        config_cls = getattr(transformers, f"{prefix}Config")
        model_cls = getattr(transformers, f"{prefix}ForSequenceClassification")
        cfg = config_cls(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(16, 16, 16),
            conv_stride=(5, 4, 4),
            conv_kernel=(10, 8, 8),
            feat_extract_norm="group",
            do_stable_layer_norm=False,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
            classifier_proj_size=16,
            use_weighted_layer_sum=False,
            **_labels(),
        )
        return model_cls(cfg)

    return build


def _whisper(n_mels: int) -> Callable[[], Any]:
    def build() -> Any:
        from transformers import WhisperConfig, WhisperForAudioClassification

        cfg = WhisperConfig(
            vocab_size=64,
            d_model=32,
            encoder_layers=2,
            encoder_attention_heads=2,
            decoder_layers=1,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            num_mel_bins=n_mels,
            max_source_positions=1500,  # 3000 log-mel frames (30 s) / the conv stem's stride 2
            max_target_positions=16,
            classifier_proj_size=16,
            **_labels(),
        )
        return WhisperForAudioClassification(cfg)

    return build


AUDIO_CASES = [
    ProcessorCase("wav2vec2", "wav2vec2", _p("Wav2Vec2FeatureExtractor"), _wav2vec2("wav2vec2")),
    ProcessorCase(
        "wav2vec2-mask", "wav2vec2", _p("Wav2Vec2FeatureExtractor", return_attention_mask=True, padding_value=0.0)
    ),
    ProcessorCase("wav2vec2-raw", "wav2vec2", _p("Wav2Vec2FeatureExtractor", do_normalize=False)),
    ProcessorCase("hubert", "hubert", _p("Wav2Vec2FeatureExtractor"), _wav2vec2("hubert")),
    ProcessorCase("whisper", "whisper", _p("WhisperFeatureExtractor", feature_size=80), _whisper(80)),
    ProcessorCase("whisper-128", "whisper", _p("WhisperFeatureExtractor", feature_size=128)),
]


def save_processor(case: ProcessorCase, out: Path) -> tuple[Any, dict[str, Any]]:
    """Save the case's processor with save_pretrained; return it and its preprocessor_config.json as read back."""
    out.mkdir(parents=True, exist_ok=True)
    processor = case.make_processor()
    processor.save_pretrained(out)
    return processor, json.loads((out / "preprocessor_config.json").read_text())


def build_model_dir(case: ProcessorCase, out: Path, *, seed: int = 0) -> tuple[Any, Any]:
    """A model directory (weights, config, processor) for ``case``; returns (processor, torch model)."""
    import torch

    assert case.build_model is not None
    processor, _ = save_processor(case, out)
    torch.manual_seed(seed)
    model = _reinit(case.build_model())
    model.save_pretrained(out, safe_serialization=True)
    return processor, model
