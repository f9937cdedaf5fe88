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
    └── MissingDependencyError     an optional extra is not installed
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
