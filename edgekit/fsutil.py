"""Writing outputs safely: refuse what must not be replaced, build beside the target, rename at the end.

- ``check_output`` runs before any long work: an existing output is replaced (``force``) only when it is an
  edgekit package or an empty directory, never a directory of the user's own files; an output under a file
  or in a directory this process cannot write is refused up front.
- ``atomic_dir`` builds in a temp dir beside the target and renames it into place, so an interrupted or
  failed export leaves nothing at the target; the result gets ordinary modes (not ``mkdtemp``'s 0700).
- ``cleanup_on_signals`` turns SIGTERM / SIGHUP into the same unwinding as Ctrl-C, so temp dirs are removed,
  then lets the signal take its usual course.
- ``user_cache_dir``: where edgekit keeps caches (never inside a package).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from edgekit.errors import OutputExistsError, OutputNotWritableError

log = logging.getLogger("edgekit.fsutil")

CACHE_DIR_ENV = "EDGEKIT_CACHE_DIR"
_MANIFEST = "edgekit.json"  # edgekit.manifest.MANIFEST_NAME; not imported to keep this module a leaf
_MANIFEST_MAX_BYTES = 64 << 20


def user_cache_dir() -> Path | None:
    """``$EDGEKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgekit``, else ``~/.cache/edgekit``; None without a home."""
    base = os.environ.get(CACHE_DIR_ENV)
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "edgekit"
    try:
        return Path.home() / ".cache" / "edgekit"
    except RuntimeError:  # no HOME and no passwd entry (some containers): run without a cache
        return None


# ----------------------------------------------------------------------------------------------- outputs


def looks_like_package(path: Path) -> bool:
    """A directory with an ``edgekit.json`` that parses as a manifest-shaped JSON object."""
    manifest = path / _MANIFEST
    try:
        if not manifest.is_file() or manifest.is_symlink() or manifest.stat().st_size > _MANIFEST_MAX_BYTES:
            return False
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return (
        isinstance(data, dict) and isinstance(data.get("schema_version"), str) and isinstance(data.get("files"), list)
    )


def _replaceable(out: Path) -> str | None:
    """Why ``out`` must not be replaced by --force, or None when it may be."""
    if out.is_symlink():
        return "is a symbolic link"
    if not out.is_dir():
        return "is a file, not a package directory"
    try:
        empty = not any(out.iterdir())
    except OSError as exc:
        return f"cannot be listed ({exc.strerror})"
    if empty or looks_like_package(out):
        return None
    return "holds files that are not an edgekit package"


def _check_writable(out: Path) -> None:
    """Refuse an output that cannot be created: under a file, or in a directory this process cannot write."""
    anchor = out.parent
    try:
        while not anchor.exists() and anchor != anchor.parent:
            anchor = anchor.parent
        is_dir = anchor.is_dir()
    except OSError as exc:  # a parent we may not even look into
        raise OutputNotWritableError(
            f"cannot write the output {out}: {exc.strerror or exc}",
            hint="choose an -o path in a directory you can write",
            param="output",
        ) from None
    if not is_dir:
        raise OutputNotWritableError(
            f"cannot write the output {out}: {anchor} is a file, not a directory",
            hint="choose an -o path whose parent is a directory",
            param="output",
        )
    # A real probe, not os.access: root passes access() checks on directories it still cannot write
    # (/proc, read-only mounts), and access() ignores ACLs on some filesystems.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".edgekit-probe-", dir=anchor))
    except OSError as exc:
        raise OutputNotWritableError(
            f"cannot write the output {out}: {anchor} is not writable ({exc.strerror or exc})",
            hint="choose an -o path in a directory you can write",
            param="output",
        ) from None


def check_output(path: str | Path, *, force: bool) -> Path:
    """Refuse an output before any long work starts; see the module docstring for the rules."""
    out = Path(path)
    if os.path.lexists(out):
        if not force:
            raise OutputExistsError(
                f"the output {out} already exists",
                hint="choose another -o path, or pass --force to replace it",
                param="output",
            )
        reason = _replaceable(out)
        if reason is not None:
            raise OutputExistsError(
                f"the output {out} {reason}; --force replaces only an edgekit package or an empty directory",
                hint="choose another -o path, or move its contents away first",
                param="output",
            )
    _check_writable(out)
    return out


def _umask() -> int:
    # os.umask is the only portable reader; it sets and restores at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normalize_modes(root: Path) -> None:
    """Ordinary modes for a finished output: directories 0777, files 0666, both minus the umask."""
    mask = _umask()
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o666 & ~mask)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temp directory that becomes ``path`` only if the block finishes without an exception.

    The temp dir sits in the same parent so the final rename is atomic on one filesystem; an interrupted or
    failed export leaves nothing at ``path``. The output is checked again just before the rename, since the
    user may have put files there while the export ran.
    """
    out = check_output(path, force=force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    old: Path | None = None
    try:
        yield tmp
        normalize_modes(tmp)
        if os.path.lexists(out):
            check_output(out, force=force)
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "previous")
            os.replace(tmp, out)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "previous").exists() and not out.exists():
            os.replace(old / "previous", out)  # the new package did not land: put the old one back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- signals


class _SignalInterrupt(KeyboardInterrupt):
    """Control flow only, never shown: unwinds the stack like Ctrl-C so ``finally`` blocks clean up, then the
    signal is delivered again with its usual action (see :func:`cleanup_on_signals`)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


def _cleanup_signals() -> list[int]:
    return [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]


@contextlib.contextmanager
def cleanup_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP unwind like KeyboardInterrupt; after it, the signal is re-raised.

    Only signals whose action is the default (terminate without cleanup) are taken over: an ignored SIGHUP
    (``nohup``) stays ignored and a caller's own handler stays in charge. A second signal during the cleanup
    is held back, so the cleanup itself is not cut short. Outside the main thread Python cannot set handlers,
    and this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            raise _SignalInterrupt(signum)

    previous = {}
    for sig in _cleanup_signals():
        if signal.getsignal(sig) is signal.SIG_DFL:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    except BaseException:
        if not received:
            raise
        # a signal unwound the block (perhaps re-wrapped on the way): it is re-delivered below
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if received:
        # The cleanup is done: now die as the signal says (its default action), as if it came just now.
        log.warning("received %s: stopped, temporary files removed", signal.Signals(received[0]).name)
        signal.raise_signal(received[0])
        raise _SignalInterrupt(received[0])
