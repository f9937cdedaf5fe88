"""CLI conventions: ``export --task auto`` from the model config, an example in every ``--help``, progress that
keeps talking through a long conversion (and stays silent with ``-q``)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from edgekit.cli import COMMANDS, build_parser, main
from edgekit.commands.export import TickingProgress
from edgekit.errors import UsageError
from edgekit.task_detect import ARCHITECTURE_RULES, detect_task
from edgekit.tasks import TASKS


def _hf_dir(root: Path, architecture: str, *files: str, preprocessor: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"architectures": [architecture], "model_type": "x"}))
    for name in files:
        (root / name).write_text("{}")
    if preprocessor is not None:
        (root / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return root


@pytest.mark.parametrize(
    ("architecture", "files", "preprocessor", "task"),
    [
        ("LlamaForCausalLM", (), None, "text-generation"),
        ("GPT2LMHeadModel", (), None, "text-generation"),
        ("BertForSequenceClassification", ("tokenizer.json",), None, "text-classification"),
        ("Wav2Vec2ForSequenceClassification", (), {"sampling_rate": 16000}, "audio-classification"),
        ("ASTForAudioClassification", (), {"sampling_rate": 16000}, "audio-classification"),
        ("ViTForImageClassification", (), {"image_mean": [0.5]}, "image-classification"),
        ("BertModel", ("modules.json",), None, "feature-extraction"),
    ],
)
def test_task_from_architecture(tmp_path: Path, architecture, files, preprocessor, task) -> None:
    assert detect_task(str(_hf_dir(tmp_path / "m", architecture, *files, preprocessor=preprocessor))) == task


def test_every_rule_names_a_registered_task() -> None:
    assert {r.task for r in ARCHITECTURE_RULES} <= set(TASKS.names())


def test_graphs_and_packages(tmp_path: Path) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"")
    assert detect_task(str(onnx)) == "tensor"
    assert detect_task("nets/factory.py:make_model") == "tensor"


@pytest.mark.parametrize(
    ("config", "phrase"),
    [
        (None, "no readable config.json"),
        ({"model_type": "bert"}, "names no architectures"),
        ({"architectures": ["BertModel"]}, "no rule maps the architecture BertModel"),  # no sentence-transformers files
        ({"architectures": ["T5ForConditionalGeneration"]}, "T5ForConditionalGeneration"),
    ],
)
def test_cannot_tell_lists_the_tasks(tmp_path: Path, config, phrase) -> None:
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError) as err:
        detect_task(str(tmp_path))
    assert phrase in err.value.message
    assert err.value.code == "usage_error" and err.value.exit_code == 2
    for name in TASKS.names():
        assert name in err.value.hint


def test_cli_auto_refusal_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["T5ForConditionalGeneration"]}))
    code = main(["export", str(tmp_path), "-o", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert "error[usage_error]: --task auto cannot tell" in err
    assert "hint: pass --task with one of: feature-extraction" in err
    assert not (tmp_path / "out").exists()


def test_export_task_defaults_to_auto() -> None:
    args = build_parser().parse_args(["export", "src", "-o", "out"])
    assert args.task == "auto"


def test_every_command_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    from edgekit.cli import build_parser

    build_parser()  # registers every verb (the command modules load lazily)
    for cmd in list(COMMANDS):
        with pytest.raises(SystemExit):
            main([cmd.name, "--help"])
        text = capsys.readouterr().out
        examples = text.split("examples:", 1)
        assert len(examples) == 2, f"edgekit {cmd.name} --help has no examples"
        assert f"edgekit {cmd.name} " in examples[1], cmd.name


def test_progress_ticks_through_a_silent_stage() -> None:
    stream = io.StringIO()
    prog = TickingProgress(interval=0.05)
    prog.stream = stream
    prog.log("converting model for text-generation…")
    time.sleep(0.3)
    prog.log("writing package out/x")
    time.sleep(0.15)  # no ticks after a line that does not open a stage
    prog.stop()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[edgekit] converting model for text-generation…"
    ticks = [ln for ln in lines if ln.startswith("[edgekit]   still working (")]
    assert len(ticks) >= 2, lines
    assert lines[-1] == "[edgekit] writing package out/x"


def test_quiet_progress_prints_nothing() -> None:
    stream = io.StringIO()
    prog = TickingProgress(enabled=False, interval=0.05)
    prog.stream = stream
    prog.log("converting…")
    time.sleep(0.2)
    prog.stop()
    assert stream.getvalue() == ""


def test_export_json_config_records_the_detected_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgekit.cli import main
    from tests.onnx_builders import mlp_classifier

    src = mlp_classifier(tmp_path / "mlp.onnx")
    assert main(["export", str(src), "--json", "-q", "-o", str(tmp_path / "pkg")]) == 0
    report = json.loads(capsys.readouterr().out)
    # What ran, next to what was asked: a bare .onnx graph is detected as a tensor model.
    assert report["config"]["task"] == "tensor"
    assert report["config"]["task_requested"] == "auto"
    assert report["result"]["task"] == "tensor"
    assert "_config" not in report["result"]
