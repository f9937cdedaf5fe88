"""The load's memory moved into transparent huge pages (edgekit.huge_pages, wired in runtimes.session)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit import huge_pages as hp

MIB = 1 << 20

MAPS = "\n".join(  # /proc/self/maps lines (an anonymous mapping's line ends in spaces there)
    [
        "55d0c0000000-55d0c0400000 rw-p 00000000 00:00 0                          [heap]",
        "7f0000000000-7f0000a00000 rw-p 00000000 00:00 0 ",
        "7f0000a00000-7f0000b00000 r--p 00000000 08:01 123                        /usr/lib/libc.so.6",
        "7f0000b00000-7f0000c00000 rw-p 00000000 08:01 124                        /tmp/model.onnx.data",
        "7f0000c00000-7f0000d00000 ---p 00000000 00:00 0",
        "7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]",
    ]
)


def test_anonymous_ranges_keep_heap_and_unnamed_read_write_mappings_only() -> None:
    assert hp.anonymous_ranges(MAPS) == [(0x55D0C0000000, 0x55D0C0400000), (0x7F0000000000, 0x7F0000A00000)]


def test_new_ranges_are_the_parts_the_snapshot_did_not_cover() -> None:
    before = [(0, 10), (20, 30)]
    after = [(0, 15), (20, 30), (40, 50), (55, 60)]  # (0, 10) grew; (40, 50) and (55, 60) are new
    assert hp.new_ranges(before, after) == [(10, 15), (40, 50), (55, 60)]
    assert hp.new_ranges([(5, 8)], [(0, 20)]) == [(0, 5), (8, 20)]  # an old range inside a merged one
    assert hp.new_ranges(after, after) == []


def test_only_whole_huge_pages_inside_a_range_are_asked_for() -> None:
    h = hp.HUGE_PAGE_BYTES
    assert hp._huge_pages_in([(h + 4096, 4 * h - 1), (0, h - 1), (5 * h, 7 * h)]) == [2 * h, 5 * h, 6 * h]
    assert hp.collapse_ranges([(4096, h)]).status == "nothing"


def _matmul_model(path: Path, rows: int, cols: int) -> np.ndarray:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return w


def _anon_huge_kb() -> int:
    return int(re.search(r"^AnonHugePages:\s+(\d+) kB", Path("/proc/self/smaps_rollup").read_text(), re.M).group(1))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")
def test_session_load_collapses_its_prepacked_weights_and_results_are_unchanged(tmp_path: Path) -> None:
    # A fresh process: inside the suite a load may reuse memory an earlier test's session freed and still holds
    # resident (pages the trim cannot hand back), which is not told from old data and keeps its small pages.
    import os
    import subprocess

    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from pathlib import Path; "
        f"import test_huge_pages as t; t._check_session_collapse(Path({str(tmp_path)!r}))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    skip = re.search(r"^SKIP: (.*)$", done.stdout, re.M)
    if skip:
        pytest.skip(skip.group(1))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CHECKED" in done.stdout


def _check_session_collapse(tmp_path: Path) -> None:
    from edgekit import ort_policy
    from runtimes.providers import ProviderPlan
    from runtimes.session import SessionConfig, build_session

    w = _matmul_model(tmp_path / "mm.onnx", 1024, 4096)  # 16 MiB: MLAS pre-packs it into the session's arena
    x = np.random.default_rng(1).standard_normal((1, 1024)).astype(np.float32)
    cpu = "CPUExecutionProvider"
    plan = ProviderPlan(providers=(cpu,), asked=((cpu, "caller"),), dropped=(), available=(cpu,))
    config = SessionConfig(cache_optimized_graph=False)

    def load(**kw):
        return build_session(tmp_path / "mm.onnx", plan=plan, config=config, threads=1, **kw)

    before_kb = _anon_huge_kb()
    sess = load(low_memory=False)
    pages = sess.huge_pages
    if pages.status == "unsupported":
        print(f"SKIP: this kernel refuses MADV_COLLAPSE: {pages.reason}")
        return
    assert pages.status in ("collapsed", "partial"), pages
    assert pages.collapsed_bytes >= 12 * MIB  # the pre-packed 16 MiB weight, less the ends of its range
    assert _anon_huge_kb() - before_kb >= 12 * 1024  # read back from the kernel: the pages are 2 MiB now
    assert sess.to_dict()["huge_pages"]["collapsed_bytes"] == pages.collapsed_bytes
    got = sess.session.run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x @ w, rtol=1e-4, atol=1e-4)

    small = load(low_memory=True)
    assert (small.huge_pages.status, small.huge_pages.reason) == ("off", "low_memory session")
    saved = ort_policy.MEMORY_POLICY
    try:
        ort_policy.MEMORY_POLICY = ort_policy.MemoryPolicy(huge_pages=False)
        off = load(low_memory=False)
    finally:
        ort_policy.MEMORY_POLICY = saved
    assert (off.huge_pages.status, off.huge_pages.collapsed_bytes) == ("off", 0)
    np.testing.assert_array_equal(off.session.run(None, {"x": x})[0], got)  # same kernels, same bits
    print("CHECKED")


def _rss_kb() -> int:
    return int(re.search(r"^Rss:\s+(\d+) kB", Path("/proc/self/smaps_rollup").read_text(), re.M).group(1))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")
def test_only_wholly_resident_huge_pages_are_collapsed_so_resident_memory_does_not_grow() -> None:
    import mmap

    h = hp.HUGE_PAGE_BYTES
    before = hp.snapshot()
    region = mmap.mmap(-1, 8 * h, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # 7 or 8 whole huge pages
    for off in range(0, 4 * h, 4096):  # the first half resident, the second never touched
        region[off] = 1
    rss = _rss_kb()
    result = hp.collapse_new(before)
    if result.status == "unsupported":
        pytest.skip(f"this kernel refuses MADV_COLLAPSE: {result.reason}")
    assert _rss_kb() - rss < 1024  # the untouched half stayed absent
    assert 3 * h <= result.collapsed_bytes <= 4 * h, result
    assert result.skipped_bytes >= 3 * h, result
    assert region[0] == 1 and region[4 * h] == 0  # contents unchanged
    region.close()


def test_grown_huge_pages_are_the_old_ranges_stretches_the_load_made_resident() -> None:
    h, per = hp.HUGE_PAGE_BYTES, hp.HUGE_PAGE_BYTES // 4096
    r = (h, 5 * h)  # four huge pages, mapped before the load
    before = hp.Snapshot(
        ranges=(r,), resident={r: b"\x01" * per + b"\x00" * per + b"\x01" * (per // 2) + b"\x00" * (per * 3 // 2)}
    )
    now = hp.Snapshot(ranges=(r,), resident={r: b"\x01" * (3 * per) + b"\x01" * (per - 1) + b"\x00"})
    # page 1: resident before (old data); page 2: all new; page 3: half new (GROWN_SHARE); page 4: not whole now
    assert hp.grown_huge_pages(before, now) == [2 * h, 3 * h]
    assert hp.grown_huge_pages(now, now) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")
def test_a_load_into_memory_mapped_before_is_collapsed_too() -> None:
    # An in-process export or an earlier session leaves freed (absent) pages in ranges that stay mapped; the
    # next load's weights land there, in no new range.
    import mmap

    h = hp.HUGE_PAGE_BYTES
    region = mmap.mmap(-1, 8 * h, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for off in range(0, 4 * h, 4096):  # resident before the "load"
        region[off] = 1
    before = hp.snapshot()
    for off in range(4 * h, 8 * h, 4096):  # the "load" fills the rest of the old range
        region[off] = 2
    result = hp.collapse_new(before)
    if result.status == "unsupported":
        pytest.skip(f"this kernel refuses MADV_COLLAPSE: {result.reason}")
    # the second half's 3-4 whole huge pages, not the first half's (resident before: not the load's memory)
    assert 3 * h <= result.collapsed_bytes <= 4 * h, result
    assert region[0] == 1 and region[4 * h] == 2 and region[8 * h - 4096] == 2
    region.close()
