"""Bounds on the numbers a user passes (threads, sample counts, tokens, input shapes), with their reasons.

Each bound is one :class:`Bound` record in ``BOUNDS``; :func:`check` refuses a value outside it with an
:class:`~edgekit.errors.OutOfBoundsError` naming the option, the range and why. Without these a typo
(``--threads 100000``, ``--validation-samples 100000000``) runs for hours or exhausts memory instead of failing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgekit.errors import OutOfBoundsError
from edgekit.registry import Registry

# float32 elements: what an input shape costs before the model even runs.
_BYTES_PER_ELEMENT = 4
# One input may use at most this share of the machine's memory; the model and its activations need the rest.
_INPUT_MEMORY_SHARE = 0.25
_FALLBACK_MEMORY_BYTES = 16 * 2**30


def cpu_count() -> int:
    return os.cpu_count() or 1


def physical_memory_bytes() -> int:
    """Total RAM (POSIX sysconf); 16 GiB where the platform does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return _FALLBACK_MEMORY_BYTES


@dataclass(frozen=True, kw_only=True)
class Bound:
    name: str
    low: int
    high: Callable[[], int]
    why: str


BOUNDS: Registry[Bound] = Registry("bound")
for _b in (
    Bound(
        name="threads",
        low=1,
        high=lambda: cpu_count() * 4,
        why="more threads than 4x the cores only adds contention",
    ),
    Bound(name="validation_samples", low=1, high=lambda: 10_000, why="validation compares every sample twice"),
    Bound(
        name="max_calibration_samples",
        low=1,
        high=lambda: 10_000,
        why="calibrators hold every sample's activations in memory",
    ),
    Bound(name="max_tokens", low=1, high=lambda: 32_768, why="longer than any context window edgekit runs"),
    Bound(name="runs", low=1, high=lambda: 100_000, why="timing statistics settle long before that"),
    Bound(name="warmup", low=0, high=lambda: 10_000, why="warm-up needs a few runs, not thousands"),
    Bound(name="batch_size", low=1, high=lambda: 4_096, why="larger batches only use more memory"),
):
    BOUNDS.add(_b.name, _b)


def check(name: str, value: int | None, *, option: str | None = None) -> None:
    """Refuse ``value`` outside the registered bound ``name`` (``None`` means "use the default": accepted)."""
    if value is None:
        return
    bound = BOUNDS.get(name)
    high = bound.high()
    label = option or name
    if isinstance(value, bool) or not isinstance(value, int) or not bound.low <= value <= high:
        raise OutOfBoundsError(
            f"{label} must be an integer in [{bound.low}, {high}] (got {value!r}): {bound.why}",
            hint=f"pass {label} between {bound.low} and {high}",
            param=name,
        )


def check_shape(name: str, shape: Sequence[int], *, option: str = "--input-shape") -> None:
    """Refuse an input shape whose float32 tensor would take more than a quarter of this machine's memory."""
    elements = math.prod(shape)
    limit = int(physical_memory_bytes() * _INPUT_MEMORY_SHARE)
    if elements * _BYTES_PER_ELEMENT > limit:
        shown = "x".join(str(d) for d in shape)
        raise OutOfBoundsError(
            f"{option} {name}={shown} has {elements:,} elements ({elements * _BYTES_PER_ELEMENT / 2**30:,.1f} GiB"
            f" as float32), more than a quarter of this machine's {physical_memory_bytes() / 2**30:.1f} GiB",
            hint="use a smaller shape (batch 1 and the model's usual size, e.g. pixel_values=1x3x224x224)",
            param="input_shape",
        )


def check_writable_file(path: str | os.PathLike[str], *, option: str) -> None:
    """Refuse an output file we could not write, before the long work starts (and leave nothing behind).

    A probe file is created and removed in the target's directory: permission bits alone do not tell
    (root, read-only mounts, ACLs). OS errors propagate to the boundary, which translates them.
    """
    import tempfile
    from pathlib import Path

    from edgekit.errors import InvalidPathError

    target = Path(path)
    if target.is_dir():
        raise InvalidPathError(
            f"{option} {target} is a directory, where a file is needed", hint="name a file inside it", param=option
        )
    parent = target.parent
    if not parent.is_dir():
        raise InvalidPathError(
            f"{option} {target}: the directory {parent} does not exist",
            hint="create the directory first, or choose a path in an existing one",
            param=option,
        )
    with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{target.name}.", suffix=".probe"):
        pass
