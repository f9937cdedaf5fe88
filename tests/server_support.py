"""Shared pieces of the server tests: stand-in models whose speed the test controls, and HTTP helpers.

Stand-ins are used where a test needs a generation that is slow or blocked on purpose (queue full,
timeouts, disconnects, shutdown); everything else runs the real runtime on packages built in code.
Imported by name (``from server_support import FakeLM, wait_for``); not a test module.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import numpy as np

__all__ = [
    "FakeEmbedder",
    "FakeLM",
    "read_sse",
    "wait_for",
]


class _FakeStream:
    def __init__(self, lm: FakeLM, max_tokens: int, cancel: Any = None) -> None:
        self.lm = lm
        self.max_tokens = max_tokens
        self.cancel = cancel
        self.made = 0
        self.closed = False
        self.finish = "length"
        self._result: Any = None

    def __iter__(self) -> _FakeStream:
        return self

    def __next__(self) -> str:
        if self.cancel is not None and self.cancel.is_set() and not self.closed:
            self.finish = "cancelled"  # as the runtime does: stop between tokens once the event is set
            self.close()
        if self.closed or self.made >= self.max_tokens:
            self._finish()
            raise StopIteration
        if not self.lm.gate.wait(timeout=30):
            raise RuntimeError("the test never opened the gate")
        time.sleep(self.lm.token_seconds)
        self.made += 1
        self.lm.tokens_made += 1
        return "x"

    def close(self) -> None:
        self.closed = True
        self.lm.closed.set()

    def _finish(self) -> None:
        from runtimes.pipelines.generate import GenerationResult, Usage

        if self._result is None:
            self._result = GenerationResult(
                text="x" * self.made,
                finish_reason=self.finish,
                usage=Usage(prompt_tokens=3, completion_tokens=self.made),
            )
            if not self.closed:
                self.lm.finished.set()

    @property
    def result(self) -> Any:
        for _ in self:
            pass
        return self._result


class FakeLM:
    """A text-generation model producing "x" per token, ``token_seconds`` apart, once ``gate`` is open."""

    task = "text-generation"
    methods = ("run", "generate", "stream")
    manifest = None
    root = None

    def __init__(self, token_seconds: float = 0.0, *, open_gate: bool = True) -> None:
        self.token_seconds = token_seconds
        self.gate = threading.Event()
        if open_gate:
            self.gate.set()
        self.started = threading.Event()
        self.closed = threading.Event()  # the server cancelled a generation
        self.finished = threading.Event()  # a generation ran to its end
        self.tokens_made = 0
        self.streams: list[_FakeStream] = []

    def stream(self, prompt: Any, config: Any, *, cancel: Any = None) -> _FakeStream:
        self.started.set()
        s = _FakeStream(self, config.max_tokens, cancel)
        self.streams.append(s)
        return s

    def generate(self, prompt: Any, config: Any, *, cancel: Any = None) -> Any:
        return self.stream(prompt, config, cancel=cancel).result


class FakeEmbedder:
    task = "feature-extraction"
    methods = ("run", "embed")
    manifest = None
    root = None

    def embed(self, texts: Any) -> np.ndarray:
        return np.ones((len(texts), 4), dtype=np.float32)


def read_sse(lines: Any) -> tuple[list[dict[str, Any]], bool]:
    """The JSON events of a server-sent-event stream, and whether it ended with ``[DONE]``."""
    events: list[dict[str, Any]] = []
    for line in lines:
        line = line.decode() if isinstance(line, bytes) else line
        if not line.startswith("data: "):
            assert line == "", f"unexpected SSE line {line!r}"
            continue
        data = line[len("data: ") :]
        if data == "[DONE]":
            return events, True
        events.append(json.loads(data))
    return events, False


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    until = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > until:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
