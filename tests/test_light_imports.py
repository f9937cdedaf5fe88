"""The device side stays light: importing edgekit / runtimes, loading packages and running embed and generate
never imports torch, transformers, optimum or onnx (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runtime_fixtures import *  # noqa: F403

HEAVY = ("torch", "transformers", "optimum", "onnx", "sentence_transformers", "exporters")

SCRIPT = """
import json, sys
heavy = {heavy!r}
def loaded():
    return sorted(m for m in heavy if m in sys.modules)
report = {{}}
import edgekit
report["import_edgekit"] = loaded() + sorted(m for m in ("onnxruntime", "numpy") if m in sys.modules)
import runtimes
report["import_runtimes"] = loaded() + sorted(m for m in ("onnxruntime", "numpy") if m in sys.modules)
vec = edgekit.load({embed!r}).embed(["light", "imports"])
lm = runtimes.load({lm!r}, threads=1)
res = lm.generate("the", max_tokens=3)
text = "".join(lm.stream("the", max_tokens=3))
report["after_run"] = loaded()
report["shape"] = list(vec.shape)
report["tokens"] = res.usage.completion_tokens
print(json.dumps(report))
"""


def test_runtime_does_not_import_heavy_packages(embed_package: Path, lm_package: Path) -> None:
    code = SCRIPT.format(heavy=HEAVY, embed=str(embed_package), lm=str(lm_package))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["import_edgekit"] == []  # not even onnxruntime or numpy: import edgekit is instant
    assert report["import_runtimes"] == []
    assert report["after_run"] == []
    assert report["shape"] == [2, 16] and report["tokens"] >= 1
