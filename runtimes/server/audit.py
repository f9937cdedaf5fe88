"""The audit log: one JSON line per request, appended to a file the server owner alone can read.

Each line: ``time`` (UTC, ISO 8601), ``request_id``, ``key_id`` (null without auth), ``client`` (address),
``method``, ``route``, ``model``, ``status``, ``prompt_tokens``, ``completion_tokens``, ``latency_ms``,
``error`` (the error code, if any), ``cancelled`` (the client went away first). The text of prompts and
outputs is the user's data: it is written only with ``--log-content`` (``prompt`` / ``messages`` / ``input``
and ``output``).

Lines are written with one ``write`` on a file opened with O_APPEND and flushed at once, so a crash loses at
most the line being written and concurrent writers (another server on the same file) do not interleave.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError


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

    def write(self, record: dict[str, Any], content: dict[str, Any] | None = None) -> None:
        line = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **record}
        if self.log_content and content:
            line.update(content)
        data = (json.dumps(line, ensure_ascii=False, default=str) + "\n").encode("utf-8", "replace")
        with self._lock:
            if self._fd >= 0:
                os.write(self._fd, data)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
