"""Error bands for device estimates, from published measurements on real devices.

``edgekit/devices/validation/published.csv`` holds the published latencies (device, model, runtime, threads,
source URL and the quoted line). ``benchmarks/devices.py`` estimates every row the estimator models (CPU rows),
fits the kernel-efficiency table leaving one model out at a time, and writes the held-out error per ISA class to
``edgekit/devices/validation/bands.toml``. An estimate for a device carries the band of its class and says
on how many published rows (of the class, and of the device itself) it rests; a device whose class has no
held-out rows is "not validated".

The band is the 80th percentile of the held-out ``|estimate / published - 1|`` of the class: four estimates
in five fell within it.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["BANDS_FILE", "PUBLISHED_FILE", "ErrorBand", "device_factor", "error_band", "published_rows", "scored"]

VALIDATION_DIR = Path(__file__).resolve().parents[1] / "devices" / "validation"
PUBLISHED_FILE = VALIDATION_DIR / "published.csv"
BANDS_FILE = VALIDATION_DIR / "bands.toml"
BAND_QUANTILE = 0.8


@dataclass(frozen=True, kw_only=True)
class ErrorBand:
    isa_class: str
    band_pct: float | None  # None: not validated
    class_rows: int  # held-out published rows of the ISA class
    device_rows: int  # of those, rows measured on this very device
    within_25_pct: float | None = None  # share of the class's held-out rows within +-25 %
    device_factor: float = 1.0  # published / estimate on this device's own rows (1.0: none, table alone)
    basis: str = ""

    @property
    def validated(self) -> bool:
        return self.band_pct is not None and self.class_rows > 0

    def label(self) -> str:
        """``±25 %, validated on 12 published rows (4 on this device)`` or ``not validated``."""
        if not self.validated:
            return f"not validated (no published {self.isa_class} rows)"
        own = f"{self.device_rows} on this device" if self.device_rows else "none on this device"
        return f"±{self.band_pct:.0f} %, validated on {self.class_rows} published {self.isa_class} rows ({own})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "isa_class": self.isa_class,
            "band_pct": self.band_pct,
            "validated": self.validated,
            "class_rows": self.class_rows,
            "device_rows": self.device_rows,
            "within_25_pct": self.within_25_pct,
            "device_factor": self.device_factor,
            "label": self.label(),
            "basis": self.basis,
        }


def scored(row: dict[str, str]) -> bool:
    """Rows the estimator claims to model: CPU rows of fp32 or int8 models. NPU/GPU rows are another runtime;
    16-bit-activation QDQ graphs (AI Hub's w8a16) run ops ONNX Runtime's CPU kernels emulate, not modelled."""
    return row.get("compute_unit") == "CPU" and "w8a16" not in row.get("precision", "")


@lru_cache(maxsize=4)
def published_rows(path: Path = PUBLISHED_FILE) -> tuple[dict[str, str], ...]:
    if not path.exists():
        return ()
    with path.open(newline="", encoding="utf-8") as f:
        return tuple(csv.DictReader(line for line in f if not line.startswith("#")))


@lru_cache(maxsize=4)
def _bands(path: Path = BANDS_FILE) -> dict[str, Any]:
    if not path.exists():
        return {}
    return tomllib.loads(path.read_text(encoding="utf-8"))


def device_factor(device: str) -> float:
    """The per-device adaptation fitted on the device's own published rows (1.0 for a device without)."""
    return float(_bands().get("device_factor", {}).get(device, 1.0))


def error_band(device: str, isa: str) -> ErrorBand:
    """The held-out error band of ``isa``'s class, with the rows it rests on (``not validated`` without).

    A device with published rows of its own is estimated with its per-device factor and gets the class's
    adapted band; one without gets the band of the kernel table alone (``band_pct_unadapted``).
    """
    band = _bands().get("class", {}).get(isa, {})
    own = Counter(r["device"] for r in published_rows() if scored(r))[device]
    rows = int(band.get("rows", 0))
    key = "band_pct" if own else "band_pct_unadapted"
    pct = band.get(key, band.get("band_pct"))
    return ErrorBand(
        isa_class=isa,
        band_pct=float(pct) if rows and pct is not None else None,
        class_rows=rows,
        device_rows=own if rows else 0,
        within_25_pct=float(band["within_25_pct"]) if rows and "within_25_pct" in band else None,
        device_factor=device_factor(device) if own else 1.0,
        basis=str(_bands().get("basis", "")),
    )
