"""OpenAI compatibility of the server, in process: ``GET /v1/models/{id}``, completions with a list of prompts
(what LangChain's ``OpenAI.batch`` sends), ``n > 1``, and the parameters it refuses, each against in-process
generation with the same options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_server_api import chat_package  # noqa: F401 - the tiny Llama with a chat template

import runtimes
from runtimes.server import ServerConfig, create_app
from runtimes.server.requests import COMPAT_FIELDS


@pytest.fixture(scope="module")
def lm(lm_package: Path) -> Any:
    return runtimes.load(lm_package, threads=1)


@pytest.fixture(scope="module")
def client(lm: Any, chat_package: Path) -> Any:  # noqa: F811 - the imported fixture
    models = {"llm-fp32": lm, "chat": runtimes.load(chat_package, threads=1)}
    with TestClient(create_app(models, ServerConfig(port=0, max_tokens_limit=48))) as c:
        yield c


def test_model_card_matches_the_list(client: Any) -> None:
    listed = client.get("/v1/models").json()["data"]
    for card in listed:
        r = client.get(f"/v1/models/{card['id']}")
        assert r.status_code == 200 and r.json() == card
    err = client.get("/v1/models/llm-int8").json()["error"]
    assert err["code"] == "model_not_found" and "Did you mean 'llm-fp32'" in err["message"]


def test_a_list_of_prompts_gives_one_choice_each_in_order(client: Any, lm: Any) -> None:
    prompts = ["the quick brown", "once upon a time", "hello", "the quick brown"]
    r = client.post("/v1/completions", json={"model": "llm-fp32", "prompt": prompts, "max_tokens": 5})
    assert r.status_code == 200, r.text
    data = r.json()
    assert [c["index"] for c in data["choices"]] == [0, 1, 2, 3]
    local = [lm.generate(p, max_tokens=5) for p in prompts]
    assert [c["text"] for c in data["choices"]] == [g.text for g in local]
    assert [c["finish_reason"] for c in data["choices"]] == [g.finish_reason for g in local]
    assert data["usage"]["prompt_tokens"] == sum(g.usage.prompt_tokens for g in local)
    assert data["usage"]["completion_tokens"] == sum(g.usage.completion_tokens for g in local)


def test_a_list_of_token_id_prompts(client: Any, tokenizer: Any, lm: Any) -> None:
    ids = [tokenizer.encode("the quick").ids, tokenizer.encode("hello").ids]
    data = client.post("/v1/completions", json={"model": "llm-fp32", "prompt": ids, "max_tokens": 4}).json()
    assert [c["text"] for c in data["choices"]] == [lm.generate(i, max_tokens=4).text for i in ids]


def test_langchain_batch_of_twenty(client: Any) -> None:
    prompts = [f"prompt {i}" for i in range(20)]  # LangChain's OpenAI batch_size
    r = client.post("/v1/completions", json={"model": "llm-fp32", "prompt": prompts, "max_tokens": 1})
    assert r.status_code == 200 and len(r.json()["choices"]) == 20


def test_n_greedy_choices_are_identical(client: Any, lm: Any) -> None:
    body = {"model": "llm-fp32", "prompt": "the quick brown", "max_tokens": 6, "n": 3, "temperature": 0}
    data = client.post("/v1/completions", json=body).json()
    texts = [c["text"] for c in data["choices"]]
    assert [c["index"] for c in data["choices"]] == [0, 1, 2]
    assert texts == [lm.generate("the quick brown", max_tokens=6).text] * 3
    one = lm.generate("the quick brown", max_tokens=6).usage
    assert data["usage"]["prompt_tokens"] == one.prompt_tokens  # the prompt counts once
    assert data["usage"]["completion_tokens"] == 3 * one.completion_tokens


def test_n_seeded_choices_use_consecutive_seeds(client: Any, lm: Any) -> None:
    opts = {"max_tokens": 8, "temperature": 1.5, "top_k": 50, "seed": 11, "ignore_eos": True}
    data = client.post("/v1/completions", json={"model": "llm-fp32", "prompt": "the", "n": 3, **opts}).json()
    expected = [lm.generate("the", **{**opts, "seed": 11 + j}).text for j in range(3)]
    assert [c["text"] for c in data["choices"]] == expected
    again = client.post("/v1/completions", json={"model": "llm-fp32", "prompt": "the", "n": 3, **opts}).json()
    assert again["choices"] == data["choices"]  # a repeated request gives the same choices


def test_prompts_times_n_is_prompt_major(client: Any, lm: Any) -> None:
    body = {"model": "llm-fp32", "prompt": ["the quick", "hello"], "n": 2, "max_tokens": 3}
    texts = [c["text"] for c in client.post("/v1/completions", json=body).json()["choices"]]
    a, b = (lm.generate(p, max_tokens=3).text for p in ("the quick", "hello"))
    assert texts == [a, a, b, b]


def test_chat_n(client: Any) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "n": 2}
    data = client.post("/v1/chat/completions", json=body).json()
    assert [c["index"] for c in data["choices"]] == [0, 1]
    assert data["choices"][0]["message"] == data["choices"][1]["message"]
    assert data["choices"][0]["message"]["role"] == "assistant"


def test_generate_route_takes_n_too(client: Any, lm: Any) -> None:
    data = client.post("/v1/generate", json={"model": "llm-fp32", "prompt": "hello", "max_tokens": 3, "n": 2}).json()
    assert [c["text"] for c in data["choices"]] == [lm.generate("hello", max_tokens=3).text] * 2


@pytest.mark.parametrize("name", [n for n in COMPAT_FIELDS.names() if n != "user"])
def test_unsupported_parameters_are_named_and_listed(client: Any, name: str) -> None:
    """Each OpenAI field the server cannot honour is refused naming it, and the README lists it."""
    r = client.post("/v1/completions", json={"model": "llm-fp32", "prompt": "x", name: 12345})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == name and err["message"].startswith(f"{name} must be") and err["code"] == "invalid_request"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"`{name}`" in readme.split("### OpenAI compatibility", 1)[1].split("\n## ", 1)[0]
