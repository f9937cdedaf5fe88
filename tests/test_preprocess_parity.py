"""The runtime's image and audio preprocessing against the Hugging Face processors it was exported from.

Tolerances: images and waveforms go through the same Pillow filter and the same float32 arithmetic in the same
order, so 1e-5 (normalized units) is a bound on nothing but float32 rounding. Whisper's log-mel is compared twice:
with transformers' numpy path (the algorithm the runtime copies, 1e-5) and with its default path, which uses
``torch.stft`` in float32 when torch is installed: bins near the ``max - 8`` floor are 1e4 times below the peak
amplitude, where float32 STFT error reaches ~1e-4 relative, so 1e-4 after ``log10`` and ``/ 4``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.errors import ConfigError, InvalidInputError, PackageError, UnsupportedModelError
from runtimes.audio_preprocess import AUDIO_PROCESSORS, mel_filter_bank
from runtimes.image_preprocess import IMAGE_PROCESSORS
from runtimes.preprocess import AudioSettings, ImageSettings, audio_batch, preprocess_images
from tests.preprocess_models import AUDIO_CASES, IMAGE_CASES, ProcessorCase, build_model_dir, save_processor

# Odd sizes: non-square, smaller and larger than every target, a thin strip, one tiny image.
IMAGE_SIZES = [(37, 53), (300, 211), (20, 400), (9, 7)]


def _images() -> list[Any]:
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in IMAGE_SIZES]


def _settings(case: ProcessorCase, tmp_path: Path) -> tuple[Any, ImageSettings]:
    processor, cfg = save_processor(case, tmp_path)
    settings = ImageSettings.from_hf_config(cfg, model_config={"model_type": case.model_type, "num_channels": 3})
    # What the device reads is the manifest's copy: check the round trip too.
    assert ImageSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    return processor, settings


@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda c: c.name)
def test_image_pixels_match_hf_processor(case: ProcessorCase, tmp_path: Path) -> None:
    processor, settings = _settings(case, tmp_path)
    for img in _images():
        ref = processor(img, return_tensors="np")["pixel_values"]
        got = preprocess_images([img], settings)
        assert got.shape == ref.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5, err_msg=f"{case.name} on {img.size}")


def test_every_image_processor_rule_has_a_parity_case() -> None:
    covered = {type(c.make_processor()).__name__ for c in IMAGE_CASES}
    assert set(IMAGE_PROCESSORS.names()) <= covered


def test_image_inputs_agree_across_kinds(tmp_path: Path) -> None:
    """A file path, its bytes, a PIL image and a uint8 array give the same pixels."""
    from PIL import Image

    _, settings = _settings(IMAGE_CASES[2], tmp_path / "proc")  # DeiT: resize then crop
    arr = np.random.default_rng(1).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    ref = preprocess_images([arr], settings)
    for src in (path, str(path), path.read_bytes(), Image.open(path), arr.astype(np.float32)):
        np.testing.assert_array_equal(preprocess_images([src], settings), ref)
    with pytest.raises(InvalidInputError, match="pixel values 0..255"):
        preprocess_images([arr / 255.0], settings)


def test_aspect_keeping_resize_without_crop_refuses_mixed_batches(tmp_path: Path) -> None:
    from transformers import MobileNetV2ImageProcessor

    MobileNetV2ImageProcessor(size={"shortest_edge": 16}, do_center_crop=False).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "preprocessor_config.json").read_text())
    settings = ImageSettings.from_hf_config(cfg)
    imgs = [np.zeros((20, 30, 3), np.uint8), np.zeros((30, 20, 3), np.uint8)]
    assert preprocess_images(imgs[:1], settings).shape == (1, 3, 16, 24)  # int(16 * 30 / 20) = 24
    with pytest.raises(InvalidInputError, match="different sizes"):
        preprocess_images(imgs, settings)


def test_fast_and_legacy_class_names_use_the_same_rules() -> None:
    base = {"size": {"shortest_edge": 32}, "crop_pct": 0.875, "resample": 3}
    slow = ImageSettings.from_hf_config({**base, "image_processor_type": "ConvNextImageProcessor"})
    fast = ImageSettings.from_hf_config({**base, "image_processor_type": "ConvNextImageProcessorFast"})
    legacy = ImageSettings.from_hf_config({**base, "feature_extractor_type": "ConvNextFeatureExtractor"})
    by_type = ImageSettings.from_hf_config(base, model_config={"model_type": "resnet"})
    assert slow == fast == legacy == by_type
    assert (slow.resize_mode, slow.resize_shortest, slow.center_crop, slow.height) == ("shortest_edge", 36, True, 32)


def test_unknown_image_processor_is_refused() -> None:
    with pytest.raises(UnsupportedModelError) as err:
        ImageSettings.from_hf_config({"image_processor_type": "LevitImageProcessor", "size": {"shortest_edge": 224}})
    assert err.value.code == "unsupported_model"
    assert "LevitImageProcessor" in str(err.value) and "ConvNextImageProcessor" in (err.value.hint or "")
    with pytest.raises(UnsupportedModelError, match="model type 'levit'"):
        ImageSettings.from_hf_config({}, model_config={"model_type": "levit"})
    with pytest.raises(UnsupportedModelError, match="needs size with 'height' and 'width'"):
        ImageSettings.from_hf_config({"image_processor_type": "ViTImageProcessor", "size": {"shortest_edge": 32}})


def test_image_settings_from_older_manifests_and_unknown_keys() -> None:
    legacy = ImageSettings.from_dict(
        {"height": 8, "width": 8, "resize_shortest": None, "mean": [0.5] * 3, "std": [0.5] * 3, "channels": 3}
    )
    assert (legacy.resize_mode, legacy.resample, legacy.center_crop) == ("exact", 2, False)
    cropped = ImageSettings.from_dict({"height": 224, "width": 224, "resize_shortest": 256})
    assert (cropped.resize_mode, cropped.resize_shortest, cropped.resample, cropped.center_crop) == (
        "shortest_edge",
        256,
        3,
        True,
    )
    with pytest.raises(PackageError, match="unknown image preprocessing keys"):
        ImageSettings.from_dict({**legacy.to_dict(), "antialias": True})


# -------------------------------------------------------------------------------------------- audio


def _clips() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for i, n in enumerate((1234, 16000, 40000)):
        t = np.arange(n) / 16000
        out.append((0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t) + rng.normal(0, 0.05, n)).astype(np.float32))
    return out


def _audio_settings(case: ProcessorCase, tmp_path: Path) -> tuple[Any, AudioSettings]:
    extractor, cfg = save_processor(case, tmp_path)
    if case.name == "hubert":  # found by its model type, as for a config that names no extractor class
        cfg.pop("feature_extractor_type")
    settings = AudioSettings.from_hf_config(cfg, model_config={"model_type": case.model_type})
    assert AudioSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    return extractor, settings


@pytest.mark.parametrize("case", [c for c in AUDIO_CASES if c.model_type != "whisper"], ids=lambda c: c.name)
def test_waveform_features_match_hf_extractor(case: ProcessorCase, tmp_path: Path) -> None:
    extractor, settings = _audio_settings(case, tmp_path)
    clips = _clips()
    for clip in clips:
        ref = extractor(clip, sampling_rate=16000, return_tensors="np")["input_values"]
        np.testing.assert_allclose(audio_batch([clip], settings).values, ref, rtol=0, atol=1e-5)
    # A padded batch: with an attention mask transformers normalizes the valid samples only, without one
    # it normalizes over the padding too; the runtime reproduces whichever the extractor records.
    ref = extractor(clips, sampling_rate=16000, padding=True, return_tensors="np")
    got = audio_batch(clips, settings)
    np.testing.assert_allclose(got.values, ref["input_values"], rtol=0, atol=1e-5)
    if "attention_mask" in ref:
        np.testing.assert_array_equal(got.attention_mask, ref["attention_mask"])


@pytest.mark.parametrize("case", [c for c in AUDIO_CASES if c.model_type == "whisper"], ids=lambda c: c.name)
def test_whisper_log_mel_matches_hf_extractor(case: ProcessorCase, tmp_path: Path) -> None:
    extractor, settings = _audio_settings(case, tmp_path)
    assert (settings.features, settings.n_mels, settings.num_frames) == ("log_mel", extractor.feature_size, 3000)
    clips = _clips()
    got = audio_batch(clips, settings)
    assert got.values.shape == (3, extractor.feature_size, 3000) and got.values.dtype == np.float32
    ref = extractor(clips, sampling_rate=16000, return_tensors="np", return_attention_mask=True)
    np.testing.assert_allclose(got.values, ref["input_features"], rtol=0, atol=1e-4)  # torch.stft float32 path
    np.testing.assert_array_equal(got.attention_mask, ref["attention_mask"])
    for clip, row in zip(clips, got.values, strict=True):
        padded = np.pad(clip, (0, extractor.n_samples - clip.size))
        ref_np = extractor._np_extract_fbank_features(padded[None], "cpu")[0]  # the numpy path the runtime copies
        np.testing.assert_allclose(row, ref_np, rtol=0, atol=1e-5)
    long_clip = np.tile(clips[2], 13)  # 32.5 s: cut to 30 s as transformers truncates
    ref_long = extractor(long_clip, sampling_rate=16000, return_tensors="np")["input_features"]
    np.testing.assert_allclose(audio_batch([long_clip], settings).values, ref_long, rtol=0, atol=1e-4)


def test_mel_filter_bank_matches_transformers() -> None:
    from transformers.audio_utils import mel_filter_bank as hf_mel

    for n_mels in (80, 128):
        ref = hf_mel(
            num_frequency_bins=201,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=8000.0,
            sampling_rate=16000,
            norm="slaney",
            mel_scale="slaney",
        )
        np.testing.assert_allclose(mel_filter_bank(400, n_mels, 16000, 0.0, 8000.0), ref, rtol=1e-12, atol=1e-15)


def test_every_audio_extractor_rule_has_a_parity_case() -> None:
    assert set(AUDIO_PROCESSORS.names()) <= {type(c.make_processor()).__name__ for c in AUDIO_CASES}


def test_audio_extractor_refusals() -> None:
    with pytest.raises(UnsupportedModelError) as err:
        AudioSettings.from_hf_config({"feature_extractor_type": "ASTFeatureExtractor"})
    assert err.value.code == "unsupported_model" and "ASTFeatureExtractor" in str(err.value)
    whisper = {"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 80}
    with pytest.raises(ConfigError, match="num_mel_bins=128"):
        AudioSettings.from_hf_config(whisper, model_config={"num_mel_bins": 128})
    with pytest.raises(UnsupportedModelError, match="dither"):
        AudioSettings.from_hf_config({**whisper, "dither": 1e-4})
    old = AudioSettings.from_dict({"sampling_rate": 8000, "do_normalize": False})  # a manifest from before log-mel
    assert (old.features, old.sampling_rate, old.do_normalize) == ("waveform", 8000, False)
    with pytest.raises(PackageError, match="unknown audio preprocessing keys"):
        AudioSettings.from_dict({"sampling_rate": 16000, "window": "hann"})


# ------------------------------------------------------------------------- export + run vs transformers


def _write_wav(path: Path, clip: np.ndarray, rate: int = 16000) -> Path:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(clip, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def _export_fp32(case: ProcessorCase, tmp_path: Path, task: str) -> tuple[Any, Any, Path]:
    from exporters import export
    from tests.conftest import assert_valid_manifest

    processor, model = build_model_dir(case, tmp_path / "src")
    pkg = tmp_path / "pkg"
    export(tmp_path / "src", output=pkg, task=task, recipe="fp32", progress=False, validation_samples=4)
    assert_valid_manifest(pkg)
    return processor, model, pkg


def _assert_logits_close(got: np.ndarray, ref: np.ndarray) -> None:
    # fp32 ONNX vs PyTorch: 1e-3 of the largest logit covers kernel-order rounding on any CPU.
    scale = float(np.abs(ref).max())
    assert scale > 1e-3, "degenerate reference logits would make the comparison vacuous"
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-3 * scale)


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in IMAGE_CASES if c.build_model], ids=lambda c: c.name)
def test_image_export_runs_like_transformers(case: ProcessorCase, tmp_path: Path) -> None:
    import torch

    import runtimes
    from runtimes.cli_run import add_run_arguments, run_command

    processor, model, pkg = _export_fp32(case, tmp_path, "image-classification")
    loaded = runtimes.load(pkg, threads=1)
    settings = ImageSettings.from_dict(json.loads((pkg / "edgekit.json").read_text())["preprocessing"]["image"])
    assert settings.processor == type(processor).__name__
    images = _images()[:2]
    for img in images:
        with torch.no_grad():
            ref = model(pixel_values=torch.from_numpy(processor(img, return_tensors="np")["pixel_values"])).logits
        got = loaded.run({"pixel_values": preprocess_images([img], settings)})["logits"]
        _assert_logits_close(got, ref.numpy())
    # The command line reads the file and classifies it through the same preprocessing.
    path = tmp_path / "img.png"
    images[0].save(path)
    parser = __import__("argparse").ArgumentParser()
    add_run_arguments(parser)
    parser.add_argument("--json", action="store_true")
    report = run_command(parser.parse_args([str(pkg), "--image", str(path), "--threads", "1"]))
    top = report["result"]["predictions"][0]["top"][0]
    assert top["index"] == int(np.argmax(loaded.run({"pixel_values": preprocess_images([path], settings)})["logits"]))


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in AUDIO_CASES if c.build_model], ids=lambda c: c.name)
def test_audio_export_runs_like_transformers(case: ProcessorCase, tmp_path: Path) -> None:
    import torch

    import runtimes
    from runtimes.cli_run import add_run_arguments, run_command

    extractor, model, pkg = _export_fp32(case, tmp_path, "audio-classification")
    manifest = json.loads((pkg / "edgekit.json").read_text())
    feature_name = extractor.model_input_names[0]  # input_values, or whisper's input_features
    spec = next(t for t in manifest["inputs"] if t["name"] == feature_name)
    loaded = runtimes.load(pkg, threads=1)
    clip = _clips()[1]
    hf = extractor(clip, sampling_rate=16000, return_tensors="np")[feature_name]
    assert list(hf.shape[1:]) == spec["shape"][1:] or isinstance(spec["shape"][-1], str)
    with torch.no_grad():
        ref = model(torch.from_numpy(hf)).logits.numpy()
    wav = _write_wav(tmp_path / "clip.wav", clip)
    settings = AudioSettings.from_dict(manifest["preprocessing"]["audio"])
    got = loaded.run(audio_batch([wav], settings).feeds([feature_name]))["logits"]
    _assert_logits_close(got, ref)  # 16-bit WAV quantization is far below the 1e-3 bound
    ranked = loaded.classify(clip, top_k=3)
    probs = np.exp(ref[0] - ref[0].max()) / np.exp(ref[0] - ref[0].max()).sum()
    assert ranked[0]["index"] == int(np.argmax(ref[0]))
    assert abs(ranked[0]["score"] - float(probs.max())) < 1e-3
    parser = __import__("argparse").ArgumentParser()
    add_run_arguments(parser)
    parser.add_argument("--json", action="store_true")
    report = run_command(parser.parse_args([str(pkg), "--audio", str(wav), "--threads", "1"]))
    assert report["result"]["predictions"][0]["top"][0]["index"] == int(np.argmax(got[0]))


def test_wav_folder_is_calibration_data_through_the_package_features(tmp_path: Path) -> None:
    from edgekit.errors import CalibrationError
    from edgekit.manifest import TensorSpec
    from exporters.calibration import load_dataset
    from runtimes.samples import SampleContext

    folder = tmp_path / "clips"
    folder.mkdir()
    for i, clip in enumerate(_clips()):
        _write_wav(folder / f"{i}.wav", clip)
    whisper = AudioSettings(features="log_mel", do_normalize=False, processor="WhisperFeatureExtractor")
    ctx = SampleContext(
        inputs=[TensorSpec(name="input_features", dtype="float32", shape=["batch_size", 80, 3000])],
        preprocessing={"audio": whisper.to_dict()},
        asset_dir=None,
        generation=None,
    )
    data = load_dataset(folder, ctx)
    assert len(data.samples) == 3 and all(s["input_features"].shape == (1, 80, 3000) for s in data.samples)
    np.testing.assert_allclose(
        data.samples[1]["input_features"], audio_batch([folder / "1.wav"], whisper).values, rtol=0, atol=0
    )
    image_ctx = SampleContext(
        inputs=[TensorSpec(name="pixel_values", dtype="float32", shape=["batch", 3, 8, 8])],
        preprocessing={"image": ImageSettings(height=8, width=8).to_dict()},
        asset_dir=None,
        generation=None,
    )
    with pytest.raises(CalibrationError, match="takes no audio"):
        load_dataset(folder, image_ctx)


def test_generated_samples_go_through_the_package_preprocessing() -> None:
    from edgekit.manifest import TensorSpec
    from runtimes.samples import SampleContext, make_samples

    def ctx(name: str, shape: list[Any], pre: dict[str, Any]) -> SampleContext:
        spec = TensorSpec(name=name, dtype="float32", shape=shape)
        return SampleContext(inputs=[spec], preprocessing=pre, asset_dir=None, generation=None)

    convnext = ImageSettings.from_hf_config(
        {"image_processor_type": "ConvNextImageProcessor", "size": {"shortest_edge": 32}, "crop_pct": 0.875}
    )
    keep_aspect = ImageSettings.from_hf_config(
        {"image_processor_type": "MobileNetV2ImageProcessor", "size": {"shortest_edge": 24}, "do_center_crop": False}
    )
    for settings in (convnext, keep_aspect):
        c = ctx("pixel_values", ["batch", 3, settings.height, settings.width], {"image": settings.to_dict()})
        samples = make_samples(c, kind="classification", modality="image", n=5)
        assert {s["pixel_values"].shape for s in samples} == {(1, 3, settings.height, settings.width)}
        assert len({float(s["pixel_values"].std()) for s in samples}) == 5  # distinct images, not one repeated
    whisper = AudioSettings(features="log_mel", n_mels=128, do_normalize=False)
    c = ctx("input_features", ["batch_size", 128, 3000], {"audio": whisper.to_dict()})
    feats = make_samples(c, kind="classification", modality="audio", n=2)
    assert [s["input_features"].shape for s in feats] == [(1, 128, 3000)] * 2
    wav2vec2 = AudioSettings()
    mask_spec = TensorSpec(name="attention_mask", dtype="int64", shape=["batch", "samples"])
    c = SampleContext(
        inputs=[TensorSpec(name="input_values", dtype="float32", shape=["batch", "samples"]), mask_spec],
        preprocessing={"audio": wav2vec2.to_dict()},
        asset_dir=None,
        generation=None,
    )
    (sample,) = make_samples(c, kind="classification", modality="audio", n=1)
    assert sample["input_values"].shape == (1, 16000) and sample["attention_mask"].dtype == np.int64
    assert abs(float(sample["input_values"].mean())) < 1e-5 and abs(float(sample["input_values"].std()) - 1) < 1e-3
