"""``edgekit inspect``."""

from __future__ import annotations

import argparse
from typing import Any

from edgekit.cli import COMMANDS, Command

EXAMPLES = """examples:
  edgekit inspect out/minilm-int8          # task, IO, ops, weights by dtype, recipe, accuracy
  edgekit inspect out/cnn.onnx --json
"""


def _add(p: argparse.ArgumentParser) -> None:
    p.epilog = EXAMPLES
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the examples' lines as written
    p.add_argument("path", help="a package directory or an .onnx file")


def _run(args: argparse.Namespace) -> tuple[Any, str]:
    from edgekit.inspect import inspect_path, render_inspect

    info = inspect_path(args.path)
    return info, render_inspect(info)


COMMANDS.add("inspect", Command("inspect", "show task, IO, ops, weights, recipe and accuracy", _add, _run))
