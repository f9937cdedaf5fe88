"""Text generation for causal LMs: a typed config, a prefill + decode loop, and streaming text.

The loop is a generator of token ids (:meth:`GeneratePipeline.tokens`); text, stop sequences and the result
are layered on top by :meth:`GeneratePipeline.stream`. With a KV cache (``manifest.generation.with_kv_cache``)
the cache lives as ONNX Runtime values inside one IOBinding: each step binds the previous step's ``present``
outputs as the next ``past`` inputs, so the cache never travels through numpy; only the last logits row
does. Without a KV cache the whole sequence is run again each step.

Context window: a prompt of ``max_context_tokens`` or more tokens is refused with an :class:`InvalidInputError`
unless ``truncate="left"``, which keeps the prompt's last tokens (and its BOS token) to leave room for
``max_tokens``. When prompt + ``max_tokens`` exceeds the window, generation stops at the window with
``finish_reason="length"``.

Usage counts: ``prompt_tokens`` after truncation; ``completion_tokens`` every token the model produced,
including an EOS token that ended the generation.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np

from edgekit.errors import ConfigError, EncodingError, InvalidInputError, PackageError, RuntimeBackendError
from edgekit.registry import unknown_message
from runtimes.decoder_feeds import attention_feeds
from runtimes.pipelines import PipelineContext
from runtimes.pipelines.detokenize import StopMatcher, StreamingDetokenizer
from runtimes.pipelines.sampling import Sampler

_TRUNCATE = (None, "left")
# Prompt tokens given to the detokenizer as context, so the first generated token decodes as it would
# inside the sequence (SentencePiece decoders drop the leading space of a sequence's first token).
_DETOK_CONTEXT = 4


class CancelEvent(Protocol):
    """What ``cancel=`` takes: a ``threading.Event`` (or anything with ``is_set``), checked between tokens."""

    def is_set(self) -> bool: ...


@dataclass(frozen=True, kw_only=True)
class GenerationConfig:
    """How to generate. The Python API, the CLI and the HTTP server all build it through ``from_dict``.

    ``temperature=0`` (the default) is greedy decoding; ``top_k=0`` and ``top_p=1`` switch those filters off.
    """

    max_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # keep going past EOS, e.g. to measure a fixed number of tokens
    truncate: str | None = None  # None: refuse prompts too long for the context; "left": drop their start

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif isinstance(self.stop, list):
            object.__setattr__(self, "stop", tuple(self.stop))
        _int(self.max_tokens, "max_tokens", low=1)
        _float(self.temperature, "temperature", low=0.0)
        _int(self.top_k, "top_k", low=0)
        _float(self.top_p, "top_p", low=0.0, low_open=True, high=1.0)
        _float(self.repetition_penalty, "repetition_penalty", low=0.0, low_open=True)
        if self.seed is not None:
            _int(self.seed, "seed", low=0)
        if not isinstance(self.stop, tuple) or not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(f"stop must be a list of non-empty strings (got {self.stop!r})", param="stop")
        if not isinstance(self.ignore_eos, bool):
            raise ConfigError(f"ignore_eos must be true or false (got {self.ignore_eos!r})", param="ignore_eos")
        if self.truncate not in _TRUNCATE:
            raise ConfigError(
                f"truncate must be null or 'left' (got {self.truncate!r})",
                hint="truncate='left' drops the start of a prompt that does not fit the context window",
                param="truncate",
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GenerationConfig:
        if not isinstance(d, Mapping):
            raise ConfigError(f"a generation config must be an object (got {type(d).__name__})")
        known = _CONFIG_FIELDS
        for key in d:
            if key not in known:
                raise ConfigError(unknown_message("generation option", str(key), list(known)), param=str(key))
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["stop"] = list(self.stop)
        return d

    def replace(self, **changes: Any) -> GenerationConfig:
        return GenerationConfig.from_dict({**self.to_dict(), **changes})


_CONFIG_FIELDS = tuple(f.name for f in fields(GenerationConfig))  # from_dict runs on every server request


def _utf8_prompt(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EncodingError(
            f"the prompt is not valid UTF-8: byte {data[exc.start]:#04x} at offset {exc.start}",
            hint="pass the prompt as UTF-8 text",
            param="prompt",
        ) from None


def _check_unicode(text: str) -> None:
    """Lone surrogates (from undecodable command-line bytes or a JSON "\\ud800") cannot be tokenized."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodingError(
            f"the prompt is not valid Unicode: a lone surrogate {text[exc.start]!a} at offset {exc.start}"
            " (invalid UTF-8 bytes on the command line, or an unpaired \\ud800-\\udfff escape)",
            hint="pass the prompt as valid UTF-8 text",
            param="prompt",
        ) from None


def _int(value: Any, name: str, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low} (got {value!r})", param=name)


def _float(value: Any, name: str, *, low: float, low_open: bool = False, high: float | None = None) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (high is None or value <= high)
    if not ok:
        lo = "(" if low_open else "["
        hi = f"{high}]" if high is not None else "inf)"
        raise ConfigError(f"{name} must be a number in {lo}{low}, {hi} (got {value!r})", param=name)


@dataclass(frozen=True, kw_only=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, kw_only=True)
class GenerationResult:
    text: str
    # "stop" (EOS or a stop sequence) | "length" (max_tokens or the context window) | "cancelled" (the caller's
    # cancel event was set: generation stopped between two tokens)
    finish_reason: str
    usage: Usage
    token_ids: tuple[int, ...] = ()
    prompt_truncated: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": self.usage.to_dict(),
            "token_ids": list(self.token_ids),
            "prompt_truncated": self.prompt_truncated,
            "timings": dict(self.timings),
        }


class GenerationStream:
    """Iterates text deltas; ``result`` (text, finish_reason, usage) is there once the stream is done."""

    def __init__(self, deltas: Iterator[str], box: dict[str, GenerationResult]) -> None:
        self._deltas = deltas
        self._box = box

    def __iter__(self) -> GenerationStream:
        return self

    def __next__(self) -> str:
        return next(self._deltas)

    def close(self) -> None:
        self._deltas.close()  # type: ignore[attr-defined]

    @property
    def result(self) -> GenerationResult:
        if "result" not in self._box:
            for _ in self._deltas:  # finish the generation the caller stopped reading
                pass
        return self._box["result"]


class _Binding:
    """The IOBinding calls of the decode loop.

    ONNX Runtime's Python wrapper checks each call (WebGPU capture pinning, session compatibility) and wraps
    each output in a new Python object; with a dozen calls per token on a tiny model that is a few percent
    of the step. When this onnxruntime exposes its pybind objects, the loop calls them directly; otherwise
    (``FAST = False`` or another onnxruntime) it uses the public API. Both bind the same ORT values.
    """

    FAST = True

    def __init__(self, session: Any) -> None:
        self._session = session
        self._io = session.io_binding()
        raw_io, raw_sess = getattr(self._io, "_iobinding", None), getattr(session, "_sess", None)
        device = raw_value = None
        with contextlib.suppress(Exception):
            import onnxruntime as ort
            from onnxruntime.capi import _pybind_state

            device = ort.OrtDevice.make("cpu", 0)._get_c_device()
            raw_value = _pybind_state.OrtValue.ortvalue_from_numpy
        fast = raw_io is not None and raw_sess is not None and device is not None and raw_value is not None
        self.fast = bool(self.FAST and fast)
        if self.fast:
            self._raw_io, self._raw_sess, self._device, self._raw_value = raw_io, raw_sess, device, raw_value
            self._keep: dict[str, np.ndarray] = {}  # ORT reads bound numpy buffers in place: keep them alive
            self._arrays: list[np.ndarray] = []  # the memory of the values made by value()

    def bind_array(self, name: str, array: np.ndarray) -> None:
        if self.fast:
            self._keep[name] = array
            self._raw_io.bind_input(name, array)
        else:
            self._io.bind_cpu_input(name, array)

    def bind_value(self, name: str, value: Any) -> None:
        if self.fast:
            self._raw_io.bind_ortvalue_input(name, value)
        else:
            self._io.bind_ortvalue_input(name, value)

    def bind_output(self, name: str) -> None:
        if self.fast:
            self._raw_io.bind_output(name, self._device)
        else:
            self._io.bind_output(name, "cpu")

    def bind_output_value(self, name: str, value: Any) -> None:
        """Write an output into an existing ORT value (in place: a shared KV buffer)."""
        if self.fast:
            self._raw_io.bind_ortvalue_output(name, value)
        else:
            self._io.bind_ortvalue_output(name, value)

    def native(self, value: Any) -> Any:
        """An ``onnxruntime.OrtValue`` in the form this binding's calls take (the pybind object on the fast path)."""
        return value._ortvalue if self.fast else value

    def value(self, array: np.ndarray) -> Any:
        """An ORT value over ``array``'s memory (no copy), in the form :meth:`bind_value` takes. The fast path
        builds the pybind object directly (a fifth of the public factory's cost, which makes a device object
        per call) and keeps the array alive here, as the public OrtValue does."""
        if self.fast:
            self._arrays.append(array)
            return self._raw_value(array, self._device)
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(array)

    def execute(self) -> None:
        """Run without wrapping the outputs (their buffers were bound by the caller)."""
        try:
            if self.fast:
                self._raw_sess.run_with_iobinding(self._raw_io, None)
            else:
                self._session.run_with_iobinding(self._io)
        except Exception as exc:
            raise _backend_error(exc) from exc

    def executor(self) -> Callable[[], None]:
        """:meth:`execute` as one closure with its lookups done once: the decode loop calls it every token."""
        if not self.fast:
            return self.execute
        run, raw_io = self._raw_sess.run_with_iobinding, self._raw_io

        def execute() -> None:
            try:
                run(raw_io, None)
            except Exception as exc:
                raise _backend_error(exc) from exc

        return execute

    def run(self) -> Any:
        try:
            if self.fast:
                self._raw_sess.run_with_iobinding(self._raw_io, None)
                return self._raw_io.get_outputs()
            self._session.run_with_iobinding(self._io)
            return self._io.get_outputs()
        except Exception as exc:
            raise _backend_error(exc) from exc


def _backend_error(exc: Exception) -> RuntimeBackendError:
    return RuntimeBackendError(f"ONNX Runtime failed during generation: {str(exc).strip().splitlines()[0]}")


class GeneratePipeline:
    def __init__(self, ctx: PipelineContext) -> None:
        from runtimes.preprocess import TextEncoder

        manifest = ctx.manifest
        if manifest is None or manifest.generation is None:
            raise PackageError(
                "this text-generation package has no 'generation' section in its manifest",
                hint="re-export it with `edgekit export --task text-generation`",
            )
        self.spec = spec = manifest.generation
        self.session = ctx.session
        pre = ctx.preprocessing
        if ctx.root is None:
            raise PackageError("text generation needs a package directory with its tokenizer")
        # No truncation in the tokenizer: the context window is checked here, with a clear error.
        self.encoder = TextEncoder(ctx.root / pre.get("tokenizer_file", "tokenizer.json"), max_length=None)
        self._decode_fn = self.encoder.tokenizer.decode
        self.max_context = int(spec.max_context_tokens)
        self.vocab_size = int(spec.vocab_size or 0)
        inputs = self.session.inputs
        self.ids_name = spec.input_ids_name
        self.mask_name = spec.attention_mask_name if spec.attention_mask_name in inputs else None
        self.pos_name = spec.position_ids_name if spec.position_ids_name in inputs else None
        # GroupQueryAttention's lengths as inputs (schema 1.4): both or neither, checked below
        self.seqlens_name = spec.seqlens_k_name
        self.total_name = spec.total_sequence_length_name
        self.logits_name = spec.logits_name
        self.eos = frozenset(int(e) for e in spec.eos_token_ids)
        self.past_names: list[str] = []
        self.present_names: list[str] = []
        if spec.with_kv_cache:
            templates = (
                spec.past_key_template,
                spec.past_value_template,
                spec.present_key_template,
                spec.present_value_template,
            )
            if not all(templates):
                raise PackageError("the manifest says with_kv_cache but names no KV-cache templates")
            for layer in range(spec.num_layers):
                self.past_names += [
                    spec.past_key_template.format(layer=layer),
                    spec.past_value_template.format(layer=layer),
                ]  # type: ignore[union-attr]
                self.present_names += [
                    spec.present_key_template.format(layer=layer),  # type: ignore[union-attr]
                    spec.present_value_template.format(layer=layer),  # type: ignore[union-attr]
                ]
        needed_in = [self.ids_name, *self.past_names, *(n for n in (self.seqlens_name, self.total_name) if n)]
        if bool(self.seqlens_name) != bool(self.total_name):
            raise PackageError(
                "the manifest names one of seqlens_k_name / total_sequence_length_name without the other",
                hint="the manifest was edited or is corrupt: export the package again",
            )
        missing = [n for n in needed_in if n not in inputs] + [
            n for n in [self.logits_name, *self.present_names] if n not in self.session.output_names
        ]
        if missing:
            raise PackageError(
                f"the manifest names {missing[0]!r}, which the model graph does not have. {self.session.expected()}",
                hint="the manifest and model.onnx disagree: export the package again",
            )
        self.kv_dtype = np.dtype(spec.kv_dtype)
        self.kv_shape_tail = (int(spec.num_kv_heads), 0, int(spec.head_size))

    # ------------------------------------------------------------------------------------ prompt

    def encode_prompt(self, prompt: str | Sequence[int], config: GenerationConfig) -> tuple[list[int], bool]:
        if isinstance(prompt, (bytes, bytearray)):
            prompt = _utf8_prompt(bytes(prompt))
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidInputError("the prompt is empty", hint="pass some text to continue", param="prompt")
            _check_unicode(prompt)
            ids = self.encoder.encode(prompt, add_special_tokens=True)
        elif isinstance(prompt, (list, tuple, np.ndarray)):
            if not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in prompt):
                raise InvalidInputError(
                    "prompt token ids must be integers", hint="pass a string, or a list of ints", param="prompt"
                )
            ids = [int(t) for t in prompt]
            if self.vocab_size and any(t < 0 or t >= self.vocab_size for t in ids):
                raise InvalidInputError(f"prompt token ids must be in [0, {self.vocab_size})", param="prompt")
        else:
            raise InvalidInputError(
                f"the prompt must be a string or a list of token ids, got {type(prompt).__name__}", param="prompt"
            )
        if not ids:
            raise InvalidInputError("the prompt encodes to no tokens", param="prompt")
        if len(ids) < self.max_context:
            return ids, False
        if config.truncate != "left":
            raise InvalidInputError(
                f"the prompt has {len(ids)} tokens; this model's context window is {self.max_context} tokens,"
                " and generation needs at least one free position",
                hint="shorten the prompt, or pass truncate='left' to keep only its end",
                param="prompt",
            )
        keep = max(1, self.max_context - min(config.max_tokens, self.max_context - 1))
        bos = self.spec.bos_token_id
        if bos is not None and ids[0] == bos and keep > 1:
            return [ids[0], *ids[len(ids) - keep + 1 :]], True
        return ids[len(ids) - keep :], True

    def decode(self, ids: list[int]) -> str:
        return self._decode_fn(ids, skip_special_tokens=True)

    # ------------------------------------------------------------------------------------ token loop

    def tokens(self, prompt_ids: list[int], sampler: Sampler, max_new: int) -> Iterator[int]:
        """Yield up to ``max_new`` sampled token ids; the caller stops early by closing the generator."""
        if self.past_names:
            if self.spec.shared_kv_buffer and self.SHARED_KV:
                return self._tokens_shared(prompt_ids, sampler, max_new)  # no extra generator frame per token
            return self._tokens_kv(prompt_ids, sampler, max_new)
        return self._tokens_full(prompt_ids, sampler, max_new)

    SHARED_KV = True  # class switch, so a benchmark or a test can compare both KV loops on one package
    # Class switch: in the in-place loop, decode steps read one full-length mask bound once (see
    # :meth:`_tokens_shared`); False rebinds a growing slice of it every step.
    PADDED_MASK = True

    def _tokens_kv(self, prompt_ids: list[int], sampler: Sampler, max_new: int) -> Iterator[int]:
        """The copying KV-cache loop: each step's presents are bound as the next step's pasts; the cache never
        goes through numpy. GroupQueryAttention graphs run :meth:`_tokens_shared` instead: there each layer's
        past and present are one buffer sized for this call (prompt + max_new tokens, not the whole context
        window), bound once; the node writes the new token's keys and values in place and reads the valid
        length from the attention mask, so nothing is copied or reallocated per token.
        """
        io = _Binding(self.session.session)
        n = len(prompt_ids)
        total = n + max_new
        mask = np.ones((1, total), dtype=np.int64)  # slices of one buffer: no per-step allocation
        positions = np.arange(total, dtype=np.int64)[None, :]
        empty = np.zeros((1, *self.kv_shape_tail), dtype=self.kv_dtype)
        for name in self.past_names:
            io.bind_array(name, empty)
        fresh_outputs = [self.logits_name, *self.present_names]
        seqlens, span = self._bind_lengths(io)

        def run(ids: np.ndarray, start: int) -> Any:
            end = start + ids.shape[1]
            io.bind_array(self.ids_name, ids)
            if self.mask_name:
                io.bind_array(self.mask_name, mask[:, :end])
            seqlens[0], span[()] = end - 1, end
            if self.pos_name:
                io.bind_array(self.pos_name, positions[:, start:end])
            for name in fresh_outputs:
                io.bind_output(name)  # the old presents are bound as inputs by now
            return io.run()

        outs = run(np.asarray([prompt_ids], dtype=np.int64), 0)
        step_ids = np.zeros((1, 1), dtype=np.int64)
        for i in range(max_new):
            token = sampler(outs[0].numpy()[0, -1])
            yield token
            if i == max_new - 1:
                return
            step_ids[0, 0] = token
            for j, name in enumerate(self.past_names, start=1):  # this step's presents: the next pasts
                io.bind_value(name, outs[j])
            outs = run(step_ids, n)
            n += 1

    def _tokens_shared(self, prompt_ids: list[int], sampler: Sampler, max_new: int) -> Iterator[int]:
        """The in-place KV loop (GroupQueryAttention graphs, see :meth:`_tokens_kv`). Every decode-step tensor is preallocated and bound
        once: the token id and position are one-element buffers rewritten in place, the logits go into one
        (1, 1, vocab) buffer read as numpy, and the attention mask is one (1, prompt + max_new) buffer whose
        next position is set to 1 before each step — so a step is a run and an argmax, with no binds and no
        output objects to wrap (on a tiny model the Python side is a large part of the step).

        The padded mask holds where the graph takes ``position_ids``: GroupQueryAttention reads each row's
        length from the mask's sum (the zeros past it are never attended) and the rotary from the positions,
        giving bit-identical logits to a mask of exactly the valid length. A graph that derives positions
        itself (gemma: from the mask's shape) gets the exact-length mask, rebound each step. The prefill
        always gets the exact mask: a prompt shorter than the mask would be a continued prompt to the node.
        """
        io = _Binding(self.session.session)
        n = len(prompt_ids)
        total = n + max_new
        shape = (1, self.kv_shape_tail[0], total, self.kv_shape_tail[2])
        for past, present in zip(self.past_names, self.present_names, strict=True):
            buffer = io.value(np.zeros(shape, dtype=self.kv_dtype))
            io.bind_value(past, buffer)
            io.bind_output_value(present, buffer)
        mask = np.zeros((1, total), dtype=np.int64)
        mask[0, :n] = 1
        positions = np.arange(total, dtype=np.int64)[None, :]
        io.bind_array(self.ids_name, np.asarray([prompt_ids], dtype=np.int64))
        if self.mask_name:
            io.bind_array(self.mask_name, mask[:, :n])
        if self.pos_name:
            io.bind_array(self.pos_name, positions[:, :n])
        seqlens, span = self._bind_lengths(io)
        seqlens[0], span[()] = n - 1, n
        io.bind_output(self.logits_name)
        prefill = io.run()[len(self.present_names)].numpy()  # outputs in binding order: presents, then logits
        token = sampler(prefill[0, -1])
        yield token
        if max_new == 1:
            return
        # Decode-step buffers, bound once: ORT reads and writes them in place.
        step_ids = np.zeros((1, 1), dtype=np.int64)
        step_pos = np.zeros((1, 1), dtype=np.int64)
        logits = np.zeros((1, 1, prefill.shape[-1]), dtype=prefill.dtype)
        io.bind_array(self.ids_name, step_ids)
        if self.pos_name:
            io.bind_array(self.pos_name, step_pos)
        io.bind_output_value(self.logits_name, io.value(logits))
        padded = bool(self.mask_name and self.pos_name and self.PADDED_MASK)
        if padded:
            io.bind_array(self.mask_name, mask)  # type: ignore[arg-type]
        regrow = self.mask_name if not padded else None
        # Lengths as inputs: the span is the whole buffer, as the padded mask's length is (same logits).
        fixed_span = bool(self.seqlens_name and self.PADDED_MASK)
        span[()] = total
        row, mask_row, execute = logits[0, 0], mask[0], io.executor()
        for pos in range(n, total - 1):  # the position of the token fed at this step
            step_ids[0, 0] = token
            step_pos[0, 0] = pos
            mask_row[pos] = 1
            seqlens[0] = pos
            if not fixed_span:
                span[()] = pos + 1
            if regrow:
                io.bind_array(regrow, mask[:, : pos + 1])
            execute()
            token = sampler(row)
            yield token

    def _bind_lengths(self, io: _Binding) -> tuple[np.ndarray, np.ndarray]:
        """GroupQueryAttention's ``seqlens_k`` and ``total_sequence_length`` buffers, bound once when the graph
        takes them (the loops rewrite them in place each step); unbound scratch otherwise."""
        seqlens, span = np.zeros(1, dtype=np.int32), np.zeros((), dtype=np.int32)
        if self.seqlens_name and self.total_name:
            io.bind_array(self.seqlens_name, seqlens)
            io.bind_array(self.total_name, span)
        return seqlens, span

    def _tokens_full(self, prompt_ids: list[int], sampler: Sampler, max_new: int) -> Iterator[int]:
        seq = list(prompt_ids)
        names = [self.logits_name]
        for _ in range(max_new):
            ids = np.asarray([seq], dtype=np.int64)
            feeds = {self.ids_name: ids, **attention_feeds(self.spec, np.ones_like(ids))}
            if self.pos_name:
                feeds[self.pos_name] = np.arange(ids.shape[1], dtype=np.int64)[None, :]
            logits = self.session.run(feeds, names, validate=False)[self.logits_name]
            token = sampler(logits[0, -1])
            yield token
            seq.append(token)

    # ------------------------------------------------------------------------------------ text

    def stream(
        self, prompt: str | Sequence[int], config: GenerationConfig, *, cancel: CancelEvent | None = None
    ) -> GenerationStream:
        prompt_ids, truncated = self.encode_prompt(prompt, config)  # errors surface here, not on first next()
        box: dict[str, GenerationResult] = {}
        return GenerationStream(self._deltas(prompt_ids, truncated, config, box, emit=True, cancel=cancel), box)

    def generate(
        self, prompt: str | Sequence[int], config: GenerationConfig, *, cancel: CancelEvent | None = None
    ) -> GenerationResult:
        prompt_ids, truncated = self.encode_prompt(prompt, config)
        box: dict[str, GenerationResult] = {}
        for _ in self._deltas(prompt_ids, truncated, config, box, emit=False, cancel=cancel):
            pass
        return box["result"]

    def _deltas(
        self,
        prompt_ids: list[int],
        truncated: bool,
        config: GenerationConfig,
        box: dict[str, GenerationResult],
        *,
        emit: bool,
        cancel: CancelEvent | None = None,
    ) -> Iterator[str]:
        sampler = self._sampler(config, prompt_ids)
        eos = frozenset() if config.ignore_eos else self.eos
        max_new = min(config.max_tokens, self.max_context - len(prompt_ids))
        # Per-token text is needed only to stream or to find stop sequences; otherwise decode once at the end.
        incremental = emit or bool(config.stop)
        context = prompt_ids[-_DETOK_CONTEXT:]
        detok = StreamingDetokenizer(self.decode, context) if incremental else None
        stopper = StopMatcher(config.stop) if config.stop else None
        generated: list[int] = []
        parts: list[str] = []
        finish = "length"
        start = time.perf_counter()
        first_at = start
        token_iter = self.tokens(prompt_ids, sampler, max_new)
        try:
            for token in token_iter:
                if not generated:
                    first_at = time.perf_counter()
                generated.append(token)
                if token in eos:
                    finish = "stop"
                    break
                if detok is None:
                    if cancel is not None and cancel.is_set():
                        finish = "cancelled"
                        break
                    continue
                delta = detok.add(token)
                if stopper is not None:
                    delta = stopper.feed(delta)
                if delta:
                    parts.append(delta)
                    if emit:
                        yield delta
                if stopper is not None and stopper.stopped:
                    finish = "stop"
                    break
                if cancel is not None and cancel.is_set():
                    finish = "cancelled"
                    break
        finally:
            token_iter.close()  # type: ignore[attr-defined]
        end = time.perf_counter()
        if detok is not None:
            tail = detok.flush() if not (stopper and stopper.stopped) else ""
            if stopper is not None:
                tail = stopper.feed(tail) + stopper.flush()
            if tail:
                parts.append(tail)
                if emit:
                    yield tail
            text = "".join(parts)
        else:
            text = self._decode_once(context, [t for t in generated if t not in eos])
        box["result"] = GenerationResult(
            text=text,
            finish_reason=finish,
            usage=Usage(prompt_tokens=len(prompt_ids), completion_tokens=len(generated)),
            token_ids=tuple(generated),
            prompt_truncated=truncated,
            timings=_timings(start, first_at, end, len(generated)),
        )

    def _sampler(self, config: GenerationConfig, prompt_ids: list[int]) -> Sampler:
        sampler = Sampler(
            vocab_size=self.vocab_size or 1,
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            repetition_penalty=config.repetition_penalty,
            seed=config.seed,
        )
        sampler.observe(prompt_ids)  # the repetition penalty counts the prompt's tokens too
        return sampler

    def _decode_once(self, context: list[int], text_ids: list[int]) -> str:
        """The generated text in one decode, with the prompt's tail as context so the first word's spacing holds."""
        before = self.decode(context)
        whole = self.decode(context + text_ids)
        return whole[len(before) :] if whole.startswith(before) else self.decode(text_ids)


def _timings(start: float, first_at: float, end: float, generated: int) -> dict[str, float]:
    """Prefill (until the first token) and decode times; the decode rate counts the steps after the first token."""
    decode_steps = max(0, generated - 1)
    return {
        "prefill_seconds": round(first_at - start, 6),
        "decode_seconds": round(end - first_at, 6),
        "decode_tokens_per_second": round(decode_steps / (end - first_at), 2)
        if decode_steps and end > first_at
        else 0.0,
    }
