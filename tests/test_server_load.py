"""Load behaviour on a real uvicorn server with stand-in models the test slows down or blocks: a full queue
(503 + Retry-After), deadlines (504, and 503 for a queue wait), generation cancelled when the client goes
away, graceful shutdown, and ``edgekit serve`` as a process stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_support import FakeLM, read_sse, wait_for

from edgekit.client import Client, RequestTimeoutError
from edgekit.errors import ConfigError
from runtimes.server import ServerConfig, create_app, start_server

ROOT = Path(__file__).resolve().parents[1]


def _post_in_thread(url: str, body: dict[str, Any], out: list[Any]) -> threading.Thread:
    def run() -> None:
        try:
            out.append(httpx.post(url, json=body, timeout=30))
        except Exception as exc:
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _slots(handle: Any, model: str = "lm") -> Any:
    return handle.app.state.edgekit.slots[model]


def test_full_queue_gives_503_with_retry_after() -> None:
    lm = FakeLM(open_gate=False)
    config = ServerConfig(port=0, max_concurrency=1, queue=1, timeout_s=20)
    with start_server({"lm": lm}, config) as s:
        url = f"{s.url}/v1/generate"
        body = {"prompt": "x", "max_tokens": 3}
        first: list[Any] = []
        second: list[Any] = []
        t1 = _post_in_thread(url, body, first)
        wait_for(lm.started.is_set, what="the first generation to start")
        t2 = _post_in_thread(url, body, second)
        wait_for(lambda: _slots(s).queued == 1, what="the second request to queue")
        metrics = httpx.get(f"{s.url}/metrics").text
        assert 'edgekit_queue_depth{model="lm"} 1' in metrics and 'edgekit_requests_running{model="lm"} 1' in metrics

        r = httpx.post(url, json=body)
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "server_busy" and err["type"] == "server_busy_error"
        assert int(r.headers["retry-after"]) >= 1

        lm.gate.set()
        t1.join(10)
        t2.join(10)
        assert first[0].status_code == 200 and second[0].status_code == 200
        assert first[0].json()["choices"][0]["text"] == "xxx"
        assert 'edgekit_requests_total{route="/v1/generate",status="503"} 1' in httpx.get(f"{s.url}/metrics").text


def test_deadlines_cancel_the_generation() -> None:
    lm = FakeLM(token_seconds=0.02)
    with start_server({"lm": lm}, ServerConfig(port=0, timeout_s=0.5)) as s:
        start = time.monotonic()
        r = httpx.post(f"{s.url}/v1/generate", json={"prompt": "x", "max_tokens": 1000}, timeout=10)
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        assert time.monotonic() - start < 3
        wait_for(lm.closed.is_set, what="the timed-out generation to be cancelled")
        assert lm.tokens_made < 200
        wait_for(lambda: _slots(s).running == 0, what="the slot to be released")
        r = httpx.post(f"{s.url}/v1/generate", json={"prompt": "x", "max_tokens": 2})
        assert r.status_code == 200  # the slot is free again

        # A stream that outlives the deadline ends with an error event.
        with httpx.stream(
            "POST", f"{s.url}/v1/completions", json={"prompt": "x", "max_tokens": 1000, "stream": True}
        ) as st:
            events, done = read_sse(st.iter_lines())
        assert not done and events[-1]["error"]["code"] == "timeout"
        with pytest.raises(RequestTimeoutError) as exc:  # the client raises it from the stream
            list(Client(s.url).stream_completions("x", max_tokens=1000))
        assert exc.value.http_status == 504


def test_waiting_past_the_deadline_in_the_queue_gives_503() -> None:
    lm = FakeLM(open_gate=False)
    with start_server({"lm": lm}, ServerConfig(port=0, timeout_s=0.5, queue=4)) as s:
        first: list[Any] = []
        t = _post_in_thread(f"{s.url}/v1/generate", {"prompt": "x", "max_tokens": 1}, first)
        wait_for(lm.started.is_set, what="the first generation")
        r = httpx.post(f"{s.url}/v1/generate", json={"prompt": "x", "max_tokens": 1})
        assert r.status_code == 503 and "retry-after" in r.headers
        lm.gate.set()
        t.join(10)


def test_client_disconnect_cancels_generation() -> None:
    lm = FakeLM(token_seconds=0.02)
    with start_server({"lm": lm}, ServerConfig(port=0)) as s:
        host, port = s.url.removeprefix("http://").split(":")
        body = json.dumps({"prompt": "x", "max_tokens": 1000}).encode()
        sock = socket.create_connection((host, int(port)))
        sock.sendall(
            b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        wait_for(lm.started.is_set, what="the generation to start")
        sock.close()
        wait_for(lm.closed.is_set, what="the generation to be cancelled")
        assert lm.tokens_made < 500 and not lm.finished.is_set()
        wait_for(lambda: 'status="499"' in httpx.get(f"{s.url}/metrics").text, what="the 499 to be counted")

        # The same for a stream the client stops reading.
        lm2 = FakeLM(token_seconds=0.02)
        s.app.state.edgekit.models.models["lm"].model = lm2
        with httpx.stream(
            "POST", f"{s.url}/v1/completions", json={"prompt": "x", "max_tokens": 1000, "stream": True}
        ) as st:
            lines = st.iter_lines()
            assert next(lines).startswith("data: ")
        wait_for(lm2.closed.is_set, what="the stream's generation to be cancelled")
        assert lm2.tokens_made < 500 and not lm2.finished.is_set()


def test_graceful_shutdown_finishes_in_flight_requests() -> None:
    lm = FakeLM(token_seconds=0.02)
    s = start_server({"lm": lm}, ServerConfig(port=0, max_concurrency=2))
    plain: list[Any] = []
    t = _post_in_thread(f"{s.url}/v1/generate", {"prompt": "x", "max_tokens": 40}, plain)
    streamed: list[str] = []

    def stream() -> None:
        with httpx.stream(
            "POST", f"{s.url}/v1/completions", json={"prompt": "x", "max_tokens": 40, "stream": True}
        ) as r:
            streamed.extend(r.iter_lines())

    ts = threading.Thread(target=stream, daemon=True)
    ts.start()
    wait_for(lambda: _slots(s).running == 2, what="both requests to run")
    s.stop(timeout=30)  # returns once the server has stopped
    assert not s.thread.is_alive()
    t.join(5)
    ts.join(5)
    assert plain[0].status_code == 200 and plain[0].json()["choices"][0]["text"] == "x" * 40
    events, done = read_sse(streamed)
    assert done and "".join(e["choices"][0]["text"] for e in events) == "x" * 40
    assert not lm.closed.is_set()  # nothing was cut short
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{s.url}/health", timeout=2)


def test_edgekit_serve_process_stops_on_sigterm(embed_package: Path, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtimes.server",
            f"toy={embed_package}",  # served under an id of its own (the folder is "pkg")
            "--port",
            "0",
            "--threads",
            "1",
            "--audit-log",
            str(audit),
            "--json",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()  # type: ignore[union-attr]
            if not line and proc.poll() is not None:
                break
            m = re.search(r"serving 1 model\(s\) on (http://\S+)", line)
            url = m.group(1) if m else None
        assert url, "the server did not report its URL"
        assert httpx.get(f"{url}/health").json()["models"] == ["toy"]
        r = httpx.post(f"{url}/v1/embeddings", json={"input": ["a", "b"]})
        assert r.status_code == 200 and len(r.json()["data"]) == 2
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    report = json.loads(out)
    assert report["kind"] == "serve" and report["status"] == "ok" and report["result"]["requests"] == 2
    assert [json.loads(x)["route"] for x in audit.read_text().splitlines()] == ["/v1/embeddings"]


def test_model_ids_must_be_unique_and_present() -> None:
    class Named(FakeLM):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.manifest = type("M", (), {"name": name, "generation": None, "created_at": None})()

    with pytest.raises(ConfigError, match="two models would be served as 'same'"):
        create_app([Named("same"), Named("same")])
    with pytest.raises(ConfigError, match="at least one model"):
        create_app({})
    app = create_app([Named("a"), Named("b")])
    assert app.state.edgekit.models.ids() == ["a", "b"]
