"""The audit log: one JSON line per request, appended to a file the server owner alone can read.

Each line: ``time`` (UTC, ISO 8601), ``request_id``, ``key_id`` (null without auth), ``client`` (address),
``method``, ``route``, ``model``, ``status``, ``prompt_tokens``, ``completion_tokens``, ``latency_ms``,
``error`` (the error code, if any), ``cancelled`` (the client went away first). The text of prompts and
outputs is the user's data: it is written only with ``--log-content`` (``prompt`` / ``messages`` / ``input``
and ``output``).

Lines are written with one ``write`` on a file opened with O_APPEND and flushed at once, so a crash loses at
most the line being written and concurrent writers (another server on the same file) do not interleave.

A write that fails (disk full, the file's volume gone) must not fail the request it records, but it must not
be silent either: the first failure is logged as an error (later ones once a minute), ``failure`` says why and
``/health`` reports the server "degraded" until a line is written again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError

log = logging.getLogger("edgekit.server")
_REPEAT_S = 60.0  # a failing audit log is logged again at most this often


class AuditLog:
    def __init__(self, path: str | Path, *, log_content: bool = False) -> None:
        self.path = Path(path)
        self.log_content = log_content
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"cannot open the audit log {self.path}: {exc.strerror}",
                hint="pass an --audit-log path in a directory that exists and is writable",
                param="audit_log",
            ) from None
        self._lock = threading.Lock()
        self.failure: str | None = None  # why the last write failed; None once a write succeeds
        self.lines_lost = 0
        self._logged_at = -_REPEAT_S

    def write(self, record: dict[str, Any], content: dict[str, Any] | None = None) -> None:
        line = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **record}
        if self.log_content and content:
            line.update(content)
        data = (json.dumps(line, ensure_ascii=False, default=str) + "\n").encode("utf-8", "replace")
        with self._lock:
            if self._fd < 0:
                return
            try:
                written = os.write(self._fd, data)
                if written != len(data):
                    raise OSError(f"short write ({written} of {len(data)} bytes)")
            except OSError as exc:
                self._failed(exc)
            else:
                if self.failure is not None:
                    log.warning("audit log %s: writing again (%d lines were lost)", self.path, self.lines_lost)
                self.failure = None

    def _failed(self, exc: OSError) -> None:
        self.lines_lost += 1
        self.failure = f"cannot write to {self.path}: {exc.strerror or exc} ({self.lines_lost} lines lost)"
        now = time.monotonic()
        if now - self._logged_at >= _REPEAT_S:
            self._logged_at = now
            log.error("audit log %s", self.failure)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
