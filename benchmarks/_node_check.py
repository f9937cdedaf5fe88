"""Per-node check of the host estimate: ONNX Runtime's profiled kernel time next to the estimator's time for
each node, grouped by kind of work, so a mis-rated kind shows as a ratio far from 1.

    python benchmarks/_node_check.py MODEL.onnx [--runs N] [--shape NAME=1x3x224x224] [--top K]

Runs ``edgekit.profile`` on ``host`` (the calibration is the one the model's measurement fits), then profiles a
session of the model with ``enable_profiling`` (its per-node kernel times; ONNX Runtime's profiler adds some
microseconds per node, so compare groups of large nodes, not tiny ones) and prints, per group (op, work kind,
NCHW or blocked, kernel size, stride), the measured and estimated milliseconds per run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

# ONNX Runtime's profiler adds about this much to every node's kernel time (benchmarks/README.md, Profiler)
PROFILER_US = 5.5


def _host_efficiency(d: dict[str, Any]) -> Any:
    from edgekit.profiler.calibration import HostEfficiency
    from edgekit.profiler.static import NodeKind

    keep = {k: v for k, v in d.items() if k in HostEfficiency.__dataclass_fields__}
    keep["timings_ms"] = d["suite_timings_ms"]
    keep["call_overhead_us"] = {NodeKind(k): v for k, v in d["call_overhead_us"].items()}
    return HostEfficiency(**keep)


def _group(node: Any) -> str:
    from edgekit.profiler import kernels
    from edgekit.profiler.static import NodeKind

    if node.kind != NodeKind.CONV:
        return f"{node.op_type}"
    where = "nchw" if node.nchw_on_host else "blocked"
    stride = "s1" if node.unit_stride else "s2"
    return f"conv {kernels.work_kind(node)} k{node.kernel_elems} {stride} {where}"


def _measured(model: Path, feeds: dict[str, np.ndarray], threads: int, runs: int) -> dict[str, float]:
    """Kernel microseconds (first quartile over the runs) of each node (level "all", as the measurement runs it)."""
    import os
    import tempfile

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "p")
        sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        for _ in range(3):
            sess.run(None, feeds)
        for _ in range(runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    runs_ev = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    start = runs_ev[3] if len(runs_ev) > 3 else 0
    per: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= start:
            per[e["name"][: -len("_kernel_time")]].append(e["dur"])
    # the first quartile of each node's calls, as the check figure and the calibration take theirs (load)
    return {k: float(np.quantile(v, 0.25)) for k, v in per.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--shape", default="")
    ap.add_argument("--top", type=int, default=0)
    ap.add_argument("--group", default="", help="list every node of the groups containing this text")
    ap.add_argument("--save", type=Path, help="write the rows (JSON) here")
    args = ap.parse_args(argv)

    from edgekit.devices import get_device
    from edgekit.profiler import calibration, estimate, layout, static
    from edgekit.profiler.api import profile

    shapes = None
    if args.shape:
        name, dims = args.shape.split("=")
        shapes = {name: [int(x) for x in dims.split("x")]}
    rep = profile([str(args.model)], devices=["host"], runs=args.runs, input_shapes=shapes, progress=False).to_dict()
    v = rep["result"]["variants"][0]
    eff = _host_efficiency(v["host_efficiency"])
    host = get_device("host")
    rates = estimate.device_rates(host, eff, host)
    model = static.load_onnx(args.model)
    specs = static.graph_input_specs(model)
    rng = np.random.default_rng(0)
    feeds = {
        name: rng.standard_normal(shapes[name] if shapes and name in shapes else dims).astype(np.float32)
        for name, (_, dims) in specs.items()
    }
    import tempfile

    tmp = Path(tempfile.mkdtemp())
    runtime = static.analyze(static.runtime_graph(args.model, tmp / "rt.onnx"), feeds=feeds)
    (lay,) = layout.host_layout_nodes(args.model, tmp / "host.onnx", [runtime], portable=tmp / "rt.onnx")
    analysis = layout.with_layout(runtime, lay)
    measured = _measured(args.model, feeds, eff.threads, args.runs)
    # the NCHWc pass names a blocked node after its output + "_nchwc": back to the portable graph's node name
    by_output = {n.output[0]: n.name for n in static.load_onnx(tmp / "rt.onnx", load_weights=False).graph.node}

    # (a BatchNormalization or Mul it turns into a blocked 1x1 depthwise Conv: output + "_bn_nchwc" / "_mul_nchwc")
    def portable(k: str) -> str:
        for suffix in ("_bn_nchwc", "_mul_nchwc", "_nchwc"):
            if k.endswith(suffix) and k.removesuffix(suffix) in by_output:
                return by_output[k.removesuffix(suffix)]
        return k

    measured = {portable(k): us for k, us in measured.items()}

    groups: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0])
    rows = []
    streamed = analysis.weight_bytes > rates.cache_bytes
    for n in analysis.nodes:
        t, _ = estimate._node_time_s(n, rates, streamed=streamed)
        par = calibration.is_parallel(n, rates.threads)
        disp = (rates.parallel_node_overhead_us if par else rates.node_overhead_us) + estimate.call_cost_us(n, rates)
        m = measured.get(n.name)
        if m is None:
            continue
        g = groups[_group(n)]
        g[0] += m
        g[1] += t * 1e6
        g[2] += disp
        g[3] += 1
        shape = f"g{n.groups} cpg{n.channels_per_group} out{n.output_elements}"
        rows.append((n.name, _group(n), m, t * 1e6, disp, n.total_flops, n.bytes_moved, shape))
    matched = {r[0] for r in rows}
    unmatched = sum(us for k, us in measured.items() if k not in matched)
    missing = sorted(((us, k) for k, us in measured.items() if k not in matched), reverse=True)[:6]
    print("unmatched:", ", ".join(f"{k[-40:]} {us:.0f}" for us, k in missing))
    ph = v["measurement"]["phases"][0]
    print(f"check_ms {ph.get('check_ms')}  p50 {ph['latency']['p50_ms']}  load {rep['result']['host']['max_load_1m']}")
    est = v["devices"][0]["estimate"]["phases"][0]["latency_ms"]
    print(f"estimate {est}  profiled kernels sum {sum(measured.values()) / 1e3:.3f} ms (unmatched {unmatched:.0f} us)")
    print(f"{'group':44s} {'n':>4s} {'meas us':>9s} {'est us':>9s} {'disp us':>8s} {'meas/est':>8s}")
    for k, (m, e, d, c) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        print(f"{k:44s} {c:4d} {m:9.0f} {e:9.0f} {d:8.0f} {m / max(e + d, 1e-9):8.2f}")
    if args.save:
        args.save.write_text(json.dumps({"rows": rows, "efficiency": v["host_efficiency"]}))
    if args.group:
        for r in rows:
            if args.group in r[1]:
                rate = r[5] / max(r[2] - PROFILER_US, 1.0) / 1e3
                print(
                    f"  {r[0][-44:]:44s} {r[1]:36s} meas {r[2]:7.1f} est {r[3]:7.1f}+{r[4]:4.1f} "
                    f"MF {r[5] / 1e6:6.2f} MB {r[6] / 1e6:5.2f} GF/s {rate:6.1f} {r[7]}"
                )
    if args.top:
        rows.sort(key=lambda r: -(r[2] - r[3] - r[4]))
        for r in rows[: args.top]:
            print(f"  {r[0][:40]:40s} {r[1]:36s} meas {r[2]:7.1f} est {r[3]:7.1f}+{r[4]:4.1f} MF {r[5] / 1e6:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
