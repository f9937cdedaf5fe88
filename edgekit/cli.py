"""The ``edgekit`` command line: ``edgekit <verb>``; commands register in ``COMMANDS``.

Conventions (click's): hyphenated long options, choices from the registries, ``--json`` to stdout and
logs/progress to stderr, ``-v/-q``; exit 0 ok, 1 failure, 2 usage, 3 budget exceeded. Errors print as
``error[code]: message`` plus a hint, with a traceback only under ``--debug``.

``main`` is the CLI's one exception boundary: an :class:`EdgekitError` prints as is, any other exception goes
through :func:`edgekit.errors.translate` (unknown ones print as ``error[internal]``), and a closed stdout
(``edgekit run --stream | head``) ends quietly with 141, the shell's code for a SIGPIPE death.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edgekit.errors import EdgekitError, UsageError, translate
from edgekit.extras import missing_dependency
from edgekit.quiet import command_scope
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


class _VersionAction(argparse.Action):
    """``--version``: edgekit, onnxruntime and its providers, Python, CPU (computed only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None) -> None:
        from edgekit.report import version_text

        print(version_text())
        parser.exit()


# Exit code of a process killed by SIGPIPE as the shell reports it (128 + 13): a reader closed our stdout.
EXIT_BROKEN_PIPE = 141


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would exit 2 itself; main prints it in our format
        self.print_usage(sys.stderr)
        raise UsageError(message, hint=f"see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = _Parser(prog="edgekit", description="Export, run and profile small models on edge devices.")
    parser.add_argument("--version", action=_VersionAction, help="show edgekit, ONNX Runtime, Python and CPU, and exit")
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
    argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        return _main(argv)
    except BrokenPipeError:
        return _broken_pipe()


def _main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        kind = next((a for a in argv if a in COMMANDS), "edgekit")
        return _fail(argparse.Namespace(json="--json" in argv), kind, {}, exc)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    cmd = COMMANDS.get(args.command)
    config = {k: v for k, v in vars(args).items() if k not in ("json", "debug", "verbose", "quiet")}
    try:
        # Third-party warnings, logs and prints stay off the terminal (and off stdout) unless -v.
        with command_scope(args.verbose, args.quiet):
            result, text = cmd.run(args)
    except KeyboardInterrupt:
        print("error[interrupted]: interrupted; nothing was written", file=sys.stderr)
        print("  hint: run the command again to finish it", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except ModuleNotFoundError as exc:  # a missing optional extra names the extra to install
        if args.debug:
            raise
        return _fail(args, cmd.name, config, missing_dependency(exc, cmd.name) or translate(exc))
    except Exception as exc:  # the CLI boundary: EdgekitError as is, the rest through the translation table
        if args.debug:
            raise
        return _fail(args, cmd.name, config, translate(exc))
    # A command that ran but missed what was asked (a budget) returns its error beside the result: the table or
    # JSON still goes out, then the error line, so a CI log shows what missed.
    late = result.pop("_error", None) if isinstance(result, dict) else None
    status = late.exit_code if late is not None else 0
    if isinstance(result, dict) and "_config" in result:  # values only the command resolved (export's task)
        config.update(result.pop("_config"))
    if args.json:
        report = make_report(cmd.name, config=config, result=result)
        if status:
            report["status"] = "failed"
        print(dumps(report))
    elif text:
        print(text)
    if late is not None:
        _print_error(late)
    return status


def _broken_pipe() -> int:
    # The reader is gone: say nothing. Python flushes stdout once more at exit; pointing it at /dev/null
    # keeps that flush from printing "Exception ignored ... BrokenPipeError".
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (captured, or already closed): nothing to redirect
        pass
    return EXIT_BROKEN_PIPE


def _fail(args: argparse.Namespace, kind: str, config: dict[str, Any], exc: EdgekitError) -> int:
    if args.json:
        print(dumps(make_report(kind, config=config, error=exc)))
    _print_error(exc)
    return exc.exit_code


def _print_error(exc: EdgekitError) -> None:
    print(f"error[{exc.code}]: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"  hint: {exc.hint}", file=sys.stderr)


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
