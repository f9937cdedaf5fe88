"""Quiet by default: third-party chatter stays off the terminal unless ``-v``; stdout carries only edgekit's output.

edgekit's own lines go to the ``edgekit.*`` loggers (stderr) and its results to stdout. While edgekit runs
third-party code (torch, transformers, optimum, onnx, onnxruntime), :func:`third_party_quiet`:

- ignores warnings raised from modules outside edgekit (torch's ``TracerWarning``, the ``aten::index``
  "incorrect results" warning, transformers' ``torch_dtype`` deprecation when it is a warning);
- raises the third-party loggers (root, optimum, transformers, onnxruntime, torch, ...) to CRITICAL, and
  labels what they do log with their own name: ORT's quantizer logs "Please consider to run pre-processing"
  on the root logger, which must never read as an edgekit warning;
- sets ONNX Runtime's default C++ logger to ERROR (severity 3), so sessions created meanwhile stay quiet;
- points ``sys.stdout`` at stderr (with ``-v``) or at nothing, so ORT's entropy / percentile calibrators,
  which print progress with ``print()``, cannot break a ``--json`` document; edgekit code that must write
  to stdout meanwhile (``run --stream``) writes through :func:`stdout`;
- turns off tqdm bars (``TQDM_DISABLE``) and the transformers / optimum loggers' own default level
  (``TRANSFORMERS_VERBOSITY``, read when those libraries are first imported inside the scope).

With verbosity >= 1 everything is shown, on stderr. Scopes nest (the inner one is a no-op) and restore the
global state they changed on exit, so the Python API and tests calling ``edgekit.cli.main`` repeatedly are
left as they were found.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = [
    "EDGEKIT_MODULES",
    "THIRD_PARTY_LOGGERS",
    "cli_logging",
    "command_scope",
    "stdout",
    "third_party_quiet",
    "verbosity",
]

# Warnings attributed to these modules are edgekit's own and always shown.
EDGEKIT_MODULES = r"(edgekit|runtimes|exporters)(\.|$)"
_NOT_EDGEKIT = rf"(?!{EDGEKIT_MODULES})"
_EDGEKIT_LOGGER_PREFIXES = ("edgekit", "runtimes", "exporters")

# The top-level loggers of the libraries edgekit drives. "" is the root logger: onnxruntime.quantization logs
# there with logging.warning(); uvicorn's error log propagates there (its log_config is None).
THIRD_PARTY_LOGGERS: tuple[str, ...] = (
    "",
    "optimum",
    "transformers",
    "onnxruntime",
    "onnx",
    "onnxscript",
    "onnx_ir",
    "torch",
    "accelerate",
    "huggingface_hub",
    "sentence_transformers",
    "urllib3",
    "httpx",
    "PIL",
    "uvicorn",
    "asyncio",
)

# Environment read by third-party libraries when they are imported (tqdm, huggingface_hub, transformers and
# optimum): the CLI imports them lazily, inside the scope, so these take effect there.
_QUIET_ENV = {
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "critical",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}

_ORT_ERROR_SEVERITY = 3  # onnxruntime severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal


@dataclass
class _State:
    verbosity: int = 0
    depth: int = 0
    real_stdout: TextIO | None = None


_STATE = _State()


def verbosity() -> int:
    """The verbosity the CLI set (``-v`` count); 0 for the Python API unless a scope was opened with more."""
    return _STATE.verbosity


def stdout() -> TextIO:
    """The stream edgekit writes its own output to: the real stdout, even inside a quiet scope."""
    return _STATE.real_stdout if _STATE.real_stdout is not None else sys.stdout


class _ToStderr:
    """A text stream forwarding to whatever ``sys.stderr`` is at write time (pytest's capture swaps it)."""

    encoding = "utf-8"
    errors = "replace"

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # Code that writes to the descriptor itself (subprocess, C extensions) reaches stderr, not stdout.
        return sys.stderr.fileno()


class _Discard(_ToStderr):
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        return None


class _NotEdgekit(logging.Filter):
    """Keeps edgekit's records out of the third-party handler: edgekit's own handler prints them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(_EDGEKIT_LOGGER_PREFIXES)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler on the *current* ``sys.stderr`` (looked up per record, so captured streams work)."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(fmt))

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:  # StreamHandler.__init__ assigns it
        return None


def _third_party_level(level: int) -> int:
    # 0: nothing but CRITICAL (failures reach the user as EdgekitErrors); -v: WARNING; -vv: INFO; -vvv: DEBUG.
    return {0: logging.CRITICAL}.get(level, max(logging.DEBUG, logging.WARNING - 10 * (level - 1)))


@contextmanager
def _logger_levels(names: tuple[str, ...], level: int) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, old in zip(loggers, saved, strict=True):
            lg.setLevel(old)


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextmanager
def _ort_severity(severity: int) -> Iterator[None]:
    # Only when onnxruntime is already imported or importable cheaply: a scope must not import it for nothing.
    ort = sys.modules.get("onnxruntime")
    if ort is None:
        try:
            import onnxruntime as ort
        except ImportError:
            yield
            return
    ort.set_default_logger_severity(severity)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)  # ORT's own default (warning)


@contextmanager
def _stdout_redirect(target: Any) -> Iterator[None]:
    saved = sys.stdout
    if _STATE.real_stdout is None:
        _STATE.real_stdout = saved
    sys.stdout = target
    try:
        yield
    finally:
        sys.stdout = saved
        if _STATE.depth <= 1:
            _STATE.real_stdout = None


@contextmanager
def third_party_quiet(level: int | None = None) -> Iterator[None]:
    """Run third-party code quietly (see the module docstring); ``level`` defaults to :func:`verbosity`."""
    if _STATE.depth:
        _STATE.depth += 1
        try:
            yield
        finally:
            _STATE.depth -= 1
        return
    level = _STATE.verbosity if level is None else level
    _STATE.depth = 1
    saved_verbosity = _STATE.verbosity
    _STATE.verbosity = level
    try:
        with ExitStack() as stack:
            stack.enter_context(_stdout_redirect(_ToStderr() if level >= 1 else _Discard()))
            # edgekit's loggers inherit the root's level: pin it first, so quieting root keeps edgekit's lines.
            own = logging.getLogger("edgekit")
            stack.enter_context(_logger_levels(("edgekit",), own.level or own.getEffectiveLevel()))
            stack.enter_context(_logger_levels(THIRD_PARTY_LOGGERS, _third_party_level(level)))
            if level < 1:
                stack.enter_context(warnings.catch_warnings())
                # Only warnings attributed to other modules are dropped; edgekit's keep Python's own filters.
                warnings.filterwarnings("ignore", module=_NOT_EDGEKIT)
                stack.enter_context(_environ(_QUIET_ENV))
                stack.enter_context(_ort_severity(_ORT_ERROR_SEVERITY))
            yield
    finally:
        _STATE.depth = 0
        _STATE.verbosity = saved_verbosity


@contextmanager
def cli_logging(verbose: int = 0, quiet: bool = False) -> Iterator[None]:
    """edgekit's handler on the ``edgekit`` logger, plus a labelled stderr handler for third-party records.

    edgekit's lines read ``[edgekit] LEVEL message``; a third-party record (shown with ``-v`` only) reads
    ``[logger.name] LEVEL message``, so ORT's root-logger warnings are never taken for edgekit's.
    """
    own = logging.getLogger("edgekit")
    own_level = logging.ERROR if quiet else max(logging.DEBUG, logging.WARNING - 10 * verbose)
    own_handler = _StderrHandler("[edgekit] %(levelname)s %(message)s")
    other_handler = _StderrHandler("[%(name)s] %(levelname)s %(message)s")
    other_handler.addFilter(_NotEdgekit())
    root = logging.getLogger()
    saved_level = own.level
    own.setLevel(own_level)
    own.addHandler(own_handler)
    root.addHandler(other_handler)
    try:
        yield
    finally:
        own.removeHandler(own_handler)
        root.removeHandler(other_handler)
        own.setLevel(saved_level)


@contextmanager
def command_scope(verbose: int = 0, quiet: bool = False) -> Iterator[None]:
    """The CLI's policy for one command: edgekit's logging, and third-party code quiet unless ``-v``."""
    with cli_logging(verbose, quiet), third_party_quiet(verbose):
        yield
