"""The one error hierarchy of edgekit, and the one table that translates other libraries' exceptions into it.

Every failure a user can cause or meet is an :class:`EdgekitError` with a stable ``code`` (used in JSON
reports and HTTP error bodies), the CLI exit code, the HTTP status, and a ``hint`` that says how to fix it
(each class has a default hint, so no error goes out without one). Lower libraries' exceptions (onnx,
onnxruntime, numpy, tokenizers, safetensors, the OS) are translated at one boundary per surface by
:func:`translate`, driven by the :data:`TRANSLATIONS` table: the CLI's ``main``, the Python entry points
(decorated with :func:`edgekit_boundary`) and the HTTP server's error handler. Anything the table does not
know becomes :class:`InternalError`: a bug in edgekit, never a bare traceback.

    EdgekitError
    ├── UsageError                 bad arguments or options (exit 2, HTTP 400)
    │   ├── UnknownNameError       a registry lookup missed (task, recipe, device, provider)
    │   ├── ConfigError            a typed config rejected a field
    │   │   └── OutOfBoundsError   a number outside the range edgekit accepts
    │   ├── InvalidInputError      inference inputs with a wrong name, dtype or shape
    │   │   └── EncodingError      text that is not valid UTF-8
    │   ├── InvalidPathError       a path names a directory where a file is needed, or the reverse
    │   └── FileMissingError       a file the command needs does not exist
    ├── SourceError                the model to export cannot be read or converted
    │   ├── SourceNotFoundError
    │   ├── CorruptModelError      a truncated or invalid ONNX / weights file
    │   ├── CorruptFileError       a data, tokenizer, JSON or archive file that cannot be parsed
    │   └── UnsupportedModelError  an architecture, op or task combination we cannot export
    ├── CalibrationError           calibration data that does not match the model
    ├── AccuracyError              quantization broke the accuracy budget
    ├── SlowerThanFp32Error        a quantized package is not faster than its fp32 graph on this host
    │   └── DeviceSlowerThanFp32Error  ... estimated slower on a target device (only when asked to refuse)
    ├── OutputExistsError          refusing to overwrite an output
    ├── PackageError               a model package is missing, corrupt or too new
    │   └── ChecksumError
    ├── RuntimeBackendError        ONNX Runtime failed while loading or running
    │   └── GraphRunError          a graph failed to run during export (names the node and op)
    ├── DeviceProfileError         a device profile file is invalid
    ├── BudgetExceededError        a profile went over a latency or memory budget
    ├── MissingDependencyError     an optional extra is not installed
    ├── OutputNotWritableError     an output path that cannot be written (read-only, or under a file)
    ├── FileSystemError            the OS refused a read or write
    │   ├── FilePermissionError
    │   ├── DiskFullError
    │   └── ReadOnlyFileSystemError
    ├── OutOfMemoryError           the work needs more memory than this machine has
    ├── InternalError              a bug in edgekit (anything the table does not know)
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

import errno
import functools
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class EdgekitError(Exception):
    """Any edgekit failure (the base class); its message is what the user sees."""

    code: str = "edgekit_error"
    exit_code: int = 1
    http_status: int = 500
    default_hint: str = "rerun with --debug for details"

    def __init__(self, message: str, *, hint: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint
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
    """Bad arguments or options."""

    code = "usage_error"
    exit_code = 2
    http_status = 400
    default_hint = "see `edgekit COMMAND --help` for the accepted arguments"


class UnknownNameError(UsageError):
    """A registry lookup missed: task, recipe, device, provider or command."""

    code = "unknown_name"
    http_status = 404
    default_hint = "the message lists the known names; pick one of them"


class ConfigError(UsageError):
    """A typed config (recipe, generation, session options) rejected a field."""

    code = "invalid_config"
    default_hint = "fix the named option; the message says what it accepts"


class OutOfBoundsError(ConfigError):
    """A number outside the range edgekit accepts (threads, sample counts, shapes, tokens)."""

    code = "out_of_bounds"
    default_hint = "pass a value inside the range the message gives"


class InvalidInputError(UsageError):
    """Inference inputs with a wrong name, dtype, shape or content."""

    code = "invalid_input"
    default_hint = "`edgekit inspect PACKAGE` lists the inputs the model expects"


class EncodingError(InvalidInputError):
    """Text (a prompt, a text file, a TOML or JSON file) that is not valid UTF-8."""

    code = "invalid_encoding"
    default_hint = "save the text as UTF-8 (e.g. iconv -t UTF-8), and pass prompts as UTF-8 strings"


class InvalidPathError(UsageError):
    """A path names a directory where a file is needed, or goes through a file as if it were a directory."""

    code = "invalid_path"
    default_hint = "check the path: a file where a file is expected, a directory where a directory is"


class FileMissingError(UsageError):
    """A file the command needs does not exist."""

    code = "file_not_found"
    http_status = 404
    default_hint = "check the path (relative paths start at the current directory)"


class SourceError(EdgekitError):
    """The model to export cannot be read or converted."""

    code = "source_error"
    http_status = 400
    default_hint = "pass a HF model directory, an .onnx file, a package, or file.py:factory --weights W"


class SourceNotFoundError(SourceError):
    """The source model or data file does not exist."""

    code = "source_not_found"
    http_status = 404
    default_hint = "check the path; pass a HF model directory, an .onnx file, or file.py:factory --weights W"


class CorruptModelError(SourceError):
    """A truncated or invalid ONNX graph or weights file."""

    code = "corrupt_model"
    default_hint = "the file is damaged or not a model: export or download it again"


class CorruptFileError(SourceError):
    """A data, tokenizer, JSON or archive file that cannot be parsed."""

    code = "corrupt_file"
    default_hint = "the file is damaged or in another format: write it again with the tool that made it"


class UnsupportedModelError(SourceError):
    """An architecture, op or task combination edgekit cannot export."""

    code = "unsupported_model"
    default_hint = "try another --task or --recipe; `edgekit export --help` lists them"


class CalibrationError(EdgekitError):
    """Calibration or validation data that does not match the model."""

    code = "calibration_mismatch"
    http_status = 400
    default_hint = "give an .npz of arrays named like the model inputs, a folder of images, or a .txt of lines"


class AccuracyError(EdgekitError):
    """Quantization broke the accuracy budget; nothing was written."""

    code = "accuracy_budget_exceeded"
    http_status = 422
    default_hint = "try a wider recipe or raise --max-accuracy-drop"


class SlowerThanFp32Error(EdgekitError):
    """A quantized package measured slower than the fp32 graph of its export on this host; nothing was written."""

    code = "slower_than_fp32"
    http_status = 422
    default_hint = "pass on_slower='warn' (CLI: --allow-slower) to keep it anyway, or try another recipe"


class SlowerThanFp32Warning(UserWarning):
    """A quantized package kept, with on_slower='warn', although it measured slower than fp32."""


class DeviceSlowerThanFp32Error(SlowerThanFp32Error):
    """A quantized package estimated slower than fp32 on a target device, beyond the band, when asked to refuse.

    Raised with on_device_slower='refuse' (``--require-device-speedup``); nothing was written."""

    code = "slower_than_fp32_on_device"
    default_hint = "drop --require-device-speedup (on_device_slower='refuse') to keep it with a warning"


class DeviceSlowerThanFp32Warning(SlowerThanFp32Warning):
    """A quantized package kept although a target device's estimate says it is slower than fp32 (the default)."""


class OutputExistsError(EdgekitError):
    """Refusing to overwrite an output."""

    code = "output_exists"
    http_status = 409
    default_hint = "choose another -o path, or pass --force"


class PackageError(EdgekitError):
    """A model package is missing, corrupt or too new."""

    code = "invalid_package"
    http_status = 400
    default_hint = "export the package again with `edgekit export`"


class ChecksumError(PackageError):
    """A package file does not match the sha256 in its manifest."""

    code = "checksum_mismatch"
    default_hint = "the package was changed after export: export it again (or pass --no-verify at your own risk)"


class RuntimeBackendError(EdgekitError):
    """ONNX Runtime failed while loading or running the model."""

    code = "runtime_error"
    default_hint = "try another execution provider (--providers cpu) or re-export the package"


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
    """A device profile file is invalid."""

    code = "invalid_device_profile"
    http_status = 400
    default_hint = "fix the TOML file (UTF-8, valid TOML, the fields of edgekit/devices/README.md)"


class BudgetExceededError(EdgekitError):
    """A profile went over a latency or memory budget."""

    code = "budget_exceeded"
    exit_code = 3
    http_status = 422
    default_hint = "use a smaller recipe or model, or raise the budget"


class MissingDependencyError(EdgekitError):
    """An optional extra is not installed."""

    code = "missing_dependency"
    default_hint = "install the extra the message names: pip install 'edgekit[EXTRA]'"

    @classmethod
    def for_extra(cls, module: str, extra: str) -> MissingDependencyError:
        return cls(
            f"this needs the Python package {module!r}, which is not installed",
            hint=f"install the extra: pip install 'edgekit[{extra}]'",
        )


class OutputNotWritableError(EdgekitError):
    """An output path that cannot be written: a read-only directory, or a path under a file."""

    code = "output_not_writable"
    http_status = 400
    default_hint = "choose an output path in a directory you can write"


# ------------------------------------------------------------------------------------ the HTTP API's errors
# Raised by the server (runtimes/server) and, matched by ``code``, by the client (edgekit/client.py).


class InvalidRequestError(UsageError):
    """A malformed request: bad JSON, invalid UTF-8, wrong types or out-of-range numbers."""

    code = "invalid_request"


class ChatTemplateError(InvalidRequestError):
    """The model has no working chat template, or the template refused the messages."""

    code = "chat_template_unavailable"


class TaskMismatchError(UsageError):
    """The model's task has no such endpoint (embeddings from a language model)."""

    code = "model_task_mismatch"


class PayloadTooLargeError(UsageError):
    """A request body over the server's size limit."""

    code = "payload_too_large"
    http_status = 413


class RouteNotFoundError(UsageError):
    """No such path on the server."""

    code = "not_found"
    http_status = 404


class MethodNotAllowedError(UsageError):
    """The path exists but not for this HTTP method."""

    code = "method_not_allowed"
    http_status = 405


class UnsupportedMediaTypeError(UsageError):
    """A request body that is not JSON."""

    code = "unsupported_media_type"
    http_status = 415


class HeadersTooLargeError(UsageError):
    """Request headers over the server's limit."""

    code = "headers_too_large"
    http_status = 431


class ModelNotFoundError(UnknownNameError):
    """No served model has this id (the message lists the ones the caller may use)."""

    code = "model_not_found"
    http_status = 404


class AuthenticationError(EdgekitError):
    """No API key, or an invalid one."""

    code = "invalid_api_key"
    default_hint = "send the key as 'Authorization: Bearer ek.…' (create one with edgekit serve --add-key)"
    http_status = 401


class PermissionDeniedError(EdgekitError):
    """The API key may not use this model."""

    code = "model_not_allowed"
    default_hint = "use a key allowed for this model (edgekit serve --add-key NAME --allow-model MODEL)"
    http_status = 403


class RequestReadTimeoutError(EdgekitError):
    """The client sent its headers or body too slowly."""

    code = "request_read_timeout"
    default_hint = "send the whole request promptly; the server waits --read-timeout seconds"
    http_status = 408


class RetryableError(EdgekitError):
    """An error the caller should retry after ``retry_after`` seconds (sent as the Retry-After header)."""

    code = "retry_later"
    default_hint = "retry after the number of seconds in the Retry-After header"

    def __init__(self, message: str, *, retry_after: int = 1, hint: str | None = None, param: str | None = None):
        super().__init__(message, hint=hint, param=param)
        self.retry_after = max(1, int(retry_after))


class QuotaExceededError(RetryableError):
    """The key's daily quota is used up."""

    code = "quota_exceeded"
    default_hint = "wait for the quota to reset at UTC midnight, or raise the key's --daily-quota"
    http_status = 429


class ClientClosedRequest(EdgekitError):
    """The client closed the connection before the answer was ready: nothing is sent; logs say 499 (nginx's)."""

    code = "client_closed_request"
    default_hint = "nothing to fix on the server: the client closed the connection first"
    http_status = 499


class ServerInternalError(EdgekitError):
    """A bug in the server; the traceback is logged, never sent."""

    code = "internal_error"
    default_hint = "a bug in the server: the traceback is in the server log under this request id; report it"
    http_status = 500


class ServerBusyError(RetryableError):
    """The model's queue is full."""

    code = "server_busy"
    default_hint = "retry after Retry-After seconds, or start the server with a larger --queue"
    http_status = 503


class RequestTimeoutError(EdgekitError):
    """The request ran past the server's --timeout."""

    code = "timeout"
    default_hint = "ask for fewer tokens, or start the server with a larger --timeout"
    http_status = 504


class APIConnectionError(EdgekitError):
    """The client could not reach the server."""

    code = "connection_error"
    default_hint = "check the server is running and the URL (host and port) is right"
    http_status = 503


class APIError(EdgekitError):
    """An HTTP error whose code the client does not know; ``http_status`` and ``code`` are the server's."""

    code = "api_error"
    default_hint = "see the message and code the server sent"


class FileSystemError(EdgekitError):
    """The operating system refused a read or a write."""

    code = "io_error"
    default_hint = "check the path, its permissions and the free space"


class FilePermissionError(FileSystemError):
    """No permission to read or write a path."""

    code = "permission_denied"
    default_hint = "choose a path you can write (e.g. under your home directory) or fix its permissions"


class DiskFullError(FileSystemError):
    """No space left on the device being written."""

    code = "disk_full"
    http_status = 507
    default_hint = "free some space or write to another disk (TMPDIR moves the work directory)"


class ReadOnlyFileSystemError(FileSystemError):
    """The path is on a read-only file system."""

    code = "read_only_filesystem"
    default_hint = "write to a path on a writable file system"


class OutOfMemoryError(EdgekitError):
    """The work needs more memory than this machine has."""

    code = "out_of_memory"
    http_status = 413
    default_hint = "use smaller inputs (shape, batch, sample count) or a machine with more memory"


class InternalError(EdgekitError):
    """A bug in edgekit: an exception no rule of the translation table knows."""

    code = "internal"
    default_hint = "a bug in edgekit: rerun with --debug and report it with the traceback"


# ------------------------------------------------------------------------------------- translation table


@dataclass(frozen=True, kw_only=True)
class Translation:
    """One row: foreign exceptions that ``matches`` become ``target`` with ``message`` (a template).

    The template sees ``{detail}`` (the exception's first line, ONNX Runtime's status prefix removed),
    ``{filename}`` (an OSError's path, else "a file"), ``{where}`` (" (PATH)" naming the file being read, or
    ""), ``{module}`` (an ImportError's module) and ``{type}`` (the exception's class name).
    """

    name: str
    matches: Callable[[BaseException], bool]
    target: type[EdgekitError]
    message: str
    hint: str | None = None  # None: the target's default hint
    # Which file ``{where}`` may name: the reader's locals are searched for an existing file ending so.
    files: tuple[str, ...] = ("",)

    def build(self, exc: BaseException) -> EdgekitError:
        return self.target(self.message.format(**_fields(exc, self.files)), hint=self.hint)


_ORT_STATE = "onnxruntime.capi.onnxruntime_pybind11_state"
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : [A-Z_]+ : ")
_MAX_DETAIL = 300
_MAX_PATH = 4096


def _fields(exc: BaseException, files: tuple[str, ...] = ("",)) -> dict[str, str]:
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    detail = _ORT_PREFIX.sub("", lines[0] if lines else type(exc).__name__)
    filename = getattr(exc, "filename", None) or _path_in_traceback(exc, files)
    return {
        "detail": detail[:_MAX_DETAIL],
        "filename": str(filename) if filename else "a file",
        "where": f" ({filename})" if filename else "",
        "module": str(getattr(exc, "name", None) or "?"),
        "type": type(exc).__name__,
    }


def _path_in_traceback(exc: BaseException, files: tuple[str, ...]) -> str | None:
    """The innermost existing file named by a local (a path or a path string) of the frames ``exc`` went through.

    UnicodeDecodeError, JSONDecodeError, BadZipFile and the parsers' errors do not say which file they were
    reading; the reader that called them nearly always holds it in a local (``path``, ``file``), and a
    message naming the file is worth this look. Reads frame locals only; never raises.
    """
    from pathlib import PurePath

    found: str | None = None
    tb = exc.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if not isinstance(value, (PurePath, str)) or not 0 < len(str(value)) < _MAX_PATH:
                continue
            if str(value).endswith(files) and _is_file(value):
                found = str(value)
        tb = tb.tb_next
    return found


def _is_file(value: Any) -> bool:
    import os

    try:
        return os.path.isfile(value)
    except (OSError, ValueError):  # embedded NUL, or a name too long for the OS
        return False


def _foreign(module: str, *names: str) -> Iterator[type]:
    """The named classes of ``module`` if it was imported: an exception of an unimported module cannot exist,
    so the predicates never import anything (``import edgekit`` stays light, and so does an error path)."""
    mod = sys.modules.get(module)
    for name in names:
        cls = getattr(mod, name, None) if mod is not None else None
        if isinstance(cls, type):
            yield cls


def _of(module: str, *names: str, text: str | None = None) -> Callable[[BaseException], bool]:
    def matches(exc: BaseException) -> bool:
        return isinstance(exc, tuple(_foreign(module, *names))) and (text is None or text in str(exc))

    return matches


def _builtin(cls: type[BaseException], *, text: str | None = None) -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, cls) and (text is None or text in str(exc))


def _errno(*codes: int) -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, OSError) and exc.errno in codes


def _ort_load_failure(exc: BaseException) -> bool:
    # ORT reports an inconsistent graph as InvalidArgument too; at load time its message says so.
    return _of(_ORT_STATE, "InvalidArgument", "InvalidGraph")(exc) and "Load model" in str(exc)


def _tokenizer_parse(exc: BaseException) -> bool:
    # The tokenizers extension raises a bare ``Exception`` carrying serde's "... at line L column C".
    return (
        type(exc) is Exception
        and "tokenizers" in sys.modules
        and re.search(r"at line \d+ column \d+", str(exc)) is not None
    )


def _signature_mismatch(exc: BaseException) -> bool:
    # A Python caller passed an option the entry point (or its options dataclass) does not take.
    text = str(exc)
    return (
        isinstance(exc, TypeError)
        and re.search(r"\(\) (got an unexpected keyword|missing \d+ required)", text) is not None
    )


_FOREIGN_FRAMEWORKS = frozenset({"tensorflow", "tf_keras", "flax", "jax"})
_UTF8 = "save the file as UTF-8 (e.g. `iconv -f latin1 -t UTF-8 FILE`): calibration text, device TOML, JSON"

TRANSLATIONS: tuple[Translation, ...] = (
    # --- onnxruntime: its pybind11 status exceptions, by status
    Translation(
        name="onnxruntime NoSuchFile",
        matches=_of(_ORT_STATE, "NoSuchFile", "NoModel"),
        target=FileMissingError,
        message="ONNX Runtime found no model file: {detail}",
    ),
    Translation(
        name="onnxruntime InvalidProtobuf",
        matches=_of(_ORT_STATE, "InvalidProtobuf"),
        target=CorruptModelError,
        message="the ONNX file is truncated or not an ONNX model: {detail}",
    ),
    Translation(
        name="onnxruntime InvalidGraph / invalid model at load",
        matches=_ort_load_failure,
        target=CorruptModelError,
        message="ONNX Runtime rejects the graph: {detail}",
        hint="the graph is inconsistent (types, shapes or edges between nodes): re-export it from its source",
    ),
    Translation(
        name="onnxruntime InvalidArgument",
        matches=_of(_ORT_STATE, "InvalidArgument", "InvalidGraph"),
        target=InvalidInputError,
        message="ONNX Runtime rejects the inputs: {detail}",
    ),
    Translation(
        name="onnxruntime missing feeds",
        matches=_builtin(ValueError, text="are missing from input feed"),
        target=InvalidInputError,
        message="inputs are missing: {detail}",
    ),
    Translation(
        name="onnxruntime Fail / RuntimeException",
        matches=_of(
            _ORT_STATE,
            "Fail",
            "RuntimeException",
            "EPFail",
            "EngineError",
            "NotImplemented",
            "ModelRequiresCompilation",
        ),
        target=RuntimeBackendError,
        message="ONNX Runtime failed: {detail}",
    ),
    Translation(
        name="onnxruntime quantizer 'scale issue'",
        matches=_builtin(AssertionError, text="scale issue"),
        target=CalibrationError,
        message="the quantizer computed an invalid scale (NaN or infinite values in the calibration data?)",
        hint="remove NaN / infinite values from the calibration data: numpy.isfinite(x).all() must hold",
    ),
    # --- onnx and protobuf
    Translation(
        name="protobuf DecodeError",
        matches=_of("google.protobuf.message", "DecodeError"),
        target=CorruptModelError,
        message="the ONNX file{where} is truncated or not an ONNX model: {detail}",
        files=(".onnx",),
    ),
    Translation(
        name="onnx checker ValidationError",
        matches=_of("onnx.checker", "ValidationError"),
        target=CorruptModelError,
        message="the ONNX graph{where} is invalid: {detail}",
        files=(".onnx",),
    ),
    # --- weights and tokenizers
    Translation(
        name="safetensors SafetensorError",
        matches=_of("safetensors", "SafetensorError"),
        target=CorruptModelError,
        message="a .safetensors weights file{where} is corrupt: {detail}",
        files=(".safetensors",),
    ),
    Translation(
        name="tokenizers parse error",
        matches=_tokenizer_parse,
        target=CorruptFileError,
        message="a tokenizer file{where} cannot be parsed: {detail}",
        hint="the tokenizer file is damaged: copy tokenizer.json from the source model again or re-export",
        files=("tokenizer.json",),
    ),
    # --- archives and numpy files
    Translation(
        name="zipfile BadZipFile",
        matches=_of("zipfile", "BadZipFile"),
        target=CorruptFileError,
        message="a zip archive{where} (.zip package or .npz data) is truncated or not a zip file: {detail}",
        hint="write it again: numpy.savez for .npz data, `edgekit export` for a package",
        files=(".npz", ".zip"),
    ),
    Translation(
        name="zlib error",
        matches=_of("zlib", "error"),
        target=CorruptFileError,
        message="a compressed member of an archive{where} is corrupt: {detail}",
        hint="write it again: numpy.savez for .npz data, `edgekit export` for a package",
        files=(".npz", ".zip"),
    ),
    Translation(
        name="numpy pickled data",
        matches=_builtin(ValueError, text="allow_pickle"),
        target=CorruptFileError,
        message="the .npz{where} holds pickled Python objects, which edgekit never loads: {detail}",
        hint="save plain numeric arrays: numpy.savez(path, name=array) without object dtypes",
        files=(".npz", ".npy"),
    ),
    Translation(
        name="numpy empty file (EOFError)",
        matches=_builtin(EOFError),
        target=CorruptFileError,
        message="a data file{where} is empty or cut short: {detail}",
        hint="write it again with numpy.savez",
        files=(".npz", ".npy"),
    ),
    Translation(
        name="numpy .npy where .npz is expected",
        matches=_builtin(TypeError, text="'numpy.ndarray' object does not support the context manager"),
        target=CorruptFileError,
        message="the .npz file{where} holds one bare .npy array, not named arrays",
        hint="save named arrays: numpy.savez(path, input_name=array)",
        files=(".npz",),
    ),
    # --- text formats
    Translation(
        name="UnicodeDecodeError",
        matches=_builtin(UnicodeDecodeError),
        target=EncodingError,
        message="a text file{where} is not valid UTF-8: {detail}",
        hint=_UTF8,
    ),
    Translation(
        name="UnicodeEncodeError (lone surrogates)",
        matches=_builtin(UnicodeEncodeError),
        target=EncodingError,
        message="text is not valid Unicode (lone surrogates or undecodable bytes): {detail}",
    ),
    Translation(
        name="tomllib TOMLDecodeError",
        matches=_of("tomllib", "TOMLDecodeError"),
        target=DeviceProfileError,
        message="a TOML file{where} is invalid: {detail}",
        files=(".toml",),
    ),
    Translation(
        name="json JSONDecodeError",
        matches=_of("json", "JSONDecodeError"),
        target=CorruptFileError,
        message="a JSON file{where} cannot be parsed: {detail}",
        hint="the file is damaged or not JSON: write it again (or re-export the package)",
        files=(".json",),
    ),
    # --- the operating system
    Translation(
        name="OSError ENOSPC",
        matches=_errno(errno.ENOSPC, errno.EDQUOT),
        target=DiskFullError,
        message="no space left to write {filename}: {detail}",
    ),
    Translation(
        name="OSError EROFS",
        matches=_errno(errno.EROFS),
        target=ReadOnlyFileSystemError,
        message="{filename} is on a read-only file system",
    ),
    Translation(
        name="PermissionError",
        matches=_builtin(PermissionError),
        target=FilePermissionError,
        message="permission denied: {filename}",
    ),
    Translation(
        name="FileNotFoundError",
        matches=_builtin(FileNotFoundError),
        target=FileMissingError,
        message="no such file or directory: {filename}",
    ),
    Translation(
        name="FileExistsError",
        matches=_builtin(FileExistsError),
        target=InvalidPathError,
        message="{filename} already exists and is not a directory, where one is needed",
        hint="choose a path whose parent directories are directories (or do not exist yet)",
    ),
    Translation(
        name="IsADirectoryError",
        matches=_builtin(IsADirectoryError),
        target=InvalidPathError,
        message="{filename} is a directory, where a file is needed",
        hint="name a file inside it, e.g. DIR/report.html",
    ),
    Translation(
        name="NotADirectoryError",
        matches=_builtin(NotADirectoryError),
        target=InvalidPathError,
        message="a part of {filename} is a file, where a directory is needed",
    ),
    Translation(
        name="other OSError",
        matches=_builtin(OSError),
        target=FileSystemError,
        message="the operating system refused: {detail}",
    ),
    Translation(
        name="MemoryError",
        matches=_builtin(MemoryError),
        target=OutOfMemoryError,
        message="out of memory: {detail}",
    ),
    Translation(
        name="ModuleNotFoundError of a foreign framework",
        # transformers falls back to TensorFlow / Flax loaders for a weights file torch cannot read.
        matches=lambda exc: isinstance(exc, ModuleNotFoundError) and exc.name in _FOREIGN_FRAMEWORKS,
        target=CorruptModelError,
        message="a weights file is not a PyTorch or safetensors checkpoint (its loader wanted {module!r})",
        hint="the weights file is damaged or of another framework: save it with save_pretrained() in PyTorch",
    ),
    Translation(
        name="ModuleNotFoundError",
        matches=_builtin(ModuleNotFoundError),
        target=MissingDependencyError,
        message="this needs the Python package {module!r}, which is not installed",
        hint="install the extra that provides it: pip install 'edgekit[export]' (or [server], [vision], [audio])",
    ),
    # --- Python callers of the entry points
    Translation(
        name="TypeError from a wrong keyword",
        matches=_signature_mismatch,
        target=ConfigError,
        message="wrong arguments: {detail}",
        hint="see help(edgekit.export) / help(edgekit.load) for the accepted keyword arguments",
    ),
)


def translate(exc: BaseException, *, context: str | None = None) -> EdgekitError:
    """The edgekit error for ``exc``: itself if it is one, the first matching table row, else InternalError.

    ``context`` (e.g. the file being read) prefixes the message of a translated exception.
    """
    if isinstance(exc, EdgekitError):
        return exc
    for row in TRANSLATIONS:
        if row.matches(exc):
            err = row.build(exc)
            break
    else:
        fields = _fields(exc)
        err = InternalError(f"unexpected {fields['type']}: {fields['detail']}")
    if context:
        err = type(err)(f"{context}: {err.message}", hint=err.hint, param=err.param)
    err.__cause__ = exc
    return err


def edgekit_boundary(fn: F) -> F:
    """Make a public entry point raise only :class:`EdgekitError` (translated; the original is ``__cause__``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EdgekitError:
            raise
        except Exception as exc:  # the boundary: every other exception is translated by the table
            raise translate(exc) from exc

    return wrapper  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------- docs


def error_classes(modules: tuple[str, ...] = (__name__,)) -> list[type[EdgekitError]]:
    """Every error class defined in ``modules``, depth first in tree order (the order of the module docstring)."""
    out: list[type[EdgekitError]] = []

    def walk(cls: type[EdgekitError]) -> None:
        if cls.__module__ in modules:
            out.append(cls)
        for sub in cls.__subclasses__():
            walk(sub)

    walk(EdgekitError)
    return out


def _meaning(cls: type[EdgekitError]) -> str:
    # A class without its own docstring means what its nearest documented parent means.
    doc = next(c.__dict__.get("__doc__") for c in cls.__mro__ if c.__dict__.get("__doc__"))
    return doc.strip().splitlines()[0]


def render_error_table() -> str:
    """The README section "What edgekit refuses, and why", rendered from the classes and the table."""
    lines = [
        "| code | exit | HTTP | meaning | default hint |",
        "|---|---|---|---|---|",
    ]
    for cls in error_classes():
        lines.append(f"| `{cls.code}` | {cls.exit_code} | {cls.http_status} | {_meaning(cls)} | {cls.default_hint} |")
    lines += [
        "",
        "Exceptions of other libraries are translated at the boundary, first matching row wins:",
        "",
        "| foreign exception | becomes |",
        "|---|---|",
    ]
    lines += [f"| {row.name} | `{row.target.code}` |" for row in TRANSLATIONS]
    families: dict[str, int] = {}
    for row in TRANSLATIONS:
        family = next(c for c in row.target.__mro__ if c.__bases__ == (EdgekitError,) or c is EdgekitError)
        families[family.code] = families.get(family.code, 0) + 1
    counts = ", ".join(f"`{code}` {n}" for code, n in sorted(families.items()))
    lines += [
        "",
        f"{len(error_classes())} error codes; {len(TRANSLATIONS)} translation rows, by family: {counts}.",
        "Anything else is `internal`: a bug in edgekit, reported with a hint to rerun with --debug.",
    ]
    return "\n".join(lines) + "\n"
