"""The export's device speed-up estimate against published fp32 / int8 pairs.

``edgekit export --device`` records, per device, the estimated ratio int8 time / fp32 time with the error band of
one estimate of the device's class (``edgekit/profiler/speedup.py``). This checks that ratio where the published
data allows: every (device, model, runtime, threads) of ``edgekit/devices/validation/published.csv`` with both an
fp32 and an int8 CPU row. Both graphs are rebuilt and exported as ``benchmarks/devices.py`` does (random weights,
int8 as QDQ; cached in ``.cache/cnn``) and estimated by the export's own estimator at the profile's
``default_threads`` (pairs at another thread count are listed but not estimated). Nothing depends on this host.

    python benchmarks/device_speedup.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def published_pairs() -> list[tuple[dict[str, str], dict[str, str]]]:
    """(fp32 row, int8 row) of the same device, model, runtime and threads."""
    from edgekit.profiler import validation

    groups: dict[tuple[str, ...], dict[str, dict[str, str]]] = defaultdict(dict)
    for r in validation.published_rows():
        if validation.scored(r):
            key = (r["device"], r["model"], r["input_shape"], r["runtime"], r["threads"])
            groups[key]["int8" if "int8" in r["precision"] else "fp32"] = r
    return [(g["fp32"], g["int8"]) for g in groups.values() if len(g) == 2]


def check_pair(fp32_row: dict[str, str], int8_row: dict[str, str]) -> dict[str, Any]:
    import numpy as np
    import onnx

    from benchmarks.devices import _model_path
    from edgekit.devices import get_device
    from edgekit.profiler.speedup import DeviceEstimator

    device = get_device(fp32_row["device"])
    published = float(int8_row["latency_ms"]) / float(fp32_row["latency_ms"])
    out: dict[str, Any] = {
        "device": device.name,
        "model": fp32_row["model"],
        "runtime": fp32_row["runtime"],
        "threads": int(fp32_row["threads"]),
        "published_fp32_ms": float(fp32_row["latency_ms"]),
        "published_int8_ms": float(int8_row["latency_ms"]),
        "published_ratio": round(published, 4),
    }
    if int(fp32_row["threads"]) != device.default_threads:
        return {**out, "estimate": None, "note": "threads differ from the profile's default_threads"}
    f = _model_path(fp32_row["model"], fp32_row["input_shape"], fp32_row["precision"])
    q = _model_path(int8_row["model"], int8_row["input_shape"], int8_row["precision"])
    name = onnx.load(str(f), load_external_data=False).graph.input[0].name
    shape = tuple(int(d) for d in fp32_row["input_shape"].split("x"))
    (record,) = DeviceEstimator(devices=(device,))(f, q, {name: np.zeros(shape, np.float32)})
    return {
        **out,
        "estimate": record.to_dict(),
        "estimated_ratio": round(record.ratio, 4),
        "ratio_error": round(record.ratio / published - 1, 4),
        "within_band": record.band_pct is not None and abs(record.ratio / published - 1) <= record.band_pct / 100,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    results = [check_pair(f, q) for f, q in published_pairs()]
    print("| device | model | runtime | threads | published int8/fp32 | estimated | error | band |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        e = r.get("estimate")
        est = f"{r['estimated_ratio']:.2f} ({e['package_ms']:.1f} / {e['fp32_ms']:.1f} ms)" if e else "-"
        err = f"{r['ratio_error']:+.0%}" if e else r.get("note", "-")
        band = f"±{e['band_pct']:g} %" if e and e["band_pct"] is not None else "-"
        print(
            f"| {r['device']} | {r['model']} | {r['runtime']} | {r['threads']} | {r['published_ratio']:.2f}"
            f" ({r['published_int8_ms']:g} / {r['published_fp32_ms']:g} ms) | {est} | {err} | {band} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
