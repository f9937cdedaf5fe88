"""edgekit's on-device HTTP server: cloud-style endpoints over local models, with keys, quotas and load limits.

    edgekit serve out/llm out/minilm [--host 127.0.0.1] [--port 8080] [--api-keys keys.json] ...

or from Python::

    from runtimes.server import ServerConfig, start_server
    with start_server([runtimes.load("out/llm")], ServerConfig(port=0)) as server:
        print(server.url)

Modules: ``config`` (ServerConfig), ``app`` (create_app, routes, streaming), ``requests`` (body parsing and
validation), ``served`` (the model table), ``chat`` (chat templates), ``auth`` (keys file, Bearer keys,
quotas), ``limits`` (per-model slots, queue, deadlines, worker threads), ``metrics`` (Prometheus text),
``audit`` (JSON lines), ``errors`` (error bodies), ``runner`` (uvicorn, foreground or thread), ``cli``.
The API errors it answers with are classes of the one tree in ``edgekit.errors``; the client raises the same ones.

Importing this package is cheap: FastAPI and uvicorn (the ``serve`` extra) load when a server is made.

Adapters kept here until the runtime offers them (``served.py``): a per-token cancel flag for generation
(the pipeline's token loop is wrapped on each served model; a thread-local flag set by the worker stops it
between tokens, so an abandoned or timed-out request frees its slot at once), and the package's tokenizer,
loaded again to count embedding / classification input tokens and to encode rendered chat prompts without
adding special tokens twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtimes.server.app import create_app
    from runtimes.server.auth import add_key, remove_key
    from runtimes.server.config import ServerConfig
    from runtimes.server.runner import ServerHandle, serve_forever, start_server

__all__ = ["ServerConfig", "ServerHandle", "add_key", "create_app", "remove_key", "serve_forever", "start_server"]

_LAZY = {
    "create_app": "runtimes.server.app",
    "add_key": "runtimes.server.auth",
    "remove_key": "runtimes.server.auth",
    "ServerConfig": "runtimes.server.config",
    "ServerHandle": "runtimes.server.runner",
    "serve_forever": "runtimes.server.runner",
    "start_server": "runtimes.server.runner",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'runtimes.server' has no attribute {name!r}")
