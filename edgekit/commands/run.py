"""``edgekit run``: load a package and call it (options and body live in ``runtimes.cli_run``)."""

from __future__ import annotations

import argparse
from typing import Any

from edgekit.cli import COMMANDS, Command


def _add(p: argparse.ArgumentParser) -> None:
    from runtimes.cli_run import add_run_arguments

    add_run_arguments(p)


def _run(args: argparse.Namespace) -> tuple[Any, str]:
    from runtimes.cli_run import render_run_report, run_command

    report = run_command(args)
    # The CLI wraps results in the common report envelope; keep what is specific to a run.
    result = {k: report[k] for k in ("model", "result", "metrics") if k in report}
    return result, render_run_report(report)


COMMANDS.add("run", Command("run", "load a package and run, embed, classify or generate", _add, _run))
