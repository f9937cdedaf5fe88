"""Model packages for the runtime tests, built in code with fixed seeds.

Small graphs (embedding, classifiers, a tensor model with fixed dims) are written by hand with
``onnx.helper`` and packaged here through the :class:`~edgekit.manifest.Manifest` dataclass (sha256 for each
file, checked against the manifest JSON Schema). The causal LMs are tiny Llama / GPT-2 models with seeded
random weights and a byte-level BPE tokenizer trained in code, exported by ``exporters.export`` with and
without a KV cache.

The builders live here; the fixtures that use them are in ``conftest.py``, shared by every test module.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.hashing import sha256_file
from edgekit.manifest import (
    MANIFEST_NAME,
    MODEL_NAME,
    FileEntry,
    GenerationSpec,
    Manifest,
    RecipeInfo,
    SourceInfo,
    TensorSpec,
    WeightsInfo,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = [
    "CORPUS",
    "build_tokenizer",
    "embedding_graph",
    "export_lm_package",
    "pooled_classifier",
    "save_graph",
    "save_hf_lm",
    "write_package",
]

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "edge devices run small models fast and keep the data on the device",
    "héllo wörld, ünïcode: 日本語のテキスト and emoji 🙂🚀",
    "once upon a time there was a tiny language model",
] * 10

_ORT_TO_NP = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(bool)": "bool",
}


def build_tokenizer(vocab_size: int = 300) -> Any:
    """A byte-level BPE tokenizer trained on CORPUS (deterministic): multi-byte characters span tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "[PAD]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def _io_specs(model_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])

    def spec(v: Any) -> TensorSpec:
        return TensorSpec(name=v.name, dtype=_ORT_TO_NP.get(v.type, v.type), shape=list(v.shape))

    return [spec(v) for v in sess.get_inputs()], [spec(v) for v in sess.get_outputs()]


def write_package(
    root: Path,
    *,
    model: Path,
    task: str,
    tokenizer: Any | None = None,
    preprocessing: dict[str, Any] | None = None,
    labels: list[str] | None = None,
    generation: GenerationSpec | None = None,
    name: str = "toy",
) -> Path:
    """Copy ``model`` into ``root`` as model.onnx (with its tokenizer) and write the manifest."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(model, root / MODEL_NAME)
    if tokenizer is not None:
        tokenizer.save(str(root / "tokenizer.json"))
    inputs, outputs = _io_specs(root / MODEL_NAME)
    files = [
        FileEntry(path=p.name, bytes=p.stat().st_size, sha256=sha256_file(p))
        for p in sorted(root.iterdir())
        if p.is_file() and p.name != MANIFEST_NAME
    ]
    manifest = Manifest(
        task=task,
        name=name,
        recipe=RecipeInfo(name="fp32", options={}),
        inputs=inputs,
        outputs=outputs,
        source=SourceInfo(kind="onnx", path=str(model), sha256=sha256_file(model), opset=18, library_versions={}),
        files=files,
        weights=WeightsInfo(parameter_count=0, bytes_by_dtype={}),
        created_at=datetime.now(timezone.utc).isoformat(),
        preprocessing=preprocessing or {},
        labels=labels,
        generation=generation,
    )
    (root / MANIFEST_NAME).write_text(json.dumps(manifest.to_dict(), indent=2), encoding="utf-8")
    _check_schema(root)
    return root


def _check_schema(root: Path) -> None:
    """Hand-written manifests are held to the same JSON Schema as the exporter's."""
    from tests.conftest import manifest_validator

    manifest_validator().validate(json.loads((root / MANIFEST_NAME).read_text()))


# ------------------------------------------------------------------------------------- hand-built graphs


def save_graph(graph: Any, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def embedding_graph(path: Path, vocab: int, dim: int, seed: int, *, with_types: bool = True) -> Path:
    """input_ids -> Gather(table) (+ type embedding) -> Tanh -> last_hidden_state [b, s, dim]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    table = numpy_helper.from_array(rng.normal(size=(vocab, dim)).astype(np.float32), "table")
    types = numpy_helper.from_array(rng.normal(size=(2, dim)).astype(np.float32), "types")
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["tok"])]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
    ]
    # attention_mask is consumed (scaled by zero) so the graph really takes it, as BERT's does.
    nodes += [
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["mask3", "zero"], ["mask0"]),
    ]
    inits = [
        table,
        types,
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
        numpy_helper.from_array(np.zeros((1,), np.float32), "zero"),
    ]
    if with_types:
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "seq"]))
        nodes += [
            helper.make_node("Gather", ["types", "token_type_ids"], ["typ"]),
            helper.make_node("Add", ["tok", "typ"], ["sum"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["tok"], ["sum"]))
    nodes += [
        helper.make_node("Add", ["sum", "mask0"], ["summ"]),
        helper.make_node("Tanh", ["summ"], ["last_hidden_state"]),
    ]
    out = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", dim])
    return save_graph(helper.make_graph(nodes, "embed", inputs, [out], inits), path)


def pooled_classifier(
    path: Path,
    input_name: str,
    elem: int,
    shape: list[Any],
    reduce_axes: list[int],
    feat: int,
    n_labels: int,
    seed: int,
    *,
    gather_vocab: int | None = None,
) -> Path:
    """(Gather ->) ReduceMean over ``reduce_axes`` -> MatMul -> logits [b, n_labels]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(size=(feat, n_labels)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array(reduce_axes, np.int64), "axes"),
    ]
    nodes = []
    src = input_name
    if gather_vocab is not None:
        inits.append(numpy_helper.from_array(rng.normal(size=(gather_vocab, feat)).astype(np.float32), "table"))
        nodes.append(helper.make_node("Gather", ["table", input_name], ["emb"]))
        src = "emb"
    elif elem != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [input_name], ["xf"], to=TensorProto.FLOAT))
        src = "xf"
    nodes += [
        helper.make_node("ReduceMean", [src, "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
    ]
    inputs = [helper.make_tensor_value_info(input_name, elem, shape)]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_labels])
    return save_graph(helper.make_graph(nodes, "cls", inputs, [out], inits), path)


# ------------------------------------------------------------------------------------------- causal LMs


def save_hf_lm(arch: str, out: Path, tok: Any) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    vocab = tok.get_vocab_size()
    if arch == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            bos_token_id=0,
            eos_token_id=0,
            initializer_range=0.1,  # peaked logits: greedy ties between PyTorch and ORT stay unlikely
            tie_word_embeddings=False,
        )
        model = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(
            vocab_size=vocab,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
            initializer_range=0.1,
        )
        model = GPT2LMHeadModel(cfg)
    model.eval()
    model.save_pretrained(out)
    PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="[PAD]"
    ).save_pretrained(out)
    return out


def export_lm_package(
    tmp_path_factory: pytest.TempPathFactory,
    hf_dir: Path,
    with_kv: bool,
    name: str,
    options: dict[str, Any] | None = None,
) -> Path:
    """Export with edgekit's own exporter, so these tests also hold the runtime to the exporter's manifests."""
    from exporters import export

    out = tmp_path_factory.mktemp(name) / "pkg"
    result = export(
        hf_dir,
        output=out,
        task="text-generation",
        recipe="fp32",
        recipe_options=options or {},
        with_kv_cache=with_kv,
        progress=False,
        validation_samples=4,
    )
    return Path(result.package_dir)
