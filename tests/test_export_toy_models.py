"""Models the tests train themselves: quantized packages keep the task accuracy of fp32.

- a tiny Llama with a byte-level tokenizer, trained on 2-digit addition (an exact answer) to a dev-set target:
  int8-dynamic keeps exact-match accuracy within 3 points of fp32 and int4 within 5;
- a small CNN trained on scikit-learn's digits to a dev-set target: int8-static (calibrated) keeps top-1 within
  2 points.

Both models are trained to a quality target (``tests/toy_models.py``), not for a step count, so they reach the same
quality on every CPU; the quantized margins allow for the CPU-dependent part of quantization (int8 weights are
pair-safe on x86 without VNNI, so the int8 model itself differs between hosts) at a resolution of 1 point per
problem (100 problems) or ~0.2 point per image (450 images). A broken recipe loses far more than these margins.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from exporters import export, export_torch
from tests.conftest import assert_valid_manifest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("memoized_optimum")]  # one optimum trace per HF dir


@pytest.fixture(scope="module")
def tiny_llama():
    from tests import toy_models

    return toy_models.cached_tiny_lm("llama")


@pytest.fixture(scope="module")
def lm_packages(tiny_llama, toy_llama_fp32_pkg, tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    out = {"fp32": toy_llama_fp32_pkg}  # shared with tests/test_quantize_fused_lm.py (conftest)
    for recipe in ("int8-dynamic", "int4"):
        opts = {"recipe_options": {"block_size": 16}} if recipe == "int4" else {}
        export(
            tiny_llama,
            output=root / recipe,
            task="text-generation",
            recipe=recipe,
            progress=False,
            on_slower="warn",
            validation_samples=16,
            **opts,
        )
        out[recipe] = root / recipe
    return out


def test_lm_manifest_describes_the_kv_cache(lm_packages, tiny_llama):
    import json

    m = assert_valid_manifest(lm_packages["fp32"])
    cfg = json.loads((tiny_llama / "config.json").read_text())
    gen = m["generation"]
    assert gen["with_kv_cache"] is True
    assert gen["num_layers"] == cfg["num_hidden_layers"]
    assert gen["num_kv_heads"] == cfg["num_key_value_heads"]
    assert gen["past_key_template"] == "past_key_values.{layer}.key"
    names = {t["name"] for t in m["inputs"]}
    assert {gen["past_key_template"].format(layer=i) for i in range(gen["num_layers"])} <= names
    assert gen["eos_token_ids"], "EOS must be recorded so generation stops"
    # fp32 vs fp32 (fused vs source graph): only a near-tie of the reference can flip, on any CPU's rounding.
    assert m["accuracy"]["metrics"]["next_token_top1_agreement"] >= 0.995
    assert m["accuracy"]["metrics"]["perplexity"] == pytest.approx(
        m["accuracy"]["metrics"]["perplexity_reference"], rel=1e-4
    )


def test_quantized_lm_keeps_exact_match(lm_packages):
    import runtimes
    from tests import toy_models

    problems = toy_models.addition_problems(100, seed=123)
    scores = {}
    for recipe, pkg in lm_packages.items():
        model = runtimes.load(pkg)
        scores[recipe] = toy_models.addition_exact_match(
            lambda prompt, m=model: m.generate(prompt, max_tokens=8, temperature=0).text, problems
        )
    assert scores["fp32"] >= 0.8, scores  # the model learned the task
    assert scores["int8-dynamic"] >= scores["fp32"] - 0.03, scores
    assert scores["int4"] >= scores["fp32"] - 0.05, scores
    assert_valid_manifest(lm_packages["int4"])


def _top1(pkg, x):
    sess = ort.InferenceSession(str(pkg / "model.onnx"), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + 64]})[0].argmax(-1) for i in range(0, len(x), 64)])


def test_digits_cnn_int8_static_keeps_top1(tmp_path):
    from tests import toy_models

    cnn = toy_models.trained_digits_cnn(seed=0)
    x_test, y_test = cnn.x_test.astype(np.float32), cnn.y_test
    cal = tmp_path / "cal.npz"
    np.savez(cal, pixels=cnn.x_train[:128].astype(np.float32))
    val = tmp_path / "val.npz"
    np.savez(val, pixels=x_test, labels=y_test)
    io = {
        "input_names": ["pixels"],
        "output_names": ["logits"],
        "dynamic_axes": {"pixels": {0: "batch"}, "logits": {0: "batch"}},
    }
    import torch

    example = torch.from_numpy(x_test[:1])
    fp32 = export_torch(cnn.model, example, output=tmp_path / "fp32", recipe="fp32", progress=False, **io)
    q = export_torch(
        cnn.model,
        example,
        output=tmp_path / "int8",
        recipe="int8-static",
        calibration=cal,
        validation_data=val,
        validation_samples=len(x_test),
        progress=False,
        on_slower="warn",
        **io,
    )
    assert_valid_manifest(tmp_path / "int8")
    acc32 = float(np.mean(_top1(tmp_path / "fp32", x_test) == y_test))
    acc8 = float(np.mean(_top1(tmp_path / "int8", x_test) == y_test))
    assert acc32 >= 0.9, acc32
    assert acc8 >= acc32 - 0.02, (acc8, acc32)
    # The manifest's labeled accuracy is the same measurement, made at export time.
    metrics = q.manifest.accuracy["metrics"]
    assert metrics["top1_accuracy"] == pytest.approx(acc8, abs=1e-9)
    assert metrics["top1_accuracy_reference"] == pytest.approx(acc32, abs=1e-9)
    assert fp32.manifest.accuracy["metrics"]["output_cosine_min"] > 0.9999
