"""exporters.decoder_fusions: optimum's Llama decoder -> GroupQueryAttention, same IO, same greedy tokens."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import onnx
import pytest

import runtimes
from exporters.decoder_fusions import step_decoder_fusions
from exporters.recipes import Fp32Config, RecipeContext


def _optimum_export(hf_dir: Path, out: Path) -> Path:
    from optimum.exporters.onnx import main_export

    main_export(
        str(hf_dir),
        output=out,
        task="text-generation-with-past",
        library_name="transformers",
        do_validation=False,
        local_files_only=True,
    )
    return out / "model.onnx"


def _ctx(work: Path, hf_dir: Path, model_type: str, task_kind: str = "generation") -> RecipeContext:
    (work / "assets").mkdir(parents=True, exist_ok=True)
    shutil.copy2(hf_dir / "config.json", work / "assets" / "config.json")  # as exporters.api lays out its work dir
    return RecipeContext(work=work, task_kind=task_kind, model_type=model_type)


def _io(path: Path) -> tuple[list[Any], list[Any]]:
    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    ins = [(i.name, i.type.tensor_type.elem_type) for i in g.input if i.name not in inits]
    return ins, [(o.name, o.type.tensor_type.elem_type) for o in g.output]


@pytest.fixture(scope="module")
def fused_llama(lm_hf_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("fusions")
    hf = lm_hf_dirs["llama"]
    src = _optimum_export(hf, work / "optimum")
    dst = work / "fused.onnx"
    changed, details = step_decoder_fusions(src, dst, Fp32Config(), _ctx(work, hf, "llama"))
    return {"src": src, "dst": dst, "changed": changed, "details": details, "hf": hf}


def test_attention_becomes_one_group_query_attention_per_layer(fused_llama: dict[str, Any]) -> None:
    d = fused_llama["details"]
    assert fused_llama["changed"], d
    ops = Counter(n.op_type for n in onnx.load(str(fused_llama["dst"])).graph.node)
    assert ops["GroupQueryAttention"] == d["layers"] == 2
    assert ops["Softmax"] == 0 and ops["RotaryEmbedding"] == 0
    assert d["num_heads"] == 4 and d["kv_num_heads"] == 2 and d["head_size"] == 16
    assert d["nodes_after"] * 5 < d["nodes_before"]
    assert d["rotary_cache_rows"] == 64  # the model's context window, not ORT's 131072-row default
    assert d["check"]["ok"] and d["check"]["same_greedy_tokens"]
    assert d["variant"] == "gqa-fused-rotary" and all(r["ok"] for r in d["preflight"] if r["variant"] == d["variant"])


def test_graph_inputs_and_outputs_keep_their_names_and_dtypes(fused_llama: dict[str, Any]) -> None:
    """Every name and dtype stays, but the mask: nothing else reads it in a llama graph, so it becomes
    GroupQueryAttention's two int32 length inputs, in its place."""
    (src_in, src_out), (dst_in, dst_out) = _io(fused_llama["src"]), _io(fused_llama["dst"])
    assert fused_llama["details"]["lengths_as_inputs"] is True
    at = src_in.index(("attention_mask", onnx.TensorProto.INT64))
    int32 = onnx.TensorProto.INT32
    assert dst_in == src_in[:at] + [("seqlens_k", int32), ("total_sequence_length", int32)] + src_in[at + 1 :]
    assert dst_out == src_out


def test_length_inputs_false_keeps_the_mask_input(fused_llama: dict[str, Any], tmp_path: Path) -> None:
    src, out = fused_llama["src"], tmp_path / "fused.onnx"
    ctx = _ctx(tmp_path, fused_llama["hf"], "llama")
    changed, details = step_decoder_fusions(src, out, Fp32Config(length_inputs=False), ctx)
    assert changed and details["lengths_as_inputs"] is False and details["check"]["ok"]
    assert _io(out) == _io(src)
    fused = onnx.load(str(fused_llama["dst"]), load_external_data=False).graph
    assert len(onnx.load(str(out), load_external_data=False).graph.node) == len(fused.node) + 6


def test_fused_graph_generates_the_tokens_of_transformers(
    fused_llama: dict[str, Any], lm_package: Path, tokenizer: Any, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    pkg = tmp_path / "pkg"
    shutil.copytree(lm_package, pkg, ignore=shutil.ignore_patterns(".edgekit-cache"))
    shutil.copy2(fused_llama["dst"], pkg / "model.onnx")  # the package's manifest and tokenizer, fused graph
    prompt = tokenizer.encode("once upon a time there was").ids
    n = 40
    ours = runtimes.load(pkg, threads=1, verify=False, cache_optimized_graph=False)
    got = ours.generate(prompt, max_tokens=n, ignore_eos=True).token_ids
    model = AutoModelForCausalLM.from_pretrained(fused_llama["hf"])
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 1
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False)[0, len(prompt) :].tolist()
    assert list(got) == ref


def test_other_families_and_tasks_pass_through(lm_hf_dirs: dict[str, Path], tmp_path: Path) -> None:
    hf = lm_hf_dirs["gpt2"]
    src = _optimum_export(hf, tmp_path / "gpt2")
    # A model type without a fusion record (mpt) passes through, whatever its graph.
    changed, details = step_decoder_fusions(src, tmp_path / "out.onnx", Fp32Config(), _ctx(tmp_path, hf, "mpt"))
    assert not changed and "'mpt' has no decoder fusion" in details["skipped"]
    assert _io(tmp_path / "out.onnx") == _io(src)
    ctx = _ctx(tmp_path, hf, "llama", task_kind="embedding")
    changed, details = step_decoder_fusions(src, tmp_path / "out2.onnx", Fp32Config(), ctx)
    assert not changed and "generation" in details["skipped"]


def test_fusions_switched_off_by_the_recipe_config(fused_llama: dict[str, Any], tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, fused_llama["hf"], "llama")
    changed, details = step_decoder_fusions(fused_llama["src"], tmp_path / "o.onnx", Fp32Config(fusions=False), ctx)
    assert not changed and "switched off" in details["skipped"]
