"""Hostile clients on real sockets (uvicorn on 127.0.0.1 port 0): slow or stalled headers and bodies, cut
bodies, clients that leave mid-generation, and the access log. Every case asserts what the client sees and
what the server records (metrics status, audit line), and that nothing waits past the read timeout."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_support import FakeEmbedder, FakeLM, wait_for

from runtimes.server import ServerConfig, start_server

READ_TIMEOUT = 0.6


@pytest.fixture()
def audit(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture()
def server(audit: Path) -> Any:
    lm = FakeLM(token_seconds=0.02, open_gate=False)
    config = ServerConfig(port=0, read_timeout_s=READ_TIMEOUT, timeout_s=20, audit_log=str(audit))
    with start_server({"lm": lm, "embed": FakeEmbedder()}, config) as handle:
        handle.lm = lm
        yield handle


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _metric(url: str, route: str, status: int) -> int:
    text = httpx.get(f"{url}/metrics").text
    for line in text.splitlines():
        if line.startswith(f'edgekit_requests_total{{route="{route}",status="{status}"}}'):
            return int(line.rsplit(" ", 1)[1])
    return 0


def _json_body(raw: bytes) -> dict[str, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return json.loads(body)


def test_slow_headers_get_408_at_the_read_timeout(server: Any) -> None:
    sock = _connect(server.url)
    start = time.monotonic()
    sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: applic")  # and nothing more
    raw = _read_all(sock)
    took = time.monotonic() - start
    sock.close()
    assert raw.startswith(b"HTTP/1.1 408"), raw
    err = _json_body(raw)["error"]
    assert err["code"] == "request_read_timeout" and "headers did not arrive within 0.6 s" in err["message"]
    assert READ_TIMEOUT * 0.8 <= took < READ_TIMEOUT + 2


def test_a_dripping_client_is_not_kept_alive_by_its_bytes(server: Any) -> None:
    """Slowloris: one byte at a time keeps resetting an idle timer, not this one."""
    sock = _connect(server.url)
    start = time.monotonic()
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100
    closed = False
    for byte in request:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.05)
        if time.monotonic() - start > READ_TIMEOUT + 2:
            break
    raw = b"" if closed else _read_all(sock)
    took = time.monotonic() - start
    sock.close()
    assert closed or raw.startswith(b"HTTP/1.1 408"), raw
    assert took < READ_TIMEOUT + 2


def test_an_idle_connection_is_closed_quietly(server: Any) -> None:
    sock = _connect(server.url)
    start = time.monotonic()
    assert _read_all(sock) == b""  # closed, with no answer to a request never made
    assert time.monotonic() - start < READ_TIMEOUT + 2
    sock.close()


def test_a_stalled_body_gets_408_and_frees_the_request(server: Any) -> None:
    sock = _connect(server.url)
    start = time.monotonic()
    sock.sendall(
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        b'{"input": '
    )
    raw = _read_all(sock)
    took = time.monotonic() - start
    sock.close()
    assert raw.startswith(b"HTTP/1.1 408"), raw
    err = _json_body(raw)["error"]
    assert (
        err["code"] == "request_read_timeout" and "body did not arrive within 0.6 s (10 bytes came)" in err["message"]
    )
    assert took < READ_TIMEOUT + 2
    wait_for(lambda: _metric(server.url, "/v1/embeddings", 408) == 1, what="the 408 in the metrics")


def test_a_cut_body_is_a_499_not_a_500(server: Any, audit: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="edgekit.server"):
        sock = _connect(server.url)
        sock.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"input": '
        )
        time.sleep(0.1)
        sock.close()  # the client dies mid-upload
        wait_for(lambda: _metric(server.url, "/v1/embeddings", 499) == 1, what="the 499 in the metrics")
    assert _metric(server.url, "/v1/embeddings", 500) == 0
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
    wait_for(lambda: audit.exists() and '"status": 499' in audit.read_text(), what="the audit line")
    line = [json.loads(x) for x in audit.read_text().splitlines()][-1]
    assert line["status"] == 499 and line["error"] == "client_closed_request" and line["cancelled"] is True


def test_leaving_mid_generation_is_a_499(server: Any, audit: Path) -> None:
    sock = _connect(server.url)
    body = json.dumps({"model": "lm", "prompt": "x", "max_tokens": 40}).encode()
    sock.sendall(
        b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    assert server.lm.started.wait(10)
    sock.close()  # gone while the model works
    server.lm.gate.set()
    assert server.lm.closed.wait(10)  # the generation was cancelled between tokens
    wait_for(lambda: _metric(server.url, "/v1/generate", 499) == 1, what="the 499 in the metrics")
    assert _metric(server.url, "/v1/generate", 500) == 0
    wait_for(lambda: audit.exists() and '"route": "/v1/generate"' in audit.read_text(), what="the audit line")
    line = [json.loads(x) for x in audit.read_text().splitlines() if '"/v1/generate"' in x][-1]
    assert line["status"] == 499 and line["cancelled"] is True


def test_a_normal_client_is_not_affected(server: Any) -> None:
    """Keep-alive requests on one connection, each with its headers at once: no 408 in between."""
    with httpx.Client(base_url=server.url) as http:
        for _ in range(3):
            assert http.post("/v1/embeddings", json={"input": "a"}).status_code == 200
            time.sleep(READ_TIMEOUT / 3)
        assert http.get("/health").json()["status"] == "ok"


def test_access_log_one_line_per_request(server: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="edgekit.server.access"):
        with httpx.Client(base_url=server.url) as http:
            http.post("/v1/embeddings", json={"input": "a"})
            http.post("/v1/embeddings", json={"input": 5})
            http.get("/v1/models/embed")
            http.get("/nowhere")
            http.get("/a%22b%1B[31m")  # a client's path cannot forge log lines or colour the terminal
        wait_for(lambda: len([r for r in caplog.records if r.name == "edgekit.server.access"]) == 5, what="lines")
    lines = [r.getMessage() for r in caplog.records if r.name == "edgekit.server.access"]
    assert '"POST /v1/embeddings" 200' in lines[0] and "model=embed" in lines[0]
    assert '"POST /v1/embeddings" 400' in lines[1] and "error=invalid_request" in lines[1]
    assert '"GET /v1/models/embed" 200' in lines[2]
    assert '"GET /nowhere" 404' in lines[3] and "error=not_found" in lines[3]
    assert '"GET /a\\x22b\\x1b[31m" 404' in lines[4]
    assert all(line.startswith("127.0.0.1 ") for line in lines)


def test_access_log_is_quiet_without_verbose(server: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        httpx.post(f"{server.url}/v1/embeddings", json={"input": "a"})
        time.sleep(0.1)
    assert not [r for r in caplog.records if r.name == "edgekit.server.access"]


def test_oversized_headers_are_a_431(server: Any) -> None:
    sock = _connect(server.url)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    raw = _read_all_until(sock, b"}}")
    sock.close()
    assert raw.startswith(b"HTTP/1.1 431"), raw[:200]
    err = _json_body(raw)["error"]
    assert err["code"] == "headers_too_large" and "more than this server's 32768" in err["message"]
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"  # the server is unaffected


def _read_all_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_garbage_request_line_is_a_400(server: Any) -> None:
    sock = _connect(server.url)
    sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 50)  # a TLS hello to a plain port
    raw = _read_all(sock)
    sock.close()
    assert raw.startswith(b"HTTP/1.1 400"), raw[:200]
    assert _metric(server.url, "other", 500) == 0
