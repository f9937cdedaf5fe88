"""A small client for ``edgekit serve``, standard library only (``urllib``), so it runs on the device itself.

    >>> from edgekit.client import Client
    >>> api = Client("http://127.0.0.1:8080", api_key="ek.my-app.SECRET")             # doctest: +SKIP
    >>> api.generate("Once upon a time", max_tokens=32)["choices"][0]["text"]          # doctest: +SKIP
    >>> for chunk in api.stream_completions("Once upon a time", max_tokens=32):        # doctest: +SKIP
    ...     print(chunk["choices"][0]["text"], end="")

Methods return the server's JSON as plain dicts, in the shapes of the cloud APIs they mirror (DeepSeek's
``/v1/generate``-style completions, OpenAI's completions / chat / embeddings). Errors come back as the
edgekit error the server raised, matched by the stable ``code`` in the body
``{"error": {"message", "type", "param", "code", "hint"}}``: a bad temperature raises ``ConfigError``, an
unknown model ``ModelNotFoundError``, a full queue ``ServerBusyError`` with ``retry_after`` seconds.

The HTTP API's errors are classes of the one tree in :mod:`edgekit.errors` (drawn in its docstring); they
are re-exported here, so ``from edgekit.client import ServerBusyError`` keeps working.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from edgekit.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    ChatTemplateError,
    ClientClosedRequest,
    ConfigError,
    EdgekitError,
    HeadersTooLargeError,
    InvalidRequestError,
    MethodNotAllowedError,
    ModelNotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QuotaExceededError,
    RequestReadTimeoutError,
    RequestTimeoutError,
    RetryableError,
    RouteNotFoundError,
    ServerBusyError,
    ServerInternalError,
    TaskMismatchError,
    UnsupportedMediaTypeError,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "AuthenticationError",
    "ChatTemplateError",
    "ClientClosedRequest",
    "Client",
    "HeadersTooLargeError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "ModelNotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RequestReadTimeoutError",
    "RequestTimeoutError",
    "RouteNotFoundError",
    "ServerBusyError",
    "ServerInternalError",
    "TaskMismatchError",
    "UnsupportedMediaTypeError",
    "error_from_response",
]


def _error_classes() -> dict[str, type[EdgekitError]]:
    """Every edgekit error class by its code, so a response's code maps back to the class the server raised."""
    found: dict[str, type[EdgekitError]] = {}
    todo: list[type[EdgekitError]] = [EdgekitError]
    while todo:
        cls = todo.pop()
        if cls.__module__ == "edgekit.errors":
            found.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return found


def error_from_response(status: int | None, body: bytes, headers: Mapping[str, str] | None = None) -> EdgekitError:
    """The edgekit error for an HTTP error response (an ``{"error": {...}}`` body, or anything else).

    ``status`` is None for an error event inside a stream (sent after a 200): the class's own status stands.
    """
    try:
        err = json.loads(body.decode("utf-8"))["error"]
        message, code = str(err["message"]), str(err.get("code") or "")
        hint, param = err.get("hint"), err.get("param")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        message, code, hint, param = body.decode("utf-8", "replace")[:500] or f"HTTP {status}", "", None, None
    cls = _error_classes().get(code, APIError)
    exc: EdgekitError
    if issubclass(cls, RetryableError):
        exc = cls(message, retry_after=_int_header(headers, "retry-after"), hint=hint, param=param)
    else:
        exc = cls(message, hint=hint, param=param)
    if cls is APIError and code:
        exc.code = code
    if status is not None:
        exc.http_status = status
    return exc


def _int_header(headers: Mapping[str, str] | None, name: str) -> int:
    try:
        return int((headers or {}).get(name) or (headers or {}).get(name.title()) or 1)
    except ValueError:
        return 1


# ------------------------------------------------------------------------------------------ client


class Client:
    """Calls one edgekit server. ``model`` may be omitted when the server has one model for the endpoint."""

    def __init__(self, base_url: str = "http://127.0.0.1:8080", *, api_key: str | None = None, timeout: float = 120.0):
        if api_key is not None and (not isinstance(api_key, str) or not api_key.isascii() or not api_key.isprintable()):
            # HTTP headers are latin-1 at best: a pasted placeholder ("ek.my-app.…") would fail deep in urllib.
            raise ConfigError(
                "api_key must be the key printed by `edgekit serve --add-key` (printable ASCII)",
                hint="copy the whole key, e.g. ek.my-app.<43 characters>; placeholders with '…' are not keys",
                param="api_key",
            )
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    # --- endpoints -----------------------------------------------------------------------------------

    def generate(self, prompt: str | Sequence[int], *, model: str | None = None, **options: Any) -> dict[str, Any]:
        """``POST /v1/generate``: options are generation fields (max_tokens, temperature, top_p, stop, seed…)."""
        return self._post("/v1/generate", _body(model=model, prompt=prompt, **options))

    def completions(self, prompt: str | Sequence[int], *, model: str | None = None, **options: Any) -> dict[str, Any]:
        return self._post("/v1/completions", _body(model=model, prompt=prompt, **options))

    def stream_completions(
        self, prompt: str | Sequence[int], *, model: str | None = None, **options: Any
    ) -> Iterator[dict[str, Any]]:
        """The ``stream: true`` chunks of ``/v1/completions``, as dicts, until ``[DONE]``."""
        return self._stream("/v1/completions", _body(model=model, prompt=prompt, stream=True, **options))

    def chat(
        self, messages: Sequence[Mapping[str, Any]], *, model: str | None = None, **options: Any
    ) -> dict[str, Any]:
        return self._post("/v1/chat/completions", _body(model=model, messages=list(messages), **options))

    def stream_chat(
        self, messages: Sequence[Mapping[str, Any]], *, model: str | None = None, **options: Any
    ) -> Iterator[dict[str, Any]]:
        return self._stream("/v1/chat/completions", _body(model=model, messages=list(messages), stream=True, **options))

    def embeddings(self, input: str | Sequence[str], *, model: str | None = None, **options: Any) -> dict[str, Any]:
        return self._post("/v1/embeddings", _body(model=model, input=input, **options))

    def classify(self, input: str | Sequence[Any], *, model: str | None = None, **options: Any) -> dict[str, Any]:
        return self._post("/v1/classify", _body(model=model, input=input, **options))

    def models(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/models")["data"]

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    # --- transport -----------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._open(method, path, body) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def _stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        with self._open("POST", path, body) as resp:
            for raw in resp:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line.startswith("data:"):
                    continue  # blank separators and SSE comments
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:  # an error after the stream started (e.g. the server's timeout)
                    raise error_from_response(None, data.encode())
                yield event

    def _open(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                raise error_from_response(exc.code, exc.read(), dict(exc.headers.items())) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise APIConnectionError(
                f"could not reach the edgekit server at {self.base_url}: {reason}",
                hint="is `edgekit serve` running, and is the URL (host and port) right?",
            ) from None


def _body(**fields: Any) -> dict[str, Any]:
    """The JSON body: ``None`` fields are left out so the server's defaults apply."""
    return {k: v for k, v in fields.items() if v is not None}
