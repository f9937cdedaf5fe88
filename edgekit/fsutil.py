"""Writing outputs atomically: build in a temp dir beside the target, rename at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgekit.errors import OutputExistsError


def check_output(path: str | Path, *, force: bool) -> Path:
    out = Path(path)
    if out.exists() and not force:
        raise OutputExistsError(
            f"the output {out} already exists", hint="choose another -o path, or pass --force to replace it"
        )
    return out


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temp directory that becomes ``path`` only if the block finishes without an exception.

    The temp dir sits in the same parent so the final rename is atomic on one filesystem; an interrupted or
    failed export leaves nothing at ``path``.
    """
    out = check_output(path, force=force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
