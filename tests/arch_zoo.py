"""Tiny random models of every architecture in ``exporters.architectures``, built in code with fixed seeds.

One :class:`ZooCase` per model variant (several for llama: head sizes, MHA / GQA / MQA, explicit head_dim, tied
embeddings). Each builder writes a transformers model directory with the tokenizer or processor files a user's
directory has, all offline: causal LMs get the byte-level tokenizer of ``toy_models``, text encoders a small
WordPiece tokenizer, vision models their own image processor, audio models their feature extractor. Sizes are
tiny (hidden 32-64, 2 layers, vocab < 300) so the whole matrix exports in minutes; built directories are cached
with ``toy_models._cached_build`` (``$EDGEKIT_TEST_CACHE``), keyed by the case's config and ``ZOO_VERSION``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers

if __package__:  # imported as tests.arch_zoo
    from . import toy_models as tm
else:  # imported with tests/ on sys.path
    import toy_models as tm  # type: ignore[no-redef]

ZOO_VERSION = "2"
SEED = 0
LABELS = ("alpha", "beta", "gamma", "delta")  # 4 classes: centred logits keep 3 degrees of freedom to compare
TEXT_MAX_LENGTH = 64
IMAGE_SIZE = 32


@dataclass(frozen=True, kw_only=True)
class ZooCase:
    """A tiny model of one architecture; ``recipes`` narrows the registry's recipes when given (and says why)."""

    name: str
    model_type: str
    config: dict[str, Any]
    build: Callable[[Path, dict[str, Any]], None] = field(repr=False)
    recipes: tuple[str, ...] | None = None
    why_fewer_recipes: str = ""

    def path(self) -> Path:
        """The built model directory (built once into the test cache)."""
        key = {"zoo_version": ZOO_VERSION, "model_type": self.model_type, **self.config}
        return tm._cached_build(f"zoo-{self.name}", key, lambda tmp: self.build(tmp, dict(self.config)))


def _labels() -> dict[str, Any]:
    return {"id2label": dict(enumerate(LABELS)), "label2id": {n: i for i, n in enumerate(LABELS)}}


def _save(model: Any, out: Path) -> None:
    model.eval()
    model.save_pretrained(out, safe_serialization=True)


# ------------------------------------------------------------------------------------------ causal LMs

_CAUSAL_IDS = {"vocab_size": tm.BYTE_VOCAB_SIZE, "bos_token_id": tm.BOS_ID, "eos_token_id": tm.EOS_ID}


def _build_causal(out: Path, cfg: dict[str, Any]) -> None:
    from transformers import AutoModelForCausalLM, GenerationConfig

    cfg = dict(cfg)
    config_cls = getattr(transformers, cfg.pop("config_class"))
    max_length = cfg.pop("tokenizer_max_length", 64)
    config = config_cls(**_CAUSAL_IDS, pad_token_id=tm.PAD_ID, **cfg)
    tm.save_byte_tokenizer(out, max_length=max_length)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(bos_token_id=tm.BOS_ID, eos_token_id=tm.EOS_ID, pad_token_id=tm.PAD_ID)
    _save(model, out)


def _causal(name: str, model_type: str, config_class: str, recipes: tuple[str, ...] | None = None, **cfg: Any):
    why = "a head-size / attention-layout variant: only the recipes that run the decoder fusions" if recipes else ""
    return ZooCase(
        name=name,
        model_type=model_type,
        config={"config_class": config_class, **cfg},
        build=_build_causal,
        recipes=recipes,
        why_fewer_recipes=why,
    )


_LLAMA = {"num_hidden_layers": 2, "intermediate_size": 64, "max_position_embeddings": 64}
_FUSED = ("fp32", "int4")  # the recipes whose first step is the decoder fusion (GroupQueryAttention)

CAUSAL_CASES = [
    _causal(
        "llama-hs8-gqa",
        "llama",
        "LlamaConfig",
        _FUSED,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        **_LLAMA,
    ),  # fmt: skip
    _causal(
        "llama-hs16-mha",
        "llama",
        "LlamaConfig",
        _FUSED,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=4,
        **_LLAMA,
    ),  # fmt: skip
    _causal(
        "llama-hs16-gqa",
        "llama",
        "LlamaConfig",
        None,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        **_LLAMA,
    ),  # fmt: skip
    _causal(
        "llama-hs16-mqa",
        "llama",
        "LlamaConfig",
        _FUSED,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=1,
        **_LLAMA,
    ),  # fmt: skip
    _causal(
        "llama-hs32",
        "llama",
        "LlamaConfig",
        _FUSED,
        hidden_size=64,
        num_attention_heads=2,
        num_key_value_heads=1,
        **_LLAMA,
    ),  # fmt: skip
    _causal(
        "llama-hs64",
        "llama",
        "LlamaConfig",
        _FUSED,
        hidden_size=64,
        num_attention_heads=1,
        num_key_value_heads=1,
        **_LLAMA,
    ),  # fmt: skip
    _causal(
        "llama-head-dim",
        "llama",
        "LlamaConfig",
        _FUSED,
        hidden_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        **_LLAMA,
    ),  # fmt: skip
    _causal(
        "smollm-tied",
        "llama",
        "LlamaConfig",
        _FUSED,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=1,
        tie_word_embeddings=True,
        **_LLAMA,
    ),  # fmt: skip
    _causal(
        "mistral",
        "mistral",
        "MistralConfig",
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=None,
        **_LLAMA,
    ),  # fmt: skip
    _causal(
        "qwen2",
        "qwen2",
        "Qwen2Config",
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_sliding_window=False,
        **_LLAMA,
    ),  # fmt: skip
    _causal(
        "qwen3",
        "qwen3",
        "Qwen3Config",
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        use_sliding_window=False,
        **_LLAMA,
    ),  # fmt: skip
    _causal(
        "phi3",
        "phi3",
        "Phi3Config",
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        original_max_position_embeddings=64,
        **_LLAMA,
    ),  # fmt: skip
    _causal(
        "gemma",
        "gemma",
        "GemmaConfig",
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        **_LLAMA,
    ),  # fmt: skip
    _causal(
        "gemma2",
        "gemma2",
        "Gemma2Config",
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=32,
        **_LLAMA,
    ),  # fmt: skip
    _causal("gpt2", "gpt2", "GPT2Config", n_embd=64, n_layer=2, n_head=4, n_inner=128, n_positions=64),
    _causal("gpt_neox", "gpt_neox", "GPTNeoXConfig", hidden_size=64, num_attention_heads=4, **_LLAMA),
    _causal(
        "opt",
        "opt",
        "OPTConfig",
        hidden_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        ffn_dim=128,
        word_embed_proj_dim=64,
        max_position_embeddings=64,
    ),  # fmt: skip
    _causal("bloom", "bloom", "BloomConfig", hidden_size=64, n_head=4, n_layer=2),
    _causal(
        "falcon",
        "falcon",
        "FalconConfig",
        hidden_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        multi_query=True,
        new_decoder_architecture=False,
        max_position_embeddings=64,
    ),  # fmt: skip
    _causal(
        "stablelm", "stablelm", "StableLmConfig", hidden_size=64, num_attention_heads=4, num_key_value_heads=2, **_LLAMA
    ),  # fmt: skip
]


# ---------------------------------------------------------------------------------------- text encoders


def _save_wordpiece(out: Path, *, max_length: int) -> int:
    """The toy WordPiece tokenizer (``[PAD]`` = 0) as a fast-tokenizer directory; returns its vocab size."""
    from transformers import PreTrainedTokenizerFast

    tok = tm._bert_wordpiece_tokenizer()
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=max_length,
    ).save_pretrained(out)
    return tok.get_vocab_size()


def _build_encoder(out: Path, cfg: dict[str, Any]) -> None:
    """A sequence classifier: the same directory serves feature-extraction (its base model) and classification."""
    from transformers import AutoModelForSequenceClassification

    cfg = dict(cfg)
    config_cls = getattr(transformers, cfg.pop("config_class"))
    vocab = _save_wordpiece(out, max_length=TEXT_MAX_LENGTH)
    config = config_cls(vocab_size=vocab, pad_token_id=0, **_labels(), **cfg)
    torch.manual_seed(SEED)
    _save(AutoModelForSequenceClassification.from_config(config), out)


_ENC = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
# RoBERTa-style position tables hold max_length + padding_idx + 1 rows, as in the real checkpoints (512 + 2).
_ROBERTA = {**_ENC, "max_position_embeddings": TEXT_MAX_LENGTH + 2}
_ENCODER_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "bert": ("BertConfig", {**_ENC, "max_position_embeddings": TEXT_MAX_LENGTH}),
    "distilbert": (
        "DistilBertConfig",
        {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64, "max_position_embeddings": TEXT_MAX_LENGTH},
    ),  # fmt: skip
    "roberta": ("RobertaConfig", _ROBERTA),
    "xlm-roberta": ("XLMRobertaConfig", _ROBERTA),
    "electra": ("ElectraConfig", {**_ENC, "embedding_size": 16, "max_position_embeddings": TEXT_MAX_LENGTH}),
    "albert": ("AlbertConfig", {**_ENC, "embedding_size": 16, "max_position_embeddings": TEXT_MAX_LENGTH}),
    "deberta-v2": (
        "DebertaV2Config",
        {
            **_ENC,
            "max_position_embeddings": TEXT_MAX_LENGTH,
            "relative_attention": True,
            "position_buckets": 16,
            "pos_att_type": ["p2c", "c2p"],
        },
    ),  # fmt: skip
    "mpnet": ("MPNetConfig", {**_ENC, "max_position_embeddings": TEXT_MAX_LENGTH + 2}),
}


def _encoder_case(model_type: str) -> ZooCase:
    config_class, cfg = _ENCODER_CONFIGS[model_type]
    return ZooCase(name=model_type, model_type=model_type, config={"config_class": config_class, **cfg},
                   build=_build_encoder)  # fmt: skip


ENCODER_CASES = [_encoder_case(mt) for mt in _ENCODER_CONFIGS]


# ----------------------------------------------------------------------------------------------- vision


def _build_vision(out: Path, cfg: dict[str, Any]) -> None:
    from transformers import AutoModelForImageClassification

    cfg = dict(cfg)
    config_cls = getattr(transformers, cfg.pop("config_class"))
    processor_cls = getattr(transformers, cfg.pop("processor_class"))
    processor_cls(**cfg.pop("processor")).save_pretrained(out)
    kaiming = cfg.pop("kaiming_init", False)
    torch.manual_seed(SEED)
    model = AutoModelForImageClassification.from_config(config_cls(**cfg, **_labels()))
    if kaiming:
        _kaiming_init(model)
    _save(model, out)


def _kaiming_init(model: Any) -> None:
    """He-initialize every conv and linear layer, unit batch norms (fixed seed).

    MobileNetV2's and EfficientNet's own init (normal, std 0.02) shrinks activations ~10x per block: after 17
    blocks the logits are ~1e-27 or exactly 0, and every class ties, so nothing could be compared.
    """
    from torch import nn

    torch.manual_seed(SEED)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):  # EfficientNet's init leaves gamma ~0.03: another 30x per norm
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


_CROP = {"size": {"shortest_edge": 36}, "do_center_crop": True, "crop_size": {"height": 32, "width": 32}}
_CONVNEXT_PRE = {"size": {"shortest_edge": IMAGE_SIZE}, "crop_pct": 0.875}
_VISION_CONFIGS: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "vit": (
        "ViTConfig",
        "ViTImageProcessor",
        {"size": {"height": 32, "width": 32}},
        {**_ENC, "image_size": IMAGE_SIZE, "patch_size": 8},
    ),  # fmt: skip
    "deit": (
        "DeiTConfig",
        "DeiTImageProcessor",
        {**_CROP, "size": {"height": 36, "width": 36}, "resample": 3},
        {**_ENC, "image_size": IMAGE_SIZE, "patch_size": 8, "architectures": ["DeiTForImageClassification"]},
    ),  # fmt: skip
    "mobilenet_v2": (
        "MobileNetV2Config",
        "MobileNetV2ImageProcessor",
        _CROP,
        {"image_size": IMAGE_SIZE, "depth_multiplier": 0.25, "min_depth": 8, "kaiming_init": True},
    ),  # fmt: skip
    "resnet": (
        "ResNetConfig",
        "ConvNextImageProcessor",
        _CONVNEXT_PRE,
        {"embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1], "layer_type": "basic"},
    ),  # fmt: skip
    "convnext": (
        "ConvNextConfig",
        "ConvNextImageProcessor",
        _CONVNEXT_PRE,
        {"hidden_sizes": [16, 32], "depths": [1, 1], "num_stages": 2},
    ),  # fmt: skip
    "efficientnet": (
        "EfficientNetConfig",
        "EfficientNetImageProcessor",
        {"size": {"height": 32, "width": 32}, "include_top": False},
        # hidden_dim is the top conv's width, round_filters(1280) at width 0.25
        {
            "image_size": IMAGE_SIZE,
            "width_coefficient": 0.25,
            "depth_coefficient": 0.25,
            "hidden_dim": 320,
            # 3 of B0's 7 stages: each squeeze-excite block shrinks random activations ~4x; after 7 the logits are
            # ~1e-4, where ORT's approximate SiLU / sigmoid (absolute error ~1e-7) moves them by 2e-3 relative.
            "in_channels": [32, 16, 24],
            "out_channels": [16, 24, 40],
            "kernel_sizes": [3, 3, 5],
            "strides": [1, 2, 2],
            "num_block_repeats": [1, 1, 1],
            "expand_ratios": [1, 6, 6],
            "kaiming_init": True,
        },
    ),  # fmt: skip
}


def _vision_case(model_type: str) -> ZooCase:
    config_class, processor_class, processor, cfg = _VISION_CONFIGS[model_type]
    config = {"config_class": config_class, "processor_class": processor_class, "processor": processor, **cfg}
    return ZooCase(name=model_type, model_type=model_type, config=config, build=_build_vision)


VISION_CASES = [_vision_case(mt) for mt in _VISION_CONFIGS]


# ------------------------------------------------------------------------------------------------ audio

_W2V = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [32, 32, 32],
    "conv_stride": [5, 4, 4],
    "conv_kernel": [10, 8, 8],
    "feat_extract_norm": "group",
    "do_stable_layer_norm": False,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
    "classifier_proj_size": 16,
    "use_weighted_layer_sum": False,
}
_W2V_PRE = {"feature_size": 1, "sampling_rate": 16000, "padding_value": 0.0, "do_normalize": True,
            "return_attention_mask": False}  # fmt: skip
# Whisper's 30-second window (3000 log-mel frames, 1500 encoder positions) as in every real checkpoint: optimum
# exports the encoder at that length. 16 mel bins instead of 80 keep it small.
_WHISPER_PRE = {"feature_size": 16, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30, "n_fft": 400}
_WHISPER = {"d_model": 32, "encoder_layers": 2, "decoder_layers": 1, "encoder_attention_heads": 2,
            "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "num_mel_bins": 16,
            "max_source_positions": 1500, "max_target_positions": 16, "vocab_size": 64, "classifier_proj_size": 16,
            "use_weighted_layer_sum": False, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
            "decoder_start_token_id": 1}  # fmt: skip
_AUDIO_CONFIGS: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2FeatureExtractor", _W2V_PRE, _W2V),
    "hubert": ("HubertConfig", "Wav2Vec2FeatureExtractor", _W2V_PRE, _W2V),
    "whisper": ("WhisperConfig", "WhisperFeatureExtractor", _WHISPER_PRE, _WHISPER),
}


def _build_audio(out: Path, cfg: dict[str, Any]) -> None:
    from transformers import AutoModelForAudioClassification

    cfg = dict(cfg)
    config_cls = getattr(transformers, cfg.pop("config_class"))
    extractor_cls = getattr(transformers, cfg.pop("processor_class"))
    extractor_cls(**cfg.pop("processor")).save_pretrained(out)
    torch.manual_seed(SEED)
    _save(AutoModelForAudioClassification.from_config(config_cls(**cfg, **_labels())), out)


def _audio_case(model_type: str) -> ZooCase:
    config_class, extractor_class, extractor, cfg = _AUDIO_CONFIGS[model_type]
    config = {"config_class": config_class, "processor_class": extractor_class, "processor": extractor, **cfg}
    return ZooCase(name=model_type, model_type=model_type, config=config, build=_build_audio)


AUDIO_CASES = [_audio_case(mt) for mt in _AUDIO_CONFIGS]

ZOO: dict[str, ZooCase] = {c.name: c for c in (*CAUSAL_CASES, *ENCODER_CASES, *VISION_CASES, *AUDIO_CASES)}
if len(ZOO) != len(CAUSAL_CASES) + len(ENCODER_CASES) + len(VISION_CASES) + len(AUDIO_CASES):
    raise RuntimeError("two zoo cases share a name")


def case_config(case: ZooCase) -> dict[str, Any]:
    """The case's config as plain data (what keys its cache entry)."""
    return dataclasses.asdict(case)["config"]
