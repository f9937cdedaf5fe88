"""An edgekit peer in a process of its own, for benchmarks/runtime.py: the conditions onnxruntime-genai runs in.

genai can only run in a worker process of its own (its venv), while the benchmark's other peers share its
process with each other's sessions, PyTorch and optimum's models. On the 2-vCPU Xeon the 32M int4 package decoded
at 0.91-0.94x in the benchmark's process what it decoded in a worker (five runs), so the genai targets compare
this worker's peer, ``edgekit (own process)``: it serves the package's sessions alone in its process, with the
same protocol as ``_genai_worker.py serve``:

    {"cmd": "load", "name": N, "package": DIR, "threads": T or null} -> {"ok": true}
    {"cmd": "run", "name": N, "prompt": [ids], "max_tokens": 128} ->
        {"tokens": [...], "decode_seconds": s, "prefill_seconds": s}
    {"cmd": "quit"}
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def serve() -> None:
    import runtimes
    from benchmarks._worker_loop import serve as serve_requests

    models: dict[str, Any] = {}

    def load(req: Any) -> dict[str, Any]:
        pkg = Path(req["package"])
        models[req["name"]] = runtimes.load(pkg, threads=req.get("threads"), cache_dir=str(pkg.parent / "ort-cache"))
        return {"ok": True}

    def generate(req: Any) -> dict[str, Any]:
        r = models[req["name"]].generate(
            req["prompt"], max_tokens=int(req["max_tokens"]), temperature=0, ignore_eos=True
        )
        return {
            "tokens": list(r.token_ids),
            "decode_seconds": float(r.timings["decode_seconds"]),
            "prefill_seconds": float(r.timings["prefill_seconds"]),
        }

    serve_requests({"load": load, "run": generate})


if __name__ == "__main__":
    serve()
