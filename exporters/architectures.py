"""Architecture coverage: one record per Hugging Face ``model_type`` edgekit exports, and what applies to it.

Each record names the architecture's family (causal-lm, text-encoder, vision, audio), the tasks it exports
for and the recipes that apply. The suite's architecture matrix (``tests/test_architecture_matrix.py``) builds a
tiny model of every record (``tests/arch_zoo.py``) and exports it for every task x recipe listed here, so a record
is a promise that is tested, and a new architecture is one ``ARCHITECTURES.add`` plus one zoo builder (the
completeness test fails otherwise). The README's "Supported architectures" table is printed from this registry::

    python -m exporters.architectures --markdown

Recipes by family, and why:

- causal-lm: fp32, fp16, int8-dynamic, int4. int4 (MatMulNBits) is the decoder recipe on CPU; int8-static is
  left out because its QDQ activations would need calibration through the KV-cache graph, which no NPU path
  here consumes.
- text-encoder, vision, audio: fp32, fp16, int8-dynamic, int8-static. int4 is weight-only MatMul quantization,
  which saves little on models whose weights are small next to their activations (and convnets have no MatMul).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from edgekit.registry import Registry


@dataclass(frozen=True, kw_only=True)
class Family:
    name: str
    description: str
    tasks: tuple[str, ...]
    recipes: tuple[str, ...]


FAMILIES: Registry[Family] = Registry("architecture family")
for _family in (
    Family(
        name="causal-lm",
        description="decoder-only language models, exported with a KV cache",
        tasks=("text-generation",),
        recipes=("fp32", "fp16", "int8-dynamic", "int4"),
    ),
    Family(
        name="text-encoder",
        description="bidirectional text encoders",
        tasks=("feature-extraction", "text-classification"),
        recipes=("fp32", "fp16", "int8-dynamic", "int8-static"),
    ),
    Family(
        name="vision",
        description="image classifiers (transformers and convnets)",
        tasks=("image-classification",),
        recipes=("fp32", "fp16", "int8-dynamic", "int8-static"),
    ),
    Family(
        name="audio",
        description="audio classifiers on raw waveforms or log-mel features",
        tasks=("audio-classification",),
        recipes=("fp32", "fp16", "int8-dynamic", "int8-static"),
    ),
):
    FAMILIES.add(_family.name, _family)


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """One supported HF ``model_type``. ``tasks`` / ``recipes`` default to the family's."""

    model_type: str
    family: str
    notes: str = ""
    tasks: tuple[str, ...] = ()
    recipes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        family = FAMILIES.get(self.family)  # an unknown family raises with the known ones
        if not self.tasks:
            object.__setattr__(self, "tasks", family.tasks)
        if not self.recipes:
            object.__setattr__(self, "recipes", family.recipes)

    def cells(self) -> list[tuple[str, str]]:
        """Every (task, recipe) this architecture promises."""
        return [(task, recipe) for task in self.tasks for recipe in self.recipes]


ARCHITECTURES: Registry[Architecture] = Registry("architecture")


def _add(model_type: str, family: str, notes: str = "") -> None:
    ARCHITECTURES.add(model_type, Architecture(model_type=model_type, family=family, notes=notes))


# Causal LMs
_add("llama", "causal-lm", "MHA, GQA and MQA; head sizes 8-64; explicit head_dim; tied embeddings (SmolLM)")
_add("mistral", "causal-lm", "GQA, sliding-window attention")
_add("qwen2", "causal-lm", "GQA with q/k/v biases")
_add("qwen3", "causal-lm", "q/k RMS norm, explicit head_dim")
_add("phi3", "causal-lm", "fused qkv and gate/up projections")
_add("gemma", "causal-lm", "head_dim independent of hidden size, scaled embeddings")
_add("gemma2", "causal-lm", "logit soft-capping, alternating sliding-window layers")
_add("gpt2", "causal-lm", "learned absolute positions, Conv1D projections")
_add("gpt_neox", "causal-lm", "partial rotary (rotary_pct), parallel residual")
_add("opt", "causal-lm", "learned positions with an offset of 2")
_add("bloom", "causal-lm", "ALiBi positions: no max_position_embeddings in its config")
_add("falcon", "causal-lm", "multi-query attention (num_kv_heads / multi_query)")
_add("stablelm", "causal-lm", "partial rotary, LayerNorm")
# Text encoders
_add("bert", "text-encoder")
_add("distilbert", "text-encoder", "no token_type_ids")
_add("roberta", "text-encoder", "positions start at padding_idx + 1")
_add("xlm-roberta", "text-encoder", "positions start at padding_idx + 1")
_add("electra", "text-encoder", "embedding size independent of hidden size")
_add("albert", "text-encoder", "factorized embeddings, shared layers")
_add("deberta-v2", "text-encoder", "disentangled relative-position attention")
_add("mpnet", "text-encoder", "relative-position buckets, positions start at padding_idx + 1")
# Vision
_add("vit", "vision")
_add("deit", "vision", "resize then centre crop")
_add("mobilenet_v2", "vision", "TensorFlow-style padding, shortest-edge resize then crop")
_add("resnet", "vision", "crop_pct resize then crop")
_add("convnext", "vision", "crop_pct resize then crop")
_add("efficientnet", "vision", "fixed-size resize, include_top rescale offset")
# Audio
_add("wav2vec2", "audio", "raw 16 kHz waveform")
_add("hubert", "audio", "raw 16 kHz waveform")
_add("whisper", "audio", "encoder only (WhisperForAudioClassification) on log-mel input_features")


def markdown_table() -> str:
    """The README's table: one row per architecture, a check per recipe it supports."""
    recipes: list[str] = []
    for family in FAMILIES:
        recipes += [r for r in family.recipes if r not in recipes]
    header = ["model_type", "family", "tasks", *recipes, "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for arch in ARCHITECTURES:
        marks = ["✓" if r in arch.recipes else "–" for r in recipes]
        row = [f"`{arch.model_type}`", arch.family, ", ".join(arch.tasks), *marks, arch.notes]
        lines.append("| " + " | ".join(row) + " |")
    cells = sum(len(a.cells()) for a in ARCHITECTURES)
    lines.append("")
    lines.append(
        f"{len(ARCHITECTURES)} architectures, {cells} architecture x task x recipe cells;"
        " every cell is exported, run and compared with transformers by `tests/test_architecture_matrix.py`."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporters.architectures", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the README's supported-architectures table")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown_table() + "\n")
    else:
        for arch in ARCHITECTURES:
            sys.stdout.write(f"{arch.model_type}\t{arch.family}\t{','.join(arch.tasks)}\t{','.join(arch.recipes)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
