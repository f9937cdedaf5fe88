"""Errors as HTTP answers: every failure is ``{"error": {"message", "type", "param", "code", "hint"}}``.

``code`` is the edgekit error's stable code, ``type`` the OpenAI-style family a generic client switches on,
and the status is the error's ``http_status`` (see the tree in ``edgekit/client.py`` and
``edgekit/errors.py``). Retryable errors carry Retry-After; 401 carries ``WWW-Authenticate: Bearer``.
Starlette's own 404 / 405 answers are translated here too, so even a wrong URL gets the same shape.

A bug in the server is the only way to a 500: the accounting middleware (``app.py``) catches it, logs the
traceback and answers with ``internal_error`` — never with the exception's text.
"""

from __future__ import annotations

import json
from typing import Any

from edgekit.client import MethodNotAllowedError, RouteNotFoundError
from edgekit.errors import EdgekitError

# The OpenAI error "type" for each status; statuses not listed fall back by class (4xx / 5xx).
ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    503: "server_busy_error",
    504: "timeout_error",
}


class InternalError(EdgekitError):
    code = "internal_error"
    http_status = 500


class ClientGone(Exception):
    """The client closed the connection before the answer was ready: nothing is sent (status 499 in the logs)."""


def error_body(exc: EdgekitError) -> dict[str, Any]:
    status = int(exc.http_status)
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": exc.message, "type": kind, "param": exc.param, "code": exc.code, "hint": exc.hint}}


def error_headers(exc: EdgekitError) -> dict[str, str]:
    headers = {}
    retry = getattr(exc, "retry_after", None)
    if retry is not None:
        headers["Retry-After"] = str(int(retry))
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="edgekit"'
    return headers


def error_json(exc: EdgekitError) -> bytes:
    return json.dumps(error_body(exc), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def install(app: Any, routes: list[str]) -> None:
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    def respond(exc: EdgekitError, extra: dict[str, str] | None = None) -> Response:
        headers = {**error_headers(exc), **(extra or {})}
        return JSONResponse(error_body(exc), status_code=int(exc.http_status), headers=headers)

    async def on_edgekit(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, EdgekitError)
        record = request.scope.get("edgekit")
        if record is not None:  # for the audit line
            record.error = exc.code
        return respond(exc)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "")
            err: EdgekitError = MethodNotAllowedError(
                f"{request.method} is not allowed on {request.url.path}" + (f"; use {allow}" if allow else ""),
            )
            return respond(err, {"Allow": allow} if allow else None)
        if exc.status_code == 404:
            err = RouteNotFoundError(
                f"there is no {request.url.path} on this server", hint=f"the routes are: {', '.join(routes)}"
            )
            return respond(err)
        err = EdgekitError(str(exc.detail))
        err.http_status = exc.status_code
        err.code = "http_error"
        return respond(err)

    async def on_gone(request: Request, exc: Exception) -> Response:
        return Response(status_code=499)

    app.add_exception_handler(EdgekitError, on_edgekit)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(ClientGone, on_gone)
