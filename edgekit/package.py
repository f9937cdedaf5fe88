"""Reading a model package from disk: the manifest, its files and their checksums.

Writing lives in ``exporters.package_writer``; this module is what a device needs, so it imports only the
standard library.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import ChecksumError, PackageError, SourceNotFoundError
from edgekit.hashing import sha256_file
from edgekit.manifest import MANIFEST_NAME, MODEL_NAME, Manifest


@dataclass(frozen=True)
class Package:
    root: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.root / MODEL_NAME

    def file(self, name: str) -> Path | None:
        p = self.root / name
        return p if p.is_file() else None


def read_manifest(root: str | Path) -> Manifest:
    root = Path(root)
    path = root / MANIFEST_NAME
    if not root.exists():
        raise SourceNotFoundError(
            f"no model package at {root}", hint="check the path, or export one with `edgekit export`"
        )
    if not path.is_file():
        raise PackageError(
            f"{root} is not an edgekit package: it has no {MANIFEST_NAME}",
            hint="export the model with `edgekit export`, or pass a plain .onnx file where one is accepted",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{path} is not valid JSON: {exc}", hint="the package is corrupt: export it again") from None
    return Manifest.from_dict(data)


def open_package(path: str | Path, *, verify: bool = True) -> Package:
    """Open a package directory (or a ``.zip`` of one, extracted beside it) and check its files."""
    root = Path(path)
    if root.is_file() and zipfile.is_zipfile(root):
        root = _extract_zip(root)
    manifest = read_manifest(root)
    pkg = Package(root=root, manifest=manifest)
    if verify:
        verify_files(pkg)
    elif not pkg.model_path.is_file():
        raise PackageError(f"the package {root} has no {MODEL_NAME}", hint="export the package again")
    return pkg


def verify_files(pkg: Package) -> None:
    for entry in pkg.manifest.files:
        p = pkg.root / entry.path
        if not p.is_file():
            raise ChecksumError(
                f"the package file {entry.path} listed in the manifest is missing",
                hint="copy the whole package directory, or export it again",
            )
        size = p.stat().st_size
        if size != entry.bytes:
            raise ChecksumError(
                f"the package file {entry.path} has {size} bytes, the manifest says {entry.bytes}:"
                " it is truncated or was changed",
                hint="copy the package again; pass verify=False (--no-verify) only if you changed it on purpose",
            )
        if sha256_file(p) != entry.sha256:
            raise ChecksumError(
                f"the package file {entry.path} does not match its sha256 in the manifest",
                hint="copy the package again; pass verify=False (--no-verify) only if you changed it on purpose",
            )


def _extract_zip(path: Path) -> Path:
    target = path.with_suffix("")
    if not (target / MANIFEST_NAME).is_file():
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.startswith("/") or ".." in Path(name).parts:
                    raise PackageError(f"the package archive {path} holds an unsafe path {name!r}")
            zf.extractall(target)
    return target
