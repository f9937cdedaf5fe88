"""A small client for ``edgekit serve``, standard library only (``urllib``), so it runs on the device itself.

    >>> from edgekit.client import Client
    >>> api = Client("http://127.0.0.1:8080", api_key="ek.my-app.…")                  # doctest: +SKIP
    >>> api.generate("Once upon a time", max_tokens=32)["choices"][0]["text"]          # doctest: +SKIP
    >>> for chunk in api.stream_completions("Once upon a time", max_tokens=32):        # doctest: +SKIP
    ...     print(chunk["choices"][0]["text"], end="")

Methods return the server's JSON as plain dicts, in the shapes of the cloud APIs they mirror (DeepSeek's
``/v1/generate``-style completions, OpenAI's completions / chat / embeddings). Errors come back as the
edgekit error the server raised, matched by the stable ``code`` in the body
``{"error": {"message", "type", "param", "code", "hint"}}``: a bad temperature raises ``ConfigError``, an
unknown model ``ModelNotFoundError``, a full queue ``ServerBusyError`` with ``retry_after`` seconds.

The HTTP API's own errors live here, not in ``runtimes.server``, because this client and the server both
raise them and core must never import runtimes (they are candidates for ``edgekit/errors.py``):

    EdgekitError
    ├── UsageError
    │   ├── InvalidRequestError     400  malformed JSON, invalid UTF-8, wrong types, unknown fields
    │   │   └── ChatTemplateError   400  the model has no (working) chat template, or it refused the messages
    │   ├── TaskMismatchError       400  the model's task has no such endpoint (embeddings on an LM)
    │   ├── PayloadTooLargeError    413
    │   ├── RouteNotFoundError      404  no such path
    │   ├── MethodNotAllowedError   405
    │   └── UnknownNameError
    │       └── ModelNotFoundError  404  lists the models the caller may use
    ├── AuthenticationError         401  no or invalid API key
    ├── PermissionDeniedError       403  the key may not use this model
    ├── QuotaExceededError          429  the key's daily quota is used up (retry_after: until UTC midnight)
    ├── ServerBusyError             503  the model's queue is full (retry_after: an estimate)
    ├── RequestTimeoutError         504  the request ran past the server's --timeout
    ├── APIConnectionError               the server could not be reached
    └── APIError                         any other HTTP error (status and code from the response)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from edgekit.errors import EdgekitError, UnknownNameError, UsageError

# --------------------------------------------------------------------------------------- API errors


class InvalidRequestError(UsageError):
    code = "invalid_request"


class ChatTemplateError(InvalidRequestError):
    code = "chat_template_unavailable"


class TaskMismatchError(UsageError):
    code = "model_task_mismatch"


class PayloadTooLargeError(UsageError):
    code = "payload_too_large"
    http_status = 413


class RouteNotFoundError(UsageError):
    code = "not_found"
    http_status = 404


class MethodNotAllowedError(UsageError):
    code = "method_not_allowed"
    http_status = 405


class ModelNotFoundError(UnknownNameError):
    code = "model_not_found"
    http_status = 404


class AuthenticationError(EdgekitError):
    code = "invalid_api_key"
    http_status = 401


class PermissionDeniedError(EdgekitError):
    code = "model_not_allowed"
    http_status = 403


class _RetryableError(EdgekitError):
    """An error the caller should retry after ``retry_after`` seconds (sent as the Retry-After header)."""

    def __init__(self, message: str, *, retry_after: int = 1, hint: str | None = None, param: str | None = None):
        super().__init__(message, hint=hint, param=param)
        self.retry_after = max(1, int(retry_after))


class QuotaExceededError(_RetryableError):
    code = "quota_exceeded"
    http_status = 429


class ServerBusyError(_RetryableError):
    code = "server_busy"
    http_status = 503


class RequestTimeoutError(EdgekitError):
    code = "timeout"
    http_status = 504


class APIConnectionError(EdgekitError):
    code = "connection_error"
    http_status = 503


class APIError(EdgekitError):
    """An HTTP error whose code this client does not know; ``http_status`` and ``code`` are the server's."""

    code = "api_error"


def _error_classes() -> dict[str, type[EdgekitError]]:
    """Every edgekit error class by its code, so a response's code maps back to the class the server raised."""
    found: dict[str, type[EdgekitError]] = {}
    todo: list[type[EdgekitError]] = [EdgekitError]
    while todo:
        cls = todo.pop()
        if cls.__module__ in ("edgekit.errors", __name__):
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
    if issubclass(cls, _RetryableError):
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
