"""Text generation: parity with transformers, the KV loop, sampling, stop sequences, streaming, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import runtimes
from edgekit.errors import ConfigError, InvalidInputError, UsageError
from runtimes.pipelines.detokenize import StopMatcher, StreamingDetokenizer
from runtimes.pipelines.generate import GeneratePipeline, GenerationConfig, _Binding
from runtimes.pipelines.sampling import Sampler


@pytest.fixture(scope="module")
def lm(lm_package: Path) -> Any:
    return runtimes.load(lm_package, threads=1)


def _hf_greedy(hf_dir: Path, prompt_ids: list[int], n: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    model.generation_config.eos_token_id = None  # exactly n tokens, as ignore_eos does
    model.generation_config.pad_token_id = 1
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return out[0, len(prompt_ids) :].tolist()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_greedy_tokens_equal_transformers(
    arch: str, lm_hf_dirs: dict[str, Path], lm_package: Path, gpt2_package: Path, tokenizer: Any
) -> None:
    package = {"llama": lm_package, "gpt2": gpt2_package}[arch]
    prompt_ids = tokenizer.encode("once upon a time there was").ids
    n = 40
    ours = runtimes.load(package, threads=1).generate(prompt_ids, max_tokens=n, ignore_eos=True)
    assert list(ours.token_ids) == _hf_greedy(lm_hf_dirs[arch], prompt_ids, n)
    assert ours.finish_reason == "length"
    assert ours.usage.to_dict() == {
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": n,
        "total_tokens": len(prompt_ids) + n,
    }


def test_without_kv_cache_gives_the_same_tokens(lm: Any, lm_package_nokv: Path) -> None:
    nokv = runtimes.load(lm_package_nokv, threads=1)
    a = lm.generate("the quick brown", max_tokens=12, ignore_eos=True)
    b = nokv.generate("the quick brown", max_tokens=12, ignore_eos=True)
    assert a.token_ids == b.token_ids and a.text == b.text


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("fast", [True, False])
def test_kv_cache_stays_in_ort_values(lm: Any, monkeypatch: pytest.MonkeyPatch, fast: bool, shared: bool) -> None:
    """No KV tensor goes through numpy. The shared loop (GroupQueryAttention graphs) binds one buffer per
    past/present pair once; the copying loop binds each step's presents as the next pasts. Every
    combination, with both binding paths (pybind objects, the public IOBinding API), gives the same tokens."""
    assert lm.manifest.generation.shared_kv_buffer  # the exporter fused this Llama into GroupQueryAttention
    calls = {"past_from_numpy": 0, "values": 0}
    real_array, real_value = _Binding.bind_array, _Binding.bind_value

    def bind_array(self: Any, name: str, array: Any) -> None:
        if name.startswith("past_key_values") and array.shape[2] > 0:
            calls["past_from_numpy"] += 1
        real_array(self, name, array)

    def bind_value(self: Any, name: str, value: Any) -> None:
        calls["values"] += 1
        real_value(self, name, value)

    reference = lm.generate("the", max_tokens=5, ignore_eos=True).token_ids
    monkeypatch.setattr(GeneratePipeline, "SHARED_KV", shared)
    monkeypatch.setattr(_Binding, "FAST", fast)
    monkeypatch.setattr(_Binding, "bind_array", bind_array)
    monkeypatch.setattr(_Binding, "bind_value", bind_value)
    res = lm.generate("the", max_tokens=5, ignore_eos=True)
    assert calls["past_from_numpy"] == 0
    # 2 layers x key/value: bound once (shared), or at each of the 4 decode steps (copying)
    assert calls["values"] == (4 if shared else 4 * 4)
    assert res.token_ids == reference


@pytest.fixture(scope="module")
def lm_mask(lm_package_mask: Path) -> Any:
    return runtimes.load(lm_package_mask, threads=1)


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("kind", ["lengths", "mask"])
def test_shared_loop_binds_decode_inputs_once(
    lm: Any, lm_mask: Any, monkeypatch: pytest.MonkeyPatch, padded: bool, kind: str
) -> None:
    """The in-place loop rewrites the token id, position, length (or mask) and logits buffers in place: after
    the prefill binds, the decode steps bind the one-element ids / positions buffers once and nothing per step.
    A graph taking GroupQueryAttention's lengths gets its two buffers bound once, at the prefill. A graph taking
    the mask (``length_inputs: false``, schema <= 1.3 packages) gets the full-length mask bound once
    (``PADDED_MASK``), or without the padded mask a growing mask slice each step."""
    model = {"lengths": lm, "mask": lm_mask}[kind]
    monkeypatch.setattr(GeneratePipeline, "PADDED_MASK", padded)
    reference = model.generate("the", max_tokens=6, ignore_eos=True).token_ids
    binds: list[tuple[str, tuple[int, ...]]] = []
    real_array = _Binding.bind_array

    def bind_array(self: Any, name: str, array: Any) -> None:
        binds.append((name, array.shape))
        real_array(self, name, array)

    monkeypatch.setattr(_Binding, "bind_array", bind_array)
    res = model.generate("the", max_tokens=6, ignore_eos=True)
    assert res.token_ids == reference
    spec = model.manifest.generation
    names = [name for name, _ in binds]
    assert names.count(spec.input_ids_name) == 2  # the prompt, then the one-element step buffer
    assert names.count(spec.position_ids_name) == 2
    n = res.usage.prompt_tokens
    if kind == "lengths":
        assert spec.attention_mask_name is None and "attention_mask" not in names
        assert (spec.seqlens_k_name, spec.total_sequence_length_name) == ("seqlens_k", "total_sequence_length")
        assert names.count("seqlens_k") == 1 and names.count("total_sequence_length") == 1
        return
    assert spec.seqlens_k_name is None and spec.total_sequence_length_name is None
    masks = [shape[1] for name, shape in binds if name == spec.attention_mask_name]
    # the prompt's exact mask, then one (prompt + max_tokens) mask, or one growing slice per decode step (5)
    assert masks == ([n, n + 6] if padded else [n, *range(n + 1, n + 6)])


def test_length_inputs_give_the_mask_graphs_logits_at_every_step(lm: Any, lm_mask: Any) -> None:
    """The graph taking seqlens_k / total_sequence_length and the one computing them from the mask (same
    source, same fusion): identical greedy tokens and the same logits, prompt and decode steps."""
    rows: dict[str, list[np.ndarray]] = {}
    for kind, model in (("lengths", lm), ("mask", lm_mask)):
        pipe = model._pipeline
        prompt = pipe.encode_prompt("once upon a time", GenerationConfig())[0]
        seen: list[np.ndarray] = []
        greedy = Sampler(vocab_size=pipe.vocab_size)

        def record(row: np.ndarray, seen: list[np.ndarray] = seen, greedy: Sampler = greedy) -> int:
            seen.append(np.array(row, copy=True))
            return greedy(row)

        list(pipe.tokens(prompt, record, 12))
        rows[kind] = seen
    assert len(rows["lengths"]) == len(rows["mask"]) == 12
    for a, b in zip(rows["lengths"], rows["mask"], strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
        assert int(np.argmax(a)) == int(np.argmax(b))


def test_length_inputs_take_six_nodes_out_of_the_graph(lm_package: Path, lm_package_mask: Path) -> None:
    import onnx

    graphs = {
        k: onnx.load(str(p / "model.onnx"), load_external_data=False).graph
        for k, p in (("lengths", lm_package), ("mask", lm_package_mask))
    }
    inputs = {k: [i.name for i in g.input] for k, g in graphs.items()}
    assert "attention_mask" in inputs["mask"] and "attention_mask" not in inputs["lengths"]
    assert {"seqlens_k", "total_sequence_length"} <= set(inputs["lengths"])
    assert len(graphs["mask"].node) - len(graphs["lengths"].node) == 6
    assert not any(n.op_type == "ReduceSum" for n in graphs["lengths"].node)


@pytest.mark.parametrize("kind", ["lengths", "mask"])
def test_padded_decode_mask_gives_bit_identical_logits(
    lm: Any, lm_mask: Any, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """GroupQueryAttention reads the valid length from seqlens_k (the mask's sum): the full-length span (mask
    with zeros past it, or total_sequence_length the buffer's length) gives exactly the logits of the exact
    span at every step."""
    pipe = {"lengths": lm, "mask": lm_mask}[kind]._pipeline
    prompt = pipe.encode_prompt("once upon a time", GenerationConfig())[0]

    def rows(padded: bool) -> np.ndarray:
        monkeypatch.setattr(GeneratePipeline, "PADDED_MASK", padded)
        seen: list[np.ndarray] = []
        greedy = Sampler(vocab_size=pipe.vocab_size)

        def record(row: np.ndarray) -> int:
            seen.append(np.array(row, copy=True))
            return greedy(row)

        list(pipe.tokens(prompt, record, 24))
        return np.stack(seen)

    padded, exact = rows(True), rows(False)
    assert padded.shape == (24, pipe.vocab_size)
    np.testing.assert_array_equal(padded, exact)


def test_exporter_marks_in_place_kv_only_for_groupqueryattention_graphs(
    lm: Any, gpt2_package: Path, lm_hf_dirs: dict[str, Path], tmp_path: Path
) -> None:
    import onnx

    from exporters import export

    def ops(pkg: Path) -> set[str]:
        return {n.op_type for n in onnx.load(str(pkg / "model.onnx")).graph.node}

    # gpt2 is fused too (learned positions: GroupQueryAttention without rotary); with fusions off it is not.
    plain = export(
        lm_hf_dirs["gpt2"], output=tmp_path / "gpt2-unfused", task="text-generation", recipe="fp32",
        recipe_options={"fusions": False}, progress=False, validation_samples=4,
    ).package_dir  # fmt: skip
    unfused = runtimes.load(plain, threads=1)
    assert "GroupQueryAttention" not in ops(Path(plain)) and not unfused.manifest.generation.shared_kv_buffer
    assert "GroupQueryAttention" in ops(gpt2_package)
    assert runtimes.load(gpt2_package, threads=1).manifest.generation.shared_kv_buffer
    assert lm.manifest.generation.shared_kv_buffer


def test_in_place_decode_sessions_plan_a_memory_pattern(lm: Any, lm_package_nokv: Path) -> None:
    # The shared-KV loop binds the same shapes every step, so ORT's memory pattern is planned (edgekit.ort_policy);
    # a package without a KV cache reruns a growing sequence and keeps the CPU policy's no-pattern.
    assert lm.session.config.repeated_shapes and lm.session.session.get_session_options().enable_mem_pattern
    nokv = runtimes.load(lm_package_nokv, threads=1)
    assert not nokv.session.config.repeated_shapes
    assert not nokv.session.session.get_session_options().enable_mem_pattern
    a = lm.generate("the quick brown", max_tokens=12, ignore_eos=True)
    assert a.token_ids == nokv.generate("the quick brown", max_tokens=12, ignore_eos=True).token_ids


def test_seed_makes_sampling_reproducible(lm: Any) -> None:
    opts = {"max_tokens": 20, "temperature": 1.2, "top_k": 50, "top_p": 0.95, "ignore_eos": True}
    a = lm.generate("edge devices", seed=7, **opts)
    b = lm.generate("edge devices", seed=7, **opts)
    c = lm.generate("edge devices", seed=8, **opts)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


def test_eos_stops_with_reason_stop(lm: Any) -> None:
    free = lm.generate("the", max_tokens=8, ignore_eos=True)
    eos_model = runtimes.load(lm.root, threads=1)
    eos_model._pipeline.eos = frozenset({free.token_ids[2]})  # the third token ends the text
    res = eos_model.generate("the", max_tokens=8)
    assert res.finish_reason == "stop"
    assert res.token_ids == free.token_ids[:3]
    assert res.usage.completion_tokens == 3


def test_stop_sequence_cuts_text(lm: Any) -> None:
    full = lm.generate("once upon", max_tokens=20, ignore_eos=True)
    visible = [ch for ch in full.text if ch != "\ufffd"]
    assert len(visible) > 4
    stop = full.text[full.text.index(visible[3]) :][:2]
    res = lm.generate("once upon", max_tokens=20, ignore_eos=True, stop=[stop])
    assert res.finish_reason == "stop"
    assert stop not in res.text
    assert full.text.startswith(res.text)
    streamed = "".join(lm.stream("once upon", max_tokens=20, ignore_eos=True, stop=[stop]))
    assert streamed == res.text


def test_stream_deltas_join_to_generate_text(lm: Any) -> None:
    res = lm.generate("héllo wörld 日本", max_tokens=30, ignore_eos=True)
    stream = lm.stream("héllo wörld 日本", max_tokens=30, ignore_eos=True)
    deltas = list(stream)
    assert "".join(deltas) == res.text
    assert stream.result.token_ids == res.token_ids
    assert stream.result.finish_reason == "length"


def test_streaming_never_splits_a_multibyte_character(tokenizer: Any) -> None:
    text = "héllo 日本語のテキスト 🙂🚀 wörld"
    ids = tokenizer.encode(text).ids
    assert len(ids) > len(text) // 2  # the tiny vocab really splits characters into byte tokens
    detok = StreamingDetokenizer(lambda t: tokenizer.decode(t, skip_special_tokens=True))
    deltas = [detok.add(i) for i in ids] + [detok.flush()]
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    assert any(d == "" for d in deltas)  # held back while a character was incomplete


def test_stop_matcher_holds_back_partial_stop() -> None:
    m = StopMatcher(["END"])
    assert m.feed("abc E") == "abc "
    assert m.feed("N") == ""
    assert m.feed("Dxyz") == ""
    assert m.stopped
    m2 = StopMatcher(["END"])
    assert m2.feed("aE") == "a" and m2.feed("x") == "Ex" and m2.flush() == ""


def test_context_window_errors_and_left_truncation(lm: Any, tokenizer: Any) -> None:
    long_ids = (tokenizer.encode(" ".join(["fox"] * 80)).ids * 2)[:100]  # window is 64
    with pytest.raises(InvalidInputError, match="context window is 64 tokens"):
        lm.generate(long_ids, max_tokens=4)
    res = lm.generate(long_ids, max_tokens=4, truncate="left", ignore_eos=True)
    assert res.prompt_truncated and res.usage.prompt_tokens == 60 and res.usage.completion_tokens == 4
    near = lm.generate(long_ids[:60], max_tokens=50, ignore_eos=True)  # stops at the window
    assert near.finish_reason == "length" and near.usage.total_tokens == 64


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_tokens": 0}, "max_tokens must be an integer >= 1"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"temperature": -0.1}, "temperature must be a number in \\[0.0"),
        ({"top_p": 0.0}, "top_p must be a number in \\(0.0, 1.0\\]"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"seed": "x"}, "seed"),
        ({"truncate": "right"}, "truncate must be null or 'left'"),
        ({"stop": [""]}, "stop must be a list of non-empty strings"),
        ({"temprature": 0.5}, "Did you mean 'temperature'"),
    ],
)
def test_bad_generation_options(lm: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        lm.generate("the", **options)


def test_empty_prompt_is_refused(lm: Any) -> None:
    with pytest.raises(InvalidInputError, match="the prompt is empty"):
        lm.generate("")
    with pytest.raises(InvalidInputError, match="the prompt is empty"):
        lm.stream("")


def test_generation_config_round_trip() -> None:
    cfg = GenerationConfig.from_dict({"max_tokens": 5, "temperature": 0.7, "stop": ["\n"], "seed": 3})
    assert GenerationConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.stop == ("\n",) and not cfg.greedy
    with pytest.raises(ConfigError, match="unknown generation option 'bogus'"):
        GenerationConfig.from_dict({"bogus": 1})


def test_generate_on_an_embedding_package_names_the_task(embed_package: Path) -> None:
    model = runtimes.load(embed_package)
    with pytest.raises(
        UsageError, match="task is 'feature-extraction', which has no generate\\(\\); its methods are: run, embed"
    ):
        model.generate("hi")


def test_sampler_filters() -> None:
    logits = np.array([0.0, 3.0, 1.0, 2.9], dtype=np.float32)
    assert Sampler(vocab_size=4)(logits) == 1
    assert all(Sampler(vocab_size=4, temperature=1.0, top_k=1, seed=s)(logits) == 1 for s in range(20))
    assert all(Sampler(vocab_size=4, temperature=1.0, top_p=1e-6, seed=s)(logits) == 1 for s in range(20))
    picks = {Sampler(vocab_size=4, temperature=1.0, top_k=2, seed=s)(logits) for s in range(200)}
    assert picks == {1, 3}
    penalized = Sampler(vocab_size=4, repetition_penalty=10.0)
    penalized.observe([1])
    assert penalized(logits) == 3  # 3.0 / 10 < 2.9


def test_greedy_fast_path_picks_what_the_float64_path_picks() -> None:
    """Greedy without a penalty is one argmax on the row as given; ties keep the first index, NaN never wins,
    +inf wins, float16 rows give the float32 answer."""
    rng = np.random.default_rng(3)
    rows = [rng.standard_normal(97).astype(np.float32) for _ in range(20)]
    tie = np.zeros(97, dtype=np.float32)
    tie[[40, 7, 90]] = 2.0
    nan = rows[0].copy()
    nan[[3, 50]] = np.nan
    inf = rows[1].copy()
    inf[[60, 80]] = np.inf
    for row in [*rows, tie, nan, inf, rows[2].astype(np.float16)]:
        expected = int(np.argmax(np.nan_to_num(row.astype(np.float64), nan=-np.inf, posinf=np.inf)))
        assert Sampler(vocab_size=97)(row) == expected
    assert Sampler(vocab_size=97)(tie) == 7 and Sampler(vocab_size=97)(inf) == 60
