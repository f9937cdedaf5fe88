"""Decoder fusion variants: every head layout and family exports, runs on ORT's CPU kernels and matches transformers.

ORT's GroupQueryAttention refuses fused rotary for head sizes that are not multiples of 16 (at the first
``run()``, not at load). These cases build tiny random 2-layer models in code (fixed seed) from transformers'
config classes: Llamas covering head size 8, 12, 16, 32, 64, MHA / GQA / MQA, an explicit ``head_dim`` and
SmolLM-style tied embeddings, and mistral, qwen2, qwen3, gemma, gemma2 (softcap, alternating windows), phi3
(packed qkv_proj), stablelm (partial rotary), gpt2 and opt (learned positions: no rotary), gpt_neox (packed
query_key_value chunked per head, partial rotary), falcon (multi-query, its written-out rotary fused by edgekit), bloom (ALiBi). Each is exported through ``exporters.export`` and checked: the
step details name the variant the pre-flight chose, the prompt logits match PyTorch (1e-3 relative; eager
attention for gemma2), the package loads with ``edgekit.load``, and its greedy tokens equal transformers'
greedy ``generate`` (fp32).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from toy_models import BOS_ID, BYTE_VOCAB_SIZE, EOS_ID, PAD_ID, save_byte_tokenizer

import edgekit
from exporters import decoder_fusions
from exporters.decoder_fusions import VARIANTS, AttentionShape, preflight
from tests.conftest import assert_valid_manifest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = [BOS_ID, 3 + ord("h"), 3 + ord("i"), 3 + ord(" ")]
LOGITS_RTOL = 1e-3  # fp32 against PyTorch, relative to the largest logit (as tests/test_architecture_matrix.py)
NEW_TOKENS = 24


@dataclass(frozen=True, kw_only=True)
class Case:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int | None = None  # None: hidden // heads
    tie: bool = False
    variant: str  # what the pre-flight must choose
    family: str = "llama"
    extra: tuple[tuple[str, Any], ...] = ()  # more config fields (a sliding window, ...)
    attention: str | None = None  # transformers' attn_implementation of the reference (None: its default)

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden // self.heads


CASES = {
    "head8-gqa": Case(hidden=32, heads=4, kv_heads=2, variant="gqa-rotary-nodes"),
    "head8-mqa": Case(hidden=32, heads=4, kv_heads=1, variant="gqa-rotary-nodes"),
    "head12-unfused": Case(hidden=48, heads=4, kv_heads=2, variant="unfused"),
    "head16-gqa": Case(hidden=64, heads=4, kv_heads=2, variant="gqa-fused-rotary"),
    "head32-mha": Case(hidden=64, heads=2, kv_heads=2, variant="gqa-fused-rotary"),
    "head64-mqa": Case(hidden=128, heads=2, kv_heads=1, variant="gqa-fused-rotary"),
    "explicit-head-dim": Case(hidden=48, heads=4, kv_heads=2, head_dim=16, variant="gqa-fused-rotary"),
    "smollm-tied": Case(hidden=64, heads=4, kv_heads=1, tie=True, variant="gqa-fused-rotary"),
    # Families beyond llama whose optimum export has llama's attention layout.
    "mistral": Case(family="mistral", hidden=64, heads=4, kv_heads=2, variant="gqa-fused-rotary"),
    # A window shorter than the context (the prompt and 24 new tokens run past it): GQA's local_window_size.
    "mistral-window": Case(
        family="mistral", hidden=64, heads=4, kv_heads=2, extra=(("sliding_window", 16),), variant="gqa-fused-rotary"
    ),
    "qwen2-bias": Case(family="qwen2", hidden=64, heads=4, kv_heads=2, variant="gqa-fused-rotary"),
    "qwen2-head8": Case(family="qwen2", hidden=32, heads=4, kv_heads=1, variant="gqa-rotary-nodes"),
    # gemma: no position_ids input (positions computed in the graph), tied embeddings, explicit head_dim.
    "gemma": Case(family="gemma", hidden=64, heads=4, kv_heads=1, head_dim=16, variant="gqa-fused-rotary"),
    "gemma-head8": Case(family="gemma", hidden=32, heads=4, kv_heads=2, head_dim=8, variant="gqa-rotary-nodes"),
    # ORT's CPU GroupQueryAttention has no q/k norm: the norm stays a node before separate rotary nodes.
    "qwen3-qk-norm": Case(family="qwen3", hidden=64, heads=4, kv_heads=2, head_dim=16, variant="gqa-rotary-nodes"),
    # phi3: one packed qkv_proj, rotary behind transformers' Slice / Concat split (an empty pass-through).
    "phi3": Case(family="phi3", hidden=64, heads=4, kv_heads=2, variant="gqa-fused-rotary"),
    # stablelm: partial_rotary_factor 0.25. Head 16 rotates 4 dims (cos width 2: fused rotary needs a multiple
    # of 8), so separate rotary nodes with rotary_embedding_dim; head 64 rotates 16 dims inside GQA.
    "stablelm": Case(family="stablelm", hidden=64, heads=4, kv_heads=2, variant="gqa-rotary-nodes"),
    "stablelm-head64": Case(family="stablelm", hidden=128, heads=2, kv_heads=1, variant="gqa-fused-rotary"),
    # gemma2: a window on even layers only, and the attention logit softcap optimum's export drops (as does
    # transformers' sdpa path): the reference is the eager attention. A cap of 5 makes it bite at these weights.
    "gemma2": Case(
        family="gemma2",
        hidden=64,
        heads=4,
        kv_heads=2,
        head_dim=16,
        extra=(("sliding_window", 16), ("attn_logit_softcapping", 5.0), ("query_pre_attn_scalar", 16)),
        variant="gqa-fused-rotary",
        attention="eager",
    ),
    # Learned absolute positions: GroupQueryAttention with do_rotary=0 and no rotary nodes. gpt2's one packed
    # c_attn is Split into q/k/v; opt scales q by head_size ** -0.5 before its head Reshape.
    "gpt2": Case(family="gpt2", hidden=64, heads=4, kv_heads=4, variant="gqa-no-rotary"),
    "opt": Case(
        family="opt",
        hidden=64,
        heads=4,
        kv_heads=4,
        extra=(("word_embed_proj_dim", 64), ("ffn_dim", 128)),
        variant="gqa-no-rotary",
    ),  # fmt: skip
    # gpt_neox: one packed query_key_value chunked per head (h, 3 * head) and rotary_pct 0.25 (as stablelm:
    # 4 of 16 dims -> rotary nodes; 16 of 64 -> rotary inside GroupQueryAttention).
    "gpt_neox": Case(family="gpt_neox", hidden=64, heads=4, kv_heads=4, variant="gqa-rotary-nodes"),
    "gpt_neox-head64": Case(family="gpt_neox", hidden=128, heads=2, kv_heads=2, variant="gqa-fused-rotary"),
    # falcon (7B layout: multi_query, one KV head Sliced from the packed query_key_value); its rotary is written
    # out (rotate_half), which ORT's fusion misses: edgekit makes it RotaryEmbedding with caches from rope_theta.
    "falcon": Case(family="falcon", hidden=64, heads=4, kv_heads=1, variant="gqa-fused-rotary"),
    "falcon-head8": Case(family="falcon", hidden=32, heads=4, kv_heads=1, variant="gqa-rotary-nodes"),
    # bloom: ALiBi as GroupQueryAttention's attention_bias (slopes from the config), batched 3-D attention MatMuls.
    "bloom": Case(family="bloom", hidden=64, heads=4, kv_heads=4, variant="gqa-no-rotary"),
    # falcon without multi_query views its packed query_key_value as (b, s, heads, 3, head), as bloom does.
    "falcon-mha": Case(
        family="falcon", hidden=64, heads=4, kv_heads=4, extra=(("multi_query", False),), variant="gqa-fused-rotary"
    ),  # fmt: skip
}


def _build(case: Case, out: Path) -> Path:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    save_byte_tokenizer(out, max_length=64)
    extra = {"head_dim": case.head_dim} if case.head_dim else {}
    config = transformers.AutoConfig.for_model(
        case.family,
        vocab_size=BYTE_VOCAB_SIZE,
        hidden_size=case.hidden,
        num_hidden_layers=2,
        num_attention_heads=case.heads,
        num_key_value_heads=case.kv_heads,
        intermediate_size=2 * case.hidden,
        max_position_embeddings=64,
        tie_word_embeddings=case.tie,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        **extra,
        **dict(case.extra),
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # std 0.02 logits are nearly flat; wider weights give decisive greedy steps
        for name, p in model.named_parameters():
            if p.dim() == 2 or name.endswith(".bias"):  # biases too: qwen2's start at zero
                p.normal_(0.0, 0.2)
            elif name.endswith("norm.weight"):  # norms start at ones: a fusion that drops one would still pass
                p.add_(torch.randn_like(p) * 0.2)
    model.generation_config = GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    model.save_pretrained(out, safe_serialization=True)
    return out


def _export(hf: Path, out: Path, recipe: str) -> Path:
    from exporters import export

    result = export(
        hf, output=out, task="text-generation", recipe=recipe, progress=False, validation_samples=8, on_slower="warn"
    )
    return Path(result.package_dir)


def _step(pkg: Path, name: str) -> dict[str, Any]:
    manifest = assert_valid_manifest(pkg)  # the step details land in the manifest and keep it schema-valid
    return next(s for s in manifest["recipe"]["steps"] if s["name"] == name)


def _hf_model(hf: Path, attention: str | None) -> Any:
    from transformers import AutoModelForCausalLM

    kwargs = {"attn_implementation": attention} if attention else {}
    return AutoModelForCausalLM.from_pretrained(hf, **kwargs).eval()


def _hf_greedy(hf: Path, attention: str | None = None) -> list[int]:
    import torch

    model = _hf_model(hf, attention)
    model.generation_config.eos_token_id = None
    with torch.no_grad():
        out = model.generate(torch.tensor([PROMPT]), max_new_tokens=NEW_TOKENS, do_sample=False, min_length=0)
    return out[0, len(PROMPT) :].tolist()


def _logits_rel_diff(pkg: Path, hf: Path, attention: str | None = None) -> float:
    """The package graph's prompt logits against transformers' forward pass: max |diff| / max(1, max |ref|)."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(pkg / "model.onnx"), providers=["CPUExecutionProvider"])
    kv = decoder_fusions._heads_from_io(onnx.load(str(pkg / "model.onnx"), load_external_data=False))
    assert kv is not None
    ins = {i.name for i in sess.get_inputs()}
    past = [i.name for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
    ours = sess.run(["logits"], decoder_fusions._feeds(ins, PROMPT, 0, past, kv, None))[0]
    with torch.no_grad():
        ref = _hf_model(hf, attention)(torch.tensor([PROMPT])).logits.numpy()
    return float(np.abs(ours - ref).max()) / max(1.0, float(np.abs(ref).max()))


def _without_attention_bias(pkg: Path, out: Path) -> Path:
    """A copy of the package's graph with every GroupQueryAttention's attention_bias (input 10) cut."""
    model = onnx.load(str(pkg / "model.onnx"))
    for n in model.graph.node:
        if n.op_type == "GroupQueryAttention" and len(n.input) > 10:
            n.input[10] = ""
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / "model.onnx"))
    return out


def _ours(pkg: Path) -> list[int]:
    lm = edgekit.load(pkg, threads=1, verify=False, cache_optimized_graph=False)
    return list(lm.generate(PROMPT, max_tokens=NEW_TOKENS, ignore_eos=True).token_ids)


# The first rule that refuses fused rotary, by family (others: the head size is not a multiple of 16).
WHY_NOT_FUSED_ROTARY = {
    "qwen3": "gqa.cpu_no_qk_norm",
    "stablelm": "gqa.rotary_cache_width",
    "gpt_neox": "gqa.rotary_cache_width",
}


def _assert_partial_rotary(pkg: Path, case: Case) -> None:
    """stablelm and gpt_neox rotate a quarter of each head: their rotary nodes say so, and fused GQA's caches
    are that wide."""
    model = onnx.load(str(pkg / "model.onnx"), load_external_data=False)
    rotated = case.head_size // 4 if case.family in ("stablelm", "gpt_neox") else case.head_size
    dims = {
        a.i for n in model.graph.node if n.op_type == "RotaryEmbedding" for a in n.attribute
        if a.name == "rotary_embedding_dim"
    }  # fmt: skip
    assert dims == ({rotated} if case.variant == "gqa-rotary-nodes" and rotated < case.head_size else set())
    gqa = next(n for n in model.graph.node if n.op_type == "GroupQueryAttention")
    if case.variant == "gqa-fused-rotary":
        cos = next(i for i in model.graph.initializer if i.name == gqa.input[7])
        assert list(cos.dims)[1] * 2 == rotated


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, memoized_optimum: None) -> Any:
    """Each case's HF directory built once (head8-gqa serves four tests), traced by optimum once per task."""
    root = tmp_path_factory.mktemp("hf")
    dirs: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in dirs:
            dirs[name] = _build(CASES[name], root / name)
        return dirs[name]

    return get


@pytest.fixture(scope="module", params=sorted(CASES))
def fp32_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, built: Any) -> dict[str, Any]:
    case = CASES[request.param]
    work = tmp_path_factory.mktemp(request.param)
    hf = built(request.param)
    return {"case": case, "hf": hf, "pkg": _export(hf, work / "fp32", "fp32")}


@pytest.mark.slow
def test_fp32_variant_is_the_one_the_kernels_accept_and_tokens_match(fp32_case: dict[str, Any], tmp_path: Path) -> None:
    case, pkg = fp32_case["case"], fp32_case["pkg"]
    step = _step(pkg, "decoder_fusions")
    d = step["details"]
    assert d["variant"] == case.variant, d.get("variant_reason") or d.get("skipped")
    # GroupQueryAttention's lengths become inputs wherever nothing else reads the mask: bloom's ALiBi and
    # gemma's rotary nodes (positions from the mask's shape) read it
    mask_read = case.family == "bloom" or (case.family == "gemma" and case.variant == "gqa-rotary-nodes")
    assert d.get("lengths_as_inputs") == (None if case.variant == "unfused" else not mask_read)
    ops = Counter(n.op_type for n in onnx.load(str(pkg / "model.onnx"), load_external_data=False).graph.node)
    if case.variant == "unfused":
        assert not step["changed"] and ops["GroupQueryAttention"] == 0
        assert "gqa.head_size_multiple_of_8" in d["skipped"]  # the refusing rule (of both variants) is named
    else:
        assert step["changed"] and ops["GroupQueryAttention"] == 2 and ops["Softmax"] == 0
        assert ops["SkipLayerNormalization"] == 0  # stablelm's Add + LayerNormalization stay apart (ort_policy)
        assert d["head_size"] == case.head_size and d["kv_num_heads"] == case.kv_heads
        assert d["check"]["ok"] and d["check"]["same_greedy_tokens"]
        assert d["local_window_size"] == dict(case.extra).get("sliding_window")
        assert (d.get("alibi_slopes") is not None) == (case.family == "bloom")
        assert ops["RotaryEmbedding"] == (4 if case.variant == "gqa-rotary-nodes" else 0)
        if case.variant == "gqa-rotary-nodes":  # why the preferred variant was passed over
            why = WHY_NOT_FUSED_ROTARY.get(case.family, "gqa.rotary_head_size_multiple_of_16")
            assert f"gqa-fused-rotary refused by {why}" in d["variant_reason"]
        _assert_partial_rotary(pkg, case)
    if "preflight" in d:
        refused = {r["rule"] for r in d["preflight"] if not r["ok"] and r["variant"] == "gqa-fused-rotary"}
        assert ("gqa.rotary_head_size_multiple_of_16" in refused) == (case.head_size % 16 != 0)
    assert _logits_rel_diff(pkg, fp32_case["hf"], case.attention) <= LOGITS_RTOL  # the graph kept, vs PyTorch
    if case.family == "bloom":  # the ALiBi bites here: the same graph without its attention_bias is off
        assert _logits_rel_diff(_without_attention_bias(pkg, tmp_path), fp32_case["hf"]) > 10 * LOGITS_RTOL
    if case.family == "falcon":  # its written-out rotary, on q and k of both layers, became RotaryEmbedding
        assert d["explicit_rotary_nodes"] == 4
    if case.family == "gemma2":  # the cap bites here: the export's (and sdpa's) uncapped attention is off
        assert _logits_rel_diff(pkg, fp32_case["hf"], "sdpa") > 10 * LOGITS_RTOL
        gqa = [n for n in onnx.load(str(pkg / "model.onnx"), load_external_data=False).graph.node
               if n.op_type == "GroupQueryAttention"]  # fmt: skip
        windows = [next((a.i for a in n.attribute if a.name == "local_window_size"), -1) for n in gqa]
        assert (
            windows == [16, -1]
        )  # -1: GQA's "no window" (ORT's optimizer writes the default out) and d["local_window_sizes"] == [16, None] and d["softcap"] == 5.0
    ref = _hf_greedy(fp32_case["hf"], case.attention)
    assert len(set(ref)) > 2  # a decisive, varied reference, not one token repeated
    assert _ours(pkg) == ref


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["int4", "int8-dynamic"])
def test_head_size_8_exports_and_runs_with_the_readme_recipes(
    recipe: str, tmp_path_factory: pytest.TempPathFactory, built: Any
) -> None:
    work = tmp_path_factory.mktemp(f"h8-{recipe}")
    hf = built("head8-gqa")
    pkg = _export(hf, work / recipe, recipe)
    steps = json.loads((pkg / "edgekit.json").read_text())["recipe"]["steps"]
    if recipe == "int4":  # int4 fuses first, then quantizes the packed QKV MatMul
        assert steps[0]["name"] == "decoder_fusions" and steps[0]["details"]["variant"] == "gqa-rotary-nodes"
        ops = Counter(n.op_type for n in onnx.load(str(pkg / "model.onnx"), load_external_data=False).graph.node)
        assert ops["GroupQueryAttention"] == 2 and ops["MatMulNBits"] >= 2
    tokens = _ours(pkg)
    assert len(tokens) == NEW_TOKENS and all(0 <= t < BYTE_VOCAB_SIZE for t in tokens)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["phi3", "stablelm", "gemma2", "gpt2", "gpt_neox", "opt", "falcon", "bloom"])
def test_int4_quantizes_the_fused_graph_of_the_packed_and_partial_rotary_families(
    name: str, tmp_path_factory: pytest.TempPathFactory, built: Any
) -> None:
    pkg = _export(built(name), tmp_path_factory.mktemp(f"{name}-int4") / "int4", "int4")
    manifest = assert_valid_manifest(pkg)
    first = manifest["recipe"]["steps"][0]
    assert first["name"] == "decoder_fusions" and first["details"]["variant"] == CASES[name].variant
    ops = Counter(n.op_type for n in onnx.load(str(pkg / "model.onnx"), load_external_data=False).graph.node)
    assert ops["GroupQueryAttention"] == 2 and ops["MatMulNBits"] >= 2 and ops["Softmax"] == 0
    out = next(iter(manifest["accuracy"]["outputs"].values()))
    assert out["cosine_min"] >= 0.8, out  # the architecture matrix's int4 floor: still tracks fp32
    tokens = _ours(pkg)
    assert len(tokens) == NEW_TOKENS and all(0 <= t < BYTE_VOCAB_SIZE for t in tokens)


def test_int4_accepts_fusions_false_like_fp32(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    from edgekit.config import from_dict
    from exporters.recipes import RECIPES, RecipeContext

    cfg = from_dict(RECIPES.get("int4").config_cls, {"fusions": False}, what="int4")
    assert cfg.fusions is False and from_dict(RECIPES.get("int4").config_cls, {}, what="int4").fusions is True
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    src = tmp_path / "in.onnx"
    onnx.save(
        helper.make_model(
            helper.make_graph(
                [helper.make_node("Identity", ["x"], ["y"])],
                "g",
                [x],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
            )
        ),
        str(src),
    )
    ctx = RecipeContext(work=tmp_path, task_kind="generation", model_type="llama")
    changed, details = decoder_fusions.step_decoder_fusions(src, tmp_path / "out.onnx", cfg, ctx)
    assert not changed and details["variant"] == "unfused" and "switched off" in details["skipped"]


# ------------------------------------------------------------------------ pre-flight rules, one by one


def _shape(**kw: Any) -> AttentionShape:
    base = {"num_heads": 4, "kv_num_heads": 2, "head_size": 16, "rotary_width": 8, "cache_rows": 64, "context": 64}
    return AttentionShape(**{**base, **kw})


@pytest.mark.parametrize(
    ("shape", "fused_refused", "nodes_refused"),
    [
        (_shape(), set(), set()),
        (_shape(head_size=8, rotary_width=4), {"gqa.rotary_head_size_multiple_of_16", "gqa.rotary_cache_width"}, set()),
        (_shape(num_heads=6, kv_num_heads=4), {"gqa.num_heads_multiple_of_kv_num_heads"}, None),
        (_shape(head_size=12, rotary_width=6), None, {"gqa.head_size_multiple_of_8"}),
        (_shape(cache_rows=32), {"gqa.rotary_cache_rows"}, {"rotary.cache_rows"}),
        (
            _shape(head_size=32, rotary_width=8),
            {"gqa.rotary_dims_match_source"},
            {"rotary.cache_width_matches_rotary_dim"},
        ),
        (_shape(head_size=64, rotary_width=8, partial_rotary=True), set(), set()),  # stablelm-2's quarter rotary
        (_shape(head_size=16, rotary_width=2, partial_rotary=True), {"gqa.rotary_cache_width"}, set()),
        (_shape(qk_norm=True), {"gqa.cpu_no_qk_norm"}, set()),
    ],
)
def test_preflight_names_each_refusing_rule(
    shape: AttentionShape, fused_refused: set[str] | None, nodes_refused: set[str] | None
) -> None:
    records = preflight(shape)
    by_variant = {v.name: {r["rule"] for r in records if r["variant"] == v.name and not r["ok"]} for v in VARIANTS}
    if fused_refused is not None:
        assert by_variant["gqa-fused-rotary"] == fused_refused
    else:
        assert by_variant["gqa-fused-rotary"]
    if nodes_refused is not None:
        assert by_variant["gqa-rotary-nodes"] == nodes_refused
    else:
        assert by_variant["gqa-rotary-nodes"]
    for r in records:  # every record carries where ORT checks it
        assert r["reason"] and r["source"]
        assert r["source"].startswith(("onnxruntime/contrib_ops/cpu/bert/", "edgekit"))


# ------------------------------------------------------------------- self-check failures keep the source


@pytest.fixture(scope="module")
def head8_src(tmp_path_factory: pytest.TempPathFactory, built: Any) -> dict[str, Any]:
    """optimum's graph of the head-size-8 model, as the recipe's first step sees it."""
    import shutil

    from optimum.exporters.onnx import main_export

    work = tmp_path_factory.mktemp("h8src")
    hf = built("head8-gqa")
    main_export(str(hf), output=work / "optimum", task="text-generation-with-past", do_validation=False)
    (work / "assets").mkdir()
    shutil.copy2(hf / "config.json", work / "assets" / "config.json")
    return {"src": work / "optimum" / "model.onnx", "work": work}


def _run_step(head8: dict[str, Any], out: Path) -> tuple[bool, dict[str, Any]]:
    from exporters.recipes import Fp32Config, RecipeContext

    ctx = RecipeContext(work=head8["work"], task_kind="generation", model_type="llama")
    return decoder_fusions.step_decoder_fusions(head8["src"], out, Fp32Config(), ctx)


@pytest.mark.slow  # the module's optimum export of the head-size-8 model takes ~10 s
def test_a_variant_ort_refuses_at_run_falls_through_to_the_next(
    head8_src: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without its pre-flight, fused rotary on head size 8 loads and then raises in run(): the step goes on.
    unguarded = (
        decoder_fusions.FusionVariant(
            name="gqa-fused-rotary", description="unguarded", rotary=decoder_fusions.RotaryLayout.FUSED, rules=()
        ),
        VARIANTS[1],
    )
    monkeypatch.setattr(decoder_fusions, "VARIANTS", unguarded)
    changed, d = _run_step(head8_src, tmp_path / "out.onnx")
    assert changed and d["variant"] == "gqa-rotary-nodes"
    first = d["attempts"][0]
    assert first["variant"] == "gqa-fused-rotary" and not first["check"]["ok"]
    assert "head_size shall be a multiple of 16" in first["check"]["reason"]
    assert "head_size shall be a multiple of 16" in d["variant_reason"]


@pytest.mark.slow  # the module's optimum export of the head-size-8 model takes ~10 s
def test_a_self_check_that_raises_keeps_the_source_graph(
    head8_src: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any) -> dict[str, Any]:
        raise RuntimeError("simulated ORT failure")

    monkeypatch.setattr(decoder_fusions, "_compare", boom)
    out = tmp_path / "out.onnx"
    changed, d = _run_step(head8_src, out)
    assert not changed and d["variant"] == "unfused"
    assert "RuntimeError: simulated ORT failure" in d["skipped"]
    src_nodes = [n.op_type for n in onnx.load(str(head8_src["src"])).graph.node]
    assert [n.op_type for n in onnx.load(str(out)).graph.node] == src_nodes


@pytest.mark.slow  # the module's optimum export of the head-size-8 model takes ~10 s
def test_a_self_check_that_disagrees_keeps_the_source_graph(
    head8_src: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decoder_fusions, "LOGITS_RTOL", -1.0)  # no graph can pass: every difference is too big
    changed, d = _run_step(head8_src, tmp_path / "out.onnx")
    assert not changed and d["variant"] == "unfused"
    assert "logits / KV cache differ" in d["skipped"]
    checked = [a for a in d["attempts"] if "check" in a]  # gqa-no-rotary is refused by its rules first
    assert checked and np.isfinite(checked[-1]["check"]["max_rel_diff"])


@pytest.mark.slow  # the module's optimum export of the head-size-8 model takes ~10 s
def test_a_rewrite_that_raises_keeps_the_source_graph(
    head8_src: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any, **__: Any) -> dict[str, Any]:
        raise KeyError("unforeseen graph")

    monkeypatch.setattr(decoder_fusions, "_rewrite", broken)
    changed, d = _run_step(head8_src, tmp_path / "out.onnx")
    assert not changed and d["variant"] == "unfused"
    assert "gqa-rotary-nodes failed: the rewrite raised KeyError" in d["skipped"]
    assert onnx.load(str(tmp_path / "out.onnx")).graph.node  # the source graph, written out


# ------------------------------------------------------------- matcher pieces on hand-built graphs


def _graph_of(nodes: list[Any], inits: dict[str, np.ndarray]) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])
    y = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "g", [x], [y], [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return decoder_fusions._Graph(helper.make_model(g))


def _i64(v: int) -> np.ndarray:
    return np.array([v], dtype=np.int64)


def test_packed_columns_follow_onnx_slice_bounds() -> None:
    from onnx import helper

    inits = {"w": np.zeros((4, 48), np.float32), "s": _i64(-16), "e": _i64(2**62), "ax": _i64(-1), "s0": _i64(16)}
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["qkv"]),
        helper.make_node("Slice", ["qkv", "s", "e", "ax"], ["v"]),  # phi3's v: the last 16 columns
        helper.make_node("Slice", ["qkv", "s0", "s", "ax"], ["k"]),  # 16 .. -16
    ]
    g = _graph_of(nodes, inits)
    assert decoder_fusions._packed_columns(g, nodes[1])[1] == (32, 48)
    assert decoder_fusions._packed_columns(g, nodes[2])[1] == (16, 32)


def test_scalar_value_evaluates_stablelms_head_size_scale() -> None:
    from onnx import helper

    inits = {"one": np.array(1.0, np.float32), "m1": np.array([-1], np.int64), "big": np.array([2**62], np.int64)}
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "m1", "big"], ["last"]),
        helper.make_node("Cast", ["last"], ["lastf"], to=1),
        helper.make_node("Sqrt", ["lastf"], ["sq"]),
        helper.make_node("Div", ["one", "sq"], ["inv"]),
        helper.make_node("Sqrt", ["inv"], ["scale"]),
    ]
    g = _graph_of(nodes, inits)
    assert decoder_fusions._scalar_value(g, "scale", head_size=16) == pytest.approx(16**-0.25)
    assert decoder_fusions._scalar_value(g, "x", head_size=16) is None  # data, not a scalar


def test_preflight_sends_learned_position_families_to_gqa_no_rotary_only() -> None:
    def refused(shape: AttentionShape) -> dict[str, set[str]]:
        records = preflight(shape)
        return {v.name: {r["rule"] for r in records if r["variant"] == v.name and not r["ok"]} for v in VARIANTS}

    learned = refused(_shape(rotary=False, rotary_width=0, cache_rows=0))
    assert learned["gqa-no-rotary"] == set()
    assert "source.rotary" in learned["gqa-fused-rotary"] and "source.rotary" in learned["gqa-rotary-nodes"]
    assert refused(_shape())["gqa-no-rotary"] == {"source.no_rotary"}  # a rotary source never loses its rotary


@pytest.mark.parametrize("heads", [4, 6, 12, 32])
def test_alibi_slopes_are_transformers_bloom_slopes(heads: int) -> None:
    import torch
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    mask = torch.ones(1, 5, dtype=torch.long)
    ref = build_alibi_tensor(mask, heads, torch.float32)  # (heads, 1, 5): slope[h] * position
    ours = decoder_fusions._alibi_slopes({"n_head": heads})
    np.testing.assert_allclose(ref[:, 0, 1].numpy(), ours, rtol=1e-6)
    np.testing.assert_allclose(ref[:, 0, :].numpy(), ours[:, None] * np.arange(5), rtol=1e-6)


def test_head_layouts_of_packed_projections_select_their_columns() -> None:
    """gpt_neox's per-head chunk (bounds computed from the shape), falcon's Gathered KV head, bloom's Gathered
    part of (heads, 3, head): the columns each reads of one packed (4, 3 * 4 * 2) weight."""
    from onnx import helper

    w = np.zeros((4, 24), np.float32)  # 4 heads of width 6 (neox: 3 x head 2), or (4, 3, 2) for bloom
    inits = {
        "w": w, "shape4": np.array([0, 0, 4, 6], np.int64), "shape5": np.array([0, 0, 4, 3, 2], np.int64),
        "zero": _i64(0), "m1": _i64(-1), "two": _i64(2), "three": _i64(3), "k1": np.array(1, np.int64),
        "last": np.array([-1], np.int64), "falcon_shape": np.array([0, 0, 12, 2], np.int64),
    }  # fmt: skip
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["p"]),
        # gpt_neox: (b, s, 4, 6) -> BNSH -> k = [:, :, :, 2:4], the end computed as (6 + 2) // 3 * 2
        helper.make_node("Reshape", ["p", "shape4"], ["r4"]),
        helper.make_node("Transpose", ["r4"], ["t4"], perm=[0, 2, 1, 3]),
        helper.make_node("Shape", ["t4"], ["s4"]),
        helper.make_node("Gather", ["s4", "m1"], ["width"], axis=0),
        helper.make_node("Add", ["width", "two"], ["w2"]),
        helper.make_node("Div", ["w2", "three"], ["third"]),
        helper.make_node("Mul", ["third", "two"], ["end"]),
        helper.make_node("Slice", ["t4", "third", "end", "last"], ["neox_k"]),
        # bloom: (b, s, 4, 3, 2), part 1 of each head
        helper.make_node("Reshape", ["p", "shape5"], ["r5"]),
        helper.make_node("Gather", ["r5", "k1"], ["g5"], axis=3),
        helper.make_node("Transpose", ["g5"], ["bloom_k"], perm=[0, 2, 1, 3]),
        # falcon: 12 packed heads of 2, the next-to-last one
        helper.make_node("Reshape", ["p", "falcon_shape"], ["rf"]),
        helper.make_node("Gather", ["rf", "m2"], ["gf"], axis=2),
        helper.make_node("Transpose", ["gf"], ["falcon_k"], perm=[0, 2, 1, 3]),
    ]
    g = _graph_of(nodes, {**inits, "m2": _i64(-2)})
    neox = decoder_fusions._projection(g, "neox_k", head_size=2)
    assert neox is not None and neox.heads == 4 and neox.cols.tolist() == [2, 3, 8, 9, 14, 15, 20, 21]
    bloom = decoder_fusions._projection(g, "bloom_k", head_size=2)
    assert bloom is not None and bloom.heads == 4 and bloom.cols.tolist() == [2, 3, 8, 9, 14, 15, 20, 21]
    falcon = decoder_fusions._projection(g, "falcon_k", head_size=2)
    assert falcon is not None and falcon.heads == 1 and falcon.cols.tolist() == [20, 21]
