"""The request loop of the benchmarks' worker processes (``_genai_worker.py serve``, ``_edgekit_worker.py``).

One JSON request a line on stdin, one JSON reply a line on stdout; ``{"cmd": "quit"}`` ends the loop. Standard
library only: the genai worker runs it in its own venv.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

Handler = Callable[[Mapping[str, Any]], dict[str, Any]]


def serve(handlers: Mapping[str, Handler]) -> None:
    """Answer each request with ``handlers[request["cmd"]](request)``; an exception becomes ``{"error": ...}``,
    which the parent raises."""
    for line in sys.stdin:
        req = json.loads(line)
        cmd = req.get("cmd")
        if cmd == "quit":
            break
        try:
            handler = handlers.get(cmd)
            reply = handler(req) if handler else {"error": f"unknown command {cmd!r}"}
        except Exception as exc:  # reported to the parent, which raises
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
