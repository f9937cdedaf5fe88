"""``edgekit run``: load a package and call it (options and body live in ``runtimes.cli_run``)."""

from __future__ import annotations

import argparse
from typing import Any

from edgekit.cli import COMMANDS, Command

EXAMPLES = """examples:
  edgekit run out/llm-int4 --prompt "07+45=" --max-tokens 8 --stream
  edgekit run out/minilm-int8 --text "hello" --text "world" --json
  edgekit run out/cls --image out/cat.png --top-k 3 --device raspberry-pi-5
  edgekit run out/cnn.onnx --input out/inputs.npz --output out/outputs.npz
"""


def _add(p: argparse.ArgumentParser) -> None:
    p.epilog = EXAMPLES
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the examples' lines as written
    from runtimes.cli_run import add_run_arguments

    add_run_arguments(p)


def _run(args: argparse.Namespace) -> tuple[Any, str]:
    from runtimes.cli_run import render_run_report, run_command

    report = run_command(args)
    # The CLI wraps results in the common report envelope; keep what is specific to a run.
    result = {k: report[k] for k in ("model", "result", "metrics") if k in report}
    return result, render_run_report(report)


COMMANDS.add("run", Command("run", "load a package and run, embed, classify or generate", _add, _run))
