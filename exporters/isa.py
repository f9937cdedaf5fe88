"""The int8-dynamic choices that depend on the CPU's instruction set: one record per ISA.

The export host's ISA picks the record (``weight_type="auto"``, ``gelu="auto"``); tests inject ``machine`` and
``cpu_flags``. A record holds what was measured on that kind of CPU; a choice not measured there keeps the
behaviour it had before (the reason says so), so no CPU kind gets a choice measured on another.

Measured (benchmarks/README.md, Export): MiniLM int8-dynamic, 2 intra-op threads.

- ``x86-avx2`` (AMD EPYC, AVX2 + FMA, no VNNI): MLAS's u8s8 kernel (``vpmaddubsw``) adds pairs of uint8 x int8
  products in int16 and saturates with plain int8 weights, and its u8u8 kernel is ~15% slower: int8 with
  pair-safe scales (exporters/smoothing.py). GELU: not measured there, the exact erf ``BiasGelu`` stays.
- ``x86-avx512-vnni`` (AMD EPYC Zen 4): ``vpdpbusd`` sums in int32, so plain int8 weights cannot saturate. The
  tanh ``FastGelu`` runs at 0.71x (139 x 1536) / 0.80x (18 x 1536) of ``BiasGelu`` per node, and MiniLM int8 at
  batch 8 goes 0.366x -> 0.340x of fp32 ONNX (CPU time, interleaved), batch 1 0.465x -> 0.396x; cosine vs
  PyTorch mean 0.9960 -> 0.9960, min 0.9885 -> 0.9879.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Gelu = Literal["BiasGelu", "FastGelu"]


@dataclass(frozen=True, kw_only=True)
class IsaChoices:
    isa: str
    weight_type: Literal["int8", "int8-pair-safe"]
    weight_reason: str
    gelu: Gelu  # BiasGelu: exact (erf); FastGelu: the tanh approximation
    gelu_reason: str


_GELU_KEPT = "exact erf GELU: FastGelu not measured on this CPU kind"
ISA_CHOICES: dict[str, IsaChoices] = {
    c.isa: c
    for c in (
        IsaChoices(
            isa="x86-avx512-vnni",
            weight_type="int8",
            weight_reason="x86 with VNNI: u8s8 without saturation",
            gelu="FastGelu",
            gelu_reason="AVX-512: FastGelu 0.71-0.80x of BiasGelu per node, MiniLM cosine unchanged to 1e-3",
        ),
        IsaChoices(
            isa="x86-avx-vnni",
            weight_type="int8",
            weight_reason="x86 with VNNI: u8s8 without saturation",
            gelu="BiasGelu",
            gelu_reason=_GELU_KEPT,
        ),
        IsaChoices(
            isa="x86-avx2",
            weight_type="int8-pair-safe",
            weight_reason="x86 without VNNI: int8 scaled so the u8s8 kernel's int16 pair sums cannot saturate",
            gelu="BiasGelu",
            gelu_reason=_GELU_KEPT,
        ),
        IsaChoices(
            isa="arm64",
            weight_type="int8",
            weight_reason="arm64: int8 dot products",
            gelu="BiasGelu",
            gelu_reason=_GELU_KEPT,
        ),
        IsaChoices(
            isa="other",
            weight_type="int8",
            weight_reason="no x86 u8s8 saturation to avoid",
            gelu="BiasGelu",
            gelu_reason=_GELU_KEPT,
        ),
    )
}


def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def detect_isa(*, machine: str | None = None, cpu_flags: str | None = None) -> str:
    """The :data:`ISA_CHOICES` key of this CPU (or of the given ``machine`` / ``/proc/cpuinfo`` text)."""
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    if machine not in ("x86_64", "amd64", "i686"):
        return "other"
    flags = set((_cpu_flags() if cpu_flags is None else cpu_flags).split())
    if flags & {"avx512_vnni", "amx_int8"}:
        return "x86-avx512-vnni"
    if "avx_vnni" in flags:
        return "x86-avx-vnni"
    return "x86-avx2"


def isa_choices(*, machine: str | None = None, cpu_flags: str | None = None) -> IsaChoices:
    return ISA_CHOICES[detect_isa(machine=machine, cpu_flags=cpu_flags)]
