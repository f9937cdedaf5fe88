"""The server's coalescing transport (runner.py): a response's head and body leave in one write, a stream's
chunks are not held, and closing or aborting a connection sends or drops what is held as a transport would."""

from __future__ import annotations

import asyncio
from typing import Any

from runtimes.server.runner import _CoalescingTransport


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.events: list[str] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.events.append("write")

    def close(self) -> None:
        self.events.append("close")

    def abort(self) -> None:
        self.events.append("abort")

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def _run(body: Any) -> Any:
    async def main() -> Any:
        raw = RecordingTransport()
        return await body(raw, _CoalescingTransport(raw, asyncio.get_running_loop()))

    return asyncio.run(main())


def test_a_response_head_and_body_leave_in_one_write() -> None:
    async def body(raw: RecordingTransport, t: _CoalescingTransport) -> None:
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        t.write(b"{}")
        t.write(b"")  # h11's end of a content-length body
        assert raw.writes == [] and t.get_write_buffer_size() == 40
        t.flush()  # what the protocol does once the response is complete
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        await asyncio.sleep(0)  # the end-of-step flush finds nothing left
        assert len(raw.writes) == 1

    _run(body)


def test_a_streams_head_leaves_at_the_end_of_the_step_and_its_chunks_at_once() -> None:
    async def body(raw: RecordingTransport, t: _CoalescingTransport) -> None:
        t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        await asyncio.sleep(0)
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
        t.write(b"5\r\ndata:\r\n")
        assert raw.writes[-1] == b"5\r\ndata:\r\n"  # not held
        t.flush()
        t.hold()  # the response is complete: the next one is held again
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert len(raw.writes) == 2

    _run(body)


def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    async def body(raw: RecordingTransport, t: _CoalescingTransport) -> RecordingTransport:
        t.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        t.close()
        assert raw.events == ["write", "close"]
        other = RecordingTransport()
        u = _CoalescingTransport(other, asyncio.get_running_loop())
        u.write(b"partial")
        u.abort()
        await asyncio.sleep(0)
        assert other.events == ["abort"]
        return other

    _run(body)


def test_more_than_the_hold_limit_is_written_at_once() -> None:
    async def body(raw: RecordingTransport, t: _CoalescingTransport) -> None:
        t.write(b"x" * (_CoalescingTransport._MAX_HELD - 1))
        assert raw.writes == []
        t.write(b"yy")
        assert [len(w) for w in raw.writes] == [_CoalescingTransport._MAX_HELD + 1]

    _run(body)


def test_everything_else_is_the_transports() -> None:
    async def body(raw: RecordingTransport, t: _CoalescingTransport) -> None:
        assert t.is_closing() is False
        t.discard()  # the connection is gone: nothing is written later
        t.write(b"late")
        t.discard()
        await asyncio.sleep(0)
        assert raw.writes == []

    _run(body)
