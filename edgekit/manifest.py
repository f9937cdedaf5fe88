"""The model package manifest (``edgekit.json``): typed records, read and written as JSON.

The JSON Schema in ``edgekit/schemas/manifest.schema.json`` describes the same document; tests validate
every package the suite writes against it. Within a major ``schema_version`` changes are additive only,
so a runtime refuses a manifest whose major version is newer than its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import PackageError

SCHEMA_VERSION = "1.1"
MANIFEST_NAME = "edgekit.json"
MODEL_NAME = "model.onnx"

Dim = int | str | None


@dataclass(frozen=True, kw_only=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: float32, int64, float16, ...
    shape: list[Dim]


@dataclass(frozen=True, kw_only=True)
class GenerationSpec:
    """What the runtime needs to drive a causal LM, read from the exported graph at export time."""

    with_kv_cache: bool
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_size: int
    vocab_size: int
    max_context_tokens: int
    # Templates take ``{layer}``; the runtime never guesses names by substring.
    past_key_template: str | None = None
    past_value_template: str | None = None
    present_key_template: str | None = None
    present_value_template: str | None = None
    kv_dtype: str = "float32"
    # Past and present KV may be one preallocated buffer per layer, updated in place (GroupQueryAttention
    # graphs): the runtime then copies nothing per token. Set by the package writer from the final graph.
    shared_kv_buffer: bool = False
    logits_name: str = "logits"
    input_ids_name: str = "input_ids"
    attention_mask_name: str | None = "attention_mask"
    position_ids_name: str | None = None
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    pad_token_id: int | None = None
    chat_template: str | None = None


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class SourceInfo:
    kind: str  # hf | torch | onnx
    path: str
    sha256: str
    opset: int
    library_versions: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class WeightsInfo:
    parameter_count: int
    bytes_by_dtype: dict[str, int]


@dataclass(frozen=True, kw_only=True)
class RecipeInfo:
    name: str
    options: dict[str, Any]
    float_nodes: list[str] = field(default_factory=list)  # nodes kept in float to meet an accuracy target
    steps: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Manifest:
    task: str
    name: str
    recipe: RecipeInfo
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    source: SourceInfo
    files: list[FileEntry]
    weights: WeightsInfo
    created_at: str
    # Pipeline settings the runtime reads instead of importing transformers: tokenizer file, max length,
    # pooling, image / audio preprocessing.
    preprocessing: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None
    generation: GenerationSpec | None = None
    accuracy: dict[str, Any] | None = None
    schema_version: str = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {"schema_version": d.pop("schema_version"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        if not isinstance(d, dict):
            raise PackageError("the manifest is not a JSON object")
        version = str(d.get("schema_version", ""))
        check_schema_version(version)
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            kw = {k: v for k, v in d.items() if k in known}  # additive minor versions: ignore new keys
            kw["recipe"] = _from_dict(RecipeInfo, d["recipe"])
            kw["inputs"] = [_from_dict(TensorSpec, t) for t in d["inputs"]]
            kw["outputs"] = [_from_dict(TensorSpec, t) for t in d["outputs"]]
            kw["source"] = _from_dict(SourceInfo, d["source"])
            kw["files"] = [_from_dict(FileEntry, f) for f in d["files"]]
            kw["weights"] = _from_dict(WeightsInfo, d["weights"])
            if d.get("generation") is not None:
                kw["generation"] = _from_dict(GenerationSpec, d["generation"])
            return cls(**kw)
        except (KeyError, TypeError) as exc:
            raise PackageError(
                f"the manifest is missing or has an invalid field: {exc}",
                hint="re-export the package with `edgekit export`",
            ) from None

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)


def check_schema_version(version: str) -> None:
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise PackageError(f"the manifest has no valid schema_version (got {version!r})") from None
    ours = int(SCHEMA_VERSION.split(".")[0])
    if major > ours:
        raise PackageError(
            f"the package's manifest schema_version {version} is newer than this edgekit understands"
            f" ({SCHEMA_VERSION})",
            hint="upgrade edgekit on this device: pip install -U edgekit",
        )


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Build a record from its dict, ignoring keys a newer minor version may have added."""
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in known})
