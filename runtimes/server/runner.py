"""Running the app on uvicorn: in the foreground (``edgekit serve``) or in a background thread (tests, apps).

The listening socket is bound here, before uvicorn starts, so ``port=0`` gives a real port to report and a
bind failure is a clear error rather than a log line. Shutdown is graceful: uvicorn stops accepting, lets
in-flight requests (streams included) finish for up to ``shutdown_timeout_s``, then the app's lifespan joins
the model threads and closes the audit log. In the foreground, SIGINT / SIGTERM start it (a second SIGINT
forces it); in a thread, :meth:`ServerHandle.stop` does.

Slow clients: uvicorn bounds the idle time between requests (``timeout_keep_alive``) and the header size
(h11's incomplete-event limit) but not the time a client takes to send its headers, so one that sends a
byte a second (slowloris) would hold its connection for ever. The HTTP protocol here is uvicorn's h11 one
with a header timer: ``read_timeout_s`` from the connection (or the previous response) to the end of the
request's headers, then a 408 and the connection closed. The body's own timeout is the app's (``read_body``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgekit.errors import ConfigError, EdgekitError, MissingDependencyError, RequestReadTimeoutError
from runtimes.server.config import ServerConfig


def bind(config: ServerConfig) -> socket.socket:
    host = config.host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP, and
    # without it Nagle's algorithm holds each response's body behind its headers for a delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, config.port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
            hint="pick another --port (0 picks a free one), or stop what is using it",
            param="port",
        ) from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_server(app: Any, config: ServerConfig) -> Any:
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError.for_extra("uvicorn", "serve") from None
    cfg = uvicorn.Config(
        app,
        log_config=None,  # keep edgekit's logging setup
        access_log=False,  # the audit log is the access log
        lifespan="on",
        ws="none",
        server_header=False,
        timeout_graceful_shutdown=math.ceil(config.shutdown_timeout_s),
        http=_timed_h11(config.read_timeout_s),
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=_MAX_HEADER_BYTES,
    )
    return uvicorn.Server(cfg)


_MAX_HEADER_BYTES = 32 * 1024  # h11's buffer for a partial request head; more is a 400 from uvicorn (see app.py)


def _timed_h11(seconds: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose request headers take longer than ``seconds``."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from runtimes.server.errors import error_json

    class TimedH11Protocol(H11Protocol):
        _header_timer: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.transport = _CoalescingTransport(transport, self.loop)  # the cycles write through this one
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the headers are in (or the connection failed)
                self._disarm()

        def on_response_complete(self) -> None:
            self.transport.flush()  # the whole response in one send, now rather than at the end of the step
            self.transport.hold()
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request on this connection gets the same bound

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if isinstance(self.transport, _CoalescingTransport):
                self.transport.discard()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if not self.conn.trailing_data[0]:
                self.transport.close()  # nothing was sent: an idle connection, close it quietly
                return
            body = error_json(
                RequestReadTimeoutError(
                    f"the request headers did not arrive within {seconds:g} s",
                    hint="send the request line and headers at once",
                )
            )
            head = (
                "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                f"content-length: {len(body)}\r\n\r\n"
            )
            # h11 cannot answer a request it has not parsed yet: the bytes go straight to the transport.
            self.transport.write(head.encode("ascii") + body)
            self.transport.close()
            client = self.client[0] if self.client else "-"
            logging.getLogger("edgekit.server.access").info('%s "- -" 408 (request headers too slow)', client)

    return TimedH11Protocol


class _CoalescingTransport:
    """A connection's transport that joins the writes of one event-loop step into one ``send``.

    uvicorn's h11 cycle writes a response's head and its body separately: two ``send`` calls, and on loopback
    two packets, each waking the client (which parses the head, then blocks again for the body). A fixed cost
    per request, a tenth of a millisecond and more when client and server share a core. Here a response's
    writes are held until it completes (the protocol flushes then) or the step ends (a ``call_soon``: a
    stream's head leaves at once, and its chunks are not held at all), never more than ``_MAX_HELD`` bytes,
    so the transport's own flow control (pause_writing past its high-water mark) still sees every byte.
    Everything else is the transport's.
    """

    _MAX_HELD = 64 * 1024

    def __init__(self, transport: Any, loop: Any) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._size = 0
        self._flush_handle: Any = None
        self._holding = True  # from the start of a response to its first flush

    def hold(self) -> None:
        """Hold the writes of the next response (the protocol calls this once a response is complete)."""
        self._holding = True

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, pause_reading, ...
        return getattr(self._transport, name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._holding:  # a stream's chunks, once its head is out: no reason to wait
            self._transport.write(data)
            return
        self._held.append(bytes(data))
        self._size += len(data)
        if self._size >= self._MAX_HELD:
            self.flush()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self.flush)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._holding = False
        if self._held:
            data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
            self._held, self._size = [], 0
            self._transport.write(data)

    def discard(self) -> None:
        """The connection is gone: what is held cannot be sent."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._held, self._size = [], 0

    def get_write_buffer_size(self) -> int:
        return int(self._transport.get_write_buffer_size()) + self._size

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()  # as a transport's close sends what is buffered first
        self._transport.close()

    def abort(self) -> None:
        self.discard()
        self._transport.abort()


def make_app(models: Mapping[str, Any] | Sequence[Any], config: ServerConfig) -> Any:
    try:
        from runtimes.server.app import create_app
    except ImportError as exc:
        raise MissingDependencyError.for_extra(exc.name or "fastapi", "serve") from None
    return create_app(models, config)


@dataclass
class ServerHandle:
    """A server running in a background thread."""

    url: str
    app: Any
    server: Any
    thread: threading.Thread

    def stop(self, timeout: float | None = 60.0) -> None:
        """Graceful: in-flight requests finish first. Returns when the server has stopped (or ``timeout``)."""
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_server(
    models: Mapping[str, Any] | Sequence[Any], config: ServerConfig | None = None, *, ready_timeout: float = 30.0
) -> ServerHandle:
    """Start serving in a daemon thread and return once the server answers (``handle.url``)."""
    config = config or ServerConfig(port=0)
    app = make_app(models, config)
    sock = bind(config)
    server = _uvicorn_server(app, config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # SystemExit from a failed startup included: report it to the caller
            failure.append(exc)

    thread = threading.Thread(target=run, name="edgekit-server", daemon=True)
    thread.start()
    until = time.monotonic() + ready_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > until:
            server.should_exit = True
            sock.close()
            raise EdgekitError(f"the server did not start: {failure[0] if failure else 'timed out'}")
        time.sleep(0.01)
    return ServerHandle(url=url_of(sock), app=app, server=server, thread=thread)


def serve_forever(
    models: Mapping[str, Any] | Sequence[Any],
    config: ServerConfig,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Serve in this thread until SIGINT / SIGTERM; returns a summary once stopped."""
    app = make_app(models, config)
    sock = bind(config)
    url = url_of(sock)
    server = _uvicorn_server(app, config)
    if on_ready is not None:
        _notify_when_started(server, lambda: on_ready(url))
    started = time.time()
    with _signals_end_the_server():
        server.run(sockets=[sock])
    state = app.state.edgekit
    return {
        "url": url,
        "models": state.models.ids(),
        "requests": state.metrics.requests_total(),
        "uptime_seconds": round(time.time() - started, 3),
    }


@contextlib.contextmanager
def _signals_end_the_server() -> Iterator[None]:
    """uvicorn handles SIGINT / SIGTERM while it serves, then re-raises them to the handlers found at start,
    which would kill the process (SIGTERM) or raise KeyboardInterrupt (SIGINT) after a clean shutdown. Here a
    stop signal is the normal end of ``edgekit serve``: the handlers it re-raises to do nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _notify_when_started(server: Any, callback: Callable[[], None]) -> None:
    def watch() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.02)
        if server.started:
            callback()

    threading.Thread(target=watch, name="edgekit-server-ready", daemon=True).start()
