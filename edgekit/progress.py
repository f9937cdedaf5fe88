"""Progress for long work (export, calibration, validation, profiling), written to stderr.

Stdout stays clean for ``--json``. On a terminal a bar redraws in place; elsewhere (CI logs) each stage
prints one line when it ends, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    def __init__(self, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr

    def log(self, message: str) -> None:
        if self.enabled:
            print(f"[edgekit] {message}", file=self.stream, flush=True)

    @contextmanager
    def bar(self, total: int, desc: str) -> Iterator[Callable[[int], None]]:
        start = time.perf_counter()
        tty = self.enabled and getattr(self.stream, "isatty", lambda: False)()
        last = [0]

        def update(done: int) -> None:
            last[0] = done
            if tty:
                width = 24
                filled = int(width * done / max(total, 1))
                self.stream.write(f"\r[edgekit] {desc} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
                self.stream.flush()

        try:
            yield update
        finally:
            if self.enabled:
                end = "\n" if tty else ""
                prefix = "\r" if tty else ""
                self.stream.write(
                    f"{prefix}[edgekit] {desc}: {last[0]}/{total} in {time.perf_counter() - start:.1f}s{end}"
                    + ("" if tty else "\n")
                )
                self.stream.flush()


QUIET = Progress(enabled=False)
