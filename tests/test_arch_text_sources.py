"""Text encoders and causal LMs whose config facts differ by family: RoBERTa-style position offsets, MPNet's
bucketed relative positions under static int8, Falcon's multi-query KV heads, Bloom's missing position
table; and ORT failures inside export becoming typed errors that name the node.

Every model is a tiny random-weight transformers model built here with a fixed seed and the suite's
byte-level tokenizer; references are transformers' own outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import ConfigError, GraphRunError, UnsupportedModelError
from tests.conftest import assert_valid_manifest
from tests.toy_models import save_byte_tokenizer

TABLE = 34  # position-table rows of the tiny encoders: usable length 32 once RoBERTa's offset of 2 is taken
LONG_TEXT = "a fairly long sentence that keeps on going " * 12  # ~500 bytes: far longer than the table


def _build(
    out: Path, config_cls: str, model_cls: str, *, tokenizer_max: int = 512, roberta_ids: bool = False, **cfg
) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**cfg)
    model = getattr(transformers, model_cls)(config).eval()
    model.save_pretrained(out)
    save_byte_tokenizer(out, max_length=tokenizer_max)
    if roberta_ids:
        _swap_bos_and_pad(out / "tokenizer.json")
    return out


def _swap_bos_and_pad(path: Path) -> None:
    """RoBERTa-family ids: <s> 0, <pad> 1 (the padding_idx whose embedding row is zero), as real checkpoints.

    With the byte tokenizer's <s> = 1 every sequence would start with a zero-embedding token.
    """
    tok = json.loads(path.read_text(encoding="utf-8"))
    new_id = {"<pad>": 1, "<s>": 0}
    vocab = tok["model"]["vocab"]
    vocab.update({name: i for name, i in new_id.items()})
    for added in tok["added_tokens"]:
        added["id"] = new_id.get(added["content"], added["id"])
    tok["added_tokens"].sort(key=lambda t: t["id"])
    tok["post_processor"]["special_tokens"]["<s>"]["ids"] = [0]
    path.write_text(json.dumps(tok), encoding="utf-8")


ENCODERS = {
    "roberta": ("RobertaConfig", "RobertaModel"),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel"),
    "mpnet": ("MPNetConfig", "MPNetModel"),
}
_SMALL = dict(vocab_size=259, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


@pytest.fixture(scope="module")
def encoder_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arch-enc")
    return {
        name: _build(root / name, cfg, cls, roberta_ids=True, max_position_embeddings=TABLE, **_SMALL)
        for name, (cfg, cls) in ENCODERS.items()
    }


def _export(src: Path, out: Path, task: str, recipe: str, **kwargs) -> dict:
    from exporters import export

    kwargs.setdefault("on_slower", "warn")  # tiny models: a quantized one may be slower than fp32 on some CPUs
    export(src, output=out, task=task, recipe=recipe, progress=False, validation_samples=8, **kwargs)
    return assert_valid_manifest(out)


def _reference_embeddings(src: Path, texts: list[str], max_length: int) -> np.ndarray:
    """transformers' mean-pooled, normalized embeddings of ``texts``, each truncated to ``max_length`` tokens."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    tok.enable_truncation(max_length)
    model = AutoModel.from_pretrained(src).eval()
    out = []
    for text in texts:
        ids = torch.tensor([tok.encode(text).ids])
        with torch.no_grad():
            hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids))[0][0]
        v = hidden.mean(0).numpy()
        out.append(v / np.linalg.norm(v))
    return np.stack(out)


def _texts() -> list[str]:
    """The validation set's first 30 sentences (the one-character ones too) and a text longer than the table."""
    from runtimes.samples import sentences

    return [*sentences(30), LONG_TEXT]


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ENCODERS))
def test_encoder_max_length_takes_the_position_offset(encoder_dirs, tmp_path, arch):
    import edgekit

    manifest = _export(encoder_dirs[arch], tmp_path / "pkg", "feature-extraction", "fp32")
    pre = manifest["preprocessing"]
    assert pre["max_length"] == TABLE - 2
    assert pre["max_length_limits"] == {"position_table": TABLE - 2, "tokenizer_model_max_length": 512}
    got = edgekit.load(tmp_path / "pkg").embed(_texts())
    want = _reference_embeddings(encoder_dirs[arch], _texts(), TABLE - 2)
    # fp32 ONNX Runtime vs PyTorch on a 2-layer model: float32 rounding (~1e-7), far below 1e-4.
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(ENCODERS))
def test_encoder_int8_dynamic_runs_texts_longer_than_the_table(encoder_dirs, tmp_path, arch):
    import edgekit

    manifest = _export(encoder_dirs[arch], tmp_path / "pkg", "feature-extraction", "int8-dynamic")
    assert manifest["preprocessing"]["max_length"] == TABLE - 2
    got = edgekit.load(tmp_path / "pkg").embed(_texts())
    want = _reference_embeddings(encoder_dirs[arch], _texts(), TABLE - 2)
    assert np.isfinite(got).all()
    # Run-time activation scales: measured cosine >= 0.9999; 0.99 leaves a 100x margin on 1 - cos.
    assert np.min(np.sum(got * want, axis=1)) > 0.99


@pytest.mark.slow
def test_mpnet_int8_static_keeps_the_position_buckets_float(encoder_dirs, tmp_path):
    import edgekit
    from runtimes.samples import sentences

    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(sentences(32, offset=1000) + [LONG_TEXT]), encoding="utf-8")
    manifest = _export(
        encoder_dirs["mpnet"], tmp_path / "pkg", "feature-extraction", "int8-static", calibration=str(calib)
    )
    step = next(s for s in manifest["recipe"]["steps"] if s["name"] == "quantize")
    kept = step["details"]["index_nodes_kept_float"]
    assert any(n.endswith("/Log") for n in kept), kept  # the log-bucketing of relative positions
    assert not any("MatMul" in n for n in kept)  # the data path is still quantized
    got = edgekit.load(tmp_path / "pkg").embed(_texts())
    want = _reference_embeddings(encoder_dirs["mpnet"], _texts(), TABLE - 2)
    assert np.isfinite(got).all()
    # Calibrated per-tensor scales: measured cosine >= 0.9995 (with the buckets quantized it did not export).
    assert np.min(np.sum(got * want, axis=1)) > 0.99


# ----------------------------------------------------------------------------------------------- causal LMs


def _reference_greedy(src: Path, prompt: list[int], n: int) -> tuple[list[int], list[np.ndarray]]:
    """transformers' greedy continuation, recomputed from scratch each step (no cache), and its logits."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src).eval()
    ids, logits = list(prompt), []
    with torch.no_grad():
        for _ in range(n):
            last = model(torch.tensor([ids])).logits[0, -1].numpy()
            logits.append(last)
            ids.append(int(last.argmax()))
    return ids[len(prompt) :], logits


def _assert_same_greedy(got: list[int], want: list[int], logits: list[np.ndarray]) -> None:
    """Identical tokens, except that a near-tie in the reference (< 1e-4 apart) may go either way."""
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if g != w:
            gap = float(logits[i][w] - logits[i][g])
            assert gap < 1e-4, f"token {i}: got {g}, transformers {w} (logit gap {gap:.2e})"
            return


PROMPT = [1, 75, 104, 107, 111, 35, 122, 114, 117]


@pytest.fixture(scope="module")
def falcon_dir(tmp_path_factory) -> Path:
    return _build(
        tmp_path_factory.mktemp("arch-falcon") / "falcon",
        "FalconConfig",
        "FalconForCausalLM",
        tokenizer_max=64,
        vocab_size=259,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        multi_query=True,
        max_position_embeddings=128,
    )


@pytest.fixture(scope="module")
def bloom_dir(tmp_path_factory) -> Path:
    return _build(
        tmp_path_factory.mktemp("arch-bloom") / "bloom",
        "BloomConfig",
        "BloomForCausalLM",
        tokenizer_max=96,
        vocab_size=259,
        hidden_size=32,
        n_layer=2,
        n_head=4,
    )


def test_falcon_multi_query_manifest_states_one_kv_head(falcon_dir, tmp_path):
    import edgekit

    cfg = json.loads((falcon_dir / "config.json").read_text())
    assert cfg["num_kv_heads"] == 4 and cfg["multi_query"]  # the config's num_kv_heads is not what is cached
    manifest = _export(falcon_dir, tmp_path / "pkg", "text-generation", "fp32")
    gen = manifest["generation"]
    assert (gen["num_kv_heads"], gen["head_size"], gen["num_layers"], gen["max_context_tokens"]) == (1, 8, 2, 128)
    result = edgekit.load(tmp_path / "pkg").generate(PROMPT, max_tokens=10, temperature=0, ignore_eos=True)
    want, logits = _reference_greedy(falcon_dir, PROMPT, 10)
    _assert_same_greedy(list(result.token_ids), want, logits)


def test_bloom_context_comes_from_the_tokenizer_and_greedy_matches(bloom_dir, tmp_path):
    import edgekit

    assert "max_position_embeddings" not in json.loads((bloom_dir / "config.json").read_text())
    manifest = _export(bloom_dir, tmp_path / "pkg", "text-generation", "fp32")
    gen = manifest["generation"]
    assert (gen["num_kv_heads"], gen["num_attention_heads"], gen["head_size"]) == (4, 4, 8)
    assert gen["max_context_tokens"] == 96
    assert manifest["preprocessing"]["context_source"] == "tokenizer_config.model_max_length"
    result = edgekit.load(tmp_path / "pkg").generate(PROMPT, max_tokens=10, temperature=0, ignore_eos=True)
    want, logits = _reference_greedy(bloom_dir, PROMPT, 10)
    _assert_same_greedy(list(result.token_ids), want, logits)


# ------------------------------------------------------------------------------------------- config facts


def _config_dir(tmp_path: Path, config: dict, tokenizer_config: dict | None = None) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config))
    if tokenizer_config is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return tmp_path


def test_missing_head_count_is_named_with_the_fix(tmp_path):
    from exporters.arch_facts import decoder_sizes

    cfg = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 32, "max_position_embeddings": 64}
    with pytest.raises(ConfigError) as err:
        decoder_sizes(_config_dir(tmp_path, cfg), cfg)
    assert err.value.code == "invalid_config"
    assert err.value.param == "num_attention_heads"
    assert "num_attention_heads, n_head, num_heads" in err.value.message
    assert 'add "num_attention_heads": N to config.json' in err.value.hint


def test_missing_context_is_named_and_the_tokenizer_sentinel_ignored(tmp_path):
    from exporters.arch_facts import decoder_sizes

    cfg = {"model_type": "mystery-lm", "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 32}
    src = _config_dir(tmp_path, cfg, {"model_max_length": 1000000000000000019884624838656})
    with pytest.raises(ConfigError) as err:
        decoder_sizes(src, cfg)
    assert err.value.param == "max_position_embeddings"
    assert "no model_max_length" in err.value.message and "model_max_length" in err.value.hint


def test_bloom_without_tokenizer_limit_gets_the_recorded_default(tmp_path):
    from exporters.arch_facts import decoder_sizes

    cfg = {"model_type": "bloom", "n_layer": 2, "n_head": 4, "hidden_size": 32}
    sizes = decoder_sizes(_config_dir(tmp_path, cfg), cfg)
    assert (sizes.num_layers, sizes.num_attention_heads, sizes.num_kv_heads, sizes.head_size) == (2, 4, 4, 8)
    assert sizes.max_context_tokens == 2048 and "ALiBi" in sizes.context_source


@pytest.mark.parametrize(
    ("extra", "kv"),
    [
        ({"multi_query": True, "num_kv_heads": 4}, 1),
        ({"multi_query": False, "num_kv_heads": 2}, 2),
        ({"new_decoder_architecture": True, "num_kv_heads": 2}, 4),  # K/V broadcast to all heads before caching
    ],
)
def test_falcon_kv_heads_follow_the_attention_code(tmp_path, extra, kv):
    from exporters.arch_facts import decoder_sizes

    cfg = {"model_type": "falcon", "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 32}
    cfg |= {"max_position_embeddings": 64, **extra}
    assert decoder_sizes(_config_dir(tmp_path, cfg), cfg).num_kv_heads == kv


def test_explicit_head_dim_wins_and_graph_disagreement_is_refused(tmp_path):
    from edgekit.manifest import TensorSpec
    from exporters.arch_facts import check_kv_against_graph, decoder_sizes

    cfg = {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    cfg |= {"hidden_size": 32, "head_dim": 16, "max_position_embeddings": 64}
    sizes = decoder_sizes(_config_dir(tmp_path, cfg), cfg)
    assert (sizes.num_kv_heads, sizes.head_size) == (2, 16)
    ok = TensorSpec(name="past_key_values.0.key", dtype="float32", shape=["batch", 2, "past", 16])
    assert check_kv_against_graph(sizes, ok, "llama") == sizes
    bad = TensorSpec(name="past_key_values.0.key", dtype="float32", shape=["batch", 1, "past", 16])
    with pytest.raises(UnsupportedModelError, match=r"KV heads 2 from config.json but 1 in the graph"):
        check_kv_against_graph(sizes, bad, "llama")


def test_text_length_is_the_smallest_limit(tmp_path):
    from exporters.arch_facts import text_length

    cfg = {"model_type": "mpnet", "pad_token_id": 0, "max_position_embeddings": 514}
    src = _config_dir(tmp_path, cfg, {"model_max_length": 512})
    # MPNet hard-codes padding_idx 1 whatever pad_token_id says: 514 - 2.
    assert text_length(src, cfg).max_length == 512
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 384}))
    length = text_length(src, cfg)
    assert length.max_length == 384 and length.limits["position_table"] == 512


# ---------------------------------------------------------------------------------------- ORT failures


def _gather_graph(path: Path, rows: int = 4) -> Path:
    """idx (int64 [n]) -> Gather from a [rows, 2] table: any idx >= rows fails inside ONNX Runtime."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.arange(rows * 2, dtype=np.float32).reshape(rows, 2), "table")
    node = helper.make_node("Gather", ["table", "idx"], ["out"], name="pos_gather")
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 2])],
        [table],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_validation_runner_failure_names_the_node(tmp_path):
    from edgekit.tasks import TASKS
    from exporters.validate import make_runner, validate

    runner, names = make_runner(_gather_graph(tmp_path / "g.onnx"))
    np.testing.assert_array_equal(runner({"idx": np.array([3], np.int64)})[0], [[6.0, 7.0]])
    with pytest.raises(GraphRunError) as err:
        validate(TASKS.get("tensor"), runner, runner, names, [{"idx": np.array([9], np.int64)}])
    e = err.value
    assert (e.code, e.node, e.op_type, e.exit_code) == ("graph_run_failed", "pos_gather", "Gather", 1)
    assert "node 'pos_gather' (Gather) during validation of g.onnx" in e.message
    assert "out of data bounds" in e.message and "position table" in e.hint


def test_smoothing_runner_failure_is_typed(tmp_path):
    from exporters.smoothing import collect_stats

    path = _gather_graph(tmp_path / "g.onnx")
    with pytest.raises(GraphRunError) as err:
        collect_stats(path, ["out"], [{"idx": np.array([0], np.int64)}, {"idx": np.array([7], np.int64)}], tmp_path)
    assert err.value.node == "pos_gather" and "calibration sample 1" in err.value.message


def test_export_of_a_graph_that_fails_at_run_time_is_typed(tmp_path):
    """An .onnx source whose Reshape cannot hold for the samples: export ends in the typed error."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from exporters import export

    shape = numpy_helper.from_array(np.array([3], np.int64), "shape")
    g = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="bad_reshape")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [shape],
    )
    src = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), src)
    with pytest.raises(GraphRunError) as err:
        export(src, output=tmp_path / "pkg", task="tensor", recipe="fp32", progress=False, validation_samples=2)
    assert err.value.node == "bad_reshape" and err.value.op_type == "Reshape"
    assert not (tmp_path / "pkg").exists()


def test_index_nodes_skip_the_data_path():
    """Range -> Cast -> Log -> Cast -> Gather indices is an index chain; a TopK over data is not."""
    from onnx import TensorProto, helper, numpy_helper

    from exporters.index_subgraph import index_nodes

    w = numpy_helper.from_array(np.ones((4, 8), np.float32), "w")
    bias = numpy_helper.from_array(np.ones((16, 8), np.float32), "bias")
    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("zero", 0), ("one", 1), ("k", 1))]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Shape", ["h"], ["hs"], name="shape"),
        helper.make_node("Gather", ["hs", "one"], ["len"], name="len"),
        helper.make_node("Range", ["zero", "len", "one"], ["pos"], name="range"),
        helper.make_node("Cast", ["pos"], ["posf"], name="to_float", to=TensorProto.FLOAT),
        helper.make_node("Log", ["posf"], ["logp"], name="log"),
        helper.make_node("Cast", ["logp"], ["bucket"], name="to_int", to=TensorProto.INT64),
        helper.make_node("Gather", ["bias", "bucket"], ["b"], name="bias_gather"),
        helper.make_node("TopK", ["h", "k"], ["v", "experts"], name="router", axis=-1),
        helper.make_node("Gather", ["w", "experts"], ["routed"], name="expert_gather"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("b", "routed")],
        [w, bias, *consts],
    )
    found = index_nodes(helper.make_model(g))
    assert found == ["shape", "len", "range", "to_float", "log", "to_int"]


def test_falcon_new_decoder_with_fewer_kv_heads_is_refused_by_name(tmp_path):
    """optimum traces this config with a cache of num_kv_heads heads while transformers caches every head."""
    from exporters import export

    src = _build(
        tmp_path / "falcon-new",
        "FalconConfig",
        "FalconForCausalLM",
        vocab_size=259,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_kv_heads=2,
        new_decoder_architecture=True,
        max_position_embeddings=64,
    )
    with pytest.raises(UnsupportedModelError) as err:
        export(src, output=tmp_path / "pkg", task="text-generation", recipe="fp32", progress=False)
    assert "num_kv_heads 2 != num_attention_heads 4" in err.value.message
    assert ".onnx file" in err.value.hint


def test_histogram_calibration_of_varied_lengths_is_refused_up_front(encoder_dirs, tmp_path):
    """ORT's entropy/percentile calibrators stack every sample's activations; texts differ in length."""
    from edgekit.errors import CalibrationError
    from exporters import export

    calib = tmp_path / "calib.txt"
    calib.write_text("short\na much longer line of calibration text\n", encoding="utf-8")
    with pytest.raises(CalibrationError) as err:
        export(
            encoder_dirs["roberta"],
            output=tmp_path / "pkg",
            task="feature-extraction",
            recipe="int8-static",
            recipe_options={"method": "percentile"},
            calibration=str(calib),
            progress=False,
        )
    assert err.value.param == "method" and "2 shapes" in err.value.message and "minmax" in err.value.hint
