"""Privacy: loading a package and running embed / generate opens no network connection."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

import runtimes


@pytest.fixture()
def blocked_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    attempts: list[str] = []

    def refuse(what: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{what}{args[1:] if what.startswith('socket.') else args}")
            raise OSError(f"network blocked by the privacy test: {what}")

        return call

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket.socket, "sendto", refuse("socket.sendto"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


def test_load_embed_generate_open_no_connection(
    blocked_network: list[str], embed_package: Path, lm_package: Path, fresh_copy: Any
) -> None:
    embed_pkg = fresh_copy(embed_package)  # fresh: the first load also writes the optimized-graph cache
    vectors = runtimes.load(embed_pkg).embed(["data stays on the device", "always"])
    assert vectors.shape == (2, 16)
    lm = runtimes.load(fresh_copy(lm_package), device="pixel-8")
    assert lm.generate("the", max_tokens=4).usage.completion_tokens >= 1
    assert "".join(lm.stream("the", max_tokens=4)) is not None
    assert blocked_network == []


def test_the_block_really_blocks(blocked_network: list[str]) -> None:
    with pytest.raises(OSError, match="network blocked"):
        socket.create_connection(("127.0.0.1", 9))
    assert blocked_network
