"""``edgekit devices`` (list the device profiles) and ``edgekit devices show NAME`` (one of them)."""

from __future__ import annotations

import argparse
from typing import Any

from edgekit.cli import COMMANDS, Command

EXAMPLES = """examples:
  edgekit devices                      # every bundled profile, plus host
  edgekit devices show raspberry-pi-5  # cores, ISA, peak throughput, memory budget, EPs, sources
  edgekit devices --device-dir my-devices --json
"""


def _add(p: argparse.ArgumentParser) -> None:
    p.epilog = EXAMPLES
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the examples' lines as written
    p.add_argument(
        "action", nargs="?", choices=["list", "show"], default="list", help="list every profile (default) or show one"
    )
    p.add_argument("name", nargs="?", help="the device to show, e.g. raspberry-pi-5 or host")
    p.add_argument(
        "--device-dir",
        action="append",
        metavar="DIR",
        help="a directory of your own <name>.toml profiles; repeatable (also: EDGEKIT_DEVICE_PATH)",
    )


def _summary(profile: Any) -> dict[str, Any]:
    return {
        "name": profile.name,
        "display_name": profile.display_name,
        "kind": profile.kind.value,
        "cores": profile.cores,
        "default_threads": profile.default_threads,
        "peak_fp32_gflops": profile.peak_fp32_gflops,
        "peak_int8_gops": profile.peak_int8_gops,
        "memory_gb": profile.memory_gb,
        "memory_bandwidth_gbps": profile.memory_bandwidth_gbps,
        "app_memory_budget_mb": profile.app_memory_budget_mb,
        "execution_providers": list(profile.provider_names),
        "unverified": list(profile.unverified),
    }


def _render_list(rows: list[dict[str, Any]], extra: list[str]) -> str:
    header = ["name", "kind", "cores", "fp32 GFLOPS", "int8 GOPS", "mem GB", "GB/s", "app MB", "providers"]
    table = [header]
    for r in rows:
        providers = ", ".join(p.replace("ExecutionProvider", "") for p in r["execution_providers"])
        table.append(
            [
                r["name"] + (" *" if r["unverified"] else ""),
                r["kind"],
                str(r["cores"]),
                f"{r['peak_fp32_gflops']:g}",
                f"{r['peak_int8_gops']:g}",
                f"{r['memory_gb']:g}",
                f"{r['memory_bandwidth_gbps']:g}",
                f"{r['app_memory_budget_mb']:,}",
                providers,
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [
        "",
        *extra,
        "* some figures are unverified: `edgekit devices show NAME` lists them",
        "host: this machine, detected and calibrated on first use (`edgekit devices show host`)",
    ]
    return "\n".join(lines)


def _render_one(d: dict[str, Any]) -> str:
    lines = [f"{d['name']}: {d['display_name']} ({d['kind']}, {d['os']})"]
    for c in d["cpu_clusters"]:
        lines.append(
            f"  cpu      {c['cores']} x {c['core_type']} @ {c['max_ghz']} GHz "
            f"(per cycle: fp32 {c['fp32_flops_per_cycle']:g}, fp16 {c['fp16_flops_per_cycle']:g}, "
            f"int8 {c['int8_ops_per_cycle']:g})"
        )
    lines.append(f"  isa      {', '.join(d['isa_features']) or '-'}")
    for key, unit in (
        ("peak_fp32_gflops", "GFLOPS"),
        ("peak_fp16_gflops", "GFLOPS"),
        ("peak_int8_gops", "GOPS"),
        ("memory_gb", "GB"),
        ("memory_bandwidth_gbps", "GB/s"),
        ("app_memory_budget_mb", "MB"),
        ("default_threads", "threads"),
    ):
        mark = "  (unverified)" if key in d["unverified"] else ""
        lines.append(f"  {key:<24} {d[key]:g} {unit}{mark}")
        if d["sources"].get(key):
            lines.append(f"  {'':<24}   source: {d['sources'][key]}")
    for a in d["accelerators"]:
        tops = f"{a['tops']:g} TOPS {a['precision']}" if a.get("tops") else "no published TOPS"
        reach = f"via {a['execution_provider']}" if a.get("execution_provider") else "no ONNX Runtime path"
        lines.append(f"  accel    {a['name']} ({a['kind']}, {tops}, {reach}){': ' + a['note'] if a['note'] else ''}")
    lines.append("  execution providers, in order:")
    for e in d["execution_providers"]:
        cons = f" [{', '.join(e['constraints'])}]" if e["constraints"] else ""
        lines.append(f"    {e['name']}{cons}{': ' + e['note'] if e['note'] else ''}")
    if d["unverified"]:
        lines.append(f"  unverified: {', '.join(d['unverified'])}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> tuple[Any, str]:
    from edgekit.devices import device_registry, get_device
    from edgekit.errors import UsageError

    if args.action == "show":
        if not args.name:
            raise UsageError("`edgekit devices show` needs a device name", hint="list them with `edgekit devices`")
        profile = get_device(args.name, extra_dirs=args.device_dir)
        data = profile.to_dict()
        return data, _render_one(data)
    if args.name:
        raise UsageError(f"unexpected argument {args.name!r}", hint=f"did you mean `edgekit devices show {args.name}`?")
    registry = device_registry(args.device_dir)
    profiles = [entry.load() for entry in sorted(registry, key=lambda e: e.name) if not entry.detected]
    rows = [_summary(p) for p in profiles]
    origins = {entry.name: entry.origin for entry in registry}
    for r in rows:
        r["origin"] = origins[r["name"]]
    return {"devices": rows}, _render_list(rows, [])


COMMANDS.add("devices", Command("devices", "list device profiles, or show one (edgekit devices show NAME)", _add, _run))
