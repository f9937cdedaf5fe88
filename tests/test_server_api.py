"""The server's routes on real packages (a tiny Llama exported by edgekit, hand-built classifiers and an
embedder), served by uvicorn on 127.0.0.1 port 0: shapes, parity with in-process calls, streaming, chat,
metrics, the audit log, the Python client, and every kind of bad input (none of which may give a 5xx)."""

from __future__ import annotations

import base64
import io
import json
import random
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from server_support import read_sse, wait_for

import runtimes
from edgekit.client import Client, ModelNotFoundError, PayloadTooLargeError, TaskMismatchError
from edgekit.errors import ConfigError, InvalidInputError
from runtimes.server import ServerConfig, start_server

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('unsupported role ' + m['role']) }}"
    "{% endif %}"
    "<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def chat_package(lm_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with a chat template in its manifest (the manifest is not among the checksummed files)."""
    out = tmp_path_factory.mktemp("chat") / "pkg"
    shutil.copytree(lm_package, out, ignore=shutil.ignore_patterns(".edgekit-cache"))
    manifest = json.loads((out / "edgekit.json").read_text())
    manifest["generation"]["chat_template"] = CHAT_TEMPLATE
    (out / "edgekit.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="module")
def models(lm_package, chat_package, embed_package, text_cls_package, image_package, audio_package) -> dict[str, Any]:
    load = lambda p: runtimes.load(p, threads=1)  # noqa: E731
    return {
        "llama": load(lm_package),
        "llama-chat": load(chat_package),
        "embed": load(embed_package),
        "sentiment": load(text_cls_package),
        "pets": load(image_package),
        "sounds": load(audio_package),
    }


@pytest.fixture(scope="module")
def audit_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit") / "audit.jsonl"


@pytest.fixture(scope="module")
def server(models: dict[str, Any], audit_path: Path) -> Any:
    config = ServerConfig(port=0, audit_log=str(audit_path), max_body_bytes=64 * 1024, max_tokens_limit=48)
    with start_server(models, config) as handle:
        yield handle


@pytest.fixture(scope="module")
def http(server: Any) -> Any:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def _error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


# ------------------------------------------------------------------------------------------ routes


def test_health_and_models(http: Any) -> None:
    health = http.get("/health").json()
    assert health["status"] == "ok" and health["auth"] is False
    assert health["models"] == ["llama", "llama-chat", "embed", "sentiment", "pets", "sounds"]
    listed = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert listed["llama"]["task"] == "text-generation" and listed["llama"]["object"] == "model"
    assert listed["llama"]["endpoints"] == ["/v1/generate", "/v1/completions"]  # no chat template
    assert "/v1/chat/completions" in listed["llama-chat"]["endpoints"]
    assert listed["llama"]["context_window"] == 64 and listed["llama"]["max_tokens_limit"] == 48
    assert listed["embed"]["endpoints"] == ["/v1/embeddings"]
    assert listed["pets"]["endpoints"] == ["/v1/classify"]


def test_generate_has_deepseek_shape_and_matches_in_process(http: Any, models: dict[str, Any]) -> None:
    body = {"model": "llama", "prompt": "the quick brown", "max_tokens": 12, "temperature": 0}
    r = http.post("/v1/generate", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    local = models["llama"].generate("the quick brown", max_tokens=12)
    assert data["choices"][0]["text"] == local.text
    assert data["choices"][0]["index"] == 0 and data["choices"][0]["finish_reason"] == local.finish_reason
    assert data["usage"] == local.usage.to_dict()
    assert data["object"] == "text_completion" and data["model"] == "llama" and data["id"].startswith("gen-")
    assert r.headers["x-request-id"] in data["id"]


def test_completions_and_stream_agree(http: Any) -> None:
    body = {"model": "llama", "prompt": "once upon a time", "max_tokens": 16, "ignore_eos": True}
    full = http.post("/v1/completions", json=body).json()
    assert full["id"].startswith("cmpl-") and full["usage"]["completion_tokens"] == 16
    with http.stream(
        "POST", "/v1/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events, done = read_sse(r.iter_lines())
    assert done
    text_events = [e for e in events if e["choices"]]
    assert "".join(e["choices"][0]["text"] for e in text_events) == full["choices"][0]["text"]
    assert text_events[-1]["choices"][0]["finish_reason"] == "length"
    assert all(e["choices"][0]["finish_reason"] is None for e in text_events[:-1])
    assert events[-1]["choices"] == [] and events[-1]["usage"] == full["usage"]


def test_token_id_prompt_and_stop(http: Any, tokenizer: Any) -> None:
    ids = tokenizer.encode("the quick brown").ids
    by_text = http.post("/v1/completions", json={"model": "llama", "prompt": "the quick brown", "max_tokens": 8}).json()
    by_ids = http.post("/v1/completions", json={"model": "llama", "prompt": ids, "max_tokens": 8}).json()
    assert by_ids["choices"][0]["text"] == by_text["choices"][0]["text"]
    text = by_text["choices"][0]["text"]
    if len(text) > 2:
        stop = text[1:3]
        cut = http.post(
            "/v1/completions", json={"model": "llama", "prompt": "the quick brown", "max_tokens": 8, "stop": [stop]}
        ).json()
        assert cut["choices"][0]["text"] == text[: text.index(stop)] and cut["choices"][0]["finish_reason"] == "stop"


def test_chat_renders_the_template(http: Any, models: dict[str, Any]) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    r = http.post("/v1/chat/completions", json={"model": "llama-chat", "messages": messages, "max_tokens": 10})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["object"] == "chat.completion" and data["id"].startswith("chatcmpl-")
    assert data["choices"][0]["message"]["role"] == "assistant"
    # The same prompt in process: rendered by the template, encoded without a second BOS.
    tok = models["llama-chat"]  # the tokenizer's special token text is the EOS string
    prompt = "<|system|>be brief<|endoftext|><|user|>hello there<|endoftext|><|assistant|>"
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tok.root / "tokenizer.json")).encode(prompt, add_special_tokens=False).ids
    local = models["llama-chat"].generate(ids, max_tokens=10)
    assert data["choices"][0]["message"]["content"] == local.text
    assert data["usage"]["prompt_tokens"] == len(ids)

    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "llama-chat", "messages": messages, "max_tokens": 10, "stream": True},
    ) as s:
        events, done = read_sse(s.iter_lines())
    assert done and events[0]["object"] == "chat.completion.chunk"
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert streamed == local.text and events[-1]["choices"][0]["finish_reason"] == local.finish_reason


def test_chat_errors(http: Any) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    err = _error(
        http.post("/v1/chat/completions", json={"model": "llama", "messages": msgs}), 400, "chat_template_unavailable"
    )
    assert "no chat template" in err["message"]
    err = _error(
        http.post("/v1/chat/completions", json={"model": "llama-chat", "messages": [{"role": "tool", "content": "x"}]}),
        400,
    )
    assert "unsupported role tool" in err["message"]  # the template's raise_exception
    _error(http.post("/v1/chat/completions", json={"model": "llama-chat", "messages": []}), 400, "invalid_request")
    _error(http.post("/v1/chat/completions", json={"model": "llama-chat", "messages": [{"role": "user"}]}), 400)
    _error(
        http.post("/v1/chat/completions", json={"model": "llama-chat", "messages": msgs, "tools": []}),
        400,
        "invalid_request",
    )
    parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert (
        http.post("/v1/chat/completions", json={"model": "llama-chat", "messages": parts, "max_tokens": 2}).status_code
        == 200
    )


def test_embeddings_match_in_process(http: Any, models: dict[str, Any]) -> None:
    texts = ["edge devices", "run small models", "héllo wörld 🙂"]
    data = http.post("/v1/embeddings", json={"model": "embed", "input": texts}).json()
    assert data["object"] == "list" and [d["index"] for d in data["data"]] == [0, 1, 2]
    got = np.array([d["embedding"] for d in data["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, models["embed"].embed(texts), atol=1e-6)
    assert data["usage"]["prompt_tokens"] > 3
    one = http.post(
        "/v1/embeddings", json={"input": "edge devices", "encoding_format": "base64"}
    ).json()  # one embedder
    vec = np.frombuffer(base64.b64decode(one["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, got[0], atol=1e-6)


def test_classify_text_image_audio(http: Any, models: dict[str, Any]) -> None:
    data = http.post("/v1/classify", json={"model": "sentiment", "input": ["good", "bad"], "top_k": 2}).json()
    assert len(data["data"]) == 2 and len(data["data"][0]["labels"]) == 2
    local = models["sentiment"].classify(["good", "bad"], top_k=2)
    assert [lab["label"] for lab in data["data"][1]["labels"]] == [lab["label"] for lab in local[1]]
    assert data["data"][0]["labels"][0]["label"] in ("negative", "neutral", "positive")

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    img = base64.b64encode(buf.getvalue()).decode()
    pets = http.post("/v1/classify", json={"model": "pets", "input": img, "top_k": 4}).json()
    assert {lab["label"] for lab in pets["data"][0]["labels"]} == {"cat", "dog", "bird", "fish"}
    _error(http.post("/v1/classify", json={"model": "pets", "input": "bm90IGFuIGltYWdl"}), 400)  # "not an image"
    _error(http.post("/v1/classify", json={"model": "pets", "input": "/etc/passwd"}), 400)  # never a path

    clip = [0.1 * np.sin(i / 5) for i in range(1600)]
    sounds = http.post("/v1/classify", json={"model": "sounds", "input": clip, "sampling_rate": 16000}).json()
    assert sounds["data"][0]["labels"][0]["label"] in ("yes", "no")


def test_metrics_and_audit_log(http: Any, audit_path: Path) -> None:
    def generated() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in audit_path.read_text().splitlines()]
        return [rec for rec in lines if rec["route"] == "/v1/generate" and rec["status"] == 200]

    before = len(generated())
    http.post("/v1/generate", json={"model": "llama", "prompt": "secret prompt text", "max_tokens": 4})
    # Metrics are recorded as the response ends, so they may trail the client by a moment.
    wait_for(lambda: 'edgekit_tokens_total{model="llama",direction="out"}' in http.get("/metrics").text, what="metrics")
    text = http.get("/metrics").text
    assert "# TYPE edgekit_requests_total counter" in text
    assert 'edgekit_requests_total{route="/v1/generate",status="200"}' in text
    assert 'edgekit_request_duration_seconds_bucket{route="/v1/generate",le="+Inf"}' in text
    assert 'edgekit_tokens_total{model="llama",direction="in"}' in text
    assert 'edgekit_tokens_total{model="llama",direction="out"}' in text
    assert 'edgekit_queue_depth{model="llama"} 0' in text and 'edgekit_requests_running{model="llama"} 0' in text
    http.get("/no/such/route/123")
    wait_for(lambda: 'route="other",status="404"' in http.get("/metrics").text, what="the 404 in the metrics")

    wait_for(lambda: len(generated()) > before, what="the audit line")  # written just after the response
    gen = generated()[-1]
    assert set(gen) >= {
        "time",
        "key_id",
        "model",
        "route",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
    }
    assert gen["model"] == "llama" and gen["completion_tokens"] >= 1 and gen["key_id"] is None
    assert "secret prompt text" not in audit_path.read_text()  # no --log-content: no text
    assert oct(audit_path.stat().st_mode & 0o777) == "0o600"


def test_audit_log_content_only_when_asked(models: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with start_server({"llama": models["llama"]}, ServerConfig(port=0, audit_log=str(path), log_content=True)) as s:
        httpx.post(f"{s.url}/v1/generate", json={"prompt": "secret prompt text", "max_tokens": 3})
    rec = json.loads(path.read_text().splitlines()[-1])
    assert rec["prompt"] == "secret prompt text" and isinstance(rec["output"], str)


# ------------------------------------------------------------------------------------------ the client


def test_python_client(server: Any, models: dict[str, Any]) -> None:
    api = Client(server.url)
    assert api.health()["status"] == "ok"
    assert {m["id"] for m in api.models()} >= {"llama", "embed"}
    text = api.generate("the quick brown", model="llama", max_tokens=6)["choices"][0]["text"]
    assert text == models["llama"].generate("the quick brown", max_tokens=6).text
    chunks = list(api.stream_completions("the quick brown", model="llama", max_tokens=6))
    assert "".join(c["choices"][0]["text"] for c in chunks) == text
    reply = api.chat([{"role": "user", "content": "hi"}], model="llama-chat", max_tokens=4)
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert (
        "".join(
            c["choices"][0]["delta"].get("content", "")
            for c in api.stream_chat([{"role": "user", "content": "hi"}], model="llama-chat", max_tokens=4)
        )
        == reply["choices"][0]["message"]["content"]
    )
    assert len(api.embeddings(["a", "b"], model="embed")["data"]) == 2
    assert api.classify("fine", model="sentiment")["data"][0]["labels"]

    with pytest.raises(ConfigError) as exc:
        api.generate("x", model="llama", temperature=-1)
    assert exc.value.param == "temperature" and exc.value.http_status == 400
    with pytest.raises(ModelNotFoundError, match="llama"):
        api.generate("x", model="lama")
    with pytest.raises(TaskMismatchError):
        api.embeddings("x", model="llama")
    with pytest.raises(InvalidInputError, match="context window"):
        api.generate("the quick brown fox " * 40, model="llama", max_tokens=2)
    with pytest.raises(PayloadTooLargeError):
        api.embeddings(["x" * 1000] * 100, model="embed")


# ------------------------------------------------------------------------------------------ bad input

BAD_INPUTS = [
    # (name, route, raw body or JSON, status, code)
    ("malformed JSON", "/v1/generate", b'{"prompt": "x",', 400, "invalid_request"),
    ("invalid UTF-8", "/v1/generate", b'{"prompt": "\xff\xfe"}', 400, "invalid_request"),
    ("empty body", "/v1/completions", b"", 400, "invalid_request"),
    ("not an object", "/v1/completions", b"[1, 2]", 400, "invalid_request"),
    ("NaN", "/v1/generate", b'{"model": "llama", "prompt": "x", "temperature": NaN}', 400, "invalid_request"),
    ("lone surrogate", "/v1/generate", b'{"model": "llama", "prompt": "\\ud800"}', 400, "invalid_request"),
    ("deep nesting", "/v1/generate", b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "invalid_request"),
    (
        "huge integer",
        "/v1/generate",
        b'{"model": "llama", "prompt": "x", "max_tokens": ' + b"9" * 5000 + b"}",
        400,
        None,
    ),
    ("prompt wrong type", "/v1/generate", {"model": "llama", "prompt": 42}, 400, "invalid_request"),
    ("prompt batch mixed", "/v1/completions", {"model": "llama", "prompt": ["a", 1]}, 400, "invalid_request"),
    ("no prompt", "/v1/generate", {"model": "llama"}, 400, "invalid_request"),
    ("empty prompt", "/v1/generate", {"model": "llama", "prompt": ""}, 400, "invalid_input"),
    ("token id out of range", "/v1/generate", {"model": "llama", "prompt": [1, 99999]}, 400, "invalid_input"),
    (
        "temperature wrong type",
        "/v1/generate",
        {"model": "llama", "prompt": "x", "temperature": "hot"},
        400,
        "invalid_config",
    ),
    ("max_tokens bool", "/v1/generate", {"model": "llama", "prompt": "x", "max_tokens": True}, 400, "invalid_config"),
    ("max_tokens zero", "/v1/generate", {"model": "llama", "prompt": "x", "max_tokens": 0}, 400, "invalid_config"),
    (
        "max_tokens over limit",
        "/v1/generate",
        {"model": "llama", "prompt": "x", "max_tokens": 49},
        400,
        "invalid_config",
    ),
    ("top_p out of range", "/v1/completions", {"model": "llama", "prompt": "x", "top_p": 1.5}, 400, "invalid_config"),
    ("stream not bool", "/v1/completions", {"model": "llama", "prompt": "x", "stream": "yes"}, 400, "invalid_request"),
    ("n=17", "/v1/completions", {"model": "llama", "prompt": "x", "n": 17}, 400, "invalid_config"),
    ("unknown field", "/v1/generate", {"model": "llama", "prompt": "x", "temprature": 1}, 400, "invalid_request"),
    ("unknown model", "/v1/generate", {"model": "gpt-4", "prompt": "x"}, 404, "model_not_found"),
    ("model wrong type", "/v1/generate", {"model": 7, "prompt": "x"}, 400, "invalid_request"),
    ("model needed", "/v1/generate", {"prompt": "x"}, 400, "invalid_request"),  # two LMs are served
    ("wrong task", "/v1/embeddings", {"model": "llama", "input": "x"}, 400, "model_task_mismatch"),
    ("embeddings no input", "/v1/embeddings", {"model": "embed"}, 400, "invalid_request"),
    ("embeddings mixed", "/v1/embeddings", {"model": "embed", "input": ["a", 1]}, 400, "invalid_request"),
    ("embeddings too many", "/v1/embeddings", {"model": "embed", "input": ["a"] * 300}, 400, "invalid_request"),
    ("classify top_k", "/v1/classify", {"model": "sentiment", "input": "x", "top_k": 0}, 400, "invalid_request"),
    ("oversize body", "/v1/embeddings", {"model": "embed", "input": "x" * 70_000}, 413, "payload_too_large"),
]


@pytest.mark.parametrize(("name", "route", "body", "status", "code"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_a_clear_4xx(http: Any, name: str, route: str, body: Any, status: int, code: str | None) -> None:
    r = http.post(route, content=body) if isinstance(body, bytes) else http.post(route, json=body)
    err = _error(r, status, code)
    if name == "unknown model":
        assert "llama" in err["message"] and "embed" in err["message"]  # the available ones are listed
    if name == "unknown field":
        assert "temperature" in err["message"] and err["param"] == "temprature"
    if name == "max_tokens over limit":
        assert "48" in err["message"]


def test_unknown_route_and_method(http: Any) -> None:
    _error(http.get("/v1/nothing"), 404, "not_found")
    r = http.get("/v1/generate")
    _error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"


def test_fuzzed_bodies_never_give_5xx(http: Any) -> None:
    """Seeded mutations of valid bodies (types swapped, values extreme, fields dropped or added)."""
    rng = random.Random(1234)
    valid = {
        "/v1/generate": {"model": "llama", "prompt": "the quick", "max_tokens": 3},
        "/v1/completions": {"model": "llama", "prompt": "the quick", "max_tokens": 3, "stream": False},
        "/v1/chat/completions": {
            "model": "llama-chat",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3,
        },
        "/v1/embeddings": {"model": "embed", "input": ["a", "b"]},
        "/v1/classify": {"model": "sentiment", "input": "ok", "top_k": 2},
    }
    weird = [
        None,
        True,
        -1,
        0,
        2**63,
        1e308,
        -1e-308,
        "",
        "x" * 300,
        "\u0000",
        "日本🙂",
        [],
        {},
        [1, "a"],
        {"a": [None]},
        [0] * 40,
        3.5,
        "NaN",
        ["<|endoftext|>"],
    ]
    fields = [
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "stop",
        "max_tokens",
        "repetition_penalty",
        "truncate",
        "ignore_eos",
        "stream",
        "stream_options",
        "encoding_format",
        "sampling_rate",
        "n",
        "logprobs",
        "prompt",
        "messages",
        "input",
        "model",
    ]
    statuses = []
    for _ in range(250):
        route = rng.choice(list(valid))
        body: Any = dict(valid[route])
        for _ in range(rng.randint(1, 3)):
            action = rng.random()
            if action < 0.6:
                body[rng.choice(fields)] = rng.choice(weird)
            elif action < 0.8 and body:
                body.pop(rng.choice(list(body)))
            else:
                body = rng.choice(weird)
                break
        if isinstance(body, dict) and body.get("stream") is True and "max_tokens" not in body:
            body["max_tokens"] = 3
        r = http.post(route, json=body)
        statuses.append(r.status_code)
        assert r.status_code < 500, (route, body, r.text)
        if r.status_code >= 400:
            assert set(r.json()["error"]) >= {"message", "type", "param", "code"}
    assert statuses.count(200) > 10 and sum(s >= 400 for s in statuses) > 100  # both paths were exercised
    for raw in (rng.randbytes(rng.randint(0, 200)) for _ in range(40)):
        r = http.post(rng.choice(list(valid)), content=raw)
        assert 400 <= r.status_code < 500, (raw, r.text)


def test_cancel_event_stops_a_real_generation_between_tokens(models: dict[str, Any]) -> None:
    """The runtime's public ``cancel=``: what the server passes for timeouts and abandoned requests."""
    import threading

    lm = models["llama"]
    full = lm.generate("the quick brown", max_tokens=20, ignore_eos=True)
    assert full.usage.completion_tokens == 20 and full.finish_reason == "length"

    flag = threading.Event()
    flag.set()
    cut = lm.generate("the quick brown", max_tokens=20, ignore_eos=True, cancel=flag)
    assert cut.finish_reason == "cancelled"
    assert cut.usage.completion_tokens == 1 and cut.token_ids == full.token_ids[:1]

    flag = threading.Event()
    stream = lm.stream("the quick brown", max_tokens=20, ignore_eos=True, cancel=flag)
    first = next(iter(stream))
    flag.set()  # from here on, at most the token in flight
    rest = list(stream)
    assert stream.result.finish_reason == "cancelled"
    assert stream.result.usage.completion_tokens <= 3
    assert "".join([first, *rest]) == stream.result.text
    # an event never set changes nothing
    same = lm.generate("the quick brown", max_tokens=20, ignore_eos=True, cancel=threading.Event())
    assert same.token_ids == full.token_ids


def test_timeout_cancels_a_real_generation(lm_package: Path) -> None:
    """Through the whole server: the deadline sets the flag and the runtime's loop stops between tokens."""
    import time

    lm = runtimes.load(lm_package, threads=1)
    made: list[int] = []
    real_tokens = lm._pipeline.tokens

    def slow_tokens(*args: Any, **kwargs: Any) -> Any:  # 50 ms a token, so the deadline falls mid-generation
        for token in real_tokens(*args, **kwargs):
            time.sleep(0.05)
            made.append(token)
            yield token

    lm._pipeline.tokens = slow_tokens
    with start_server({"llama": lm}, ServerConfig(port=0, timeout_s=0.4)) as s:
        r = httpx.post(f"{s.url}/v1/generate", json={"prompt": "the quick", "max_tokens": 48, "ignore_eos": True})
        assert r.status_code == 504
        time.sleep(0.3)
        assert 2 <= len(made) < 20  # stopped soon after the deadline, far from 48


def test_broken_chat_template_is_reported_not_fatal(lm_package: Path, caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from runtimes.server.served import ServedModel

    model = runtimes.load(lm_package, threads=1)
    generation = SimpleNamespace(**{**vars(model.manifest.generation), "chat_template": "{% for m in messages %}"})
    stub = SimpleNamespace(
        task=model.task,
        methods=model.methods,
        root=model.root,
        manifest=SimpleNamespace(**{**vars(model.manifest), "generation": generation}),
    )
    served = ServedModel.wrap("broken", stub)
    assert served.chat is None and "does not compile" in served.chat_unavailable
    assert "chat/completions unavailable" in caplog.text
