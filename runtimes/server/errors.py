"""Errors as HTTP answers: every failure is ``{"error": {"message", "type", "param", "code", "hint"}}``.

``code`` is the edgekit error's stable code, ``type`` the OpenAI-style family a generic client switches on,
and the status is the error's ``http_status`` (the tree is drawn in ``edgekit/errors.py``). Retryable errors
carry Retry-After; 401 carries ``WWW-Authenticate: Bearer``.

This module is the server's one exception boundary: :func:`translate` maps whatever a request raised to an
edgekit error (the table ``FOREIGN`` for the libraries' own exceptions: Starlette's 404 / 405 and client
disconnects), :func:`install` answers with it, and the accounting middleware (``app.py``) sends anything
unforeseen through the same :func:`translate`, which makes it ``internal_error`` — the traceback goes to the
log, never to the client. Client input never reaches that last row: the request parsers refuse it with a 4xx.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgekit.errors import (
    ClientClosedRequest,
    EdgekitError,
    InvalidRequestError,
    MethodNotAllowedError,
    RouteNotFoundError,
    ServerInternalError,
)

log = logging.getLogger("edgekit.server")

InternalError = ServerInternalError  # the name this module exported before the classes moved to edgekit.errors

# The OpenAI error "type" for each status; statuses not listed fall back by class (4xx / 5xx).
ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    408: "timeout_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    503: "server_busy_error",
    504: "timeout_error",
}

# Statuses that mean the client's request was refused before any model work was done for it: a key charged
# for it gets the request back (see ``RequestRecord.refund`` in app.py).
_NOT_CHARGED = frozenset({400, 404, 405, 408, 413, 415, 503})


@dataclass(frozen=True, kw_only=True)
class Foreign:
    """A library's exception and the edgekit error it stands for."""

    load: Callable[[], type[BaseException]]  # imported when first needed: Starlette is the serve extra
    to_edgekit: Callable[[Any, Any], EdgekitError]  # (exception, request scope) -> error


def _http_exception() -> type[BaseException]:
    from starlette.exceptions import HTTPException

    return HTTPException


def _client_disconnect() -> type[BaseException]:
    from starlette.requests import ClientDisconnect

    return ClientDisconnect


def _from_http(exc: Any, scope: Any) -> EdgekitError:
    path, method = scope.get("path", ""), scope.get("method", "")
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        err: EdgekitError = MethodNotAllowedError(
            f"{method} is not allowed on {path}" + (f"; use {allow}" if allow else ""),
            hint=f"this route takes {allow}" if allow else None,
        )
        err.allow = allow  # type: ignore[attr-defined]
        return err
    if exc.status_code == 404:
        routes = scope.get("edgekit_routes") or []
        return RouteNotFoundError(f"there is no {path} on this server", hint=f"the routes are: {', '.join(routes)}")
    err = InvalidRequestError(str(exc.detail), hint="check the request against the API reference in the README")
    err.http_status = exc.status_code
    err.code = "http_error"
    return err


def client_gone() -> ClientClosedRequest:
    return ClientClosedRequest(
        "the client closed the connection before the answer was ready",
        hint="if the client gave up on purpose, nothing is wrong; otherwise raise the client's own timeout",
    )


def _from_disconnect(exc: Any, scope: Any) -> EdgekitError:
    return client_gone()


FOREIGN: tuple[Foreign, ...] = (
    Foreign(load=_http_exception, to_edgekit=_from_http),
    Foreign(load=_client_disconnect, to_edgekit=_from_disconnect),
)


def translate(exc: BaseException, scope: Any) -> EdgekitError:
    """The edgekit error for anything a request raised; unforeseen exceptions are a logged internal error."""
    if isinstance(exc, EdgekitError):
        return exc
    for row in FOREIGN:
        if isinstance(exc, row.load()):
            return row.to_edgekit(exc, scope)
    request_id = getattr(scope.get("edgekit"), "request_id", "?")
    log.error("internal error on %s %s (request %s)", scope.get("method"), scope.get("path"), request_id, exc_info=exc)
    return ServerInternalError(
        "the server failed on this request; it is logged",
        hint=f"a bug: report it with the request id {request_id} (rerun the server with --debug for details)",
    )


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
    allow = getattr(exc, "allow", "")
    if allow:
        headers["Allow"] = allow
    if exc.http_status == 408:
        headers["Connection"] = "close"
    return headers


def error_json(exc: EdgekitError) -> bytes:
    return json.dumps(error_body(exc), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def settle(scope: Any, exc: EdgekitError) -> None:
    """Record the error for the metrics and the audit line, and give back a quota charge it does not deserve."""
    record = scope.get("edgekit")
    if record is None:
        return
    record.error = exc.code
    if isinstance(exc, ClientClosedRequest):
        record.cancelled = True
    if int(exc.http_status) in _NOT_CHARGED and record.refund is not None:
        refund, record.refund = record.refund, None
        refund()


def handled() -> tuple[type[BaseException], ...]:
    """The exceptions answered by the handler ``install`` registers (the rest are the 500 boundary's)."""
    return (EdgekitError, *(row.load() for row in FOREIGN))


def install(app: Any, routes: list[str]) -> Callable[[Any, Exception], Any]:
    """Register the error handler on ``app`` and return it (the app's direct routes call it too)."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    async def on_error(request: Request, exc: Exception) -> Response:
        request.scope["edgekit_routes"] = routes
        err = translate(exc, request.scope)
        settle(request.scope, err)
        return JSONResponse(error_body(err), status_code=int(err.http_status), headers=error_headers(err))

    for kind in handled():
        app.add_exception_handler(kind, on_error)
    return on_error
