"""Move the memory a session's load allocated (its pre-packed weights) into transparent huge pages (Linux).

Why: a decode step of a memory-bound decoder streams every weight once per token — 106 MiB for the ~32M Llama
at fp32, in 27,000 pages of 4 KiB. ONNX Runtime allocates the pre-packed weights with malloc; with the
kernel's THP mode ``madvise`` (the common default) nothing ever asks for huge pages, so every step pays a
TLB miss per 4 KiB, and how fast the step runs depends on where the allocator's pages happened to land:
measured on the AVX-512 VNNI host (2 vCPU AMD EPYC Zen 4, 1 intra-op thread, steps of two sessions interleaved
one by one), the same graph ran up to 7 % apart between two sessions of one process, and the first session
loaded was the slowest. ``madvise(MADV_COLLAPSE)`` (Linux 6.1+) rewrites the pages of a range into 2 MiB
pages synchronously; the session with its weights collapsed decoded 1.15-1.2x faster than the same graph
without (see benchmarks/README.md, runtime section).

What is collapsed: the anonymous read-write ranges that appeared in ``/proc/self/maps`` while the session
loaded (the arena regions holding the pre-packed weights, a grown heap), whole 2 MiB-aligned stretches only,
and the 2 MiB stretches of ranges that were already mapped where at least half the pages became resident
during the load (:class:`Snapshot`): a process that freed memory before (an in-process export, an earlier
session, any large free) hands the load its old heap and arena ranges, so the pre-packed weights land in
address ranges that existed before. Measured (AVX-512 VNNI host, 2 vCPU AMD EPYC Zen 5): in the runtime
benchmark's process, whose exports and peers ran first, every ~32M Llama session reported "nothing" (no new
range spans a 2 MiB page); a session loaded after freeing a session and 120 MiB of arrays collapsed 14 of its
~100 MiB. Collapsed, the 32M fp32 decode step ran 1.07x faster (1 thread, CPU time, interleaved).
Collapsing never changes what memory holds, only its page size, so another thread allocating meanwhile
cannot be harmed: at worst its pages are collapsed too. Resident memory does not grow:
only 2 MiB stretches whose every 4 KiB page is resident (``mincore``) are collapsed, so freed memory the
heap trim handed back stays absent; ranges smaller than 2 MiB are left alone. Where the call is refused (another OS, an
older kernel, THP disabled for the process) the session simply keeps its small pages: the result says why.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "HUGE_PAGE_BYTES",
    "HugePageResult",
    "Snapshot",
    "anonymous_ranges",
    "collapse_new",
    "collapse_ranges",
    "new_ranges",
    "snapshot",
]

HUGE_PAGE_BYTES = 2 << 20
MADV_COLLAPSE = 25  # include/uapi/asm-generic/mman-common.h, Linux 6.1+

Range = tuple[int, int]
_PAGE = 4096
_PAGES_PER_HUGE = HUGE_PAGE_BYTES // _PAGE
# An old range's huge page is the load's when at least this share of its pages became resident during the load.
GROWN_SHARE = 0.5
_BIT0 = bytes(b & 1 for b in range(256))  # mincore's byte per page: bit 0 is residency, the rest reserved


@dataclass(frozen=True, kw_only=True)
class HugePageResult:
    """What :func:`collapse_ranges` did: bytes now in 2 MiB pages, bytes the kernel refused, and why."""

    status: str  # collapsed | partial | unsupported | failed | nothing
    collapsed_bytes: int = 0
    failed_bytes: int = 0
    skipped_bytes: int = 0  # huge pages not wholly resident (freed memory the trim handed back): left alone
    seconds: float = 0.0
    reason: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Snapshot:
    """The anonymous ranges before a load, with which of their 4 KiB pages were resident (``mincore``).

    ``resident`` maps a range to one byte per page (bit 0: resident), or is empty where ``mincore`` is not
    available: then only new ranges count."""

    ranges: tuple[Range, ...]
    resident: dict[Range, bytes]


def snapshot() -> Snapshot:
    """The anonymous ranges now, and their resident pages (call after a heap trim, so freed pages are absent)."""
    ranges = anonymous_ranges()
    calls = _libc()
    if calls is None:
        return Snapshot(tuple(ranges), {})
    return Snapshot(tuple(ranges), {r: bits for r in ranges if (bits := _residency(calls[1], r)) is not None})


def _residency(mincore: Any, r: Range) -> bytes | None:
    start, end = r
    vec = (ctypes.c_ubyte * ((end - start) // _PAGE))()
    return bytes(vec).translate(_BIT0) if mincore(start, end - start, vec) == 0 else None


def grown_huge_pages(before: Snapshot, now: Snapshot) -> list[int]:
    """Whole huge pages of ranges mapped before the load, wholly resident now, with at least
    :data:`GROWN_SHARE` of their pages absent before: memory the load took from ranges that already existed."""
    out = []
    old, cur = sorted(before.resident.items()), sorted(now.resident.items())
    i = j = 0
    while i < len(cur) and j < len(old):  # one sweep over both sorted range lists: each overlap once
        (r_now, bits_now), (r_old, bits_old) = cur[i], old[j]
        lo, hi = max(r_now[0], r_old[0]), min(r_now[1], r_old[1])
        for page in range(-(-lo // HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES, hi - HUGE_PAGE_BYTES + 1, HUGE_PAGE_BYTES):
            a, b = (page - r_now[0]) // _PAGE, (page - r_old[0]) // _PAGE
            if 0 in bits_now[a : a + _PAGES_PER_HUGE]:  # not wholly resident: left alone
                continue
            if bits_old[b : b + _PAGES_PER_HUGE].count(0) >= GROWN_SHARE * _PAGES_PER_HUGE:
                out.append(page)
        if r_now[1] <= r_old[1]:
            i += 1
        else:
            j += 1
    return out


def anonymous_ranges(maps_text: str | None = None) -> list[Range]:
    """The anonymous read-write mappings (no backing file, or the brk ``[heap]``) of ``/proc/self/maps``."""
    if maps_text is None:
        try:
            # line by line: the whole text read at once left ~86 kB of heap resident (measured after a tiny
            # decoder's load), counted in that load's memory
            with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
                return _anonymous(f)
        except OSError:
            return []
    return _anonymous(maps_text.splitlines())


def _anonymous(lines: Iterable[str]) -> list[Range]:
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) < 5 or not parts[1].startswith("rw"):
            continue
        if len(parts) > 5 and parts[5] != "[heap]":
            continue  # file-backed, or a special mapping ([stack], [vvar], ...)
        start, _, end = parts[0].partition("-")
        out.append((int(start, 16), int(end, 16)))
    return out


def new_ranges(before: Iterable[Range], after: Iterable[Range]) -> list[Range]:
    """The parts of ``after`` not covered by ``before`` (a region that grew contributes its new part)."""
    old = sorted(before)
    out = []
    for start, end in sorted(after):
        cur = start
        for a, b in old:
            if b <= cur or a >= end:
                continue
            if a > cur:
                out.append((cur, a))
            cur = max(cur, b)
            if cur >= end:
                break
        if cur < end:
            out.append((cur, end))
    return out


def _huge_pages_in(ranges: Iterable[Range]) -> list[int]:
    """The start of each whole huge page inside ``ranges``."""
    out = []
    for start, end in ranges:
        a = -(-start // HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES
        out.extend(range(a, end - HUGE_PAGE_BYTES + 1, HUGE_PAGE_BYTES))
    return out


def _libc() -> tuple[Any, Any] | None:
    """(madvise, mincore) from the C library, or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise, mincore = libc.madvise, libc.mincore
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    madvise.restype = mincore.restype = ctypes.c_int
    return madvise, mincore


def _resident(mincore: Any, start: int, vec: Any) -> bool:
    """Whether every 4 KiB page of the huge page at ``start`` is resident (``mincore``)."""
    if mincore(start, HUGE_PAGE_BYTES, vec) != 0:
        return False
    return all(b & 1 for b in bytes(vec))


def collapse_ranges(ranges: Iterable[Range]) -> HugePageResult:
    """``madvise(MADV_COLLAPSE)`` on each whole 2 MiB page inside ``ranges``.

    One call per huge page: over a longer range the kernel reports only that some page failed (a thread
    stack is never collapsed: since Linux 6.7 ``MAP_STACK`` mappings refuse huge pages), not how many did.
    """
    return _collapse_pages(_huge_pages_in(ranges))


def _collapse_pages(todo: list[int]) -> HugePageResult:
    """``madvise(MADV_COLLAPSE)`` on each huge page starting at ``todo``, if wholly resident."""
    if not todo:
        return HugePageResult(status="nothing", reason="no range spans a whole 2 MiB page")
    calls = _libc()
    if calls is None:
        return HugePageResult(status="unsupported", reason=f"no madvise on {sys.platform}")
    madvise, mincore = calls
    vec = (ctypes.c_ubyte * _PAGES_PER_HUGE)()
    t0 = time.perf_counter()
    done = failed = skipped = 0
    errors: dict[int, int] = {}
    for a in todo:
        if not _resident(mincore, a, vec):
            skipped += HUGE_PAGE_BYTES  # collapsing would make its absent pages resident: memory, not speed
        elif madvise(a, HUGE_PAGE_BYTES, MADV_COLLAPSE) == 0:
            done += HUGE_PAGE_BYTES
        else:
            failed += HUGE_PAGE_BYTES
            err = ctypes.get_errno()
            errors[err] = errors.get(err, 0) + 1
    reason = "; ".join(f"{errno.errorcode.get(e, e)} ({os.strerror(e)}) x{n}" for e, n in errors.items()) or None
    status = "collapsed" if not failed else "partial" if done else "failed"
    if not done and not failed:
        status = "nothing"
    if status == "failed" and set(errors) == {errno.EINVAL}:  # a kernel without MADV_COLLAPSE refuses every page
        status = "unsupported"
    return HugePageResult(
        status=status,
        collapsed_bytes=done,
        failed_bytes=failed,
        skipped_bytes=skipped,
        seconds=round(time.perf_counter() - t0, 4),
        reason=reason,
    )


def collapse_new(before: Snapshot) -> HugePageResult:
    """Collapse what was mapped since the :func:`snapshot` ``before``, and the huge pages of old ranges the
    load filled (:func:`grown_huge_pages`)."""
    now = snapshot()
    pages = set(_huge_pages_in(new_ranges(before.ranges, now.ranges)))
    pages.update(grown_huge_pages(before, now))
    return _collapse_pages(sorted(pages))
