"""``edgekit run``'s command body: options, dispatch by input kind, the JSON report, streaming output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.errors import ConfigError, InvalidInputError, UsageError
from runtimes.cli_run import add_run_arguments, render_run_report, run_command


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edgekit run")
    add_run_arguments(parser)
    parser.add_argument("--json", action="store_true")  # the CLI adds it to every command
    return parser.parse_args(list(argv))


def test_prompt_report(lm_package: Path) -> None:
    report = run_command(
        _args(str(lm_package), "--prompt", "the quick", "--max-tokens", "5", "--threads", "1", "--json")
    )
    assert report["kind"] == "run" and report["status"] == "ok" and report["schema_version"] == "1.0"
    assert report["config"]["generation"]["max_tokens"] == 5
    assert report["result"]["finish_reason"] in ("stop", "length")
    assert report["result"]["usage"]["completion_tokens"] <= 5
    assert report["model"]["providers"] == ["CPUExecutionProvider"]
    assert "available_providers" in report["environment"]
    json.dumps(report)  # the report is plain JSON
    assert "prompt +" in render_run_report(report)


def test_stream_writes_text_as_it_comes(lm_package: Path) -> None:
    chunks: list[str] = []
    report = run_command(
        _args(
            str(lm_package),
            "--prompt",
            "héllo",
            "--max-tokens",
            "12",
            "--ignore-eos",
            "--stream",
            "--seed",
            "1",
            "--temperature",
            "0.8",
            "--top-k",
            "20",
            "--top-p",
            "0.9",
        ),
        write=chunks.append,
    )
    assert "".join(chunks) == report["result"]["text"] + "\n"
    assert report["config"]["generation"]["top_k"] == 20


def test_text_embeds_or_classifies_by_task(embed_package: Path, text_cls_package: Path) -> None:
    emb = run_command(_args(str(embed_package), "--text", "a", "--text", "b c", "--json"))
    assert emb["result"]["count"] == 2 and emb["result"]["dim"] == 16
    cls = run_command(_args(str(text_cls_package), "--text", "a", "--top-k", "2"))
    assert [len(p["top"]) for p in cls["result"]["predictions"]] == [2]
    assert "a:" in render_run_report(cls)


def test_image_and_npz(image_package: Path, tensor_package: Path, tmp_path: Path) -> None:
    from PIL import Image

    img = tmp_path / "i.png"
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(img)
    rep = run_command(_args(str(image_package), "--image", str(img)))
    assert rep["result"]["predictions"][0]["top"][0]["label"] in {"cat", "dog", "bird", "fish"}
    npz = tmp_path / "in.npz"
    np.savez(npz, x=np.ones((1, 4), np.float32), ids=np.array([3], np.int64))
    out = tmp_path / "out.npz"
    rep = run_command(_args(str(tensor_package), "--input", str(npz), "--output", str(out)))
    assert rep["result"]["outputs"]["y"]["values"] == [[5.0, 5.0, 5.0, 5.0]]
    assert np.load(out)["y"].shape == (1, 4)


@pytest.mark.parametrize(
    ("argv", "error", "message"),
    [
        ([], UsageError, "give exactly one kind of input"),
        (["--prompt", "a", "--text", "b"], UsageError, "got --prompt, --text"),
        (["--prompt", ""], InvalidInputError, "the prompt is empty"),
        (["--prompt", "a", "--max-tokens", "0"], ConfigError, "max_tokens must be an integer >= 1"),
        (["--prompt", "a", "--temperature", "-1"], ConfigError, "temperature"),
        (["--prompt", "a", "--top-p", "0"], ConfigError, "top_p"),
        (["--text", "a"], UsageError, "no embed\\(\\)|no classify\\(\\)"),
        (["--input", "missing.npz"], InvalidInputError, "input file not found"),
    ],
)
def test_bad_invocations(lm_package: Path, argv: list[str], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        run_command(_args(str(lm_package), "--threads", "1", *argv))


def test_unknown_provider_is_a_usage_error(embed_package: Path) -> None:
    with pytest.raises(UsageError, match="unknown execution provider 'xnnpak'"):
        run_command(_args(str(embed_package), "--text", "a", "--providers", "xnnpak"))


def test_device_option(embed_package: Path, capsys: Any) -> None:
    rep = run_command(_args(str(embed_package), "--text", "a", "--device", "raspberry-pi-5", "--json"))
    assert rep["model"]["device"] == "raspberry-pi-5"


def test_run_through_the_cli(lm_package: Path, capsys) -> None:
    from edgekit.cli import main

    assert main(["run", str(lm_package), "--prompt", "the quick", "--max-tokens", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "run" and report["status"] == "ok"
    assert report["result"]["result"]["usage"]["completion_tokens"] <= 4
    assert main(["run", str(lm_package), "--prompt", "x", "--temperature", "-1"]) == 2
    assert "error[invalid_config]" in capsys.readouterr().err
