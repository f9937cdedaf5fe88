"""The model package manifest (``edgekit.json``): typed records, read and written as JSON.

The JSON Schema in ``edgekit/schemas/manifest.schema.json`` describes the same document; tests validate
every package the suite writes against it. Within a major ``schema_version`` changes are additive only,
so a runtime refuses a manifest whose major version is newer than its own.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import PackageError
from edgekit.hashing import is_sha256
from edgekit.session_policy import SessionPolicy, SpeedupRecord

SCHEMA_VERSION = "1.4"
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
    # Schema 1.4: GroupQueryAttention's lengths taken as inputs in place of the mask (runtimes.decoder_feeds);
    # None where the graph computes them from the mask. Set by the package writer from the final graph.
    seqlens_k_name: str | None = None
    total_sequence_length_name: str | None = None
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
class RuntimeInfo:
    """How the package should run, measured at export (:mod:`edgekit.session_policy`)."""

    session_policy: SessionPolicy | None = None
    speedup: SpeedupRecord | None = None  # quantized recipes: against the export's own fp32 graph


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
    runtime: RuntimeInfo | None = None
    schema_version: str = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {"schema_version": d.pop("schema_version"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """Build from parsed JSON; every field is type-checked, so a bad one is a PackageError naming it."""
        if not isinstance(d, dict):
            raise PackageError(
                f"the manifest is not a JSON object (got {_json_type(d)})", hint=_REEXPORT, param="edgekit.json"
            )
        check_schema_version(d.get("schema_version"))
        manifest = _build(cls, d, "")
        _check_files(manifest.files)
        _check_asset_paths(manifest.preprocessing, "preprocessing")
        return manifest

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)


def check_schema_version(version: Any) -> None:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        shown = "no schema_version" if version is None else f"schema_version {version!r}"
        raise PackageError(
            f"the manifest has {shown}; it must be a string MAJOR.MINOR such as {SCHEMA_VERSION!r}",
            hint=_REEXPORT,
            param="schema_version",
        )
    major = int(version.split(".")[0])
    ours = int(SCHEMA_VERSION.split(".")[0])
    if major > ours:
        raise PackageError(
            f"the package's manifest schema_version {version} is newer than this edgekit understands"
            f" ({SCHEMA_VERSION})",
            hint="upgrade edgekit on this device: pip install -U edgekit",
            param="schema_version",
        )


# ------------------------------------------------------------------------------------- field validation

_REEXPORT = "the manifest was edited or is corrupt: export the package again with `edgekit export`"
_VERSION = re.compile(r"[0-9]+\.[0-9]+")
_JSON_TYPES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "an array",
    dict: "an object",
    type(None): "null",
}
# Keys of ``preprocessing`` (at any depth) whose values name files in the package.
_PATH_KEY_SUFFIXES = ("_file", "_path", "_dir")


def _json_type(value: Any) -> str:
    for tp in (bool, int, float, str, list, dict, type(None)):  # bool first: it is an int in Python
        if isinstance(value, tp):
            return _JSON_TYPES[tp]
    return type(value).__name__


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "an object"
    return _JSON_TYPES.get(typing.get_origin(tp) or tp, str(tp))


def _bad_type(where: str, tp: Any, value: Any) -> PackageError:
    return PackageError(
        f"the manifest field {where} must be {_describe(tp)}, got {_json_type(value)}", hint=_REEXPORT, param=where
    )


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_value(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the annotation ``tp`` (JSON types only); records are built recursively."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None) and _shallow_match(value, arg):
                return _check_value(value, arg, where)
        raise _bad_type(where, tp, value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if not _shallow_match(value, tp):
        raise _bad_type(where, tp, value)
    if origin is list:
        (item,) = typing.get_args(tp)
        return [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(tp)
        return {k: _check_value(v, item, f"{where}.{k}") for k, v in value.items()}
    return value


def _shallow_match(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    base = typing.get_origin(tp) or tp
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, base)


def _build(cls: type, d: Any, where: str) -> Any:
    """A record from its dict, ignoring keys a newer minor version may have added; every field type-checked."""
    if not isinstance(d, dict):
        raise _bad_type(where or "(top level)", cls, d)
    hints = _hints(cls)
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = f"{where}.{f.name}" if where else f.name
        if f.name in d:
            kw[f.name] = _check_value(d[f.name], hints[f.name], name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise PackageError(f"the manifest has no field {name}", hint=_REEXPORT, param=name)
    return cls(**kw)


def relative_path_problem(path: str) -> str | None:
    """Why ``path`` is not a plain relative path inside a package (``a/b.json``), or None when it is.

    Lexical only; :func:`edgekit.package.confined_path` also resolves symlinks against the package root.
    """
    if not path:
        return "is empty"
    if "\x00" in path:
        return "holds a NUL character"
    if "\\" in path:
        return "uses backslashes (package paths use /)"
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        return "is an absolute path"
    parts = path.split("/")
    if ".." in parts:
        return "climbs out with .."
    if any(p in ("", ".") for p in parts):
        return "is not in normal form (empty or . components)"
    return None


def _check_files(files: list[FileEntry]) -> None:
    seen: set[str] = set()
    for i, entry in enumerate(files):
        where = f"files[{i}]"
        problem = relative_path_problem(entry.path)
        if problem:
            raise PackageError(
                f"the manifest field {where}.path {entry.path!r} {problem}: package files must be relative paths"
                " inside the package",
                hint=_REEXPORT,
                param=f"{where}.path",
            )
        if entry.path in seen:
            raise PackageError(f"the manifest lists {entry.path!r} twice", hint=_REEXPORT, param=f"{where}.path")
        seen.add(entry.path)
        if entry.bytes < 0:
            raise PackageError(f"the manifest field {where}.bytes is negative", hint=_REEXPORT, param=f"{where}.bytes")
        if not is_sha256(entry.sha256):
            raise PackageError(
                f"the manifest field {where}.sha256 is not a sha256 digest (64 lowercase hex digits)",
                hint=_REEXPORT,
                param=f"{where}.sha256",
            )


def asset_paths(pre: Any, where: str = "preprocessing") -> list[tuple[str, str]]:
    """(field, relative path) for every value in ``preprocessing`` that names a file of the package."""
    found: list[tuple[str, str]] = []
    if isinstance(pre, dict):
        for key, value in pre.items():
            name = f"{where}.{key}"
            if isinstance(value, dict):
                found += asset_paths(value, name)
            elif str(key).endswith(_PATH_KEY_SUFFIXES):
                found.append((name, value))
    return found


def _check_asset_paths(pre: dict[str, Any], where: str) -> None:
    for name, value in asset_paths(pre, where):
        if not isinstance(value, str):
            raise PackageError(
                f"the manifest field {name} must be a string, got {_json_type(value)}", hint=_REEXPORT, param=name
            )
        problem = relative_path_problem(value)
        if problem:
            raise PackageError(
                f"the manifest field {name} {value!r} {problem}: it must name a file inside the package",
                hint=_REEXPORT,
                param=name,
            )
