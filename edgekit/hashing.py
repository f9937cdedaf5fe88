"""sha256 of files and directories, streamed so large weights never sit in memory twice."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(value: object) -> bool:
    """A lowercase hex sha256 digest, as the manifest stores them."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(path: str | Path) -> str:
    """One digest over a directory: each file's relative path and content, in sorted order."""
    root = Path(path)
    if root.is_file():
        return sha256_file(root)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(bytes.fromhex(sha256_file(p)))
    return h.hexdigest()
