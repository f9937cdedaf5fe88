"""Shared helpers for the hostile-input suites: packages built in code, snapshots, leftover checks."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError


def export_mlp(out: Path, *, seed: int = 0) -> Path:
    """A tiny fp32 tensor package (x[batch, 16] -> logits[batch, 4]), exported by the real exporter."""
    from exporters import export
    from tests.onnx_builders import mlp_classifier

    src = out.parent / f"{out.name}-src-{seed}"
    src.mkdir(parents=True, exist_ok=True)
    model = mlp_classifier(src / "mlp.onnx", seed=seed)
    export(model, output=out, task="tensor", progress=False, validation_samples=2)
    shutil.rmtree(src)
    return out


def copy_package(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def read_manifest_json(pkg: Path) -> dict[str, Any]:
    return json.loads((pkg / "edgekit.json").read_text())


def write_manifest_json(pkg: Path, data: Any) -> None:
    (pkg / "edgekit.json").write_text(json.dumps(data), encoding="utf-8")


def edit_manifest(pkg: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = read_manifest_json(pkg)
    change(data)
    write_manifest_json(pkg, data)


def relist(pkg: Path, name: str) -> None:
    """Update one file's size and sha256 in the manifest (a consistent, hand-edited package)."""
    p = pkg / name
    digest = hashlib.sha256(p.read_bytes()).hexdigest()

    def change(m: dict[str, Any]) -> None:
        m["files"] = [e for e in m["files"] if e["path"] != name] + [
            {"path": name, "bytes": p.stat().st_size, "sha256": digest}
        ]

    edit_manifest(pkg, change)


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 (or 'dir' / 'link:target') of everything under ``root``."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = f"link:{p.readlink()}"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(*roots: Path) -> list[str]:
    """Half-written things edgekit must never leave: partial outputs, export work dirs, probes, staging."""
    found = []
    for root in roots:
        if not root.exists():
            continue
        for p in root.rglob("*"):
            n = p.name
            if n.endswith((".partial", ".old")) or n.startswith(("edgekit-export-", ".edgekit-probe-")):
                found.append(str(p))
    return found


def check_error(exc: BaseException, cls: type[EdgekitError], code: str, fragment: str) -> None:
    assert isinstance(exc, cls), f"{type(exc).__name__}: {exc}"
    assert exc.code == code, exc.code
    assert fragment in exc.message, exc.message
    assert exc.hint, f"no hint on {exc.message}"


def mlp_reference(model_path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]
