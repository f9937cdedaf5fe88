"""The ``edgekit`` command line: ``edgekit <verb>``; commands register in ``COMMANDS``.

Conventions (click's): hyphenated long options, choices from the registries, ``--json`` to stdout and
logs/progress to stderr, ``-v/-q``; exit 0 ok, 1 failure, 2 usage, 3 budget exceeded. Errors print as
``error[code]: message`` plus a hint, with a traceback only under ``--debug``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edgekit.errors import EdgekitError, UsageError
from edgekit.registry import Registry
from edgekit.report import dumps, make_report


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    # Returns the JSON-able result and its terminal rendering.
    run: Callable[[argparse.Namespace], tuple[Any, str]]


COMMANDS: Registry[Command] = Registry("command")


def _load_commands() -> None:
    # Each module registers its commands; their heavy imports stay inside the run functions.
    from edgekit.commands import devices, export, inspect, profile, run, serve, tune  # noqa: F401


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 itself; keep our error format
        self.print_usage(sys.stderr)
        print(f"error[usage_error]: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = _Parser(prog="edgekit", description="Export, run and profile small models on edge devices.")
    from edgekit import __version__

    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        p.add_argument("--json", action="store_true", help="write the result as JSON to stdout")
        p.add_argument("-v", "--verbose", action="count", default=0, help="more logs on stderr")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
        p.add_argument("--debug", action="store_true", help="show tracebacks")
        cmd.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    level = logging.WARNING - 10 * args.verbose if not args.quiet else logging.ERROR
    logging.basicConfig(level=level, format="[edgekit] %(levelname)s %(message)s", stream=sys.stderr)
    cmd = COMMANDS.get(args.command)
    config = {k: v for k, v in vars(args).items() if k not in ("json", "debug", "verbose", "quiet")}
    try:
        result, text = cmd.run(args)
    except EdgekitError as exc:
        if args.debug:
            raise
        return _fail(args, cmd.name, config, exc)
    except KeyboardInterrupt:
        print("error[interrupted]: interrupted; nothing was written", file=sys.stderr)
        return 130
    status = 0
    if isinstance(result, dict) and result.get("_exit_code"):
        status = int(result.pop("_exit_code"))
    if args.json:
        report = make_report(cmd.name, config=config, result=result)
        if status:
            report["status"] = "failed"
        print(dumps(report))
    elif text:
        print(text)
    return status


def _fail(args: argparse.Namespace, kind: str, config: dict[str, Any], exc: EdgekitError) -> int:
    if args.json:
        print(dumps(make_report(kind, config=config, error=exc)))
    print(f"error[{exc.code}]: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"  hint: {exc.hint}", file=sys.stderr)
    return exc.exit_code


def parse_key_values(items: list[str] | None, what: str) -> dict[str, Any]:
    """``--option key=value`` pairs for a typed config: values parse as JSON when they can."""
    import json

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{what} takes key=value, got {item!r}")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out
