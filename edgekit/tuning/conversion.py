"""One fp32 conversion per source for all of a tune's trials, instead of one per trial.

Every trial of a source starts from the same conversion (HF -> ONNX through optimum is the slowest part of
a small model's export, and it is deterministic for given library versions), so the first trial to convert
stores the converted graph and its metadata under the tune's cache, and the others copy it into their own
work directory. The exporter sees a :class:`SharedConversion` source: one entry in the exporter's ``SOURCES``
registry, so the recipe, validation and package writing run exactly as for the original path.

The stored conversion is keyed by the source's sha256 and path, the conversion options and the converting
libraries' versions. Writers race benignly: each converts into a private directory and renames it into place; the
loser's copy is dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

META_FILE = "converted.pkl"
GRAPH_DIR = "graph"


@dataclass(frozen=True, kw_only=True)
class SharedConversion:
    """A source path whose fp32 conversion is read from (or written to) ``store``."""

    path: str
    sha256: str
    store: str

    def __fspath__(self) -> str:
        # The exporter names the package and logs the source from its path, as for the plain path.
        return self.path

    def __str__(self) -> str:
        return self.path


def _key(src: SharedConversion, options: Any) -> str:
    from exporters.sources import library_versions

    opts = {
        "task": options.task.name,
        "with_kv_cache": options.with_kv_cache,
        "opset": options.opset,
        "labels": options.labels,
        "image_settings": repr(options.image_settings),
    }
    # The path too: the manifest records the source's path, and two copies of one model in a sweep keep theirs.
    payload = [src.sha256, str(Path(src.path).resolve()), opts, library_versions()]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _rebase(p: Path, old: Path, new: Path) -> Path:
    return new / p.relative_to(old) if p.is_relative_to(old) else p


def _convert(src: SharedConversion, work: Path, options: Any) -> Any:
    from exporters.sources import convert_source

    entry = Path(src.store) / _key(src, options)
    if (entry / META_FILE).is_file():
        return _load(entry, work)
    converted = convert_source(src.path, work, options)
    _save(converted, work, entry)
    return converted


def _save(converted: Any, work: Path, entry: Path) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        # Everything the conversion wrote (the graph, an external-data file beside it, optimum's folder):
        # the work dir holds nothing else yet.
        (tmp / GRAPH_DIR).mkdir()
        for item in work.iterdir():
            dst = tmp / GRAPH_DIR / item.name
            shutil.copytree(item, dst) if item.is_dir() else shutil.copy2(item, dst)
        # Paths are stored relative to a placeholder work dir, rebased on load.
        meta = _with_paths(converted, work, Path("/WORK"))
        (tmp / META_FILE).write_bytes(pickle.dumps(meta))
        os.rename(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another trial stored it first (or the disk is full): no sharing


def _load(entry: Path, work: Path) -> Any:
    # The store is this tune's own cache, written by _save above (never data from elsewhere).
    meta = pickle.loads((entry / META_FILE).read_bytes())
    for item in (entry / GRAPH_DIR).iterdir():
        dst = work / item.name
        shutil.copytree(item, dst) if item.is_dir() else shutil.copy2(item, dst)
    return _with_paths(meta, Path("/WORK"), work)


def _with_paths(converted: Any, old: Path, new: Path) -> Any:
    return replace(
        converted,
        onnx_path=_rebase(Path(converted.onnx_path), old, new),
        assets=[_rebase(Path(a), old, new) for a in converted.assets],
    )


def register() -> None:
    """Add the shared-conversion source kind to the exporter's registry (once per process)."""
    from exporters.sources import SOURCES, SourceKind

    if "shared-conversion" not in SOURCES:
        SOURCES.add(
            "shared-conversion",
            SourceKind("shared-conversion", lambda s: isinstance(s, SharedConversion), _convert),
        )
