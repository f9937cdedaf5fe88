"""Sanity checks of the toy model builders that other tests and the benchmarks rely on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import transformers
from tokenizers import Tokenizer

from tests import toy_models as tm
from tests.digits_cnn_factory import make_model

TEXTS = ["07+45=", "héllo wörld, 日本語 😀", "\ttabs\nand  two spaces ", "", "The quick brown fox."]


@pytest.mark.parametrize("vocab_size", [tm.BYTE_VOCAB_SIZE, 8192])
def test_byte_tokenizer_round_trips_utf8(tmp_path: Path, vocab_size: int) -> None:
    from transformers import AutoTokenizer

    raw = Tokenizer.from_str(tm.byte_tokenizer_json(vocab_size))
    auto = AutoTokenizer.from_pretrained(tm.save_byte_tokenizer(tmp_path, vocab_size))
    assert raw.get_vocab_size() == len(auto) == vocab_size
    assert (auto.pad_token_id, auto.bos_token_id, auto.eos_token_id) == (tm.PAD_ID, tm.BOS_ID, tm.EOS_ID)
    for text in TEXTS:
        ids = raw.encode(text).ids
        assert ids == auto(text)["input_ids"]
        assert ids[0] == tm.BOS_ID
        assert raw.decode(ids) == text
        assert auto.decode(ids, skip_special_tokens=True) == text
        if vocab_size == tm.BYTE_VOCAB_SIZE:
            assert ids[1:] == [tm.BYTE_OFFSET + b for b in text.encode()]


def test_addition_problems_are_held_out_and_deterministic() -> None:
    problems = tm.addition_problems(200, seed=0)
    assert problems == tm.addition_problems(200, seed=0)
    assert len(set(problems)) == 200
    assert not set(problems) & set(tm.training_problems())
    dev = set(tm.dev_problems())
    assert len(dev) == tm.DEV_SIZE and not dev & set(tm.training_problems()) and not dev & set(problems)
    assert len(tm.training_problems()) + len(dev) + tm.HELDOUT_POOL_SIZE == 10000
    assert tm.AdditionProblem(7, 45).prompt == "07+45=" and tm.AdditionProblem(7, 45).answer == "52"
    assert tm.addition_exact_match(lambda prompt: str(int(prompt[:2]) + int(prompt[3:5])), problems) == 1.0


def test_digits_cnn_trains_to_its_target_and_factory_reloads(tmp_path: Path) -> None:
    result = tm.trained_digits_cnn(seed=0)  # the instance tests/test_export_toy_models.py exports
    assert result.dev_accuracy >= 0.97  # the stopping rule, whatever the CPU's rounding made of the trajectory
    assert result.test_accuracy > 0.90  # held out while training: generalizes with margin below the dev target
    assert result.x_test.dtype == np.float32 and result.x_test.shape[1:] == (1, 8, 8)
    assert result.x_train.min() >= 0.0 and result.x_train.max() <= 1.0
    assert result.factory.endswith("digits_cnn_factory.py:make_model")

    fresh = make_model()
    fresh.load_state_dict(torch.load(result.save_weights(tmp_path / "digits.pt"), weights_only=True))
    x = torch.from_numpy(result.x_test[:16])
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), result.model(x))


def test_cached_build_runs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tm.CACHE_ENV, str(tmp_path))
    first = tm.cached_tiny_lm("llama", trained=False)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert tm.cached_tiny_lm("llama", trained=False) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert first.parent == tmp_path
    assert tm.cached_tiny_lm("gpt2", trained=False) != first
    assert not list(tmp_path.glob("*.partial"))


def test_training_below_its_target_fails_loudly() -> None:
    spec = tm.TinyLMSpec(
        hidden=16, layers=1, heads=2, kv_heads=1, intermediate=16, steps=2, max_steps=2, eval_every=1,
        warmup_steps=1, batch_size=4,
    )  # fmt: skip
    model = transformers.AutoModelForCausalLM.from_config(tm._tiny_lm_config(spec))
    with pytest.raises(tm.TrainingTargetError, match=r"dev exact match after 2 steps, short of the target 0\.98"):
        tm._train_addition(model, spec)


def test_digits_training_below_its_target_fails_loudly() -> None:
    with pytest.raises(tm.TrainingTargetError, match="after 1 epochs, short of 1.01"):
        tm.train_digits_cnn(seed=0, target_accuracy=1.01, max_epochs=1)


@pytest.mark.slow
def test_tiny_lm_cache_dir_loads_and_adds() -> None:
    # The trained Llama is the one the suite and the benchmarks use. A trained GPT-2 is used by nothing, and
    # training it cost 34-41 s of CI time for this test alone; the untrained GPT-2 is built above.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    arch = "llama"
    path = tm.cached_tiny_lm(arch)
    info = tm.load_tiny_lm(path)
    # Trained to the dev target (not for a step count), so the held-out score has the same margin on every CPU.
    assert info.dev_exact_match is not None and info.dev_exact_match >= info.spec.target_exact_match
    assert info.steps_trained <= info.spec.max_steps
    assert info.exact_match is not None and info.exact_match >= 0.95
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == arch
    assert model.generation_config.eos_token_id == tm.EOS_ID
    greedy = tm.addition_exact_match(tm.hf_greedy_generate_fn(model, tokenizer), info.eval_problems[:50])
    assert greedy >= 0.9
    # The cheap stopping metric is greedy exact match, computed in one batch.
    assert tm.teacher_forced_exact_match(model, info.eval_problems[:50]) == pytest.approx(greedy, abs=1e-9)


@pytest.mark.slow
def test_tiny_lm_exports_with_optimum(tmp_path: Path) -> None:
    from optimum.exporters.onnx import main_export

    main_export(str(tm.cached_tiny_lm("llama")), tmp_path, task="text-generation-with-past", do_validation=False)
    graph = onnx.load(tmp_path / "model.onnx", load_external_data=False).graph
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    assert {"input_ids", "attention_mask", "position_ids", "past_key_values.1.value"} <= inputs
    assert {"logits", "present.0.key", "present.1.value"} <= outputs


@pytest.mark.slow
@pytest.mark.parametrize(
    ("builder", "input_names"),
    [
        (tm.tiny_bert_classifier, ["input_ids", "attention_mask", "token_type_ids"]),
        (tm.tiny_vit_image_classifier, ["pixel_values"]),
        (tm.tiny_wav2vec2_audio_classifier, ["input_values"]),
    ],
)
def test_toy_classifiers_export_with_optimum(
    tmp_path: Path, builder: Callable[[Path], tm.ToyModelDir], input_names: list[str]
) -> None:
    from optimum.exporters.onnx import main_export

    toy = builder(tmp_path / "src")
    main_export(str(toy.path), tmp_path / "onnx", task=toy.task, do_validation=False)
    graph = onnx.load(tmp_path / "onnx" / "model.onnx").graph
    assert [i.name for i in graph.input] == input_names
    assert [o.name for o in graph.output] == ["logits"]
    assert graph.output[0].type.tensor_type.shape.dim[1].dim_value == len(toy.labels)
