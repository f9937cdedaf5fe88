"""Hostile input to the HTTP server, in process (FastAPI's TestClient): each case asserts the status, the error
code and a fragment of the message, and that the body is the structured ``{"error": {...}}`` (never a 5xx).

The cases cover every numeric field's finite range (``1e400`` parses as inf, ``10**400`` overflows ``float()``),
audio samples, invalid UTF-8 and lone surrogates, content types, auth headers, routes and methods; then the
quota (a refused request is not charged), keys files refused at startup, the audit log's failures on /health,
and the served model ids (folder names, ``ID=PKG``, duplicates refused).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

import runtimes
from edgekit.errors import ConfigError, UsageError
from runtimes.server import ServerConfig, add_key, create_app

BIG = "1" + "0" * 400  # 10**400 as a JSON integer literal: valid JSON, too big for float()
CLIP = [round(0.1 * float(np.sin(i / 5)), 6) for i in range(400)]


@pytest.fixture(scope="module")
def models(lm_package, embed_package, text_cls_package, image_package, audio_package) -> dict[str, Any]:
    load = lambda p: runtimes.load(p, threads=1)  # noqa: E731
    return {
        "llama": load(lm_package),
        "embed": load(embed_package),
        "sentiment": load(text_cls_package),
        "pets": load(image_package),
        "sounds": load(audio_package),
    }


@pytest.fixture(scope="module")
def client(models: dict[str, Any]) -> Any:
    config = ServerConfig(port=0, max_body_bytes=64 * 1024, max_tokens_limit=48)
    with TestClient(create_app(models, config), raise_server_exceptions=False) as c:
        yield c


def _raw(route: str, text: str) -> tuple[str, str, bytes]:
    return ("POST", route, text.encode("utf-8"))


def _gen(extra: str) -> bytes:
    return ('{"model": "llama", "prompt": "the quick", "max_tokens": 2, ' + extra + "}").encode()


def _body(route: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, dict[str, Any]] = {
        "/v1/completions": {"model": "llama", "prompt": "the quick", "max_tokens": 2},
        "/v1/generate": {"model": "llama", "prompt": "the quick", "max_tokens": 2},
        "/v1/embeddings": {"model": "embed", "input": ["a"]},
        "/v1/classify": {"model": "sounds", "input": CLIP, "sampling_rate": 16000},
    }
    return {**base[route], **fields}


C, G, E, K = "/v1/completions", "/v1/generate", "/v1/embeddings", "/v1/classify"
IMG = {"model": "pets"}
TXT = {"model": "sentiment"}

# (id, route, body: dict -> JSON, bytes -> raw, status, code, message fragment)
CASES: list[tuple[str, str, Any, int, str, str]] = [
    # --- generation numbers: finite, in range, of the right type
    ("temperature inf", C, _gen('"temperature": 1e400'), 400, "invalid_config", "temperature must be a number"),
    ("temperature -inf", C, _gen('"temperature": -1e400'), 400, "invalid_config", "temperature must be a number"),
    ("temperature negative", C, _body(C, temperature=-0.5), 400, "invalid_config", "from 0 to 100"),
    ("temperature huge", C, _body(C, temperature=1e300), 400, "invalid_config", "from 0 to 100"),
    ("temperature 10**400", C, _gen(f'"temperature": {BIG}'), 400, "invalid_config", "temperature must be"),
    ("temperature string", C, _body(C, temperature="1"), 400, "invalid_config", "temperature must be a number"),
    ("temperature bool", C, _body(C, temperature=True), 400, "invalid_config", "temperature must be a number"),
    ("temperature list", C, _body(C, temperature=[1]), 400, "invalid_config", "temperature must be a number"),
    ("temperature object", C, _body(C, temperature={"v": 1}), 400, "invalid_config", "temperature must be"),
    ("temperature NaN literal", C, _gen('"temperature": NaN'), 400, "invalid_request", "NaN is not a JSON number"),
    ("top_p zero", C, _body(C, top_p=0), 400, "invalid_config", "top_p must be above 0"),
    ("top_p above one", C, _body(C, top_p=1.0000001), 400, "invalid_config", "top_p must be a number from 0 to 1"),
    ("top_p Infinity literal", C, _gen('"top_p": Infinity'), 400, "invalid_request", "Infinity is not a JSON"),
    ("top_p -Infinity literal", C, _gen('"top_p": -Infinity'), 400, "invalid_request", "Infinity is not a JSON"),
    ("top_p inf", C, _gen('"top_p": 1e999'), 400, "invalid_config", "top_p must be a number"),
    ("top_k negative", C, _body(C, top_k=-1), 400, "invalid_config", "top_k must be an integer"),
    ("top_k float", C, _body(C, top_k=1.5), 400, "invalid_config", "top_k must be an integer"),
    ("top_k 10**400", C, _gen(f'"top_k": {BIG}'), 400, "invalid_config", "top_k must be an integer"),
    ("top_k too large", C, _body(C, top_k=2_000_000), 400, "invalid_config", "from 0 to 1000000"),
    (
        "max_tokens 10**400",
        C,
        _gen(f'"max_tokens": {BIG}').replace(b'"max_tokens": 2, ', b""),
        400,
        "invalid_config",
        "max_tokens must be an integer",
    ),
    ("max_tokens negative", C, _body(C, max_tokens=-1), 400, "invalid_config", "max_tokens must be an integer"),
    ("max_tokens float", C, _body(C, max_tokens=2.0), 400, "invalid_config", "max_tokens must be an integer"),
    ("max_tokens string", C, _body(C, max_tokens="2"), 400, "invalid_config", "max_tokens must be an integer"),
    (
        "max_tokens inf",
        G,
        _gen('"max_tokens": 1e400').replace(b'"max_tokens": 2, ', b""),
        400,
        "invalid_config",
        "max_tokens must be an integer",
    ),
    ("max_tokens over the model", G, _body(G, max_tokens=49), 400, "invalid_config", "between 1 and 48"),
    ("n zero", C, _body(C, n=0), 400, "invalid_config", "n must be an integer from 1 to 16"),
    ("n too many", C, _body(C, n=17), 400, "invalid_config", "n must be an integer from 1 to 16"),
    ("n float", C, _body(C, n=1.5), 400, "invalid_config", "n must be an integer"),
    ("n 10**400", C, _gen(f'"n": {BIG}'), 400, "invalid_config", "n must be an integer"),
    ("n string", C, _body(C, n="2"), 400, "invalid_config", "n must be an integer"),
    ("n with stream", C, _body(C, n=2, stream=True), 400, "invalid_request", "stream: true takes one prompt"),
    ("prompts x n too many", C, _body(C, prompt=["a"] * 10, n=8), 400, "invalid_request", "at most 64 choices"),
    ("prompt list with stream", C, _body(C, prompt=["a", "b"], stream=True), 400, "invalid_request", "stream"),
    ("repetition_penalty zero", C, _body(C, repetition_penalty=0), 400, "invalid_config", "repetition_penalty"),
    ("repetition_penalty tiny", C, _body(C, repetition_penalty=1e-300), 400, "invalid_config", "from 0.01 to 100"),
    ("repetition_penalty huge", C, _body(C, repetition_penalty=1e300), 400, "invalid_config", "from 0.01 to 100"),
    ("repetition_penalty inf", C, _gen('"repetition_penalty": 1e400'), 400, "invalid_config", "repetition_penalty"),
    ("seed negative", C, _body(C, seed=-1), 400, "invalid_config", "seed must be an integer"),
    ("seed 2**64", C, _body(C, seed=2**64), 400, "invalid_config", "seed must be an integer"),
    ("seed float", C, _body(C, seed=1.5), 400, "invalid_config", "seed must be an integer"),
    ("seed 10**400", C, _gen(f'"seed": {BIG}'), 400, "invalid_config", "seed must be an integer"),
    ("seed 5000 digits", C, _gen('"seed": ' + "9" * 5000), 400, "invalid_request", "not acceptable JSON"),
    ("stop too many", C, _body(C, stop=[f"s{i}" for i in range(17)]), 400, "invalid_config", "at most 16 stop"),
    ("stop number", C, _body(C, stop=5), 400, "invalid_config", "stop must be a list"),
    ("stop empty string", C, _body(C, stop=[""]), 400, "invalid_config", "stop must be a list"),
    ("stop null item", C, _body(C, stop=[None]), 400, "invalid_config", "stop must be a list"),
    ("ignore_eos string", C, _body(C, ignore_eos="yes"), 400, "invalid_config", "ignore_eos must be true"),
    ("truncate bad", C, _body(C, truncate="right"), 400, "invalid_config", "truncate must be null or 'left'"),
    # --- OpenAI fields kept at their no-op value
    ("presence_penalty", C, _body(C, presence_penalty=1), 400, "invalid_request", "presence_penalty must be 0"),
    ("frequency_penalty inf", C, _gen('"frequency_penalty": 1e400'), 400, "invalid_request", "frequency_penalty"),
    ("logit_bias", C, _body(C, logit_bias={"1": 5}), 400, "invalid_request", "logit_bias must be {}"),
    ("best_of", C, _body(C, best_of=2), 400, "invalid_request", "best_of must be 1"),
    ("echo", C, _body(C, echo=True), 400, "invalid_request", "echo must be false"),
    ("logprobs", C, _body(C, logprobs=5), 400, "invalid_request", "logprobs must be false or 0"),
    ("suffix", C, _body(C, suffix="x"), 400, "invalid_request", "no fill-in-the-middle"),
    (
        "response_format",
        C,
        _body(C, response_format={"type": "json_object"}),
        400,
        "invalid_request",
        "response_format must be",
    ),
    ("user not a string", C, _body(C, user=5), 400, "invalid_request", "user must be a string"),
    ("tools on completions", C, _body(C, tools=[]), 400, "invalid_request", "unknown field 'tools'"),
    ("misspelt field", C, _body(C, temprature=1), 400, "invalid_request", "Did you mean 'temperature'"),
    # --- prompts: text that is not Unicode, shapes that are not prompts
    ("lone high surrogate", C, _gen('"stop": ["\\ud800"]'), 400, "invalid_request", "unpaired UTF-16 surrogate"),
    (
        "lone surrogate prompt",
        G,
        b'{"model": "llama", "prompt": "ab\\udfffc"}',
        400,
        "invalid_request",
        "unpaired UTF-16 surrogate",
    ),
    ("surrogate in a key", G, b'{"model": "llama", "prompt": "x", "\\ud800": 1}', 400, "invalid_request", "surrogate"),
    ("invalid UTF-8", G, b'{"model": "llama", "prompt": "\xff\xfe"}', 400, "invalid_request", "not valid UTF-8"),
    ("overlong UTF-8", G, b'{"model": "llama", "prompt": "\xc0\xaf"}', 400, "invalid_request", "not valid UTF-8"),
    (
        "Latin-1 body",
        G,
        '{"model": "llama", "prompt": "caf\u00e9"}'.encode("latin-1"),
        400,
        "invalid_request",
        "not valid UTF-8",
    ),
    ("UTF-16 body", G, '{"prompt": "x"}'.encode("utf-16"), 400, "invalid_request", "UTF-8"),
    ("prompt empty list", C, _body(C, prompt=[]), 400, "invalid_request", "prompt must be a string"),
    ("prompt list of empty list", C, _body(C, prompt=[[]]), 400, "invalid_request", "prompt must be a string"),
    ("prompt mixed list", C, _body(C, prompt=[1, "a"]), 400, "invalid_request", "of mixed items"),
    ("prompt object", C, _body(C, prompt={"a": 1}), 400, "invalid_request", "prompt must be a string"),
    ("prompt bool", C, _body(C, prompt=True), 400, "invalid_request", "prompt must be a string"),
    ("prompt null", C, _body(C, prompt=None), 400, "invalid_request", "needs a 'prompt'"),
    ("token id negative", C, _body(C, prompt=[1, -1]), 400, "invalid_request", "token ids must be integers"),
    (
        "token id 10**400",
        C,
        b'{"model": "llama", "prompt": [' + BIG.encode() + b"]}",
        400,
        "invalid_request",
        "token ids must be integers",
    ),
    ("token id out of vocabulary", C, _body(C, prompt=[1, 99999]), 400, "invalid_input", "in [0, 300)"),
    ("token id float", C, _body(C, prompt=[1, 2.5]), 400, "invalid_request", "prompt must be"),
    ("token id lists, one bad", C, _body(C, prompt=[[1, 2], [2**40]]), 400, "invalid_request", "token ids"),
    ("empty prompt", G, _body(G, prompt=""), 400, "invalid_input", "empty"),
    ("stream string", C, _body(C, stream="yes"), 400, "invalid_request", "stream must be true or false"),
    (
        "stream_options junk",
        C,
        _body(C, stream=True, stream_options={"x": 1}),
        400,
        "invalid_request",
        "stream_options must be",
    ),
    ("model empty", C, _body(C, model=""), 400, "invalid_request", "model must be a model id"),
    ("model number", C, _body(C, model=7), 400, "invalid_request", "model must be a model id"),
    ("model unknown", C, _body(C, model="gpt-4"), 404, "model_not_found", "unknown model 'gpt-4'"),
    ("model of another task", C, _body(C, model="embed"), 400, "model_task_mismatch", "feature-extraction"),
    # --- chat bodies (no model here has a chat template; the body is checked before the template)
    ("chat no messages", "/v1/chat/completions", {"model": "llama"}, 400, "invalid_request", "needs 'messages'"),
    (
        "chat messages string",
        "/v1/chat/completions",
        {"model": "llama", "messages": "hi"},
        400,
        "invalid_request",
        "messages must be a non-empty list",
    ),
    (
        "chat bad role",
        "/v1/chat/completions",
        {"model": "llama", "messages": [{"role": "x", "content": "a"}]},
        400,
        "invalid_request",
        "role must be one of",
    ),
    (
        "chat content number",
        "/v1/chat/completions",
        {"model": "llama", "messages": [{"role": "user", "content": 5}]},
        400,
        "invalid_request",
        "content must be a string",
    ),
    (
        "chat image part",
        "/v1/chat/completions",
        {"model": "llama", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        400,
        "invalid_request",
        "must be a text part",
    ),
    (
        "chat temperature inf",
        "/v1/chat/completions",
        b'{"model": "llama", "messages": [{"role": "user", "content": "a"}], "temperature": 1e400}',
        400,
        "invalid_config",
        "temperature must be",
    ),
    (
        "chat max tokens twice",
        "/v1/chat/completions",
        {"model": "llama", "messages": [{"role": "user", "content": "a"}], "max_tokens": 2, "max_completion_tokens": 3},
        400,
        "invalid_request",
        "not both",
    ),
    (
        "chat without template",
        "/v1/chat/completions",
        {"model": "llama", "messages": [{"role": "user", "content": "a"}]},
        400,
        "chat_template_unavailable",
        "no chat template",
    ),
    # --- embeddings
    ("embeddings number", E, _body(E, input=5), 400, "invalid_request", "input must be a string"),
    ("embeddings empty list", E, _body(E, input=[]), 400, "invalid_request", "non-empty list of strings"),
    ("embeddings token ids", E, _body(E, input=[1, 2]), 400, "invalid_request", "token-id input is not supported"),
    ("embeddings nested", E, _body(E, input=[["a"]]), 400, "invalid_request", "input must be a string"),
    ("embeddings format", E, _body(E, encoding_format="int8"), 400, "invalid_request", "encoding_format must be"),
    ("embeddings dimensions", E, _body(E, dimensions=8), 400, "invalid_request", "dimensions is not supported"),
    ("embeddings too many", E, _body(E, input=["a"] * 300), 400, "invalid_request", "at most 256 inputs"),
    ("embeddings surrogate", E, b'{"model": "embed", "input": ["\\udc00"]}', 400, "invalid_request", "surrogate"),
    ("embeddings missing input", E, {"model": "embed"}, 400, "invalid_request", "needs an 'input'"),
    # --- classify: audio samples (the HTTP 500s of the issue), sampling rate, top_k, images, text
    (
        "audio sample 10**400",
        K,
        b'{"model": "sounds", "input": [0.1, ' + BIG.encode() + b"]}",
        400,
        "invalid_request",
        "input[1] must be a finite sample",
    ),
    (
        "audio sample 1e38",
        K,
        _body(K, input=[0.1, 1e38, -1e38, 0.2]),
        400,
        "invalid_request",
        "input[1] must be a finite sample",
    ),
    ("audio sample inf", K, b'{"model": "sounds", "input": [0.1, 1e400]}', 400, "invalid_request", "finite sample"),
    (
        "audio sample NaN literal",
        K,
        b'{"model": "sounds", "input": [0.1, NaN]}',
        400,
        "invalid_request",
        "NaN is not a JSON number",
    ),
    ("audio sample string", K, _body(K, input=[0.1, "a"]), 400, "invalid_request", "input[1] must be a finite"),
    ("audio sample null", K, _body(K, input=[0.1, None]), 400, "invalid_request", "must be a finite sample"),
    ("audio sample bool", K, _body(K, input=[0.1, True]), 400, "invalid_request", "must be a finite sample"),
    ("audio empty", K, _body(K, input=[]), 400, "invalid_request", "non-empty list of samples"),
    ("audio clip empty", K, _body(K, input=[[0.1], []]), 400, "invalid_request", "input[1] must be a non-empty"),
    (
        "audio clip huge sample",
        K,
        _body(K, input=[[0.1], [0.2, 1e39]]),
        400,
        "invalid_request",
        "input[1][1] must be a finite sample",
    ),
    ("audio nested deeper", K, _body(K, input=[[[0.1]]]), 400, "invalid_request", "finite sample"),
    ("audio string", K, _body(K, input="beep"), 400, "invalid_request", "non-empty list of samples"),
    ("audio too many clips", K, _body(K, input=[[0.1]] * 300), 400, "invalid_request", "at most 256 inputs"),
    ("sampling_rate zero", K, _body(K, sampling_rate=0), 400, "invalid_request", "sampling_rate must be"),
    (
        "sampling_rate 10**400",
        K,
        b'{"model": "sounds", "input": [0.1], "sampling_rate": ' + BIG.encode() + b"}",
        400,
        "invalid_request",
        "sampling_rate must be",
    ),
    (
        "sampling_rate inf",
        K,
        b'{"model": "sounds", "input": [0.1], "sampling_rate": 1e400}',
        400,
        "invalid_request",
        "sampling_rate must be",
    ),
    ("sampling_rate string", K, _body(K, sampling_rate="16000"), 400, "invalid_request", "sampling_rate must be"),
    ("classify top_k zero", K, _body(K, top_k=0), 400, "invalid_request", "top_k must be an integer from 1"),
    (
        "classify top_k 10**400",
        K,
        b'{"model": "sounds", "input": [0.1], "top_k": ' + BIG.encode() + b"}",
        400,
        "invalid_request",
        "top_k must be an integer",
    ),
    ("classify top_k float", K, _body(K, top_k=2.0), 400, "invalid_request", "top_k must be an integer"),
    ("classify no input", K, {"model": "sounds"}, 400, "invalid_request", "needs an 'input'"),
    ("image not base64", K, {**IMG, "input": "not base64!"}, 400, "invalid_request", "not valid base64"),
    ("image not an image", K, {**IMG, "input": "bm90IGFuIGltYWdl"}, 400, "invalid_request", "not an image"),
    ("image a path", K, {**IMG, "input": "/etc/passwd"}, 400, "invalid_request", "base64"),
    ("image numbers", K, {**IMG, "input": [1, 2]}, 400, "invalid_request", "base64-encoded image"),
    ("image empty list", K, {**IMG, "input": []}, 400, "invalid_request", "base64-encoded image"),
    ("text classify number", K, {**TXT, "input": 5}, 400, "invalid_request", "input must be a string"),
    ("text classify null item", K, {**TXT, "input": ["a", None]}, 400, "invalid_request", "input must be"),
    # --- bodies that are not a request
    ("empty body", C, b"", 400, "invalid_request", "the request body is empty"),
    ("blank body", C, b"  \n ", 400, "invalid_request", "the request body is empty"),
    ("null body", C, b"null", 400, "invalid_request", "must be a JSON object, not null"),
    ("array body", E, b"[1, 2]", 400, "invalid_request", "must be a JSON object, not an array"),
    ("string body", K, b'"hello"', 400, "invalid_request", "must be a JSON object, not a string"),
    ("number body", G, b"12", 400, "invalid_request", "must be a JSON object, not a number"),
    ("truncated JSON", C, b'{"prompt": "x",', 400, "invalid_request", "not valid JSON"),
    ("trailing garbage", C, b'{"prompt": "x"} x', 400, "invalid_request", "not valid JSON"),
    ("single quotes", C, b"{'prompt': 'x'}", 400, "invalid_request", "not valid JSON"),
    ("UTF-8 BOM", C, b'\xef\xbb\xbf{"prompt": "x"}', 400, "invalid_request", "JSON"),
    (
        "nested 40 deep",
        E,
        b'{"model": "embed", "input": ' + b"[" * 40 + b"]" * 40 + b"}",
        400,
        "invalid_request",
        "nests deeper than 32",
    ),
    (
        "nested 100000 deep",
        E,
        b'{"input": ' + b"[" * 100000 + b"]" * 100000 + b"}",
        413,
        "payload_too_large",
        "larger than this server's limit",
    ),
    ("nested 5000 deep", G, b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "invalid_request", "JSON"),
    ("oversized body", E, _body(E, input="x" * 70_000), 413, "payload_too_large", "65536 bytes"),
]


def _ids(cases: list[Any]) -> list[str]:
    return [c[0] for c in cases]


def _check(r: Any, status: int, code: str, fragment: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}, body
    assert err["code"] == code, err
    assert fragment in err["message"], err
    assert isinstance(err["type"], str) and err["type"]
    return err


@pytest.mark.parametrize(("name", "route", "body", "status", "code", "fragment"), CASES, ids=_ids(CASES))
def test_hostile_body(client: Any, name: str, route: str, body: Any, status: int, code: str, fragment: str) -> None:
    if isinstance(body, bytes):
        r = client.post(route, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(route, json=body)
    _check(r, status, code, fragment)


REQUEST_CASES: list[tuple[str, str, str, dict[str, str], bytes, int, str, str]] = [
    # (id, method, path, headers, body, status, code, fragment)
    (
        "xml content type",
        "POST",
        C,
        {"content-type": "application/xml"},
        b"<a/>",
        415,
        "unsupported_media_type",
        "must be JSON",
    ),
    (
        "multipart content type",
        "POST",
        E,
        {"content-type": "multipart/form-data; boundary=x"},
        b"--x--",
        415,
        "unsupported_media_type",
        "multipart/form-data",
    ),
    (
        "image content type",
        "POST",
        K,
        {"content-type": "image/png"},
        b"\x89PNG",
        415,
        "unsupported_media_type",
        "image/png",
    ),
    (
        "octet-stream",
        "POST",
        G,
        {"content-type": "application/octet-stream"},
        b"{}",
        415,
        "unsupported_media_type",
        "must be JSON",
    ),
    (
        "Content-Length over the limit",
        "POST",
        E,
        {"content-type": "application/json", "content-length": "999999999"},
        b"{}",
        413,
        "payload_too_large",
        "larger than",
    ),
    ("huge header", "GET", "/health", {"x-big": "a" * 40_000}, b"", 431, "headers_too_large", "more than"),
    ("huge query", "GET", "/v1/models?" + "q" * 40_000, {}, b"", 431, "headers_too_large", "request line"),
    ("unknown route", "GET", "/v1/nothing", {}, b"", 404, "not_found", "there is no /v1/nothing"),
    ("unknown route POST", "POST", "/v1/engines/x/completions", {}, b"{}", 404, "not_found", "no /v1/engines/x"),
    ("GET on a POST route", "GET", C, {}, b"", 405, "method_not_allowed", "GET is not allowed"),
    ("PUT on embeddings", "PUT", E, {}, b"{}", 405, "method_not_allowed", "use POST"),
    ("DELETE health", "DELETE", "/health", {}, b"", 405, "method_not_allowed", "DELETE is not allowed"),
    ("POST models", "POST", "/v1/models", {}, b"{}", 405, "method_not_allowed", "use GET"),
    ("unknown model card", "GET", "/v1/models/gpt-4", {}, b"", 404, "model_not_found", "unknown model 'gpt-4'"),
    ("model card of a path", "GET", "/v1/models/a/b", {}, b"", 404, "model_not_found", "Known:"),
    ("model card near miss", "GET", "/v1/models/lama", {}, b"", 404, "model_not_found", "Did you mean 'llama'"),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "headers", "body", "status", "code", "fragment"),
    REQUEST_CASES,
    ids=_ids(REQUEST_CASES),
)
def test_hostile_request(
    client: Any,
    name: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    code: str,
    fragment: str,
) -> None:
    r = client.request(method, path, headers=headers, content=body or None)
    _check(r, status, code, fragment)
    if status == 405:
        assert r.headers["allow"] in ("GET", "POST")


# ------------------------------------------------------------------------------------ safe outcomes


def test_vanishing_temperature_is_greedy(client: Any) -> None:
    """1e-310 divides logits into inf (NaN probabilities, the last vocabulary id for ever): it means greedy."""
    greedy = client.post(G, json=_body(G, max_tokens=6, temperature=0)).json()["choices"][0]["text"]
    tiny = client.post(G, json=_body(G, max_tokens=6, temperature=1e-310, seed=3))
    assert tiny.status_code == 200, tiny.text
    assert tiny.json()["choices"][0]["text"] == greedy


def test_loud_audio_gives_finite_json(client: Any) -> None:
    """Samples at the edge of the accepted range still classify, and the answer is JSON (no NaN)."""
    loud = [2.0**31 * (1 if i % 2 else -1) for i in range(400)]
    r = client.post(K, json=_body(K, input=loud))
    assert r.status_code == 200, r.text
    assert "NaN" not in r.text and "Infinity" not in r.text
    scores = [lab["score"] for lab in r.json()["data"][0]["labels"]]
    assert all(s is None or np.isfinite(s) for s in scores)


def test_non_finite_output_is_null_not_nan() -> None:
    from runtimes.server.app import FiniteJSONResponse

    body = FiniteJSONResponse({"a": [1.0, float("nan"), float("inf")], "b": {"c": -float("inf")}, "d": 2}).body
    assert json.loads(body) == {"a": [1.0, None, None], "b": {"c": None}, "d": 2}


def test_model_card(client: Any) -> None:
    card = client.get("/v1/models/llama").json()
    assert card["id"] == "llama" and card["object"] == "model" and card["task"] == "text-generation"
    assert card == next(m for m in client.get("/v1/models").json()["data"] if m["id"] == "llama")


# ------------------------------------------------------------------------------------ auth and quota


@pytest.fixture(scope="module")
def keyed(models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    limited = add_key(path, "limited", models=["llama"], daily_quota=2)
    other = add_key(path, "embed-only", models=["embed"])
    config = ServerConfig(port=0, api_keys_file=str(path), max_tokens_limit=48)
    with TestClient(create_app({"llama": models["llama"], "embed": models["embed"]}, config)) as c:
        yield c, limited, other


AUTH_CASES = [
    # (id, Authorization header or None, status, code, fragment)
    ("no header", None, 401, "invalid_api_key", "needs an API key"),
    ("empty header", "", 401, "invalid_api_key", "needs an API key"),
    ("basic auth", "Basic dXNlcjpwYXNz", 401, "invalid_api_key", "must be 'Bearer <key>'"),
    ("bearer without key", "Bearer", 401, "invalid_api_key", "must be 'Bearer <key>'"),
    ("bearer blank key", "Bearer    ", 401, "invalid_api_key", "must be 'Bearer <key>'"),
    ("not an edgekit key", "Bearer sk-abc123", 401, "invalid_api_key", "not valid"),
    ("three parts, short secret", "Bearer ek.limited.short", 401, "invalid_api_key", "not valid"),
    ("unknown key id", "Bearer ek.nobody." + "A" * 43, 401, "invalid_api_key", "not valid"),
    ("wrong secret", "Bearer ek.limited." + "B" * 43, 401, "invalid_api_key", "not valid"),
    ("huge key", "Bearer " + "x" * 20_000, 401, "invalid_api_key", "not valid"),
    ("key with dots", "Bearer ek.limited.a.b.c", 401, "invalid_api_key", "not valid"),
]


@pytest.mark.parametrize(("name", "header", "status", "code", "fragment"), AUTH_CASES, ids=_ids(AUTH_CASES))
def test_bad_auth_headers(keyed: Any, name: str, header: str | None, status: int, code: str, fragment: str) -> None:
    client, _, _ = keyed
    headers = {} if header is None else {"authorization": header}
    for method, path in (("POST", G), ("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/v1/models/llama")):
        r = client.request(method, path, headers=headers, json=_body(G) if method == "POST" else None)
        _check(r, status, code, fragment)
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_non_latin1_auth_header_is_401(keyed: Any) -> None:
    client, _, _ = keyed
    r = client.post(G, json=_body(G), headers={"authorization": "Bearer ek.limited.\u00e9\u00e9".encode("utf-8")})
    _check(r, 401, "invalid_api_key", "not valid")


def test_key_scopes_hide_models(keyed: Any) -> None:
    client, limited, other = keyed
    auth = {"authorization": f"Bearer {other}"}
    _check(client.post(G, json=_body(G), headers=auth), 403, "model_not_allowed", "may not use the model 'llama'")
    _check(client.get("/v1/models/llama", headers=auth), 404, "model_not_found", "unknown model 'llama'")
    assert client.get("/v1/models/embed", headers=auth).json()["id"] == "embed"


def test_refused_requests_are_not_charged(keyed: Any) -> None:
    """Quota 2: validation errors, a prompt the model refuses, and a wrong model do not use it up."""
    client, limited, _ = keyed
    auth = {"authorization": f"Bearer {limited}"}
    state = client.app.state.edgekit
    refused = [
        _body(G, temperature=1e300),  # 400 in validation
        _body(G, prompt="the quick brown fox " * 40),  # 400 from the model: longer than its context
        _body(G, prompt=[1, 99999]),  # 400 from the model: not in its vocabulary
        _body(G, max_tokens=49),  # 400: over the model's limit
        {**_body(G), "model": "nope"},  # 404
    ]
    for body in refused * 2:
        assert 400 <= client.post(G, json=body, headers=auth).status_code < 500
    assert state.quota.used("limited") == 0
    for _ in range(2):
        assert client.post(G, json=_body(G), headers=auth).status_code == 200
    assert state.quota.used("limited") == 2
    err = _check(client.post(G, json=_body(G), headers=auth), 429, "quota_exceeded", "used its 2 requests")
    assert err["type"] == "rate_limit_error"


# ------------------------------------------------------------------------------------ keys files at startup

GOOD_SALT, GOOD_DIGEST = "A" * 22, "A" * 43
KEYS_FILES = [
    # (id, one key's fields, message fragment)
    ("scrypt N not a power of 2", {"hash": f"scrypt$1000$8$1${GOOD_SALT}${GOOD_DIGEST}"}, "power of 2"),
    ("scrypt N huge", {"hash": f"scrypt${2**30}$8$1${GOOD_SALT}${GOOD_DIGEST}"}, "scrypt's N must be an integer"),
    ("scrypt memory", {"hash": f"scrypt${2**20}$64$1${GOOD_SALT}${GOOD_DIGEST}"}, "MiB"),
    ("scrypt r zero", {"hash": f"scrypt$16384$0$1${GOOD_SALT}${GOOD_DIGEST}"}, "scrypt's r"),
    ("scrypt p letters", {"hash": f"scrypt$16384$8$x${GOOD_SALT}${GOOD_DIGEST}"}, "scrypt's p"),
    ("scrypt negative N", {"hash": f"scrypt$-16384$8$1${GOOD_SALT}${GOOD_DIGEST}"}, "scrypt's N"),
    ("scrypt unicode digits", {"hash": f"scrypt$\u0661\u0666$8$1${GOOD_SALT}${GOOD_DIGEST}"}, "scrypt's N"),
    ("salt not base64", {"hash": f"scrypt$16384$8$1$!!!!${GOOD_DIGEST}"}, "salt is not base64url"),
    ("salt empty", {"hash": f"scrypt$16384$8$1$${GOOD_DIGEST}"}, "salt is not base64url"),
    ("digest short", {"hash": f"scrypt$16384$8$1${GOOD_SALT}$AAAA"}, "digest is 3 bytes, not 32"),
    ("digest bad length", {"hash": f"scrypt$16384$8$1${GOOD_SALT}$AAAAA"}, "digest is not base64url"),
    ("pbkdf2 zero iterations", {"hash": f"pbkdf2_sha256$0${GOOD_SALT}${GOOD_DIGEST}"}, "iterations"),
    ("pbkdf2 fields missing", {"hash": f"pbkdf2_sha256$1000${GOOD_SALT}"}, "stored hash is not one of"),
    ("unknown scheme", {"hash": "md5$abc"}, "stored hash is not one of"),
    ("hash a number", {"hash": 5}, "stored hash is not one of"),
    ("id a number", {"id": 5}, "key id must be"),
    ("models a string", {"models": "*"}, "models must be a list"),
    ("models with null", {"models": [None]}, "models must be a list"),
    ("quota a string", {"daily_quota": "5"}, "daily_quota must be a positive integer"),
    ("quota a bool", {"daily_quota": True}, "daily_quota must be a positive integer"),
    ("created_at a number", {"created_at": 5}, "created_at must be a date string"),
    ("unknown field", {"scope": "all"}, "unknown key field 'scope'"),
]


@pytest.mark.parametrize(("name", "fields", "fragment"), KEYS_FILES, ids=_ids(KEYS_FILES))
def test_keys_file_refused_at_startup(tmp_path: Path, name: str, fields: dict[str, Any], fragment: str) -> None:
    from server_support import FakeEmbedder

    path = tmp_path / "keys.json"
    key = {"id": "app", "hash": f"scrypt$16384$8$1${GOOD_SALT}${GOOD_DIGEST}", **fields}
    path.write_text(json.dumps({"schema_version": "1.0", "keys": [key]}))
    with pytest.raises(ConfigError) as exc:
        create_app({"e": FakeEmbedder()}, ServerConfig(port=0, api_keys_file=str(path)))
    assert exc.value.code == "invalid_config" and fragment in exc.value.message, exc.value.message
    assert exc.value.hint


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (b"\xff\xfe{", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"keys": "x"}', 'a "keys" list'),
        (b'{"keys": [], "schema_version": 1}', "schema_version must be a string"),
        (b'{"keys": [], "schema_version": "2.0"}', "is not 1.0"),
        (b'{"keys": [5]}', "must be an object"),
        (b"[]", 'a "keys" list'),
    ],
    ids=["binary", "empty", "keys not a list", "version number", "version 2", "key not an object", "array"],
)
def test_keys_file_shape_refused_at_startup(tmp_path: Path, text: bytes, fragment: str) -> None:
    from server_support import FakeEmbedder

    path = tmp_path / "keys.json"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        create_app({"e": FakeEmbedder()}, ServerConfig(port=0, api_keys_file=str(path)))


def test_a_validated_keys_file_still_verifies(tmp_path: Path) -> None:
    from server_support import FakeEmbedder

    path = tmp_path / "keys.json"
    key = add_key(path, "app")
    with TestClient(create_app({"e": FakeEmbedder()}, ServerConfig(port=0, api_keys_file=str(path)))) as c:
        r = c.post(E, json={"input": "a"}, headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 4


# ------------------------------------------------------------------------------------ audit log failures


def test_audit_write_failure_degrades_health(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from server_support import FakeEmbedder

    full = Path("/dev/full")  # every write fails with ENOSPC: a disk that filled up
    config = ServerConfig(port=0, audit_log=str(full))
    with TestClient(create_app({"e": FakeEmbedder()}, config)) as c:
        assert c.get("/health").json()["status"] == "ok"
        with caplog.at_level("ERROR", logger="edgekit.server"):
            assert c.post(E, json={"input": "a"}).status_code == 200  # the request itself is served
        health = c.get("/health").json()
    assert health["status"] == "degraded"
    assert "audit log" in health["problems"][0] and "No space left" in health["problems"][0]
    assert any("audit log" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_audit_recovers_when_writes_succeed_again(tmp_path: Path) -> None:
    from runtimes.server.audit import AuditLog

    log = AuditLog(tmp_path / "a.jsonl")
    good = log._fd
    log._fd = os.open("/dev/full", os.O_WRONLY)  # the disk fills up...
    log.write({"n": 1})
    assert log.failure and log.lines_lost == 1
    os.close(log._fd)  # ...and is freed again
    log._fd = good
    log.write({"n": 2})
    assert log.failure is None
    assert [json.loads(line)["n"] for line in (tmp_path / "a.jsonl").read_text().splitlines()] == [2]
    log.close()


def test_unopenable_audit_log_is_refused_at_startup(tmp_path: Path) -> None:
    from server_support import FakeEmbedder

    with pytest.raises(ConfigError, match="cannot open the audit log"):
        create_app({"e": FakeEmbedder()}, ServerConfig(port=0, audit_log=str(tmp_path / "no" / "dir" / "a.jsonl")))


# ------------------------------------------------------------------------------------ served model ids


def test_model_ids_are_folder_names(lm_package: Path, tmp_path: Path) -> None:
    import shutil

    from runtimes.server.served import ModelTable

    a = tmp_path / "llm-fp32"
    shutil.copytree(lm_package, a, ignore=shutil.ignore_patterns(".edgekit-cache"))
    table = ModelTable([runtimes.load(a, threads=1)])
    assert table.ids() == ["llm-fp32"]  # not the manifest's (the export source's) name
    with pytest.raises(ConfigError, match="two models would be served as 'llm-fp32'") as exc:
        ModelTable([runtimes.load(a, threads=1), runtimes.load(a, threads=1)])
    assert "llm-fp32-a=PKG1" in (exc.value.hint or "")


@pytest.mark.parametrize(
    ("packages", "names", "expected"),
    [
        (["out/llm", "out/llm-int8"], [], {"llm": "out/llm", "llm-int8": "out/llm-int8"}),
        (["fp32=out/llm", "int8=out/llm-int8"], [], {"fp32": "out/llm", "int8": "out/llm-int8"}),
        (["out/a/llm", "out/b/llm"], ["llm-a", "llm-b"], {"llm-a": "out/a/llm", "llm-b": "out/b/llm"}),
        (["out/pkg.zip"], [], {"pkg": "out/pkg.zip"}),
    ],
    ids=["folder names", "ID=PKG", "--name", "zip"],
)
def test_cli_model_ids(packages: list[str], names: list[str], expected: dict[str, str]) -> None:
    from runtimes.server.cli import model_paths

    assert model_paths(packages, names) == expected


@pytest.mark.parametrize(
    ("packages", "names", "fragment"),
    [
        (["out/a/llm", "out/b/llm"], [], "two packages would be served as 'llm'"),
        (["x=out/a", "x=out/b"], [], "two packages would be served as 'x'"),
        (["out/a", "out/b"], ["x"], "--name was given 1 times for 2 packages"),
        (["id=out/a"], ["other"], "has an id and a --name"),
        (["bad id=out/a"], [], "a model id must be"),
        (["out/a"], ["a/b"], "a model id must be"),
    ],
    ids=["same folder name", "same ID", "--name count", "ID and --name", "space in ID", "slash in --name"],
)
def test_cli_model_ids_refused(packages: list[str], names: list[str], fragment: str) -> None:
    from runtimes.server.cli import model_paths

    with pytest.raises(UsageError) as exc:
        model_paths(packages, names)
    assert fragment in exc.value.message and exc.value.exit_code == 2


def test_cli_refuses_duplicates_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgekit.cli import main

    code = main(["serve", f"{tmp_path}/a/llm", f"{tmp_path}/b/llm", "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "two packages would be served as 'llm'" in err


@pytest.mark.parametrize(
    "key", ["ek.my-app.…", "ek.app.\u00e9", "ek.app.x\ny", 5], ids=["ellipsis", "accent", "newline", "int"]
)
def test_client_refuses_a_key_that_cannot_be_sent(key: Any) -> None:
    """A pasted placeholder used to crash deep in urllib (a latin-1 UnicodeEncodeError): now a clear error."""
    from edgekit.client import Client

    with pytest.raises(ConfigError) as exc:
        Client("http://127.0.0.1:9", api_key=key)
    assert exc.value.param == "api_key" and "printable ASCII" in exc.value.message and exc.value.hint


def _image(mode: str, size: tuple[int, int] = (8, 8), fmt: str = "PNG") -> str:
    import base64
    import io

    from PIL import Image

    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize(size)
    buf = io.BytesIO()
    (rgb if mode == "RGB" else rgb.convert(mode)).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize(
    ("mode", "size", "fmt"),
    [
        ("L", (8, 8), "PNG"),
        ("RGBA", (8, 8), "PNG"),
        ("P", (8, 8), "PNG"),
        ("1", (8, 8), "PNG"),
        ("LA", (8, 8), "PNG"),
        ("CMYK", (8, 8), "JPEG"),
        ("RGB", (1, 1), "PNG"),
        ("RGB", (1, 3000), "PNG"),
        ("RGB", (8, 8), "WEBP"),
        ("RGB", (8, 8), "BMP"),
    ],
    ids=["grey", "alpha", "palette", "1-bit", "grey-alpha", "cmyk-jpeg", "1x1", "1x3000", "webp", "bmp"],
)
def test_odd_images_classify(client: Any, mode: str, size: tuple[int, int], fmt: str) -> None:
    """Whatever mode or shape an image has, it is converted and resized: an answer with the four labels."""
    r = client.post(K, json={**IMG, "input": _image(mode, size, fmt), "top_k": 4})
    assert r.status_code == 200, r.text
    labels = r.json()["data"][0]["labels"]
    assert {lab["label"] for lab in labels} == {"cat", "dog", "bird", "fish"}
    assert abs(sum(lab["score"] for lab in labels) - 1.0) < 1e-4


def test_truncated_image_is_a_400(client: Any) -> None:
    _check(client.post(K, json={**IMG, "input": _image("RGB")[:60]}), 400, "invalid_input", "not an image Pillow")


def test_the_translation_table_is_walked() -> None:
    """Every row of the server's one exception table, and what falls through it (a bug: 500, text withheld)."""
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    from edgekit.errors import (
        ClientClosedRequest,
        InvalidRequestError,
        MethodNotAllowedError,
        RouteNotFoundError,
        ServerInternalError,
    )
    from runtimes.server.errors import FOREIGN, translate

    scope = {"path": "/x", "method": "PATCH", "edgekit_routes": ["/health"]}
    cases = [
        (HTTPException(404), RouteNotFoundError, 404, "there is no /x"),
        (HTTPException(405, headers={"Allow": "GET"}), MethodNotAllowedError, 405, "PATCH is not allowed on /x"),
        (HTTPException(418, detail="teapot"), InvalidRequestError, 418, "teapot"),
        (ClientDisconnect(), ClientClosedRequest, 499, "closed the connection"),
        (ValueError("secret detail"), ServerInternalError, 500, "the server failed on this request"),
        (KeyError("secret detail"), ServerInternalError, 500, "the server failed on this request"),
    ]
    assert {row.load() for row in FOREIGN} <= {type(exc) for exc, *_ in cases}  # every row is walked
    for exc, kind, status, fragment in cases:
        err = translate(exc, scope)
        assert type(err) is kind and err.http_status == status and fragment in err.message
        assert "secret" not in err.message and err.hint


def test_a_server_bug_is_a_500_that_does_not_leak(caplog: pytest.LogCaptureFixture) -> None:
    from server_support import FakeEmbedder

    class Broken(FakeEmbedder):
        def embed(self, texts: Any) -> Any:
            raise RuntimeError("secret internals")

    app = create_app({"e": Broken()}, ServerConfig(port=0))
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level("ERROR", logger="edgekit.server"):
        r = c.post(E, json={"input": "a"})
    err = _check(r, 500, "internal_error", "the server failed on this request")
    assert "secret" not in r.text and r.headers["x-request-id"] in err["hint"]
    assert any("secret internals" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_cli_refuses_a_bad_keys_file_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgekit.cli import main

    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [{"id": "app", "hash": f"scrypt$1000$8$1${GOOD_SALT}${GOOD_DIGEST}"}]}))
    code = main(["serve", str(tmp_path / "missing-package"), "--api-keys", str(keys), "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "N must be a power of 2" in err and "--add-key" in err
