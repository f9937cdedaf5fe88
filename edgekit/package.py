"""Reading a model package from disk: the manifest, its files and their checksums.

Writing lives in ``exporters.package_writer``; this module is what a device needs, so it imports only the
standard library.

What a package may not do, whatever its manifest says:
- name a file outside itself: every path in ``files`` and every file path in ``preprocessing`` is a
  relative path inside the package (no ``..``, no absolute path, no symlink that leads out);
- pass verification without covering what the runtime reads: ``model.onnx`` (and its external data) and
  the tokenizer must be listed, so ``files: []`` cannot make a changed model "verified";
- unpack into anything but a fresh staging directory: a ``.zip`` is extracted into the user cache under
  the archive's sha256 (an updated archive is never served from a stale extraction), with limits on members
  and uncompressed size, refusing unsafe member names, and renamed into place only once complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import ChecksumError, PackageError, SourceNotFoundError
from edgekit.fsutil import user_cache_dir
from edgekit.hashing import sha256_file
from edgekit.manifest import MANIFEST_NAME, MODEL_NAME, Manifest, asset_paths, relative_path_problem

# A manifest is a few KB; anything this large is not one (and would be parsed into memory).
MANIFEST_MAX_BYTES = 16 << 20
# Zip limits: a package archive holds a handful of files; its uncompressed size is bounded so a small
# archive cannot fill the disk (a zip bomb). Ship larger packages as a directory.
ZIP_MAX_MEMBERS = 10_000
ZIP_MAX_BYTES = 8 << 30
# ONNX weights compress little (~1.1x; int4 ~1.3x); above this ratio and size an archive is a bomb.
ZIP_MAX_RATIO = 200
ZIP_RATIO_MIN_BYTES = 32 << 20
STAGING_STALE_SECONDS = 24 * 3600
_CHUNK = 1 << 20
_DEFAULT_TOKENIZER = "tokenizer.json"  # what the text pipelines read when preprocessing names none
_REEXPORT = "export the package again with `edgekit export`"


@dataclass(frozen=True)
class Package:
    root: Path
    manifest: Manifest
    # path -> sha256 of the files checked against the manifest when this package was opened (empty when
    # opened with verify=False): the runtime reuses them instead of hashing the model twice.
    verified: Mapping[str, str] = field(default_factory=dict)
    archive: Path | None = None  # the .zip this package was extracted from

    @property
    def model_path(self) -> Path:
        return self.root / MODEL_NAME

    def file(self, name: str) -> Path | None:
        """A file of the package by relative path, or None; a path leading outside is a PackageError."""
        p = confined_path(self.root, name, field=name)
        return p if p.is_file() else None


def confined_path(root: str | Path, rel: str, *, field: str) -> Path:
    """``root / rel``, refusing a path that is not relative or that leads outside ``root`` (``..``, symlinks).

    ``field`` names where the path came from (``files[2].path``, ``preprocessing.tokenizer_file``).
    """
    root = Path(root)
    problem = relative_path_problem(rel) if isinstance(rel, str) else "is not a string"
    if problem is None:
        try:
            resolved = (root / rel).resolve()
            inside = resolved == root.resolve() or resolved.is_relative_to(root.resolve())
        except (OSError, RuntimeError) as exc:  # a symlink loop
            problem = f"cannot be resolved ({exc})"
        else:
            problem = None if inside else f"leads outside the package (to {resolved})"
    if problem is not None:
        raise PackageError(
            f"the package {root} names {rel!r} in {field}, which {problem}; package files must stay inside it",
            hint="the package was changed or built by hand: " + _REEXPORT,
            param=field,
        )
    return root / rel


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
    confined_path(root, MANIFEST_NAME, field=MANIFEST_NAME)
    try:
        if path.stat().st_size > MANIFEST_MAX_BYTES:
            raise PackageError(
                f"{path} is {path.stat().st_size} bytes, too large for a manifest",
                hint="the package is corrupt: " + _REEXPORT,
            )
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise PackageError(
            f"{path} is not valid JSON: {reason}", hint="the package is corrupt: " + _REEXPORT, param=MANIFEST_NAME
        ) from None
    return Manifest.from_dict(data)


def open_package(path: str | Path, *, verify: bool = True) -> Package:
    """Open a package directory (or a ``.zip`` of one) and check its paths and, with ``verify``, its files."""
    src = Path(path)
    archive = None
    if src.is_file() and zipfile.is_zipfile(src):
        archive, src = src, extract_zip(src)
    elif src.is_file() and src.suffix.lower() == ".zip":
        raise PackageError(f"{src} is not a valid zip archive (truncated or corrupt)", hint="copy the archive again")
    manifest = read_manifest(src)
    pkg = Package(root=src, manifest=manifest, archive=archive)
    if verify:
        return Package(root=src, manifest=manifest, verified=verify_files(pkg), archive=archive)
    check_paths(pkg)
    if not pkg.model_path.is_file():
        raise PackageError(f"the package {src} has no {MODEL_NAME}", hint=_REEXPORT)
    return pkg


def check_paths(pkg: Package) -> None:
    """Every path the manifest names, and the files the runtime reads by default, stay inside the package."""
    for i, entry in enumerate(pkg.manifest.files):
        confined_path(pkg.root, entry.path, field=f"files[{i}].path")
    for name, rel in asset_paths(pkg.manifest.preprocessing):
        confined_path(pkg.root, rel, field=name)
    for rel in (MODEL_NAME, _DEFAULT_TOKENIZER):
        if os.path.lexists(pkg.root / rel):
            confined_path(pkg.root, rel, field=rel)


def _must_be_listed(pkg: Package) -> list[str]:
    """The files the runtime reads: the graph, its external data and the tokenizer, where present."""
    names = [MODEL_NAME]
    names += sorted(p.name for p in pkg.root.glob(f"{MODEL_NAME}.*") if p.is_file())
    tokenizer = pkg.manifest.preprocessing.get("tokenizer_file", _DEFAULT_TOKENIZER)
    if isinstance(tokenizer, str) and (pkg.root / tokenizer).is_file():
        names.append(tokenizer)
    return names


def verify_files(pkg: Package) -> dict[str, str]:
    """Check every listed file's size and sha256; return path -> sha256 of the files checked."""
    check_paths(pkg)
    listed = {entry.path for entry in pkg.manifest.files}
    for name in _must_be_listed(pkg):
        if name not in listed:
            raise ChecksumError(
                f"the package file {name} is not listed in the manifest, so it cannot be verified",
                hint="copy the package again; pass verify=False (--no-verify) only if you changed it on purpose",
                param=name,
            )
    verified: dict[str, str] = {}
    for entry in pkg.manifest.files:
        p = pkg.root / entry.path
        if not p.is_file():
            raise ChecksumError(
                f"the package file {entry.path} listed in the manifest is missing",
                hint="copy the whole package directory, or " + _REEXPORT,
                param=entry.path,
            )
        size = p.stat().st_size
        if size != entry.bytes:
            raise ChecksumError(
                f"the package file {entry.path} has {size} bytes, the manifest says {entry.bytes}:"
                " it is truncated or was changed",
                hint="copy the package again; pass verify=False (--no-verify) only if you changed it on purpose",
                param=entry.path,
            )
        digest = sha256_file(p)
        if digest != entry.sha256:
            raise ChecksumError(
                f"the package file {entry.path} does not match its sha256 in the manifest",
                hint="copy the package again; pass verify=False (--no-verify) only if you changed it on purpose",
                param=entry.path,
            )
        verified[entry.path] = digest
    return verified


# -------------------------------------------------------------------------------------------- zip archives


def zip_cache_dir() -> Path:
    base = user_cache_dir()
    if base is None:
        raise PackageError(
            "there is no cache directory to extract the package archive into (no home directory)",
            hint="set EDGEKIT_CACHE_DIR to a writable directory, or unzip the package and pass the directory",
        )
    return base / "packages"


def extract_zip(path: Path) -> Path:
    """The package directory extracted from ``path``, under the user cache, named by the archive's sha256."""
    digest = sha256_file(path)
    base = zip_cache_dir()
    target = base / digest
    if target.is_dir():
        return _package_in(target, path)
    try:
        base.mkdir(parents=True, exist_ok=True)
        _sweep_stale_staging(base)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest[:16]}.", suffix=".partial", dir=base))
    except OSError as exc:
        raise PackageError(
            f"cannot extract the package archive {path} into {base}: {exc.strerror or exc}",
            hint="set EDGEKIT_CACHE_DIR to a writable directory, or unzip the package and pass the directory",
        ) from None
    try:
        _extract_members(path, staging)
        try:
            os.replace(staging, target)  # atomic: a reader sees the whole extraction or none
        except OSError:
            if not target.is_dir():  # not a concurrent loader that won the race: a real failure
                raise
    except OSError as exc:
        raise PackageError(
            f"cannot extract the package archive {path}: {exc.strerror or exc}",
            hint="free some disk space, or set EDGEKIT_CACHE_DIR to a writable directory",
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _package_in(target, path)


def _sweep_stale_staging(base: Path) -> None:
    """Staging dirs of extractions killed outright (SIGKILL, power loss); a live one is never this old."""
    cutoff = time.time() - STAGING_STALE_SECONDS
    for p in base.glob(".*.partial"):
        with contextlib.suppress(OSError):
            if p.stat().st_mtime < cutoff:
                shutil.rmtree(p, ignore_errors=True)


def _package_in(target: Path, archive: Path) -> Path:
    """The package folder inside an extraction (a flat archive was put into a folder named after it)."""
    subdirs = [p for p in target.iterdir() if p.is_dir() and not p.is_symlink()]
    if len(subdirs) == 1 and (subdirs[0] / MANIFEST_NAME).is_file():
        return subdirs[0]
    raise PackageError(
        f"the archive {archive} holds no {MANIFEST_NAME} at its top or in a single folder",
        hint="zip the package directory itself (e.g. `cd out && zip -r pkg.zip pkg`)",
    )


def _bad_zip(path: Path, message: str) -> PackageError:
    return PackageError(
        f"the package archive {path} {message}; nothing was extracted",
        hint="rebuild the archive from an exported package directory (zip -r pkg.zip pkg)",
    )


def _checked_members(path: Path, zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > ZIP_MAX_MEMBERS:
        raise _bad_zip(path, f"has {len(infos)} members, more than the limit of {ZIP_MAX_MEMBERS}")
    seen: set[str] = set()
    for info in infos:
        name = info.filename.rstrip("/") if info.is_dir() else info.filename
        problem = relative_path_problem(name)
        if problem:
            raise _bad_zip(path, f"holds an unsafe member name {info.filename!r} (it {problem})")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise _bad_zip(path, f"holds a symbolic link {info.filename!r}")
        if info.flag_bits & 0x1:
            raise _bad_zip(path, f"holds an encrypted member {info.filename!r}")
        if name in seen:
            raise _bad_zip(path, f"holds {info.filename!r} twice")
        seen.add(name)
    tops = {name.split("/")[0] for name in seen}
    nested = len(tops) == 1 and f"{next(iter(tops))}/{MANIFEST_NAME}" in seen
    if MANIFEST_NAME not in seen and not nested:
        raise _bad_zip(path, f"holds no {MANIFEST_NAME} at its top or in a single folder")
    total = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos) or 1
    if total > ZIP_MAX_BYTES:
        raise _bad_zip(path, f"unpacks to {total} bytes, more than the limit of {ZIP_MAX_BYTES}")
    if total > ZIP_RATIO_MIN_BYTES and total / packed > ZIP_MAX_RATIO:
        raise _bad_zip(path, f"unpacks {packed} bytes into {total} ({total // packed}x): it looks like a zip bomb")
    return infos


def _extract_members(path: Path, staging: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = _checked_members(path, zf)
            free = shutil.disk_usage(staging).free
            total = sum(i.file_size for i in infos)
            if total > free:
                raise _bad_zip(path, f"unpacks to {total} bytes, more than the {free} bytes free in {staging.parent}")
            # A flat archive lands in a folder named after it, so the package directory keeps a readable
            # name (``minilm-int8``) rather than the staging dir's hash; a zipped folder brings its own.
            flat = any(i.filename == MANIFEST_NAME for i in infos)
            dest = staging / _folder_name(path) if flat else staging
            for info in infos:
                _extract_one(zf, info, dest)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise _bad_zip(path, f"is corrupt ({exc})") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise
        raise _bad_zip(path, f"cannot be extracted ({exc.strerror or exc})") from None


def _folder_name(archive: Path) -> str:
    stem = archive.stem
    return stem if stem and relative_path_problem(stem) is None and not stem.startswith(".") else "package"


def _extract_one(zf: zipfile.ZipFile, info: zipfile.ZipInfo, staging: Path) -> None:
    dest = staging / info.filename
    if info.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with zf.open(info) as src, open(dest, "xb") as out:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > info.file_size:  # zipfile stops at the declared size; this guards that promise
                raise zipfile.BadZipFile(f"member {info.filename!r} is larger than it declares")
            out.write(chunk)
