"""Audio preprocessing that reproduces the Hugging Face feature extractor recorded at export, numpy only.

Two feature kinds, one :data:`AUDIO_FEATURES` entry each:

- ``waveform`` (Wav2Vec2FeatureExtractor: wav2vec2, hubert, wavlm, ...): the raw clip, zero-mean / unit-variance
  per clip when ``do_normalize``, padded to the longest clip of the batch. Like transformers, a processor without
  an attention mask normalizes a padded clip over its padding too.
- ``log_mel`` (WhisperFeatureExtractor): the clip padded or cut to ``chunk_samples`` (30 s), a centred STFT
  (periodic Hann window, ``n_fft``, ``hop_length``, reflect padding), power spectrum through a Slaney mel filter
  bank, ``log10`` clamped at 1e-10, the last frame dropped, floored at ``max - 8`` and mapped by ``(x + 4) / 4``.
  The filter bank is computed here, with transformers' ``mel_filter_bank(norm="slaney", mel_scale="slaney")``
  formula, rather than shipped as an asset: it is a pure function of four recorded numbers, costs well under a
  millisecond, and so needs no extra package file to hash, list and keep in step with the settings.

Which extractor class maps to which kind is the :data:`AUDIO_PROCESSORS` registry; an unknown class is refused.
"""

from __future__ import annotations

import functools
import wave
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ConfigError, InvalidInputError, PackageError, UnsupportedModelError
from edgekit.registry import Registry


@dataclass(frozen=True, kw_only=True)
class AudioSettings:
    """The feature extractor's steps as data (the log-mel fields matter only for ``features="log_mel"``)."""

    features: str = "waveform"  # an AUDIO_FEATURES name
    sampling_rate: int = 16000
    do_normalize: bool = True
    # transformers normalizes over the valid samples only when the extractor returns an attention mask.
    normalize_with_mask: bool = True
    padding_value: float = 0.0
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 80
    chunk_samples: int = 480000  # log-mel clips are padded / cut to this many samples (30 s at 16 kHz)
    mel_min_hz: float = 0.0
    mel_max_hz: float = 8000.0
    processor: str | None = None

    def __post_init__(self) -> None:
        if self.features not in AUDIO_FEATURES:
            raise PackageError(f"unknown audio features {self.features!r}; known: {', '.join(AUDIO_FEATURES.names())}")
        if min(self.sampling_rate, self.n_fft, self.hop_length, self.n_mels, self.chunk_samples) < 1:
            raise PackageError("audio settings need positive sampling_rate, n_fft, hop_length, n_mels, chunk_samples")

    @property
    def num_frames(self) -> int:
        """log-mel frames per clip (transformers' ``nb_max_frames``)."""
        return self.chunk_samples // self.hop_length

    @classmethod
    def from_hf_config(cls, cfg: Mapping[str, Any], *, model_config: Mapping[str, Any] | None = None) -> AudioSettings:
        model_config = model_config or {}
        rule = audio_processor_rule(cfg, model_config)
        return rule.read({**rule.defaults, **{k: v for k, v in cfg.items() if v is not None}}, model_config)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AudioSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PackageError(
                f"unknown audio preprocessing keys {unknown}",
                hint="the package was written by a newer edgekit: upgrade, or export it again",
            )
        return cls(**dict(d))  # manifests from before log-mel hold only sampling_rate / do_normalize: defaults fit


@dataclass(frozen=True)
class AudioBatch:
    values: np.ndarray  # float32: [batch, samples] waveforms or [batch, n_mels, frames] log-mel features
    attention_mask: np.ndarray  # int64 [batch, samples] or [batch, frames]: 1 where the clip is, 0 on padding

    def feeds(self, input_names: list[str]) -> dict[str, np.ndarray]:
        """The graph's features input (``input_values`` / ``input_features``, else its first) and its mask."""
        name = next((n for n in input_names if n in ("input_values", "input_features")), input_names[0])
        feeds = {name: self.values}
        if "attention_mask" in input_names and name != "attention_mask":
            feeds["attention_mask"] = self.attention_mask
        return feeds


# --------------------------------------------------------------------------------------- extractors


@dataclass(frozen=True, kw_only=True)
class AudioProcessorRule:
    """One transformers feature extractor class: its defaults and how its config becomes settings."""

    name: str
    defaults: Mapping[str, Any]
    read: Callable[[Mapping[str, Any], Mapping[str, Any]], AudioSettings]
    model_types: tuple[str, ...] = ()


AUDIO_PROCESSORS: Registry[AudioProcessorRule] = Registry("audio feature extractor")


def _read_wav2vec2(cfg: Mapping[str, Any], model_config: Mapping[str, Any]) -> AudioSettings:
    if int(cfg.get("feature_size", 1)) != 1:
        raise UnsupportedModelError(
            f"Wav2Vec2FeatureExtractor with feature_size={cfg.get('feature_size')}: the runtime feeds mono waveforms"
        )
    return AudioSettings(
        features="waveform",
        sampling_rate=int(cfg["sampling_rate"]),
        do_normalize=bool(cfg["do_normalize"]),
        normalize_with_mask=bool(cfg["return_attention_mask"]),
        padding_value=float(cfg["padding_value"]),
        processor="Wav2Vec2FeatureExtractor",
    )


def _read_whisper(cfg: Mapping[str, Any], model_config: Mapping[str, Any]) -> AudioSettings:
    n_mels = int(cfg["feature_size"])
    model_mels = model_config.get("num_mel_bins")
    if model_mels is not None and int(model_mels) != n_mels:
        raise ConfigError(
            f"the feature extractor makes {n_mels} mel bins but the model's config has num_mel_bins={model_mels}",
            hint="save the feature extractor that belongs to this checkpoint (feature_size = num_mel_bins)",
        )
    if float(cfg.get("dither") or 0.0) != 0.0:
        raise UnsupportedModelError(
            "WhisperFeatureExtractor with dither != 0 adds random noise: its features cannot be reproduced",
            hint="set dither to 0.0 in preprocessor_config.json",
        )
    sr = int(cfg["sampling_rate"])
    return AudioSettings(
        features="log_mel",
        sampling_rate=sr,
        # WhisperFeatureExtractor.__call__ normalizes only when asked (do_normalize defaults to off).
        do_normalize=bool(cfg.get("do_normalize", False)),
        normalize_with_mask=True,
        padding_value=float(cfg["padding_value"]),
        n_fft=int(cfg["n_fft"]),
        hop_length=int(cfg["hop_length"]),
        n_mels=n_mels,
        chunk_samples=int(cfg["chunk_length"]) * sr,
        processor="WhisperFeatureExtractor",
    )


AUDIO_PROCESSORS.add(
    "Wav2Vec2FeatureExtractor",
    AudioProcessorRule(
        name="Wav2Vec2FeatureExtractor",
        defaults={
            "feature_size": 1,
            "sampling_rate": 16000,
            "padding_value": 0.0,
            "return_attention_mask": False,
            "do_normalize": True,
        },
        read=_read_wav2vec2,
        model_types=("wav2vec2", "hubert", "wavlm", "data2vec-audio", "sew", "sew-d", "unispeech", "unispeech-sat"),
    ),
)
AUDIO_PROCESSORS.add(
    "WhisperFeatureExtractor",
    AudioProcessorRule(
        name="WhisperFeatureExtractor",
        defaults={
            "feature_size": 80,
            "sampling_rate": 16000,
            "hop_length": 160,
            "chunk_length": 30,
            "n_fft": 400,
            "padding_value": 0.0,
            "dither": 0.0,
        },
        read=_read_whisper,
        model_types=("whisper",),
    ),
)


def audio_processor_rule(cfg: Mapping[str, Any], model_config: Mapping[str, Any]) -> AudioProcessorRule:
    # Not ``processor_class``: that names the wrapper (WhisperProcessor), whose feature extractor is this class.
    declared = cfg.get("feature_extractor_type")
    if declared:
        if declared in AUDIO_PROCESSORS:
            return AUDIO_PROCESSORS.get(declared)
        raise UnsupportedModelError(
            f"the audio feature extractor {declared} has no preprocessing rules in the edgekit runtime; its features"
            " would be guessed",
            hint=f"supported extractors: {', '.join(AUDIO_PROCESSORS.names())}",
        )
    model_type = model_config.get("model_type")
    for rule in AUDIO_PROCESSORS:
        if model_type in rule.model_types:
            return rule
    raise UnsupportedModelError(
        f"no audio feature extractor is recorded for the model type {model_type!r}",
        hint="save the model's feature extractor next to it with feature_extractor.save_pretrained(model_dir)",
    )


# ------------------------------------------------------------------------------------------ features


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM WAV file as mono float32 in [-1, 1] with its sampling rate (standard library only)."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            raw = w.readframes(w.getnframes())
    except FileNotFoundError:
        raise InvalidInputError(f"audio file not found: {path}") from None
    except (wave.Error, EOFError) as exc:
        raise InvalidInputError(f"{path} is not a PCM WAV file ({exc})", hint="convert it to 16-bit PCM WAV") from None
    dtypes = {1: np.uint8, 2: np.int16, 4: np.int32}
    if width not in dtypes:
        raise InvalidInputError(f"{path}: {8 * width}-bit WAV is not supported", hint="use 8, 16 or 32-bit PCM")
    x = np.frombuffer(raw, dtype=dtypes[width]).astype(np.float32)
    x = (x - 128) / 128 if width == 1 else x / float(2 ** (8 * width - 1))
    return x.reshape(-1, channels).mean(axis=1), rate


def _clip(clip: Any, rate: int | None, settings: AudioSettings) -> np.ndarray:
    if isinstance(clip, (str, Path)):
        x, rate = read_wav(clip)
    else:
        x = np.asarray(clip, dtype=np.float32).reshape(-1)
    if x.size == 0:
        raise InvalidInputError("an audio clip is empty")
    if not np.all(np.isfinite(x)):
        raise InvalidInputError("an audio clip holds NaN or infinite samples")
    rate = rate or settings.sampling_rate
    if rate != settings.sampling_rate:
        # Linear resampling: a convenience transformers does not offer (it refuses another rate).
        n = max(1, round(x.size * settings.sampling_rate / rate))
        x = np.interp(np.linspace(0, x.size - 1, n), np.arange(x.size), x).astype(np.float32)
    return x


def _normalize(x: np.ndarray) -> np.ndarray:
    """transformers' zero_mean_unit_var_norm on one clip (float32 in, the same float32 arithmetic)."""
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)


def _pad_batch(waves: list[np.ndarray], length: int, s: AudioSettings) -> tuple[np.ndarray, np.ndarray]:
    values = np.full((len(waves), length), s.padding_value, np.float32)
    mask = np.zeros((len(waves), length), np.int64)
    for i, w in enumerate(waves):
        n = min(w.size, length)
        values[i, :n] = w[:n]
        mask[i, :n] = 1
    return values, mask


def _waveform_features(waves: list[np.ndarray], s: AudioSettings) -> AudioBatch:
    values, mask = _pad_batch(waves, max(w.size for w in waves), s)
    if s.do_normalize:
        for i in range(len(waves)):
            n = int(mask[i].sum()) if s.normalize_with_mask else values.shape[1]
            values[i, :n] = _normalize(values[i, :n])  # ``- mean`` of a float32 row stays float32
            values[i, n:] = s.padding_value
    return AudioBatch(values.astype(np.float32), mask)


@functools.lru_cache(maxsize=8)
def mel_filter_bank(n_fft: int, n_mels: int, sampling_rate: int, min_hz: float, max_hz: float) -> np.ndarray:
    """Slaney-scale, Slaney-normalized triangular filters, ``[1 + n_fft // 2, n_mels]`` float64 (transformers')."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, np.float64)
        lin = 3.0 * f / 200.0
        return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) * (27.0 / np.log(6.4)), lin)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        lin = 200.0 * m / 3.0
        return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)), lin)

    mel_points = np.linspace(hz_to_mel(np.float64(min_hz)), hz_to_mel(np.float64(max_hz)), n_mels + 2)
    filter_hz = mel_to_hz(mel_points)
    fft_hz = np.linspace(0, sampling_rate // 2, 1 + n_fft // 2)
    diff = np.diff(filter_hz)
    slopes = filter_hz[None, :] - fft_hz[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (filter_hz[2 : n_mels + 2] - filter_hz[:n_mels]))[None, :]


def log_mel_spectrogram(wave_1d: np.ndarray, s: AudioSettings) -> np.ndarray:
    """One padded clip -> float32 ``[n_mels, chunk_samples // hop_length]`` (WhisperFeatureExtractor's numpy path)."""
    half = s.n_fft // 2
    x = np.pad(wave_1d.astype(np.float32), (half, half), mode="reflect").astype(np.float64)
    n_frames = 1 + (x.size - s.n_fft) // s.hop_length
    frames = np.lib.stride_tricks.sliding_window_view(x, s.n_fft)[:: s.hop_length][:n_frames]
    window = np.hanning(s.n_fft + 1)[:-1]  # periodic Hann
    # transformers stores the STFT as complex64, then takes |.|^2 in float64: keep both roundings.
    spec = np.fft.rfft(frames * window, axis=-1).astype(np.complex64)
    power = np.abs(spec, dtype=np.float64) ** 2
    filters = mel_filter_bank(s.n_fft, s.n_mels, s.sampling_rate, s.mel_min_hz, s.mel_max_hz)
    mel = np.maximum(1e-10, filters.T @ power.T)
    log_spec = np.log10(mel).astype(np.float32)[:, :-1]
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def _log_mel_features(waves: list[np.ndarray], s: AudioSettings) -> AudioBatch:
    values, mask = _pad_batch(waves, s.chunk_samples, s)
    if s.do_normalize:
        for i in range(len(waves)):
            n = int(mask[i].sum())
            values[i, :n] = _normalize(values[i, :n])
    feats = np.stack([log_mel_spectrogram(v, s) for v in values])
    frame_mask = mask[:, :: s.hop_length]
    if mask.shape[1] % s.hop_length:
        frame_mask = frame_mask[:, :-1]
    return AudioBatch(feats, frame_mask)


AUDIO_FEATURES: Registry[Callable[[list[np.ndarray], AudioSettings], AudioBatch]] = Registry("audio features")
AUDIO_FEATURES.add("waveform", _waveform_features)
AUDIO_FEATURES.add("log_mel", _log_mel_features)


def audio_batch(clips: list[Any], settings: AudioSettings, *, rates: list[int] | None = None) -> AudioBatch:
    """WAV paths or float arrays -> the model's features and their attention mask."""
    if not clips:
        raise InvalidInputError("no audio clips were given", hint="pass at least one clip")
    if rates is not None and len(rates) != len(clips):
        raise InvalidInputError(f"{len(rates)} sampling rates for {len(clips)} clips", param="sampling_rate")
    waves = [_clip(c, rates[i] if rates else None, settings) for i, c in enumerate(clips)]
    return AUDIO_FEATURES.get(settings.features)(waves, settings)


def preprocess_audio(clips: list[Any], settings: AudioSettings, *, rates: list[int] | None = None) -> np.ndarray:
    """The feature values alone (see :func:`audio_batch`)."""
    return audio_batch(clips, settings, rates=rates).values
