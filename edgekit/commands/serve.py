"""``edgekit serve``: the on-device HTTP server (the ``serve`` extra). The body lives in ``runtimes.server.cli``."""

from __future__ import annotations

import argparse
from typing import Any

from edgekit.cli import COMMANDS, Command


def _add(p: argparse.ArgumentParser) -> None:
    from runtimes.server.cli import add_serve_arguments  # standard library only at import

    add_serve_arguments(p)


def _run(args: argparse.Namespace) -> tuple[Any, str]:
    from runtimes.server.cli import serve_command

    return serve_command(args)


COMMANDS.add(
    "serve",
    Command(
        "serve",
        "serve model packages over HTTP: /v1/generate, completions, chat, embeddings, classify",
        _add,
        _run,
    ),
)
