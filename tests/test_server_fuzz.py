"""HTTP fuzzing, in process (FastAPI's TestClient): seeded mutations of valid bodies for every route — classify
with text, image and audio models included — plus raw bytes, non-finite and huge number literals, nested
junk, oversized bodies, wrong content types and bad auth headers. Nothing may give a 5xx; every refusal has
the structured error body; every answer is strict JSON (no NaN)."""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_hostile_server import models  # noqa: F401 - the module's models fixture
from test_server_api import chat_package  # noqa: F401 - the tiny Llama with a chat template

from runtimes.server import ServerConfig, add_key, create_app

# Raw literals JSON encoders will not write: put in as placeholders, substituted in the text.
LITERALS = {
    "__NAN__": "NaN",
    "__INF__": "Infinity",
    "__NINF__": "-Infinity",
    "__BIG__": "1" + "0" * 400,
    "__HUGE_FLOAT__": "1e400",
    "__TINY__": "1e-310",
    "__NEG_BIG__": "-" + "9" * 500,
}


def _png() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


CLIP = [round(0.1 * float(np.sin(i / 5)), 5) for i in range(200)]
VALID: dict[str, list[dict[str, Any]]] = {
    "/v1/generate": [{"model": "llama", "prompt": "the quick", "max_tokens": 2}],
    "/v1/completions": [
        {"model": "llama", "prompt": "the quick", "max_tokens": 2},
        {"model": "llama", "prompt": ["a", "b"], "max_tokens": 2, "n": 2},
        {"model": "llama", "prompt": "x", "max_tokens": 2, "stream": True},
    ],
    "/v1/chat/completions": [{"model": "llama-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}],
    "/v1/embeddings": [{"model": "embed", "input": ["a", "b"]}, {"model": "embed", "input": "a"}],
    "/v1/classify": [
        {"model": "sentiment", "input": "ok", "top_k": 2},
        {"model": "sounds", "input": CLIP, "sampling_rate": 16000},
        {"model": "sounds", "input": [CLIP[:50], CLIP[:80]]},
        {"model": "pets", "input": "__PNG__"},
    ],
}
WEIRD: list[Any] = [
    None,
    True,
    False,
    -1,
    0,
    1,
    2**63,
    -(2**63),
    2**64,
    1e308,
    -1e-308,
    0.5,
    3.5,
    "",
    "x" * 2000,
    "\u0000",
    "日本🙂",
    "NaN",
    "Infinity",
    [],
    {},
    [1, "a"],
    {"a": [None]},
    [0] * 40,
    [[1, 2], [3]],
    [[[[[]]]]],
    ["<|endoftext|>"],
    {"type": "text"},
    [{"role": "user"}],
    [None],
    [1e308] * 3,
    ["\ufffd"],
    *LITERALS,  # the raw literals, as placeholders
    "\\ud800",  # a lone surrogate once the escapes are written
]
FIELDS = [
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "repetition_penalty",
    "truncate",
    "ignore_eos",
    "stream",
    "stream_options",
    "encoding_format",
    "sampling_rate",
    "n",
    "best_of",
    "logprobs",
    "echo",
    "presence_penalty",
    "logit_bias",
    "user",
    "prompt",
    "messages",
    "input",
    "model",
    "dimensions",
    "suffix",
    "tools",
    "\u00e9t\u00e9",
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    None,
    "application/xml",
    "text/html",
    "multipart/form-data; boundary=zz",
    "application/x-www-form-urlencoded",
    "image/png",
    "application/cbor",
    "application/vnd.api+json",
    ";;;",
    "application/json; charset=latin-1",
]
AUTH = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Basic Zm9vOmJhcg==",
    "bearer ek.app.short",
    "Bearer ek.x.y.z",
    "Bearer " + "A" * 5000,
    "Token abc",
    "Bearer ek.app." + "Z" * 43,
    "Bearer\tek.app." + "Z" * 43,
    "ek.app.x",
]


def _encode(body: Any) -> bytes:
    text = json.dumps(body, ensure_ascii=True).replace('"__PNG__"', json.dumps(PNG))
    text = text.replace('"\\\\ud800"', '"\\ud800"')
    for placeholder, literal in LITERALS.items():
        text = text.replace(f'"{placeholder}"', literal)
    return text.encode()


def _no_constants(name: str) -> Any:
    raise AssertionError(f"the response holds {name}: not JSON")


def _check(route: str, sent: bytes, r: Any) -> int:
    assert r.status_code < 500, (route, sent[:300], r.status_code, r.text[:500])
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        for line in r.text.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                json.loads(line[6:], parse_constant=_no_constants)
        return r.status_code
    body = json.loads(r.text, parse_constant=_no_constants)
    if r.status_code >= 400:
        err = body["error"]
        assert set(err) >= {"message", "type", "param", "code"}, body
        assert isinstance(err["message"], str) and err["message"] and isinstance(err["code"], str) and err["code"]
    return r.status_code


def _mutate(rng: random.Random, body: dict[str, Any]) -> Any:
    body = json.loads(json.dumps(body))
    for _ in range(rng.randint(1, 3)):
        action = rng.random()
        if action < 0.55:
            body[rng.choice(FIELDS)] = rng.choice(WEIRD)
        elif action < 0.7 and body:
            body.pop(rng.choice(list(body)))
        elif action < 0.8 and isinstance(body.get("input"), list) and body["input"]:
            body["input"][rng.randrange(len(body["input"]))] = rng.choice(WEIRD)  # one bad sample or item
        elif action < 0.9:
            return rng.choice(WEIRD)  # the whole body is something else
        else:
            inner: Any = rng.choice(WEIRD)
            for _ in range(rng.randint(1, 40)):
                inner = rng.choice([[inner], {"k": inner}])
            body[rng.choice(FIELDS)] = inner  # nested junk
    return body


@pytest.fixture(scope="module")
def all_models(models: dict[str, Any], chat_package: Path) -> dict[str, Any]:  # noqa: F811 - imported fixtures
    import runtimes

    return {**models, "llama-chat": runtimes.load(chat_package, threads=1)}


@pytest.fixture(scope="module")
def client(all_models: dict[str, Any]) -> Any:
    global PNG
    PNG = _png()
    config = ServerConfig(port=0, max_body_bytes=32 * 1024, max_tokens_limit=48, timeout_s=30)
    with TestClient(create_app(all_models, config), raise_server_exceptions=False) as c:
        yield c


PNG = ""


def test_fuzzed_json_bodies_on_every_post_route(client: Any) -> None:
    rng = random.Random(20261201)
    statuses: dict[str, list[int]] = {route: [] for route in VALID}
    for _ in range(600):
        route = rng.choice(list(VALID))
        body = _mutate(rng, rng.choice(VALID[route]))
        if isinstance(body, dict) and body.get("stream") is True:
            body.setdefault("max_tokens", 2)
        sent = _encode(body)
        statuses[route].append(_check(route, sent, client.post(route, content=sent, headers=_json_type())))
    for route, seen in statuses.items():  # every route took both paths
        assert any(s == 200 for s in seen) and sum(400 <= s < 500 for s in seen) > 20, (route, seen)


def _json_type() -> dict[str, str]:
    return {"content-type": "application/json"}


def test_raw_bytes_and_broken_json(client: Any) -> None:
    rng = random.Random(7)
    broken = [
        b"",
        b"{",
        b"}",
        b"[",
        b'{"model": ',
        b'{"prompt": "x"',
        b"\x00" * 10,
        b"\xff" * 20,
        b"{}" * 3,
        b'{"input": "\\ud800"}',
        b'{"input": "\\uZZZZ"}',
        b'{"a": 1,}',
        b"{'a': 1}",
        b"nul",
        b"tru",
        b"1e400",
        b'{"input": [' + b"1," * 5000 + b"1]}",
        b'{"input": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        b'{"input": "' + b"a" * 40_000 + b'"}',  # over the body limit
        b"\xef\xbb\xbf{}",
        b'{"model": "embed", "input": ["a"]}\n\n{"x": 1}',
    ]
    bodies = broken + [rng.randbytes(rng.randint(1, 300)) for _ in range(80)]
    for raw in bodies:
        route = rng.choice(list(VALID))
        status = _check(route, raw, client.post(route, content=raw, headers=_json_type()))
        assert 400 <= status < 500, raw[:100]


def test_content_types(client: Any) -> None:
    rng = random.Random(11)
    for _ in range(80):
        route = rng.choice(list(VALID))
        ctype = rng.choice(CONTENT_TYPES)
        sent = _encode(rng.choice(VALID[route]))
        headers = {"content-type": ctype} if ctype is not None else {}
        status = _check(route, sent, client.post(route, content=sent, headers=headers))
        media = (ctype or "").split(";")[0].strip()
        if media in ("application/xml", "text/html", "multipart/form-data", "image/png", "application/cbor"):
            assert status == 415


def test_get_routes_and_paths(client: Any) -> None:
    rng = random.Random(3)
    junk = ["gpt-4", "llama/", "..%2f..%2fetc", "%00", "%ff%fe", "a" * 3000, "llama?x=1", "%F0%9F%99%82", "embed%20"]
    for _ in range(60):
        path = rng.choice(
            ["/v1/models/" + rng.choice(junk), "/v1/models", "/health", "/metrics", "/v1/" + rng.choice(junk)]
        )
        method = rng.choice(["GET", "GET", "POST", "DELETE", "PATCH", "OPTIONS", "HEAD"])
        r = client.request(method, path)
        assert r.status_code < 500, (method, path, r.text[:300])
        if r.status_code >= 400 and method != "HEAD":
            assert set(r.json()["error"]) >= {"message", "type", "param", "code"}


def test_auth_headers_on_every_route(all_models: dict[str, Any], tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    good = add_key(keys, "app", models=["embed", "sentiment"], daily_quota=1000)
    config = ServerConfig(port=0, api_keys_file=str(keys), max_tokens_limit=48)
    rng = random.Random(5)
    routes = [(r, "POST") for r in VALID] + [("/v1/models", "GET"), ("/v1/models/embed", "GET"), ("/metrics", "GET")]
    with TestClient(create_app(all_models, config), raise_server_exceptions=False) as c:
        global PNG
        PNG = PNG or _png()
        for _ in range(120):
            path, method = rng.choice(routes)
            auth = rng.choice([*AUTH, f"Bearer {good}"])
            headers = {"content-type": "application/json"}
            if auth is not None:
                headers["authorization"] = auth
            sent = _encode(rng.choice(VALID[path])) if method == "POST" else b""
            status = _check(path, sent, c.request(method, path, content=sent or None, headers=headers))
            if auth != f"Bearer {good}":
                assert status == 401
            else:
                assert status in (200, 403, 404, 400)  # 403: this key may not use the model
