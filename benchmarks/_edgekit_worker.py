"""An edgekit peer in a process of its own, for benchmarks/runtime.py: the conditions onnxruntime-genai runs in.

The benchmark times its edgekit peers inside its own process, beside eight other ORT sessions, PyTorch and
optimum's models, while genai runs in a worker process with nothing else. On the 2-vCPU Xeon the 32M int4
package decoded at ~1 053 us a token in the benchmark's process and 930-972 us alone (genai: ~951), so this
worker serves one edgekit package alone in its process, with the same protocol as ``_genai_worker.py serve``:

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
