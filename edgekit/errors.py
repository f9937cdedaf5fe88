"""The one error hierarchy of edgekit.

Every failure a user can cause or meet is an :class:`EdgekitError` with a stable ``code`` (used in JSON
reports and HTTP error bodies), the CLI exit code, the HTTP status, and a ``hint`` that says how to fix it.
Lower libraries' exceptions (onnx, onnxruntime, optimum, torch) are translated at the boundary where we
call them, so users never see a bare traceback from a dependency.

    EdgekitError
    ├── UsageError                 bad arguments or options (exit 2, HTTP 400)
    │   ├── UnknownNameError       a registry lookup missed (task, recipe, device, provider)
    │   ├── ConfigError            a typed config rejected a field
    │   └── InvalidInputError      inference inputs with a wrong name, dtype or shape
    ├── SourceError                the model to export cannot be read or converted
    │   ├── SourceNotFoundError
    │   ├── CorruptModelError      a truncated or invalid ONNX / weights file
    │   └── UnsupportedModelError  an architecture, op or task combination we cannot export
    ├── CalibrationError           calibration data that does not match the model
    ├── AccuracyError              quantization broke the accuracy budget
    ├── OutputExistsError          refusing to overwrite an output
    ├── PackageError               a model package is missing, corrupt or too new
    │   └── ChecksumError
    ├── RuntimeBackendError        ONNX Runtime failed while loading or running
    │   └── GraphRunError          a graph failed to run during export (names the node and op)
    ├── DeviceProfileError         a device profile file is invalid
    ├── BudgetExceededError        a profile went over a latency or memory budget
    ├── MissingDependencyError     an optional extra is not installed
    ├── OutputNotWritableError     an output path that cannot be written (read-only, or under a file)
    │
    │   The HTTP API's errors (raised by ``runtimes.server``, re-raised by ``edgekit.client``):
    ├── (UsageError)
    │   ├── InvalidRequestError    400  malformed JSON, invalid UTF-8, wrong types, out-of-range numbers
    │   │   └── ChatTemplateError  400  the model has no (working) chat template, or it refused the messages
    │   ├── TaskMismatchError      400  the model's task has no such endpoint (embeddings on an LM)
    │   ├── PayloadTooLargeError   413
    │   ├── RouteNotFoundError     404  no such path
    │   ├── MethodNotAllowedError  405
    │   ├── UnsupportedMediaTypeError  415  a body that is not JSON
    │   ├── HeadersTooLargeError   431  request headers over the server's limit
    │   └── (UnknownNameError)
    │       └── ModelNotFoundError 404  lists the models the caller may use
    ├── AuthenticationError        401  no or invalid API key
    ├── PermissionDeniedError      403  the key may not use this model
    ├── RequestReadTimeoutError    408  the client sent its headers or body too slowly
    ├── RetryableError                  answered with Retry-After: retry_after seconds
    │   ├── QuotaExceededError     429  the key's daily quota is used up (retry_after: until UTC midnight)
    │   └── ServerBusyError        503  the model's queue is full (retry_after: an estimate)
    ├── ClientClosedRequest        499  the client went away first (logged, never sent)
    ├── ServerInternalError        500  a bug in the server; the traceback is logged, never sent
    ├── RequestTimeoutError        504  the request ran past the server's --timeout
    ├── APIConnectionError              the client could not reach the server
    └── APIError                        any other HTTP error (status and code from the response)
"""

from __future__ import annotations

from typing import Any


class EdgekitError(Exception):
    """Base class; ``str(err)`` is the user-facing message."""

    code: str = "edgekit_error"
    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str, *, hint: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.param = param

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "type": type(self).__name__,
            "message": self.message,
            "hint": self.hint,
            "param": self.param,
        }


class UsageError(EdgekitError):
    code = "usage_error"
    exit_code = 2
    http_status = 400


class UnknownNameError(UsageError):
    code = "unknown_name"
    http_status = 404


class ConfigError(UsageError):
    code = "invalid_config"


class InvalidInputError(UsageError):
    code = "invalid_input"


class SourceError(EdgekitError):
    code = "source_error"
    http_status = 400


class SourceNotFoundError(SourceError):
    code = "source_not_found"
    http_status = 404


class CorruptModelError(SourceError):
    code = "corrupt_model"


class UnsupportedModelError(SourceError):
    code = "unsupported_model"


class CalibrationError(EdgekitError):
    code = "calibration_mismatch"
    http_status = 400


class AccuracyError(EdgekitError):
    code = "accuracy_budget_exceeded"
    http_status = 422


class OutputExistsError(EdgekitError):
    code = "output_exists"
    http_status = 409


class PackageError(EdgekitError):
    code = "invalid_package"
    http_status = 400


class ChecksumError(PackageError):
    code = "checksum_mismatch"


class RuntimeBackendError(EdgekitError):
    code = "runtime_error"


class GraphRunError(RuntimeBackendError):
    """ONNX Runtime failed to run a graph during export; ``node`` and ``op_type`` say where when ORT does."""

    code = "graph_run_failed"

    def __init__(
        self, message: str, *, hint: str | None = None, node: str | None = None, op_type: str | None = None
    ) -> None:
        super().__init__(message, hint=hint, param=node)
        self.node = node
        self.op_type = op_type


class DeviceProfileError(EdgekitError):
    code = "invalid_device_profile"
    http_status = 400


class BudgetExceededError(EdgekitError):
    code = "budget_exceeded"
    exit_code = 3
    http_status = 422


class MissingDependencyError(EdgekitError):
    code = "missing_dependency"

    @classmethod
    def for_extra(cls, module: str, extra: str) -> MissingDependencyError:
        return cls(
            f"this needs the Python package {module!r}, which is not installed",
            hint=f"install the extra: pip install 'edgekit[{extra}]'",
        )


class OutputNotWritableError(EdgekitError):
    code = "output_not_writable"
    http_status = 400


# ------------------------------------------------------------------------------------ the HTTP API's errors
# Raised by the server (runtimes/server) and, matched by ``code``, by the client (edgekit/client.py).


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


class UnsupportedMediaTypeError(UsageError):
    code = "unsupported_media_type"
    http_status = 415


class HeadersTooLargeError(UsageError):
    code = "headers_too_large"
    http_status = 431


class ModelNotFoundError(UnknownNameError):
    code = "model_not_found"
    http_status = 404


class AuthenticationError(EdgekitError):
    code = "invalid_api_key"
    http_status = 401


class PermissionDeniedError(EdgekitError):
    code = "model_not_allowed"
    http_status = 403


class RequestReadTimeoutError(EdgekitError):
    code = "request_read_timeout"
    http_status = 408


class RetryableError(EdgekitError):
    """An error the caller should retry after ``retry_after`` seconds (sent as the Retry-After header)."""

    def __init__(self, message: str, *, retry_after: int = 1, hint: str | None = None, param: str | None = None):
        super().__init__(message, hint=hint, param=param)
        self.retry_after = max(1, int(retry_after))


class QuotaExceededError(RetryableError):
    code = "quota_exceeded"
    http_status = 429


class ClientClosedRequest(EdgekitError):
    """The client closed the connection before the answer was ready: nothing is sent; logs say 499 (nginx's)."""

    code = "client_closed_request"
    http_status = 499


class ServerInternalError(EdgekitError):
    code = "internal_error"
    http_status = 500


class ServerBusyError(RetryableError):
    code = "server_busy"
    http_status = 503


class RequestTimeoutError(EdgekitError):
    code = "timeout"
    http_status = 504


class APIConnectionError(EdgekitError):
    code = "connection_error"
    http_status = 503


class APIError(EdgekitError):
    """An HTTP error whose code the client does not know; ``http_status`` and ``code`` are the server's."""

    code = "api_error"
