"""Request bodies: raw bytes to typed, validated requests. Every client mistake becomes a 4xx here.

``read_body`` enforces the body limit (413) and the body read timeout (408); ``parse_json`` strict UTF-8,
strict JSON (no NaN / Infinity, bounded depth) and no unpaired surrogates (``"\\ud800"`` is valid JSON but no
tokenizer can encode it). Each endpoint's request is a frozen dataclass whose ``from_dict`` rejects unknown
fields with a did-you-mean; generation options go through the runtime's own ``GenerationConfig.from_dict``,
as the Python API and the CLI do, after the server's own finite ranges (``NUMBER_RULES``): no number a client
sends can overflow the arithmetic behind it (``1e400`` parses as inf, ``10**400`` overflows ``float()``).

OpenAI clients send some fields edgekit has no use for; they are accepted only at the value that changes
nothing (``best_of: 1``, ``presence_penalty: 0``, ...), from the ``COMPAT_FIELDS`` registry, and refused
otherwise, so a client never silently gets something other than what it asked for. ``null`` means "the default".
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from edgekit.errors import ConfigError, InvalidRequestError, PayloadTooLargeError, RequestReadTimeoutError
from edgekit.registry import Registry, unknown_message
from runtimes.pipelines.generate import GenerationConfig
from runtimes.server.chat import ChatMessage, parse_messages

GENERATION_FIELDS = tuple(f.name for f in fields(GenerationConfig))
_MAX_DEPTH = 32
_MAX_IMAGE_PIXELS = 4096 * 4096


# --------------------------------------------------------------------------------------------- body


async def read_body(receive_chunks: Any, content_length: str | None, limit: int, timeout_s: float) -> bytes:
    """The whole body within ``timeout_s`` (408 after), refusing it (413) once it is known to exceed ``limit``.

    A client that stops sending mid-body (or sends a byte a second) would otherwise hold the request, and a
    model slot's queue place, for as long as it likes.
    """
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise InvalidRequestError("the Content-Length header is not a number") from None
        if declared > limit:
            raise _too_large(limit)
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout_s
    parts: list[bytes] = []
    size = 0

    def add(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)

    try:
        if _TIMEOUT_AT is not None:
            # One timer for the whole body: a body already received costs no task and no loop step, where
            # wait_for (below) starts a task per chunk: three event-loop steps each, on every request.
            async with _TIMEOUT_AT(until):
                async for chunk in receive_chunks:
                    add(chunk)
        else:
            await _read_chunks(receive_chunks, loop, until, add)
    except asyncio.TimeoutError:
        raise RequestReadTimeoutError(
            f"the request body did not arrive within {timeout_s:g} s ({size} bytes came)",
            hint="send the whole body at once; a slow or stalled upload is cut off",
        ) from None
    return b"".join(parts)


_TIMEOUT_AT = getattr(asyncio, "timeout_at", None)  # Python 3.11+


async def _read_chunks(receive_chunks: Any, loop: Any, until: float, add: Callable[[bytes], None]) -> None:
    """Python 3.10: each chunk awaited under the time left (asyncio.TimeoutError when it runs out)."""
    chunks = receive_chunks.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), max(0.0, until - loop.time()))
        except StopAsyncIteration:
            return
        add(chunk)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the request body is larger than this server's limit of {limit} bytes",
        hint="send fewer or shorter inputs per request",
    )


def parse_json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise InvalidRequestError("the request body is empty: send a JSON object", hint='e.g. {"prompt": "Hello"}')
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"the request body is not valid UTF-8 (byte {exc.start})", hint="encode the JSON body as UTF-8"
        ) from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:  # NaN/Infinity, integers of more than 4300 digits, deep nesting
        raise InvalidRequestError(f"the request body is not acceptable JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError(f"the request body must be a JSON object, not {_json_type(data)}")
    _check_text(data, "", 0)
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_text(value: Any, where: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise InvalidRequestError(f"the request body nests deeper than {_MAX_DEPTH} levels")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequestError(
                f"the string at {where or 'the top level'} holds an unpaired UTF-16 surrogate (not valid Unicode)",
                param=where or None,
            ) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(k, where, depth + 1)
            _check_text(v, f"{where}.{k}" if where else str(k), depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_text(v, f"{where}[{i}]", depth + 1)


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), "null")


# --------------------------------------------------------------------------------------------- fields


@dataclass(frozen=True, kw_only=True)
class CompatField:
    """An OpenAI field accepted only at the value that means "no change"."""

    name: str
    accepts: Callable[[Any], bool]
    requirement: str


def _is_int(v: Any, value: int) -> bool:
    return type(v) is int and v == value


def _is_zero(v: Any) -> bool:
    return type(v) in (int, float) and v == 0


COMPAT_FIELDS: Registry[CompatField] = Registry("compatibility field")
for _f in (
    CompatField(name="best_of", accepts=lambda v: _is_int(v, 1), requirement="1"),
    CompatField(name="echo", accepts=lambda v: v is False, requirement="false"),
    CompatField(name="logprobs", accepts=lambda v: v is False or _is_int(v, 0), requirement="false or 0"),
    CompatField(name="top_logprobs", accepts=lambda v: _is_int(v, 0), requirement="0"),
    CompatField(name="presence_penalty", accepts=_is_zero, requirement="0 (use repetition_penalty)"),
    CompatField(name="frequency_penalty", accepts=_is_zero, requirement="0 (use repetition_penalty)"),
    CompatField(name="logit_bias", accepts=lambda v: v == {}, requirement="{}"),
    CompatField(name="suffix", accepts=lambda v: v == "", requirement='"" (no fill-in-the-middle)'),
    CompatField(name="response_format", accepts=lambda v: v == {"type": "text"}, requirement='{"type": "text"}'),
    CompatField(name="user", accepts=lambda v: isinstance(v, str), requirement="a string (it is ignored)"),
):
    COMPAT_FIELDS.add(_f.name, _f)
del _f


def _check_fields(body: Mapping[str, Any], own: tuple[str, ...]) -> dict[str, Any]:
    """Refuse unknown fields; check compatibility fields; return the rest with nulls dropped."""
    known = [*own, *COMPAT_FIELDS.names()]
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key not in known:
            raise InvalidRequestError(unknown_message("field", key, known), param=key)
        if value is None:
            continue
        if key in COMPAT_FIELDS:
            compat = COMPAT_FIELDS.get(key)
            if not compat.accepts(value):
                raise InvalidRequestError(
                    f"{key} must be {compat.requirement} on this server (got {value!r})", param=key
                )
            continue
        out[key] = value
    return out


def _model(d: Mapping[str, Any]) -> str | None:
    value = d.get("model")
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidRequestError(f"model must be a model id string (got {value!r})", param="model")
    return value


def _bool(d: Mapping[str, Any], name: str) -> bool:
    value = d.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be true or false (got {value!r})", param=name)
    return value


def _include_usage(d: Mapping[str, Any]) -> bool:
    options = d.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise InvalidRequestError('stream_options must be {"include_usage": true|false}', param="stream_options")
    return _bool(options, "include_usage")


@dataclass(frozen=True, kw_only=True)
class NumberRule:
    """The finite range a numeric request field must be in, checked before anything computes with it."""

    name: str
    integer: bool
    low: float
    high: float
    why: str  # the reason for the bounds, for the error message


def _check_number(rule: NumberRule, value: Any) -> Any:
    ok_type = type(value) is int if rule.integer else type(value) in (int, float)
    # Integers are compared as Python ints (10**400 must not reach float() and overflow).
    if not ok_type or (type(value) is float and not math.isfinite(value)) or not rule.low <= value <= rule.high:
        kind = "an integer" if rule.integer else "a number"
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise ConfigError(
            f"{rule.name} must be {kind} from {_fmt(rule.low)} to {_fmt(rule.high)} (got {shown})",
            hint=rule.why,
            param=rule.name,
        )
    return value


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


# Generation fields: the runtime checks types and signs; the server also bounds them, so no client value can
# overflow the sampler's arithmetic (a temperature of 1e-310 divides logits into inf) or ask for unbounded work.
GREEDY_BELOW = 1e-6  # a temperature below this is greedy decoding: its softmax is already one-hot in float64
MAX_N = 16  # n: choices per prompt
MAX_CHOICES = 64  # prompts x n per request (LangChain's OpenAI.batch sends 20 prompts at once)
MAX_TOKEN_ID = 2**31 - 1  # token ids are int32 or int64 in every graph; the model checks its vocabulary
MAX_STOP = 16
NUMBER_RULES: Registry[NumberRule] = Registry("numeric field")
for _r in (
    NumberRule(name="temperature", integer=False, low=0.0, high=100.0, why="0 is greedy; OpenAI clients use 0-2"),
    NumberRule(name="top_p", integer=False, low=0.0, high=1.0, why="a probability mass: (0, 1]; 1 switches it off"),
    NumberRule(name="top_k", integer=True, low=0, high=1_000_000, why="0 switches it off; at most the vocabulary"),
    NumberRule(name="max_tokens", integer=True, low=1, high=2**31 - 1, why="tokens to generate; see GET /v1/models"),
    NumberRule(
        name="repetition_penalty",
        integer=False,
        low=0.01,
        high=100.0,
        why="1 switches it off; values far from 1 divide logits into overflow",
    ),
    NumberRule(name="seed", integer=True, low=0, high=2**63 - 1, why="a 64-bit non-negative integer"),
    NumberRule(name="n", integer=True, low=1, high=MAX_N, why=f"choices per prompt, at most {MAX_N}"),
):
    NUMBER_RULES.add(_r.name, _r)
del _r


def _generation(d: Mapping[str, Any]) -> GenerationConfig:
    options = {k: d[k] for k in GENERATION_FIELDS if k in d}
    for name, value in options.items():
        if name in NUMBER_RULES:
            _check_number(NUMBER_RULES.get(name), value)
    if "top_p" in options and options["top_p"] == 0:
        raise ConfigError("top_p must be above 0 (0 keeps no token at all)", param="top_p")
    if 0 < options.get("temperature", 0) < GREEDY_BELOW:
        options["temperature"] = 0.0
    stop = options.get("stop")
    if isinstance(stop, list) and len(stop) > MAX_STOP:
        raise ConfigError(f"at most {MAX_STOP} stop sequences (got {len(stop)})", param="stop")
    return GenerationConfig.from_dict(options)


# --------------------------------------------------------------------------------------------- requests


Prompt = str | tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """``/v1/generate``, ``/v1/completions`` (``prompt``: one, or a list) and ``/v1/chat/completions`` (``messages``).

    The answer has ``n`` choices per prompt, prompt-major (choice ``i * n + j`` is prompt ``i``'s ``j``-th), as
    OpenAI's API orders them.
    """

    model: str | None
    prompts: tuple[Prompt, ...] = ()
    messages: tuple[ChatMessage, ...] | None = None
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    generation: GenerationConfig
    max_tokens_given: bool = False

    @property
    def choices(self) -> int:
        return self.n * (1 if self.messages is not None else len(self.prompts))

    @classmethod
    def completion(cls, body: Mapping[str, Any]) -> GenerationRequest:
        d = _check_fields(body, ("model", "prompt", "n", "stream", "stream_options", *GENERATION_FIELDS))
        if "prompt" not in d:
            raise InvalidRequestError("the request needs a 'prompt'", param="prompt")
        return cls._build(d, prompts=_prompts(d["prompt"]))

    @classmethod
    def chat(cls, body: Mapping[str, Any]) -> GenerationRequest:
        d = _check_fields(
            body, ("model", "messages", "n", "stream", "stream_options", "max_completion_tokens", *GENERATION_FIELDS)
        )
        if "max_completion_tokens" in d:  # OpenAI's newer name for max_tokens
            if "max_tokens" in d and d["max_tokens"] != d["max_completion_tokens"]:
                raise InvalidRequestError("give max_tokens or max_completion_tokens, not both", param="max_tokens")
            d["max_tokens"] = d.pop("max_completion_tokens")
        if "messages" not in d:
            raise InvalidRequestError("the request needs 'messages'", param="messages")
        return cls._build(d, messages=parse_messages(d["messages"]))

    @classmethod
    def _build(cls, d: dict[str, Any], **prompt: Any) -> GenerationRequest:
        n = _check_number(NUMBER_RULES.get("n"), d.get("n", 1))
        req = cls(
            model=_model(d),
            n=n,
            stream=_bool(d, "stream"),
            include_usage=_include_usage(d),
            generation=_generation(d),
            max_tokens_given="max_tokens" in d,
            **prompt,
        )
        if req.stream and req.choices > 1:
            raise InvalidRequestError(
                "stream: true takes one prompt and n = 1 on this server",
                hint="send the prompts as separate streaming requests, or stream: false for several choices",
                param="n" if req.n > 1 else "prompt",
            )
        if req.choices > MAX_CHOICES:
            raise InvalidRequestError(
                f"at most {MAX_CHOICES} choices per request: prompts x n is {req.choices}",
                hint="split the prompts over several requests",
                param="prompt" if req.n == 1 else "n",
            )
        return req


def _token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(type(t) is int for t in value)


def _prompts(value: Any) -> tuple[Prompt, ...]:
    """One prompt (a string or token ids) or OpenAI's batch form: a list of strings, or of token-id lists."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        return tuple(value)
    if _token_ids(value) or (isinstance(value, list) and value and all(_token_ids(t) for t in value)):
        prompts = (tuple(value),) if _token_ids(value) else tuple(tuple(t) for t in value)
        for ids in prompts:
            bad = next((t for t in ids if not 0 <= t <= MAX_TOKEN_ID), None)
            if bad is not None:  # checked here: 10**400 would overflow numpy before the model sees it
                shown = repr(bad) if len(repr(bad)) <= 40 else repr(bad)[:40] + "..."
                raise InvalidRequestError(
                    f"token ids must be integers from 0 to {MAX_TOKEN_ID} (got {shown})",
                    hint="send the text instead, or ids from this model's tokenizer",
                    param="prompt",
                )
        return prompts
    raise InvalidRequestError(
        "prompt must be a string, a list of token ids, or a non-empty list of either"
        f" (got {_json_type(value)}{' of mixed items' if isinstance(value, list) and value else ''})",
        param="prompt",
    )


@dataclass(frozen=True, kw_only=True)
class EmbeddingRequest:
    model: str | None
    input: tuple[str, ...]
    single: bool
    encoding_format: str = "float"

    @classmethod
    def from_dict(cls, body: Mapping[str, Any], *, max_inputs: int) -> EmbeddingRequest:
        d = _check_fields(body, ("model", "input", "encoding_format", "dimensions"))
        if "dimensions" in d:
            raise InvalidRequestError(
                "dimensions is not supported: the model's own size is returned", param="dimensions"
            )
        fmt = d.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise InvalidRequestError(
                f"encoding_format must be 'float' or 'base64' (got {fmt!r})", param="encoding_format"
            )
        single, texts = _texts(d, max_inputs)
        return cls(model=_model(d), input=texts, single=single, encoding_format=fmt)


def _texts(d: Mapping[str, Any], max_inputs: int) -> tuple[bool, tuple[str, ...]]:
    if "input" not in d:
        raise InvalidRequestError("the request needs an 'input': a string or a list of strings", param="input")
    value = d["input"]
    if isinstance(value, str):
        return True, (value,)
    if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        if len(value) > max_inputs:
            raise InvalidRequestError(f"at most {max_inputs} inputs per request (got {len(value)})", param="input")
        return False, tuple(value)
    if isinstance(value, list) and value and all(type(t) is int for t in value):
        raise InvalidRequestError("token-id input is not supported: send the text", param="input")
    raise InvalidRequestError(
        f"input must be a string or a non-empty list of strings (got {_json_type(value)})", param="input"
    )


# --- classification: what an input item is depends on the model's task ---------------------------------------


@dataclass(frozen=True, kw_only=True)
class InputDecoder:
    """Turns the JSON ``input`` of ``/v1/classify`` into what the task's ``classify`` takes."""

    task: str
    describe: str
    decode: Callable[[Any, int], tuple[bool, list[Any]]]  # (input, max_inputs) -> (single, items)


def _decode_texts(value: Any, max_inputs: int) -> tuple[bool, list[Any]]:
    single, texts = _texts({"input": value}, max_inputs)
    return single, list(texts)


def _decode_images(value: Any, max_inputs: int) -> tuple[bool, list[Any]]:
    # Images arrive as base64 strings, never as paths: a client must not make the server open its files.
    single = isinstance(value, str)
    items = [value] if single else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise InvalidRequestError("input must be a base64-encoded image or a list of them", param="input")
    if len(items) > max_inputs:
        raise InvalidRequestError(f"at most {max_inputs} inputs per request (got {len(items)})", param="input")
    out = []
    for i, item in enumerate(items):
        data = item.split(",", 1)[1] if item.startswith("data:") and "," in item else item  # a data: URL
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError(f"input[{i}] is not valid base64", param="input") from None
        _check_image(raw, i)
        out.append(raw)
    return single, out


def _check_image(raw: bytes, i: int) -> None:
    """Refuse images whose pixels would not fit in memory before anything decodes them (decompression bombs)."""
    try:
        import io

        from PIL import Image, UnidentifiedImageError
    except ImportError:
        return  # the runtime reports the missing vision extra
    try:
        with Image.open(io.BytesIO(raw)) as im:  # reads the header only
            width, height = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InvalidRequestError(f"input[{i}] is not an image this server can read", param="input") from None
    if width * height > _MAX_IMAGE_PIXELS:
        raise InvalidRequestError(f"input[{i}] has {width}x{height} pixels, more than this server takes", param="input")


# Audio samples: floats in [-1, 1] or integer PCM up to 32 bits. Bounded so the squares and sums of
# feature extraction stay finite in float32 (samples near 1e38 turned into NaN scores).
AUDIO_SAMPLE_LIMIT = 2**31


def _samples(v: Any, where: str) -> Any:
    import numpy as np

    if not isinstance(v, list) or not v:
        raise InvalidRequestError(f"{where} must be a non-empty list of samples (numbers)", param="input")
    for i, x in enumerate(v):
        # Compared as Python numbers: 10**400 must be refused, not overflow inside numpy.
        if type(x) not in (int, float) or not -AUDIO_SAMPLE_LIMIT <= x <= AUDIO_SAMPLE_LIMIT or x != x:
            shown = repr(x) if len(repr(x)) <= 40 else repr(x)[:40] + "..."
            raise InvalidRequestError(
                f"{where}[{i}] must be a finite sample between -2**31 and 2**31 (got {shown})",
                hint="send floats in [-1, 1] or integer PCM samples",
                param="input",
            )
    return np.asarray(v, dtype=np.float32)


def _decode_audio(value: Any, max_inputs: int) -> tuple[bool, list[Any]]:
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        if len(value) > max_inputs:
            raise InvalidRequestError(f"at most {max_inputs} inputs per request (got {len(value)})", param="input")
        return False, [_samples(v, f"input[{i}]") for i, v in enumerate(value)]
    return True, [_samples(value, "input")]


INPUT_DECODERS: Registry[InputDecoder] = Registry("classification input")
for _d in (
    InputDecoder(task="text-classification", describe="a string or a list of strings", decode=_decode_texts),
    InputDecoder(task="image-classification", describe="base64-encoded image(s)", decode=_decode_images),
    InputDecoder(task="audio-classification", describe="a list of samples, or a list of clips", decode=_decode_audio),
):
    INPUT_DECODERS.add(_d.task, _d)
del _d


@dataclass(frozen=True, kw_only=True)
class ClassifyRequest:
    model: str | None
    input: Any  # decoded per the model's task, once the model is known
    top_k: int = 5
    sampling_rate: int | None = None

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> ClassifyRequest:
        d = _check_fields(body, ("model", "input", "top_k", "sampling_rate"))
        if "input" not in d:
            raise InvalidRequestError("the request needs an 'input'", param="input")
        top_k = d.get("top_k", 5)
        if type(top_k) is not int or not 1 <= top_k <= 1000:
            raise InvalidRequestError(f"top_k must be an integer from 1 to 1000 (got {top_k!r})", param="top_k")
        rate = d.get("sampling_rate")
        if rate is not None and (type(rate) is not int or not 1000 <= rate <= 384_000):
            raise InvalidRequestError(
                f"sampling_rate must be an integer from 1000 to 384000 Hz (got {rate!r})", param="sampling_rate"
            )
        return cls(model=_model(d), input=d["input"], top_k=top_k, sampling_rate=rate)

    def items(self, task: str, max_inputs: int) -> tuple[bool, list[Any]]:
        if task not in INPUT_DECODERS:
            raise InvalidRequestError(f"/v1/classify does not take input for {task} models", param="model")
        return INPUT_DECODERS.get(task).decode(self.input, max_inputs)


def encode_embedding(vector: Any, fmt: str) -> Any:
    if fmt == "base64":  # float32 little-endian, as OpenAI's
        import numpy as np

        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()
