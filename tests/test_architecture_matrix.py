"""The architecture matrix: every registered architecture x task x recipe is exported, run and checked.

One cell per (zoo case, task, recipe) from ``exporters.architectures`` and ``tests/arch_zoo.py``. Each cell exports
the tiny model's HF directory with the recipe (as a user would: ``exporters.export(dir, recipe=...)``), loads the
package with ``runtimes.load`` and compares what the runtime returns with transformers fp32 on the same inputs:

- fp32: logits / embeddings within 1e-3 relative (to the reference's largest magnitude), greedy tokens identical
  for causal LMs (a divergence is accepted only at a genuine tie of the reference, top-2 gap < 1e-4), and for
  images and audio the runtime's preprocessed tensor equals the HF processor's within 1e-5 (whisper's log-mel:
  1e-4, transformers' float32 STFT).
- quantized recipes: the export and the run complete, the manifest's accuracy report is there, and the runtime's
  output keeps a cosine with transformers fp32 above the recipe's floor (``COSINE_FLOOR``), and its top-1 wherever
  the reference's top-2 gap is wide (``MARGIN``). Random tiny weights make exact values meaningless across CPUs
  (AVX2 and AVX-512 kernels round differently, int8 weights are pair-safe on x86 without VNNI), so the floors sit
  well under the worst cosine measured (see ``COSINE_FLOOR``) and far above what a broken graph gives (~0).

Cost: optimum's conversion (the torch trace) is most of an export; it is memoized per (model dir, task) for the
module (``memoized_optimum`` in tests/conftest.py), so each architecture is traced once and every recipe reuses the same ONNX bytes
the exporter would have produced. Everything else (recipe steps, validation, packaging) runs for real per cell.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exporters.architectures import ARCHITECTURES
from runtimes.decoder_feeds import attention_feeds
from tests import arch_zoo
from tests.conftest import assert_valid_manifest

# optimum's conversion once per (model dir, task): conftest's memoized_optimum.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("memoized_optimum")]

FP32_RELATIVE = 1e-3  # the bound; PyTorch vs ORT differ by ~1e-5 on these sizes
PREPROCESS_ATOL = 1e-5  # pixels and waveforms, normalized units: float32 rounding only
LOG_MEL_ATOL = 1e-4  # transformers computes whisper's log-mel with torch's float32 STFT (~1e-4 after log10 / 4)
TIE = 1e-4  # a reference top-2 gap below this is a tie: either token is a correct greedy choice
# Cosine with transformers fp32, per recipe. Worst passing cell measured (AMD EPYC, AVX2, no VNNI, 2026-12):
# fp16 0.999995, int8-dynamic 0.99909 (gemma2 logits), int8-static 0.9516 (wav2vec2, the manifest's worst sample),
# int4 0.9609 (gemma2 logits). Each floor leaves 3-20x that loss in (1 - cosine) for other CPUs' kernels (VNNI
# int8 weights instead of pair-safe ones, AVX-512 rounding); a broken graph scores ~0.
COSINE_FLOOR = {"fp32": 0.99999, "fp16": 0.999, "int8-dynamic": 0.98, "int8-static": 0.85, "int4": 0.8}
# Top-1 must agree where the reference's top-2 gap exceeds this share of its logit range.
MARGIN = {"fp32": 0.0, "fp16": 0.05, "int8-dynamic": 0.25, "int8-static": 0.3, "int4": 0.4}

TEXTS = [
    "Hello world",
    "a",
    "The quick brown fox jumps over the lazy dog.",
    "I love this movie, it was great fun!",
    "Quantization reduces model size by storing weights in eight bits instead of thirty-two, and this"
    " sentence is long enough to pass the sixty-four token window of every tiny text model here.",
]
PROMPT = "Hello world, 12+34="
NEW_TOKENS = 8


@pytest.fixture(autouse=True, scope="module")
def _fewest_policy_rounds() -> Any:
    """Each export still measures its thread policy, in 3 rounds of 4 ms blocks instead of up to 21 of 20 ms.

    The matrix checks numerics: the policy is tested in tests/test_session_policy.py, and this timing was a
    quarter of each cell's export (0.26 s of ~1 s, 213 cells)."""
    from exporters import speed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(speed, "MIN_ROUNDS", 3)
        mp.setattr(speed, "MAX_ROUNDS", 3)
        mp.setattr(speed, "ROUND_TARGET_S", 0.004)
        yield


def _cells() -> list[Any]:
    cells = []
    for case in arch_zoo.ZOO.values():
        arch = ARCHITECTURES.get(case.model_type)
        for task in arch.tasks:
            for recipe in case.recipes or arch.recipes:
                cells.append(pytest.param(case.name, task, recipe, id=f"{case.name}-{task}-{recipe}"))
    return cells


# ---------------------------------------------------------------------------------------- completeness


def test_every_registered_architecture_has_a_zoo_case_and_back() -> None:
    zoo_types = {c.model_type for c in arch_zoo.ZOO.values()}
    assert set(ARCHITECTURES.names()) - zoo_types == set(), "registered without a tiny model in tests/arch_zoo.py"
    assert zoo_types - set(ARCHITECTURES.names()) == set(), "zoo cases of architectures the registry lacks"


def test_every_registered_cell_is_in_the_matrix() -> None:
    covered = {(arch_zoo.ZOO[p.values[0]].model_type, p.values[1], p.values[2]) for p in _cells()}
    promised = {(a.model_type, task, recipe) for a in ARCHITECTURES for task, recipe in a.cells()}
    assert promised - covered == set()
    for case in arch_zoo.ZOO.values():
        if case.recipes is not None:
            assert set(case.recipes) <= set(ARCHITECTURES.get(case.model_type).recipes), case.name
            assert case.why_fewer_recipes, f"{case.name} narrows the recipes without saying why"


def test_markdown_table_lists_every_architecture_and_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    from exporters.architectures import main

    assert main(["--markdown"]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == ARCHITECTURES.names()
    header = table.splitlines()[0]
    for recipe in ("fp32", "fp16", "int8-dynamic", "int8-static", "int4"):
        assert f" {recipe} " in header
    llama = next(r for r in rows if r.startswith("| `llama`"))
    cols = [c.strip() for c in llama.strip("|").split("|")]
    marks = dict(zip(header.strip("|").split("|")[3:], cols[3:], strict=False))
    assert marks[" int4 "] == "✓" and marks[" int8-static "] == "–"


def test_readme_table_is_the_generated_one() -> None:
    from exporters.architectures import markdown_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert markdown_table() in readme, "README is stale: paste `python -m exporters.architectures --markdown`"


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Calibration data for int8-static, disjoint from the comparison inputs."""
    root = tmp_path_factory.mktemp("calibration")
    from runtimes.samples import sentences

    (root / "texts.txt").write_text("\n".join(sentences(16, offset=500)) + "\n", encoding="utf-8")
    images = root / "images"
    images.mkdir()
    for i, png in enumerate(_images(seed=7, n=8)):
        (images / f"{i}.png").write_bytes(png)
    return root


def _images(seed: int = 0, n: int = 4) -> list[bytes]:
    """PNG files (bytes) of smooth random RGB images of varied sizes (not the model's): resize and crop matter."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(48, 40), (40, 56), (32, 32), (64, 45), (37, 50)]
    out = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        coarse = rng.integers(0, 256, size=(h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(coarse).resize((w, h), resample=Image.BILINEAR).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _waves(seed: int = 0, n: int = 3) -> np.ndarray:
    """One-second 16 kHz clips: a tone plus noise (equal lengths, so padding never enters the comparison)."""
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    return np.stack(
        [0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * rng.standard_normal(t.size) for i in range(n)]
    ).astype(np.float32)


def _calibration(case: arch_zoo.ZooCase, task: str, data: Path, out: Path) -> Path:
    if task in ("feature-extraction", "text-classification"):
        return data / "texts.txt"
    if task == "image-classification":
        return data / "images"
    # Audio: an .npz of the model's inputs as the HF feature extractor makes them (the user's own data).
    from transformers import AutoFeatureExtractor

    extractor = AutoFeatureExtractor.from_pretrained(case.path())
    feats = extractor(list(_waves(seed=11, n=8)), sampling_rate=16000, return_tensors="np")
    name = "input_features" if "input_features" in feats else "input_values"
    path = out / "calibration.npz"
    np.savez(path, **{name: feats[name]})
    return path


# ------------------------------------------------------------------------------------------ references


@cache
def _reference(case_name: str, task: str) -> dict[str, Any]:
    """transformers fp32 outputs for the cell's inputs (once per case and task)."""
    import torch

    case = arch_zoo.ZOO[case_name]
    with torch.no_grad():
        return _REFERENCES[task](case.path())


def _hf_inputs(model: Any, enc: dict[str, Any]) -> dict[str, Any]:
    import inspect

    accepted = inspect.signature(model.forward).parameters
    return {k: v for k, v in enc.items() if k in accepted}


def _ref_generation(path: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = PreTrainedTokenizerFast.from_pretrained(path)(PROMPT)["input_ids"]
    prompt_logits = model(torch.tensor([ids])).logits[0].double().numpy()
    seq, step_logits = list(ids), []
    for _ in range(NEW_TOKENS):  # greedy by hand, so every step's logits (and ties) are known
        row = model(torch.tensor([seq])).logits[0, -1].double().numpy()
        step_logits.append(row)
        seq.append(int(row.argmax()))
    return {"ids": ids, "logits": prompt_logits, "tokens": seq[len(ids) :], "step_logits": step_logits}


def _text(path: Path) -> tuple[Any, dict[str, Any]]:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(path)
    return tok, tok(TEXTS, padding=True, truncation=True, return_tensors="pt")


def _ref_embedding(path: Path) -> dict[str, Any]:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(path).eval()
    _, enc = _text(path)
    hidden = model(**_hf_inputs(model, enc)).last_hidden_state.double().numpy()
    mask = enc["attention_mask"].double().numpy()[..., None]
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return {"vectors": pooled / np.linalg.norm(pooled, axis=1, keepdims=True)}


def _ref_text_classification(path: Path) -> dict[str, Any]:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    _, enc = _text(path)
    return {"logits": model(**_hf_inputs(model, enc)).logits.double().numpy(), "items": TEXTS}


def _ref_image_classification(path: Path) -> dict[str, Any]:
    import io

    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(path).eval()
    images = _images()
    decoded = [Image.open(io.BytesIO(png)).convert("RGB") for png in images]
    pixels = AutoImageProcessor.from_pretrained(path)(decoded, return_tensors="pt")["pixel_values"]
    return {"logits": model(pixel_values=pixels).logits.double().numpy(), "items": images, "inputs": pixels.numpy()}


def _ref_audio_classification(path: Path) -> dict[str, Any]:
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    model = AutoModelForAudioClassification.from_pretrained(path).eval()
    waves = _waves()
    feats = AutoFeatureExtractor.from_pretrained(path)(list(waves), sampling_rate=16000, return_tensors="pt")
    logits = model(**_hf_inputs(model, feats)).logits.double().numpy()
    name = "input_values" if "input_values" in feats else "input_features"
    return {"logits": logits, "items": waves, "inputs": feats[name].numpy(), "inputs_name": name}


_REFERENCES = {
    "text-generation": _ref_generation,
    "feature-extraction": _ref_embedding,
    "text-classification": _ref_text_classification,
    "image-classification": _ref_image_classification,
    "audio-classification": _ref_audio_classification,
}


# ------------------------------------------------------------------------------------------ comparisons


def _relative(new: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(new - ref)) / max(float(np.max(np.abs(ref))), 1e-12))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def _check_top1(new: np.ndarray, ref: np.ndarray, recipe: str) -> None:
    """Rows whose reference top-2 gap is wide must keep their top-1 (fp32: every row without a tie)."""
    for n, r in zip(new.reshape(-1, new.shape[-1]), ref.reshape(-1, ref.shape[-1]), strict=True):
        top2 = np.sort(r)[-2:]
        gap = top2[1] - top2[0]
        if gap > max(TIE, MARGIN[recipe] * float(r.max() - r.min())):
            assert int(n.argmax()) == int(r.argmax()), f"top-1 moved with a reference gap of {gap:.3g}"


MEASURED: dict[str, float] = {}  # the current cell's numbers, recorded as junit properties (tolerance reviews)


def _check_values(new: np.ndarray, ref: np.ndarray, recipe: str, what: str) -> None:
    assert np.all(np.isfinite(new)), f"{what}: non-finite values"
    rel, cos = _relative(new, ref), _cosine(new, ref)
    MEASURED[f"{what} relative"], MEASURED[f"{what} cosine"] = rel, cos
    if recipe == "fp32":
        assert rel <= FP32_RELATIVE, f"{what}: fp32 differs from transformers by {rel:.3g} relative"
    assert cos >= COSINE_FLOOR[recipe], f"{what}: cosine {cos:.6f} with transformers < {COSINE_FLOOR[recipe]}"


def _centered(logits: np.ndarray) -> np.ndarray:
    return logits - logits.mean(axis=-1, keepdims=True)


def _run_generation(model: Any, ref: dict[str, Any], recipe: str) -> None:
    gen = model.manifest.generation
    ids = np.asarray([ref["ids"]], dtype=np.int64)
    # the mask, or GroupQueryAttention's lengths in its place, as the manifest names them
    feeds: dict[str, np.ndarray] = {gen.input_ids_name: ids, **attention_feeds(gen, np.ones_like(ids))}
    if gen.position_ids_name:
        feeds[gen.position_ids_name] = np.arange(ids.shape[1], dtype=np.int64)[None]
    for layer in range(gen.num_layers):  # an empty cache of the manifest's shape: the manifest must be right
        for template in (gen.past_key_template, gen.past_value_template):
            name = template.format(layer=layer)
            feeds[name] = np.zeros((1, gen.num_kv_heads, 0, gen.head_size), dtype=model.session.inputs[name].dtype)
    logits = model.run(feeds, [gen.logits_name])[gen.logits_name][0].astype(np.float64)
    _check_values(_centered(logits), _centered(ref["logits"]), recipe, "prompt logits")
    _check_top1(logits, ref["logits"], recipe)
    result = model.generate(ref["ids"], max_tokens=NEW_TOKENS, temperature=0, ignore_eos=True)
    tokens = list(result.token_ids)
    assert len(tokens) == NEW_TOKENS, result
    if recipe == "fp32":
        diverged = next((i for i, (a, b) in enumerate(zip(tokens, ref["tokens"], strict=True)) if a != b), None)
        if diverged is not None:
            top2 = np.sort(ref["step_logits"][diverged])[-2:]
            assert top2[1] - top2[0] < TIE, f"greedy tokens {tokens} != transformers' {ref['tokens']}"


def _run_embedding(model: Any, ref: dict[str, Any], recipe: str) -> None:
    vectors = np.asarray(model.embed(TEXTS), dtype=np.float64)
    assert vectors.shape == ref["vectors"].shape
    _check_values(vectors, ref["vectors"], recipe, "embeddings")
    for v, r in zip(vectors, ref["vectors"], strict=True):
        assert _cosine(v, r) >= COSINE_FLOOR[recipe], "one text's embedding drifted"


def _run_classification(model: Any, ref: dict[str, Any], recipe: str) -> None:
    items = ref["items"]
    ranked = model.classify(list(items), top_k=len(arch_zoo.LABELS))
    probs = np.zeros((len(items), len(arch_zoo.LABELS)))
    for row, result in zip(probs, ranked, strict=True):
        assert {r["label"] for r in result} == set(arch_zoo.LABELS)
        for r in result:
            row[r["index"]] = r["score"]
    # Softmax fixes logits up to a constant per row: compare centred log-probabilities with centred logits.
    logits = np.log(np.maximum(probs, 1e-30))
    _check_values(_centered(logits), _centered(ref["logits"]), recipe, "logits")
    _check_top1(logits, ref["logits"], recipe)


def _check_preprocessing(model: Any, ref: dict[str, Any], task: str) -> None:
    """The runtime's own image / raw-audio preprocessing reproduces the HF processor's tensor."""
    from runtimes import preprocess

    pre = model.manifest.preprocessing
    atol = PREPROCESS_ATOL
    if task == "image-classification":
        mine = preprocess.preprocess_images(ref["items"], preprocess.ImageSettings.from_dict(pre["image"]))
    elif task == "audio-classification":
        mine = preprocess.preprocess_audio(list(ref["items"]), preprocess.AudioSettings.from_dict(pre["audio"]))
        if ref["inputs_name"] == "input_features":
            atol = LOG_MEL_ATOL
    else:
        return
    assert mine.shape == ref["inputs"].shape, (
        f"preprocessing gives {mine.shape}, the HF processor {ref['inputs'].shape}"
    )
    err = float(np.max(np.abs(mine - ref["inputs"])))
    assert err <= atol, f"preprocessing differs from the HF processor by {err:.3g}"


_RUNS = {
    "text-generation": _run_generation,
    "feature-extraction": _run_embedding,
    "text-classification": _run_classification,
    "image-classification": _run_classification,
    "audio-classification": _run_classification,
}


# ---------------------------------------------------------------------------------------------- cells


def _export(case: arch_zoo.ZooCase, task: str, recipe: str, out: Path, data: Path) -> Any:
    from edgekit.errors import EdgekitError
    from exporters import export

    # Tiny models: a quantized one may be slower than fp32 on some CPUs; the matrix checks numerics, not speed
    # (tests/test_speedup_guarantee.py does), so it skips the comparison.
    extra: dict[str, Any] = {"validation_samples": 4, "on_slower": "off"}
    if recipe == "int8-static":
        extra["calibration"] = _calibration(case, task, data, out.parent)
        extra["recipe_options"] = {"max_calibration_samples": 8}
    if recipe == "int4":
        extra["recipe_options"] = {"block_size": 16}  # the tiny models' 32-64 wide rows
    if recipe == "int8-dynamic":
        extra["recipe_options"] = {"smoothing_samples": 8}  # statistics of 4-token-wide layers settle quickly
    try:
        return export(case.path(), output=out, task=task, recipe=recipe, progress=False, **extra)
    except EdgekitError as exc:  # a refusal is a test failure too, but a readable one
        pytest.fail(f"export refused: error[{exc.code}]: {exc}", pytrace=False)


@pytest.mark.parametrize(("case_name", "task", "recipe"), _cells())
def test_cell(case_name: str, task: str, recipe: str, data_dir: Path, tmp_path: Path, record_property: Any) -> None:

    MEASURED.clear()
    try:
        _cell(case_name, task, recipe, data_dir, tmp_path)
    finally:
        for key, value in MEASURED.items():
            record_property(key, value)


def _cell(case_name: str, task: str, recipe: str, data_dir: Path, tmp_path: Path) -> None:
    import runtimes
    from edgekit.errors import EdgekitError

    case = arch_zoo.ZOO[case_name]
    ref = _reference(case_name, task)
    result = _export(case, task, recipe, tmp_path / "pkg", data_dir)
    manifest = assert_valid_manifest(result.package_dir)
    accuracy = manifest["accuracy"]
    primary = accuracy["metrics"][accuracy["primary_metric"]]
    assert isinstance(primary, float) and math.isfinite(primary)
    first_output = next(iter(accuracy["outputs"].values()))
    MEASURED["manifest cosine_min"] = first_output["cosine_min"]
    assert first_output["cosine_min"] >= COSINE_FLOOR[recipe], accuracy
    try:
        model = runtimes.load(result.package_dir)
        if recipe == "fp32":
            _check_preprocessing(model, ref, task)
        _RUNS[task](model, ref, recipe)
    except EdgekitError as exc:
        pytest.fail(f"run failed: error[{exc.code}]: {exc}", pytrace=False)
