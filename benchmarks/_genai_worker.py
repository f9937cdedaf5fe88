"""onnxruntime-genai peer for benchmarks/runtime.py, run with the Python of the genai venv.

onnxruntime-genai's model builder needs transformers 5.x, which optimum-onnx does not allow, so the genai
side of the benchmark lives in its own venv and talks to the benchmark through this script:

    python _genai_worker.py build --hf DIR --out DIR --precision fp32|int4 [--threads N]
        runs ``python -m onnxruntime_genai.models.builder`` and sets the session's thread count in the
        model's genai_config.json; prints one JSON line describing the model (ops, MatMulNBits settings).
    python _genai_worker.py serve
        reads JSON requests, one a line, on stdin and answers each with one JSON line on stdout:
        {"cmd": "load", "name": N, "model": DIR} -> {"ok": true}
        {"cmd": "run", "name": N, "prompt": [ids], "max_tokens": 128} ->
            {"tokens": [...], "prefill_seconds": s, "setup_seconds": s, "decode_seconds": s}
        {"cmd": "quit"}

A persistent worker lets the parent interleave genai with the in-process peers round by round; while it
runs a request the parent waits on the pipe, so the two never compete for the cores.

Decode time is measured as for the other peers: from the moment the first generated token is known to the
moment the last one is (127 decode steps for 128 tokens); prefill (time to first token) runs from the request
with the prompt's ids — the Generator's creation included (``setup_seconds`` reports that part) — to the first
token, as edgekit's runs from its generate() call.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def build(hf: str, out: str, precision: str, threads: int) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", hf, "-o", out, "-p", precision, "-e", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-20:]
        raise SystemExit("onnxruntime-genai builder failed:\n" + "\n".join(tail))
    cfg_path = Path(out) / "genai_config.json"
    cfg = json.loads(cfg_path.read_text())
    so = cfg["model"]["decoder"].setdefault("session_options", {})
    so["intra_op_num_threads"] = threads
    so["inter_op_num_threads"] = 1
    cfg_path.write_text(json.dumps(cfg, indent=4))
    return {"model_dir": out, "command": " ".join(cmd[1:]), **describe(Path(out) / cfg["model"]["decoder"]["filename"])}


def describe(model_path: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    ops: dict[str, int] = {}
    nbits: dict[str, Any] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
        if n.op_type == "MatMulNBits" and not nbits:
            nbits = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
    size = sum(p.stat().st_size for p in model_path.parent.glob(model_path.name + "*"))
    return {"nodes": len(model.graph.node), "ops": ops, "matmulnbits": nbits, "model_bytes": size}


def serve() -> None:
    import onnxruntime_genai as og
    from _worker_loop import serve as serve_requests  # beside this script: the genai venv has no edgekit

    models: dict[str, Any] = {}

    def load(req: Any) -> dict[str, Any]:
        models[req["name"]] = og.Model(req["model"])
        return {"ok": True, "version": og.__version__}

    def generate(req: Any) -> dict[str, Any]:
        return run(og, models[req["name"]], req["prompt"], int(req["max_tokens"]))

    serve_requests({"load": load, "run": generate})


def run(og: Any, model: Any, prompt: list[int], max_tokens: int) -> dict[str, Any]:
    total = len(prompt) + max_tokens
    # The clock starts before the request's generator exists, as edgekit's generate() call includes its own
    # per-request set-up (IOBinding, KV buffers): a genai Generator allocates its KV cache and input buffers
    # (0.25 ms on the tiny model here, more than its prefill), and a caller pays it for every prompt.
    t0 = time.perf_counter()
    params = og.GeneratorParams(model)
    # Greedy. genai cannot continue past an EOS, so min_length = max_length masks EOS to run all the steps;
    # where the model prefers EOS, genai's tokens then part from the peers that treat EOS as a plain token.
    params.set_search_options(do_sample=False, max_length=total, min_length=total)
    gen = og.Generator(model, params)
    t_setup = time.perf_counter()
    gen.append_tokens(prompt)
    tokens: list[int] = []
    first = t0
    while len(tokens) < max_tokens and not gen.is_done():
        gen.generate_next_token()
        tokens.append(int(gen.get_next_tokens()[0]))
        if len(tokens) == 1:
            first = time.perf_counter()
    end = time.perf_counter()
    return {
        "tokens": tokens,
        "prefill_seconds": first - t0,
        "setup_seconds": t_setup - t0,
        "decode_seconds": end - first,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--hf", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--precision", choices=("fp32", "int4"), required=True)
    b.add_argument("--threads", type=int, default=2)
    sub.add_parser("serve")
    args = ap.parse_args()
    if args.cmd == "build":
        print(json.dumps(build(args.hf, args.out, args.precision, args.threads)))
    else:
        serve()


if __name__ == "__main__":
    main()
