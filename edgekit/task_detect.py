"""``edgekit export SRC --task auto``: the task a source model was built for, read from its files.

Standard library only. A Hugging Face directory's ``config.json`` names its architectures
(``LlamaForCausalLM``); the first rule below whose suffix matches an architecture, and whose file check
passes, gives the task. Other sources: an edgekit package keeps its task, an ``.onnx`` file and a
``file.py:factory`` module are plain graphs (``tensor``). Anything else is a :class:`UsageError` that
lists the tasks to pass instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import UsageError
from edgekit.tasks import TASKS

# Files sentence-transformers writes beside the model: a base *Model with them is an embedding model.
_SENTENCE_TRANSFORMERS_FILES = ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json")


def _always(_: Path) -> bool:
    return True


def _sentence_transformers(src: Path) -> bool:
    return any((src / name).is_file() for name in _SENTENCE_TRANSFORMERS_FILES)


def _audio_features(src: Path) -> bool:
    """A preprocessor that samples audio (wav2vec2, HuBERT, ...), not an image processor or a tokenizer."""
    try:
        pre = json.loads((src / "preprocessor_config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(pre, dict) and "sampling_rate" in pre


@dataclass(frozen=True, kw_only=True)
class ArchitectureRule:
    suffix: str  # matched against the end of each name in config.json's "architectures"
    task: str
    applies: Callable[[Path], bool]  # a check on the model directory's other files
    why: str


# Order matters: the first match wins, so the narrower rule of a shared suffix comes first.
ARCHITECTURE_RULES: tuple[ArchitectureRule, ...] = (
    ArchitectureRule(suffix="ForCausalLM", task="text-generation", applies=_always, why="a causal LM head"),
    ArchitectureRule(suffix="LMHeadModel", task="text-generation", applies=_always, why="GPT-2 style LM head"),
    ArchitectureRule(
        suffix="ForAudioClassification", task="audio-classification", applies=_always, why="an audio head"
    ),
    ArchitectureRule(
        suffix="ForSequenceClassification",
        task="audio-classification",
        applies=_audio_features,
        why="a sequence head over an audio feature extractor (wav2vec2 style)",
    ),
    ArchitectureRule(
        suffix="ForSequenceClassification", task="text-classification", applies=_always, why="a sequence head"
    ),
    ArchitectureRule(
        suffix="ForImageClassification", task="image-classification", applies=_always, why="an image head"
    ),
    ArchitectureRule(
        suffix="Model",
        task="feature-extraction",
        applies=_sentence_transformers,
        why="a base encoder with sentence-transformers files",
    ),
)


def _cannot_tell(what: str) -> UsageError:
    return UsageError(
        f"--task auto cannot tell the task of {what}",
        hint=f"pass --task with one of: {', '.join(TASKS.names())}",
    )


def detect_task(source: str) -> str:
    """The task for ``source`` (a path or ``file.py:factory``), or a UsageError naming the tasks to choose."""
    file_part, sep, _ = source.rpartition(":")
    if sep and file_part.endswith(".py"):
        return "tensor"
    path = Path(source)
    if path.is_file() and path.suffix == ".onnx":
        return "tensor"
    if (path / "edgekit.json").is_file():
        from edgekit.package import read_manifest

        return read_manifest(path).task
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        raise _cannot_tell(f"{source} (no readable config.json)") from None
    names = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(names, list) or not names:
        raise _cannot_tell(f"{source}: its config.json names no architectures")
    for rule in ARCHITECTURE_RULES:
        if any(isinstance(n, str) and n.endswith(rule.suffix) for n in names) and rule.applies(path):
            return rule.task
    raise _cannot_tell(f"{source}: no rule maps the architecture {', '.join(map(str, names))} to a task")
