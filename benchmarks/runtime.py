"""Runtime benchmark: decode tokens/s of edgekit's generate against its peers, side by side in one run.

For each model size and precision, the same Hugging Face model directory is exported by each tool at the
same precision and generated from with the same 16-token prompt, greedy, 128 new tokens (EOS a plain token),
``--threads`` intra-op threads (2) for every ONNX Runtime peer and ``torch.set_num_threads`` for PyTorch:

- ``edgekit``: ``exporters.export(recipe=fp32|int4)`` then ``runtimes.load(pkg).generate(...)``;
- ``edgekit+fusions``: the same with the proposed ``exporters.decoder_fusions.step_decoder_fusions`` as
  the recipe's first step (shown only while the shipped recipes do not run it yet);
- ``optimum``: ``ORTModelForCausalLM.generate`` on optimum's ``main_export`` (use_cache=True); at int4,
  that export quantized by ONNX Runtime's ``MatMulNBitsQuantizer`` with its defaults (block 32, symmetric,
  accuracy_level None) — optimum has no int4 weight-only export of its own;
- ``pytorch``: transformers' ``generate`` (fp32 only: no int4 weight-only CPU path in plain PyTorch);
- ``onnxruntime-genai``: its own model builder on the same directory (``-p fp32|int4 -e cpu``) and its
  generator loop. The builder needs transformers 5.x, which optimum-onnx forbids, so this script keeps a
  separate venv (``benchmarks/.venv-genai``, created on first use and cached) and talks to a worker
  process in it (``benchmarks/_genai_worker.py``);
- ``edgekit (own process)``: the ``edgekit`` package served by ``benchmarks/_edgekit_worker.py`` in a worker
  process of its own, genai's conditions. The genai targets compare this peer: the in-process peers share the
  benchmark's process with the other peers' sessions, optimum's and PyTorch's models, and there the same package
  decoded at 0.91-0.94x its worker's rate (32M int4, 2-vCPU Xeon, five runs). The optimum and PyTorch targets
  compare the in-process ``edgekit`` peer, which shares their process; the in-process peer's ratio to genai is
  printed beside the targets.

Decode tokens/s = 127 / (time from the first generated token to the 128th): prefill is excluded, the same
way for every peer (a stopping-criteria timestamp for transformers' ``generate``, the result's timings for
edgekit, the generator loop for genai). Peers run interleaved: each round runs every peer once, in a
rotating order; a peer's rate is the median over rounds and a ratio is the median of per-round ratios, so
load from other jobs on the machine hits both sides of a ratio. The edgekit and onnxruntime-genai peers each load
``--sessions`` sessions (default 2) and use them in turn, a round each: one session's placement in memory moved
its decode speed by 5-25 % here, for both tools alike. After every run the script waits 0.15 s
(untimed, ``SETTLE_SECONDS``): ONNX Runtime's intra-op threads spin for tens of ms after a run, and without
the pause each peer started with a core taken by the one before it.

Sizes: ``tiny`` is the test suite's trained tiny Llama (``tests/toy_models.cached_tiny_lm("llama")``:
hidden 64, 2 layers, 4 heads, 2 KV heads, byte tokenizer) with its declared context widened from 64 to 256
positions so 16 + 128 tokens fit (RoPE has no learned positions: the weights are unchanged); ``32m`` is
``toy_models.cached_random_llama()`` (8 layers, hidden 512, 8 heads, 4 KV heads, vocab 8192, random).

Time to first token: from the call with the prompt's ids to the first generated token being known (the
prompt's forward pass and the first pick, with each tool's per-request set-up: edgekit's binding and KV buffers
inside ``generate``, genai's ``GeneratorParams`` + ``Generator`` (its KV cache) + ``append_tokens`` + the
first ``generate_next_token``);
prefill tokens/s = 16 / that time. Medians over the same rounds.

Diagnostics (edgekit variants in the same rounds, not targets): ORT's intra-op spinning off, 1 thread,
the runtime's default threads (``runtimes.load`` without ``threads=``: the package's thread policy where it
has one), the session's weights left on 4 KiB pages (``edgekit.huge_pages`` off: what moving them into 2 MiB
pages is worth), int4 with ``accuracy_level`` None instead of 4, and int4 with MatMulNBits blocks of 128 instead
of 32; ``--diagnostics`` picks some of them. The in-process, 1-thread and default-threads rows are also compared
with genai (which keeps ``--threads``) in their own table: the issue's targets are at equal threads.

    python benchmarks/runtime.py [--quick] [--json FILE] [--work DIR] [--sizes tiny,32m]
                                 [--precisions fp32,int4] [--rounds N] [--sessions N] [--no-genai]
                                 [--no-diagnostics]
                                 [--diagnostics nospin,t1,default,pages,mask,acc0,b128]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import hashlib
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script (make bench): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import Timing, environment, markdown_table, ratio

SCHEMA_VERSION = "1.0"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GENAI_VENV = HERE / ".venv-genai"
GENAI_WORKER = HERE / "_genai_worker.py"
EDGEKIT_WORKER = HERE / "_edgekit_worker.py"
GENAI_REQUIREMENTS = ("onnxruntime-genai", "transformers>=5", "onnx", "onnx_ir", "torch==2.13.0")
DEFAULT_WORK = HERE / ".runtime-work"
PROMPT_TEXT = "Once upon a time, in a small village by the sea, there lived an old fisherman"
PROMPT_TOKENS = 16
NEW_TOKENS = 128
TINY_CONTEXT = 256
# Untimed pause after each peer's run. ONNX Runtime's intra-op threads keep spinning for tens of ms after a
# run ends (measured here: 25-40 ms of CPU in the 50-100 ms after a 2-thread run, none with spinning off);
# on a 2-core host the next peer would start with a core taken: a tiny model's whole 128-token run (~16 ms)
# and a 32M prefill fall inside that window. Which peer pays depended on the rotation (genai followed
# PyTorch, whose threads stop at once; edgekit followed an ORT diagnostic peer), so every peer now waits it out.
SETTLE_SECONDS = 0.15

EDGEKIT, EDGEKIT_FUSED, OPTIMUM, PYTORCH, GENAI = (
    "edgekit",
    "edgekit+fusions",
    "optimum",
    "pytorch",
    "onnxruntime-genai",
)
# The same edgekit package served by benchmarks/_edgekit_worker.py in a process of its own: genai's conditions.
EDGEKIT_PROC = "edgekit (own process)"
DIAG_NOSPIN, DIAG_T1, DIAG_ACC0 = "diag: spinning off", "diag: 1 thread", "diag: int4 accuracy_level None"
DIAG_DEFAULT = "diag: runtime's default threads"
# int4 with MatMulNBits blocks of 128 instead of the recipe's 32: a quarter of the scales; coarser weights
DIAG_B128 = "diag: int4 block_size 128"
# The session's weights left on 4 KiB pages (edgekit.huge_pages off): what the huge pages are worth
DIAG_SMALL_PAGES = "diag: 4 KiB pages"
# The package exported with length_inputs false: the graph computes GroupQueryAttention's lengths from the
# attention mask (six nodes a step), as before schema 1.4: what taking them as inputs is worth
DIAG_MASK = "diag: attention_mask input"
# --diagnostics names -> peer names
DIAG_KEYS = {
    "nospin": DIAG_NOSPIN,
    "t1": DIAG_T1,
    "default": DIAG_DEFAULT,
    "pages": DIAG_SMALL_PAGES,
    "mask": DIAG_MASK,
    "acc0": DIAG_ACC0,
    "b128": DIAG_B128,
}
# Minimum edgekit / peer decode-rate ratios, per size (issue 3's optimum / pytorch rows; issue 14: >= 1.0x genai).
TARGETS: dict[str, dict[str, float]] = {
    "tiny": {OPTIMUM: 3.0, PYTORCH: 5.0, GENAI: 1.0},
    "32m": {OPTIMUM: 1.2, GENAI: 1.0},
}
# Which edgekit peer a target compares with each peer: the one that runs in the same kind of process. genai can
# only run in a worker process (its venv), so its target takes the edgekit package in a worker process too; the
# others run in the benchmark's process, beside every other peer's models, and so does their edgekit peer.
# Measured on the 2-vCPU Xeon (2026-12-04): in the benchmark's process the 32M int4 package decoded at
# 0.91-0.94x its own rate in a worker process, over five runs, with genai's figure unaffected.
TARGET_SIDE: dict[str, str] = {GENAI: EDGEKIT_PROC}
# Edgekit variants also compared with genai (at its fixed threads): informational rows beside the targets; the
# in-process peer is one of them.
POLICY_ROWS = (EDGEKIT, DIAG_T1, DIAG_DEFAULT)
SIZE_LABEL = {"tiny": "tiny Llama (2 layers, hidden 64)", "32m": "Llama ~32M (8 layers, hidden 512)"}


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - _T0:6.0f}s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ artifacts


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _sources_digest(*packages: str) -> str:
    """Changes to these source trees invalidate cached exports (a recipe that gained a step, say)."""
    h = hashlib.sha256()
    for pkg in packages:
        for p in sorted((REPO / pkg).rglob("*.py")):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


def cached(work: Path, name: str, key: Any, build: Callable[[Path], Any]) -> tuple[Path, dict[str, Any]]:
    """``work/name-<hash of key>``, built by ``build(tmp)`` on a miss; ``build``'s JSON result is kept."""
    final = work / f"{name}-{_digest(key)}"
    meta = final / ".bench.json"
    if meta.is_file():
        return final, json.loads(meta.read_text())
    tmp = work / f".{final.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    info = build(tmp) or {}
    (tmp / ".bench.json").write_text(json.dumps(info, default=str))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    stale = re.compile(re.escape(name) + r"-[0-9a-f]{12}")
    for old in work.iterdir():  # earlier builds of the same artifact (another key): keep the cache small
        if old != final and old.is_dir() and stale.fullmatch(old.name):
            shutil.rmtree(old, ignore_errors=True)
    return final, info


def _toy_models() -> Any | None:
    try:
        from tests import toy_models
    except ImportError:
        return None
    return toy_models


def hf_model(size: str, work: Path) -> tuple[Path, dict[str, Any]]:
    """The HF model directory of a size; built once (the test suite's cache or ours)."""
    toy = _toy_models()
    if size == "tiny":
        if toy is not None:
            src = Path(toy.cached_tiny_lm("llama"))

            def widen(tmp: Path) -> dict[str, Any]:
                for p in src.iterdir():
                    if p.is_file():
                        shutil.copy2(p, tmp / p.name)
                _patch_json(tmp / "config.json", max_position_embeddings=TINY_CONTEXT)
                if (tmp / "tokenizer_config.json").is_file():
                    _patch_json(tmp / "tokenizer_config.json", model_max_length=TINY_CONTEXT)
                return {"source": "tests/toy_models.py:cached_tiny_lm('llama'), context widened", "from": str(src)}

            return cached(work, "hf-tiny", {"src": src.name, "context": TINY_CONTEXT}, widen)
        return cached(work, "hf-tiny-fallback", {"v": 1}, lambda tmp: _fallback_llama(tmp, tiny=True))
    if toy is not None:
        src = Path(toy.cached_random_llama())
        return src, {"source": "tests/toy_models.py:cached_random_llama()"}
    return cached(work, "hf-32m-fallback", {"v": 1}, lambda tmp: _fallback_llama(tmp, tiny=False))


def _patch_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


def _fallback_llama(out: Path, *, tiny: bool) -> dict[str, Any]:
    """Used only when tests/toy_models.py is absent: an equivalent random Llama and byte-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    dims = (
        {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": len(vocab),
            "max_position_embeddings": TINY_CONTEXT,
            "initializer_range": 0.1,
        }
        if tiny
        else {
            "hidden_size": 512,
            "intermediate_size": 1408,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "vocab_size": 8192,
            "max_position_embeddings": 2048,
        }
    )
    torch.manual_seed(0)
    cfg = LlamaConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False, **dims)
    LlamaForCausalLM(cfg).eval().save_pretrained(out)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>").save_pretrained(
        out
    )
    return {"source": "benchmarks/runtime.py fallback builder", **dims}


def prompt_ids(hf_dir: Path) -> list[int]:
    """``PROMPT_TOKENS`` ids of ``PROMPT_TEXT`` from the model's own tokenizer (padded by repetition)."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(hf_dir / "tokenizer.json")).encode(PROMPT_TEXT).ids
    while len(ids) < PROMPT_TOKENS:
        ids = ids + ids
    return ids[:PROMPT_TOKENS]


# ----------------------------------------------------------------------------------------- exporters


def _decoder_fusion_recipes() -> dict[str, str]:
    """Recipe names that run the proposed decoder fusions, registered for this process only.

    Returns {} when the shipped fp32 and int4 recipes already run ``step_decoder_fusions`` (wired).
    """
    from exporters.decoder_fusions import step_decoder_fusions
    from exporters.recipes import RECIPES

    def wired(name: str) -> bool:
        return any(step is step_decoder_fusions for _, step in RECIPES.get(name).steps)

    if wired("fp32") and wired("int4"):
        return {}
    names = {}
    for base in ("fp32", "int4"):
        name = f"bench-{base}-decoder-fusions"
        if name not in RECIPES:
            r = RECIPES.get(base)
            steps = (("decoder_fusions", step_decoder_fusions), *((n, s) for n, s in r.steps if n != "optimize"))
            RECIPES.add(name, dataclasses.replace(r, name=name, steps=steps))
        names[base] = name
    return names


def export_edgekit(hf: Path, work: Path, recipe: str, options: dict[str, Any], tag: str) -> tuple[Path, dict[str, Any]]:
    from exporters import export

    key = {"hf": str(hf), "recipe": recipe, "options": options, "src": _sources_digest("exporters", "edgekit")}

    def build(tmp: Path) -> dict[str, Any]:
        t0 = time.perf_counter()
        res = export(
            hf,
            output=tmp / "pkg",
            task="text-generation",
            recipe=recipe,
            recipe_options=options,
            progress=False,
            validation_samples=8,
            # the tiny model's int4 can be slower than its fp32 on a CPU (a refusal by default); the benchmark
            # times it against genai anyway, and the manifest's runtime.speedup records the verdict
            on_slower="warn",
        )
        steps = [s.to_dict() if hasattr(s, "to_dict") else s for s in res.steps]
        return {"recipe": recipe, "options": options, "steps": steps, "seconds": time.perf_counter() - t0}

    root, info = cached(work, f"edgekit-{tag}", key, build)
    return root / "pkg", info


def export_optimum(hf: Path, work: Path, tag: str) -> tuple[Path, dict[str, Any]]:
    def build(tmp: Path) -> dict[str, Any]:
        from optimum.exporters.onnx import main_export

        t0 = time.perf_counter()
        main_export(
            str(hf),
            output=tmp,
            task="text-generation-with-past",
            library_name="transformers",
            do_validation=False,
            local_files_only=True,
        )
        return {"seconds": time.perf_counter() - t0}

    return cached(work, f"optimum-{tag}-fp32", {"hf": str(hf)}, build)


def quantize_optimum_int4(fp32_dir: Path, work: Path, tag: str) -> tuple[Path, dict[str, Any]]:
    def build(tmp: Path) -> dict[str, Any]:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        for p in fp32_dir.iterdir():
            if p.is_file() and not p.name.startswith(("model.onnx", ".bench")):
                shutil.copy2(p, tmp / p.name)
        q = MatMulNBitsQuantizer(onnx.load(str(fp32_dir / "model.onnx")), bits=4, block_size=32, is_symmetric=True)
        q.process()
        onnx.save(q.model.model, str(tmp / "model.onnx"))
        n = sum(1 for node in q.model.model.graph.node if node.op_type == "MatMulNBits")
        return {
            "quantizer": "MatMulNBitsQuantizer(bits=4, block_size=32, symmetric, accuracy_level=None)",
            "matmulnbits": n,
        }

    return cached(work, f"optimum-{tag}-int4", {"src": str(fp32_dir)}, build)


# --------------------------------------------------------------------------------------------- genai


def ensure_genai_venv(venv: Path) -> Path:
    """The genai venv's python, creating the venv (once) with ``python -m venv`` and pip."""
    py = venv / "bin" / "python"
    marker = venv / ".edgekit-bench-ready"
    spec = " ".join(GENAI_REQUIREMENTS)
    if py.is_file() and marker.is_file() and marker.read_text().strip() == spec:
        return py
    log(f"creating {venv} for onnxruntime-genai (once; pip install {spec})…")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    (venv / ".gitignore").write_text("*\n")
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", *GENAI_REQUIREMENTS], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("pip install into the genai venv failed:\n" + proc.stderr.strip()[-2000:])
    marker.write_text(spec + "\n")
    return py


def build_genai(py: Path, hf: Path, work: Path, tag: str, precision: str, threads: int) -> tuple[Path, dict[str, Any]]:
    def build(tmp: Path) -> dict[str, Any]:
        out = tmp / "model"
        cmd = [
            str(py),
            str(GENAI_WORKER),
            "build",
            "--hf",
            str(hf),
            "--out",
            str(out),
            "--precision",
            precision,
            "--threads",
            str(threads),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"genai build failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    root, info = cached(work, f"genai-{tag}-{precision}", {"hf": str(hf), "threads": threads, "py": str(py)}, build)
    return root / "model", info


class Worker:
    """A persistent worker process answering one JSON request a line (``_genai_worker.py serve``,
    ``_edgekit_worker.py``); while it runs a request the parent waits on the pipe."""

    label = "worker"

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )

    def ask(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.label} exited (code {self.proc.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.label}: {reply['error']}")
        return reply

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()


class GenaiWorker(Worker):
    """A persistent ``_genai_worker.py serve`` process in the genai venv."""

    label = "genai worker"

    def __init__(self, py: Path) -> None:
        super().__init__([str(py), str(GENAI_WORKER), "serve"])


# --------------------------------------------------------------------------------------------- peers


@dataclass
class Peer:
    name: str
    description: str
    # -> (128 token ids, decode seconds for 127 steps, prefill seconds: prompt in, first token known)
    run: Callable[[], tuple[list[int], float, float]]
    diagnostic: bool = False
    notes: dict[str, Any] = field(default_factory=dict)
    close: Callable[[], None] | None = None  # a worker process to stop once the group is timed


@contextlib.contextmanager
def _small_pages() -> Iterator[None]:
    """Diagnostic only: load an edgekit session without moving its weights into huge pages."""
    from edgekit import ort_policy

    real = ort_policy.MEMORY_POLICY
    ort_policy.MEMORY_POLICY = dataclasses.replace(real, huge_pages=False)
    try:
        yield
    finally:
        ort_policy.MEMORY_POLICY = real


@contextlib.contextmanager
def _spinning_off() -> Iterator[None]:
    """Diagnostic only: load an edgekit session with ORT's intra-op spinning off.

    ``runtimes`` has no session option for it yet, so the CPU provider's spec is swapped for one that asks
    for ``session.intra_op.allow_spinning=0`` (the entry XNNPACK's spec already sets) while the session is
    built.
    """
    import runtimes.session as rs

    real = rs.provider_spec

    def spec(name: str) -> Any:
        s = real(name)
        if s is not None and s.name == "CPUExecutionProvider":
            return dataclasses.replace(s, session_config={**s.session_config, "session.intra_op.allow_spinning": "0"})
        return s

    rs.provider_spec = spec
    try:
        yield
    finally:
        rs.provider_spec = real


RunFn = Callable[[], tuple[list[int], float, float]]


def in_turn(runs: list[RunFn]) -> RunFn:
    """One peer's sessions used in turn, a call each, each warmed up once first.

    Where a session's memory lands moves its decode speed by 5-25 % here, for edgekit's and genai's alike
    (benchmarks/README.md, Runtime): with one session a peer's figure is one draw of that; in turn, the rounds
    spread over the draws.
    """
    for run in runs[1:]:  # the first is warmed up by time_peers, like every peer
        run()
    turn = itertools.cycle(runs)
    return lambda: next(turn)()


def edgekit_peer(
    name: str, pkg: Path, threads: int | None, prompt: list[int], description: str, sessions: int = 1, **kw: Any
) -> Peer:
    import runtimes

    spin_off = kw.pop("spinning_off", False)
    small_pages = kw.pop("small_pages", False)
    with (
        _spinning_off() if spin_off else contextlib.nullcontext(),
        _small_pages() if small_pages else contextlib.nullcontext(),
    ):
        models = [runtimes.load(pkg, threads=threads, cache_dir=str(pkg.parent / "ort-cache")) for _ in range(sessions)]
    kw.setdefault("notes", {})["huge_pages"] = [m.info().get("huge_pages") for m in models]

    def runner(model: Any) -> RunFn:
        def run() -> tuple[list[int], float, float]:
            r = model.generate(prompt, max_tokens=NEW_TOKENS, temperature=0, ignore_eos=True)
            return list(r.token_ids), float(r.timings["decode_seconds"]), float(r.timings["prefill_seconds"])

        return run

    return Peer(name, description, in_turn([runner(m) for m in models]), **kw)


class _Stamp:
    """A transformers StoppingCriteria that records when each new token is known, and never stops."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def hf_generate_peer(name: str, model: Any, prompt: list[int], pad_id: int, description: str, **kw: Any) -> Peer:
    import torch
    from transformers import StoppingCriteriaList

    ids = torch.tensor([prompt])
    mask = torch.ones_like(ids)
    # EOS is an ordinary token, as with edgekit's ignore_eos: the model's own generation config loses its EOS
    # id (a config passed to generate() would get it back from the model's defaults), so nothing stops or
    # masks EOS; the stamp criterion and max_new_tokens end the loop.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = pad_id

    def run() -> tuple[list[int], float, float]:
        stamp = _Stamp()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=NEW_TOKENS,
                do_sample=False,
                num_beams=1,
                stopping_criteria=StoppingCriteriaList([stamp]),
            )
        return out[0, len(prompt) :].tolist(), stamp.times[-1] - stamp.times[0], stamp.times[0] - t0

    return Peer(name, description, run, **kw)


def optimum_peer(model_dir: Path, threads: int, prompt: list[int], pad_id: int, description: str) -> Peer:
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForCausalLM

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    model = ORTModelForCausalLM.from_pretrained(
        model_dir, use_cache=True, session_options=so, provider="CPUExecutionProvider"
    )
    return hf_generate_peer(OPTIMUM, model, prompt, pad_id, description)


def pytorch_peer(hf: Path, prompt: list[int], pad_id: int) -> Peer:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    return hf_generate_peer(PYTORCH, model, prompt, pad_id, "transformers generate (PyTorch eager, fp32)")


def worker_peer(
    name: str, pkg: Path, threads: int | None, prompt: list[int], description: str, sessions: int = 1
) -> Peer:
    """``pkg`` served by ``_edgekit_worker.py`` in a process of its own (the genai peer's conditions), its
    ``sessions`` taking the rounds in turn as genai's do."""
    worker = Worker([sys.executable, str(EDGEKIT_WORKER)])
    worker.label = "edgekit worker"
    run = _served_in_turn(worker, name, sessions, prompt, package=str(pkg), threads=threads)
    return Peer(name, description, run, close=worker.close)


def genai_peer(
    worker: GenaiWorker, model_dir: Path, key: str, prompt: list[int], info: dict[str, Any], sessions: int = 1
) -> Peer:
    desc = f"onnxruntime-genai generator; model from its builder ({info.get('command', '').split(' -o ')[0]} ...)"
    notes = {"matmulnbits": info.get("matmulnbits"), "nodes": info.get("nodes")}
    return Peer(GENAI, desc, _served_in_turn(worker, key, sessions, prompt, model=str(model_dir)), notes=notes)


def _served_in_turn(worker: Any, name: str, sessions: int, prompt: list[int], **load: Any) -> RunFn:
    """``sessions`` models loaded in ``worker`` as ``name``, ``name#1``, ... (``load``: the rest of each load
    request), used in turn a run each (:func:`in_turn`)."""
    keys = [name if i == 0 else f"{name}#{i}" for i in range(sessions)]
    for key in keys:
        worker.ask(cmd="load", name=key, **load)

    def runner(key: str) -> RunFn:
        def run() -> tuple[list[int], float, float]:
            r = worker.ask(cmd="run", name=key, prompt=prompt, max_tokens=NEW_TOKENS)
            return list(r["tokens"]), float(r["decode_seconds"]), float(r["prefill_seconds"])

        return run

    return in_turn([runner(k) for k in keys])


def matmul_weight_bytes(model_path: Path) -> int:
    """Bytes of the initializers that MatMul-type nodes read: what one decode step streams from memory.

    The embedding table is left out (a decode step gathers one row of it).
    """
    import onnx

    model = onnx.load(str(model_path))
    inits = {i.name: i for i in model.graph.initializer}
    names = {
        name
        for n in model.graph.node
        if n.op_type in ("MatMul", "MatMulNBits", "Gemm", "FusedMatMul")
        for name in n.input[1:]
        if name in inits
    }
    return int(sum(onnx.numpy_helper.to_array(inits[n]).nbytes for n in names))


# -------------------------------------------------------------------------------------------- timing


def time_peers(
    peers: list[Peer], rounds: int, settle: float = SETTLE_SECONDS
) -> tuple[dict[str, Timing], dict[str, list[int]], dict[str, Timing]]:
    """One warm-up run each, then ``rounds`` rounds (rotating order): seconds per decode token per round, the
    tokens, and each round's prefill seconds (time to first token). ``settle`` seconds pass (untimed) after
    every run, so no peer starts while the previous one's intra-op threads still spin (see SETTLE_SECONDS)."""
    steps = NEW_TOKENS - 1
    tokens: dict[str, list[int]] = {}
    for p in peers:
        tokens[p.name] = p.run()[0]
        time.sleep(settle)
    timings = {p.name: Timing(name=p.name, calls_per_block=1) for p in peers}
    prefill = {p.name: Timing(name=p.name, calls_per_block=1) for p in peers}
    for r in range(rounds):
        k = r % len(peers)
        for p in peers[k:] + peers[:k]:
            toks, seconds, first = p.run()
            if len(toks) != NEW_TOKENS:
                raise RuntimeError(f"{p.name} produced {len(toks)} tokens, not {NEW_TOKENS}")
            timings[p.name].rounds.append(seconds / steps)
            prefill[p.name].rounds.append(first)
            time.sleep(settle)
    return timings, tokens, prefill


def tok_s(t: Timing) -> float:
    return 1.0 / statistics.median(t.rounds)


def speedup(a: Timing, b: Timing) -> float:
    """How many times faster ``a`` decodes than ``b``: median of per-round ratios."""
    return ratio(b, a)


def first_mismatch(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)


def measure_bandwidth(threads: int, mib: int = 256, repeats: int = 5) -> dict[str, float]:
    """Memory read bandwidth (GB/s): the best of numpy's max and BLAS dot over a buffer far larger than the
    caches (both read each byte once and keep up with memory), on 1 and ``threads`` threads, best of repeats."""
    a = np.ones(mib * 2**20 // 4, dtype=np.float32)
    kernels: list[Callable[[np.ndarray], Any]] = [np.max, lambda x: np.dot(x, x)]
    out: dict[str, float] = {}
    for n in sorted({1, threads}):
        parts = np.array_split(a, n)
        best = 0.0
        with ThreadPoolExecutor(n) as ex:
            for kernel in kernels:
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    list(ex.map(kernel, parts))
                    best = max(best, a.nbytes / (time.perf_counter() - t0) / 1e9)
        out[f"read_gb_per_s_{n}_threads"] = best
    return out


# ---------------------------------------------------------------------------------------------- main


def _diagnostic_peers(
    size: str,
    precision: str,
    hf: Path,
    work: Path,
    args: argparse.Namespace,
    prompt: Any,
    best_pkg: Path,
    fusion_recipes: dict[str, str],
) -> list[Peer]:
    """The edgekit variants that explain a gap (``args.diagnostics``: the DIAG_KEYS to run, all by default)."""
    base = EDGEKIT_FUSED if fusion_recipes else EDGEKIT
    wanted = set(args.diagnostics)
    peers = []
    if "nospin" in wanted:
        desc = f"{base}, ORT intra-op spinning off"
        peers.append(
            edgekit_peer(DIAG_NOSPIN, best_pkg, args.threads, prompt, desc, spinning_off=True, diagnostic=True)
        )
    if "t1" in wanted:
        peers.append(edgekit_peer(DIAG_T1, best_pkg, 1, prompt, f"{base}, 1 intra-op thread", diagnostic=True))
    if "default" in wanted:
        desc = f"{base}, the runtime's default threads (no threads=)"
        peers.append(edgekit_peer(DIAG_DEFAULT, best_pkg, None, prompt, desc, diagnostic=True))
    if "pages" in wanted:
        desc = f"{base}, weights on 4 KiB pages (edgekit.huge_pages off)"
        peers.append(
            edgekit_peer(DIAG_SMALL_PAGES, best_pkg, args.threads, prompt, desc, small_pages=True, diagnostic=True)
        )
    if "mask" in wanted:
        mpkg, _ = export_edgekit(
            hf, work, fusion_recipes.get(precision, precision), {"length_inputs": False}, f"{size}-{precision}-mask"
        )
        desc = f"{base}, attention_mask input (length_inputs false)"
        peers.append(edgekit_peer(DIAG_MASK, mpkg, args.threads, prompt, desc, diagnostic=True))
    if precision != "int4":
        return peers
    recipe = fusion_recipes.get("int4", "int4")
    if "acc0" in wanted:
        apkg, _ = export_edgekit(hf, work, recipe, {"accuracy_level": None}, f"{size}-int4-acc0")
        desc = f"{base}, int4 accuracy_level None"
        peers.append(edgekit_peer(DIAG_ACC0, apkg, args.threads, prompt, desc, diagnostic=True))
    if "b128" in wanted:
        bpkg, _ = export_edgekit(hf, work, recipe, {"block_size": 128}, f"{size}-int4-b128")
        desc = f"{base}, int4 block_size 128"
        peers.append(edgekit_peer(DIAG_B128, bpkg, args.threads, prompt, desc, diagnostic=True))
    return peers


def _peer_rows(
    peers: list[Peer], timings: dict[str, Any], tokens: dict[str, Any], ref: Any, prefill: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per peer: decode tokens/s (median, IQR, per round), time to first token and prefill tokens/s
    (medians), and whether its tokens match PyTorch's."""
    rows = []
    for p in peers:
        t = timings[p.name]
        ttft = statistics.median(prefill[p.name].rounds)
        q = statistics.quantiles([1 / x for x in t.rounds], n=4) if len(t.rounds) > 1 else [tok_s(t)] * 3
        rows.append(
            {
                "peer": p.name,
                "description": p.description,
                "diagnostic": p.diagnostic,
                "decode_tokens_per_second": tok_s(t),
                "decode_tokens_per_second_iqr": [q[0], q[2]],
                "rounds_tokens_per_second": [1 / x for x in t.rounds],
                "time_to_first_token_ms": 1000 * ttft,
                "prefill_tokens_per_second": PROMPT_TOKENS / ttft,
                "tokens_match_pytorch": None if ref is None else tokens[p.name] == ref,
                "first_mismatch_vs_pytorch": None if ref is None else first_mismatch(tokens[p.name], ref),
                "notes": p.notes,
            }
        )
    return rows


def _targets(size: str, precision: str, ratios: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target in TARGETS with its measured ratio: the shipped package's peer in the peer's kind of process
    (TARGET_SIDE, else the benchmark's process; None when that peer did not run), then the proposed fused
    recipe's ratios where it ran."""
    pairs = [(TARGET_SIDE.get(peer, EDGEKIT), peer) for peer in TARGETS[size]]
    if EDGEKIT_FUSED in ratios:
        pairs += [(EDGEKIT_FUSED, peer) for peer in TARGETS[size]]
    targets = []
    for ek, peer in pairs:
        minimum, value = TARGETS[size][peer], ratios.get(ek, {}).get(peer)
        targets.append(
            {
                "size": size,
                "precision": precision,
                "edgekit": ek,
                "peer": peer,
                "min_ratio": minimum,
                "ratio": value,
                "pass": None if value is None else value >= minimum,
            }
        )
    return targets


def run_group(
    size: str, precision: str, hf: Path, work: Path, args: argparse.Namespace, genai: tuple[Any, Path] | None
) -> dict[str, Any]:
    """Export, load and time every peer for one (size, precision)."""
    import torch

    prompt = prompt_ids(hf)
    cfg = json.loads((hf / "config.json").read_text())
    pad_id = int(cfg.get("pad_token_id") if cfg.get("pad_token_id") is not None else cfg.get("eos_token_id") or 0)
    fusion_recipes = _decoder_fusion_recipes()
    peers: list[Peer] = []
    notes: dict[str, Any] = {}
    recipe_opts: dict[str, Any] = {}
    log(f"{size}/{precision}: exports…")
    pkg, info = export_edgekit(hf, work, precision, recipe_opts, f"{size}-{precision}")
    peers.append(
        edgekit_peer(
            EDGEKIT,
            pkg,
            args.threads,
            prompt,
            f"exporters.export(recipe={precision!r}) + runtimes.load",
            sessions=args.sessions,
        )
    )
    notes["edgekit_steps"] = info.get("steps")
    best_pkg = pkg
    if fusion_recipes:
        fpkg, finfo = export_edgekit(hf, work, fusion_recipes[precision], {}, f"{size}-{precision}-fused")
        desc = f"recipe {precision!r} with decoder_fusions as its first step (proposed, not wired yet)"
        peers.append(edgekit_peer(EDGEKIT_FUSED, fpkg, args.threads, prompt, desc))
        notes["edgekit_fused_steps"] = finfo.get("steps")
        best_pkg = fpkg
    opt_dir, _ = export_optimum(hf, work, size)
    if precision == "int4":
        opt_dir, qinfo = quantize_optimum_int4(opt_dir, work, size)
        notes["optimum_int4"] = qinfo
    peers.append(optimum_peer(opt_dir, args.threads, prompt, pad_id, f"ORTModelForCausalLM.generate ({precision})"))
    if precision == "fp32":
        peers.append(pytorch_peer(hf, prompt, pad_id))
    if genai is not None:
        worker, py = genai
        gdir, ginfo = build_genai(py, hf, work, size, precision, args.threads)
        peers.append(genai_peer(worker, gdir, f"{size}-{precision}", prompt, ginfo, sessions=args.sessions))
        notes["genai_model"] = ginfo
        desc = f"exporters.export(recipe={precision!r}) + runtimes.load, in a worker process of its own"
        peers.append(worker_peer(EDGEKIT_PROC, pkg, args.threads, prompt, desc, sessions=args.sessions))
    if args.diagnostics:
        peers += _diagnostic_peers(size, precision, hf, work, args, prompt, best_pkg, fusion_recipes)
    # A tiny-model round is ~5 ms of decoding per peer, shorter than this host's speed swings: many rounds
    # (30: its ratios moved 0.79x -> 1.03x from 12 to 30 rounds on one host), where a 32M round is ~0.5 s.
    rounds = args.rounds or {"tiny": 5 if args.quick else 30, "32m": 3 if args.quick else 10}[size]
    log(f"{size}/{precision}: {len(peers)} peers, {rounds} interleaved rounds…")
    torch.set_num_threads(args.threads)
    timings, tokens, prefill = time_peers(peers, rounds)
    ref = tokens.get(PYTORCH)
    rows = _peer_rows(peers, timings, tokens, ref, prefill)
    ratios = {
        ek: {p.name: speedup(timings[ek], timings[p.name]) for p in peers if p.name != ek}
        for ek in (EDGEKIT, EDGEKIT_FUSED, EDGEKIT_PROC)
        if ek in timings
    }
    targets = _targets(size, precision, ratios)
    # Thread policies vs genai, and time to first token vs genai (edgekit's prefill time ÷ genai's, inverted).
    policy = {ek: speedup(timings[ek], timings[GENAI]) for ek in POLICY_ROWS if ek in timings and GENAI in timings}
    ttft_ratio = speedup(prefill[TARGET_SIDE[GENAI]], prefill[GENAI]) if GENAI in prefill else None
    for p in peers:
        if p.close is not None:
            p.close()
    del peers
    gc.collect()
    return {
        "size": size,
        "precision": precision,
        "streamed_bytes_per_token": matmul_weight_bytes(best_pkg / "model.onnx"),
        "rounds": rounds,
        "prompt_ids": prompt,
        "peers": rows,
        "ratios": ratios,
        "targets": targets,
        "policy_vs_genai": policy,
        "prefill_speedup_vs_genai": ttft_ratio,
        "notes": notes,
    }


def render(result: dict[str, Any]) -> str:
    groups = result["groups"]
    cols = [EDGEKIT, EDGEKIT_PROC, EDGEKIT_FUSED, OPTIMUM, PYTORCH, GENAI]
    present = [c for c in cols if any(r["peer"] == c for g in groups for r in g["peers"])]
    out = [
        f"Decode tokens/s (median of {', '.join(str(g['rounds']) for g in groups)} interleaved rounds; "
        f"greedy, {NEW_TOKENS} new tokens after a {PROMPT_TOKENS}-token prompt, {result['config']['threads']} "
        f"threads; host load average {result['host_load_average']['start']} → {result['host_load_average']['end']})",
        "",
    ]
    rows = []
    for g in groups:
        by = {r["peer"]: r for r in g["peers"]}
        rows.append(
            [
                SIZE_LABEL[g["size"]],
                g["precision"],
                *[by[c]["decode_tokens_per_second"] if c in by else None for c in present],
            ]
        )
    out.append(markdown_table(["model", "precision", *present], rows))
    out += ["", "Targets (edgekit ÷ peer, median of per-round ratios)", ""]
    trows = []
    for g in groups:
        for t in g["targets"]:
            verdict = "n/a" if t["pass"] is None else ("PASS" if t["pass"] else "FAIL")
            value = None if t["ratio"] is None else f"{t['ratio']:.2f}×"
            trows.append(
                [t["size"], t["precision"], t["edgekit"], f"vs {t['peer']}", f"≥ {t['min_ratio']}×", value, verdict]
            )
    out.append(markdown_table(["model", "precision", "edgekit", "peer", "target", "measured", "result"], trows))
    out += _policy_and_prefill(groups)
    diag = [(g, r) for g in groups for r in g["peers"] if r["diagnostic"]]
    if diag:
        out += ["", "Diagnostics (edgekit variants timed in the same rounds; not targets)", ""]
        drows = []
        for g, r in diag:
            base = EDGEKIT_FUSED if EDGEKIT_FUSED in g["ratios"] else EDGEKIT
            rel = g["ratios"][base].get(r["peer"])
            drows.append(
                [
                    g["size"],
                    g["precision"],
                    r["description"],
                    r["decode_tokens_per_second"],
                    None if not rel else f"{1 / rel:.2f}×",
                ]
            )
        out.append(markdown_table(["model", "precision", "variant", "tok/s", "vs its base"], drows))
    same = []
    for g in groups:
        for r in g["peers"]:
            if r["tokens_match_pytorch"] is not None and r["peer"] != PYTORCH and not r["diagnostic"]:
                m = "identical" if r["tokens_match_pytorch"] else f"differ from token {r['first_mismatch_vs_pytorch']}"
                same.append(f"- {g['size']}/{g['precision']} {r['peer']}: {m}")
    if same:
        out += ["", "Greedy tokens (fp32, 128 new tokens) vs PyTorch:", *same]
    if any(r["peer"] == GENAI and r["tokens_match_pytorch"] is False for g in groups for r in g["peers"]):
        out.append(
            "  (onnxruntime-genai cannot go on past EOS, so it runs with min_length = max_length, which masks EOS:"
            " its tokens part from the others where the model prefers EOS; the timing is unaffected)"
        )
    int4 = next((g for g in groups if g["precision"] == "int4"), None)
    if int4 is not None:
        nb = next((r["notes"].get("matmulnbits") for r in int4["peers"] if r["peer"] == GENAI), None) or {}
        out += [
            "",
            "int4 settings: edgekit MatMulNBits block 32, symmetric, accuracy_level 4 (recipe default); optimum's"
            " export through ORT's MatMulNBitsQuantizer defaults (block 32, symmetric, accuracy_level None); genai"
            f" builder: block {nb.get('block_size', '?')}, accuracy_level {nb.get('accuracy_level', '?')}.",
        ]
    bw = result.get("bandwidth")
    if bw:
        out += ["", _bandwidth_note(result)]
    return "\n".join(out)


def _policy_and_prefill(groups: list[dict[str, Any]]) -> list[str]:
    """Edgekit's thread policies against genai (at its fixed threads), and time to first token / prefill rate."""
    out: list[str] = []
    prows = []
    for g in groups:
        for ek, value in (g.get("policy_vs_genai") or {}).items():
            desc = next(r["description"] for r in g["peers"] if r["peer"] == ek)
            prows.append([g["size"], g["precision"], desc, f"{value:.2f}×"])
    if prows:
        out += [
            "",
            f"In-process and thread-policy rows: edgekit variant ÷ {GENAI} (genai keeps its threads and its worker"
            " process; decode, median of per-round ratios)",
            "",
        ]
        out.append(markdown_table(["model", "precision", "edgekit", "vs genai"], prows))
    frows = []
    for g in groups:
        by = {r["peer"]: r for r in g["peers"]}
        for name in (EDGEKIT, EDGEKIT_PROC, GENAI, OPTIMUM, PYTORCH):
            if name in by:
                r = by[name]
                vs = g.get("prefill_speedup_vs_genai") if name == TARGET_SIDE[GENAI] else None
                frows.append(
                    [
                        g["size"],
                        g["precision"],
                        name,
                        r["time_to_first_token_ms"],
                        r["prefill_tokens_per_second"],
                        None if vs is None else f"{vs:.2f}×",
                    ]
                )
    if frows:
        out += ["", f"Time to first token ({PROMPT_TOKENS}-token prompt; median over rounds)", ""]
        out.append(
            markdown_table(["model", "precision", "peer", "TTFT ms", "prefill tok/s", "edgekit vs genai"], frows)
        )
    return out


def _bandwidth_note(result: dict[str, Any]) -> str:
    bw = result["bandwidth"]
    best = max(bw.values())
    lines = [
        "Memory bandwidth (32m): numpy reads a 256 MiB buffer at "
        + ", ".join(f"{v:.1f} GB/s ({k.split('_')[4]} thr)" for k, v in bw.items())
        + " here. A decode step reads every MatMul weight once, so bandwidth ÷ those bytes caps the rate:"
    ]
    fp32_reach = 0.0
    for g in result["groups"]:
        if g["size"] != "32m":
            continue
        nbytes = g["streamed_bytes_per_token"]
        cap = best * 1e9 / nbytes
        peers = [r for r in g["peers"] if not r["diagnostic"]]
        reached = ", ".join(
            f"{r['peer']} {r['decode_tokens_per_second']:.0f} ({100 * r['decode_tokens_per_second'] / cap:.0f}%)"
            for r in peers
        )
        if g["precision"] == "fp32":
            fp32_reach = max(r["decode_tokens_per_second"] / cap for r in peers)
        lines.append(f"- {g['precision']}: {nbytes / 2**20:.0f} MiB per token → cap {cap:.0f} tok/s; {reached}")
    load = result.get("host_load_average") or {}
    if fp32_reach >= 0.6:
        lines.append(
            f"fp32 at 32M is memory-bandwidth bound: the fastest peer streams {100 * fp32_reach:.0f}% of the measured"
            " bandwidth, and every peer streams the same bytes, so fp32 ratios between good runtimes stay near 1×."
        )
    elif fp32_reach:
        lines.append(
            "fp32 at 32M is memory-bandwidth bound on a quiet host (issue 3's figures, optimum 164 and genai 178"
            f" tok/s, sit near this cap), but in this run the fastest peer reached {100 * fp32_reach:.0f}% of it:"
            " the peers were limited by their share of the busy cores (load average"
            f" {load.get('start', '?')} → {load.get('end', '?')} on {os.cpu_count()} CPUs), not by memory."
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    ap.add_argument("--json", metavar="FILE", help="write the result as JSON")
    ap.add_argument("--work", metavar="DIR", help=f"exports are cached here (default {DEFAULT_WORK.relative_to(REPO)})")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for every peer (default 2)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default tiny 30 / 32m 10; --quick 5 / 3)")
    ap.add_argument(
        "--sessions",
        type=int,
        default=2,
        help="sessions of the edgekit and onnxruntime-genai peers, used in turn across rounds (default 2)",
    )
    ap.add_argument("--sizes", default="tiny,32m", help="comma-separated: tiny, 32m")
    ap.add_argument("--precisions", default="fp32,int4", help="comma-separated: fp32, int4")
    ap.add_argument("--no-genai", dest="genai", action="store_false", help="skip onnxruntime-genai (no venv)")
    ap.add_argument(
        "--diagnostics",
        default=",".join(DIAG_KEYS),
        help=f"comma-separated edgekit variants to time beside the peers (default all: {','.join(DIAG_KEYS)})",
    )
    ap.add_argument("--no-diagnostics", dest="diagnostics", action="store_const", const="", help="no edgekit variants")
    ap.add_argument("--genai-venv", default=str(GENAI_VENV), help="the onnxruntime-genai venv (created if missing)")
    return ap


def _start_genai(args: argparse.Namespace, errors: list[str]) -> tuple[Any, Path] | None:
    """The onnxruntime-genai worker and its venv's Python, or None (the reason joins ``errors``)."""
    if not args.genai:
        return None
    try:
        py = ensure_genai_venv(Path(args.genai_venv))
        return GenaiWorker(py), py
    except Exception as exc:
        errors.append(f"onnxruntime-genai unavailable: {exc}")
        log(errors[-1])
        return None


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    sizes = [s for s in args.sizes.split(",") if s]
    precisions = [p for p in args.precisions.split(",") if p]
    if not set(sizes) <= set(TARGETS) or not set(precisions) <= {"fp32", "int4"}:
        ap.error("--sizes takes tiny,32m and --precisions fp32,int4")
    if args.sessions < 1:
        ap.error("--sessions takes 1 or more")
    args.diagnostics = [d for d in args.diagnostics.split(",") if d]
    if not set(args.diagnostics) <= set(DIAG_KEYS):
        ap.error(f"--diagnostics takes {','.join(DIAG_KEYS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)  # optimum's and the quantizer's INFO/WARNING chatter
    t_start = time.perf_counter()
    load_start = round(os.getloadavg()[0], 1)
    work = Path(args.work) if args.work else DEFAULT_WORK
    work.mkdir(parents=True, exist_ok=True)
    if not (work / ".gitignore").exists():
        (work / ".gitignore").write_text("*\n")
    errors: list[str] = []
    genai = _start_genai(args, errors)
    groups = []
    try:
        for size in sizes:
            hf, hf_info = hf_model(size, work)
            log(f"{size}: {hf} ({hf_info.get('source')})")
            for precision in precisions:
                groups.append(run_group(size, precision, hf, work, args, genai))
                groups[-1]["model"] = {"path": str(hf), **hf_info}
    finally:
        if genai is not None:
            genai[0].close()
    bandwidth = measure_bandwidth(args.threads) if "32m" in sizes else None
    targets = [t for g in groups for t in g["targets"]]
    headline = [t for t in targets if t["edgekit"] != EDGEKIT_FUSED and t["pass"] is not None]
    fp32_same = all(
        r["tokens_match_pytorch"]
        for g in groups
        for r in g["peers"]
        if r["peer"] in (EDGEKIT, EDGEKIT_PROC, EDGEKIT_FUSED) and r["tokens_match_pytorch"] is not None
    )
    status = "pass" if headline and all(t["pass"] for t in headline) and fp32_same else "fail"
    result = {
        "schema_version": SCHEMA_VERSION,
        "kind": "benchmark.runtime",
        "status": status,
        "config": {
            "threads": args.threads,
            "sessions": args.sessions,
            "quick": args.quick,
            "sizes": sizes,
            "precisions": precisions,
            "prompt_tokens": PROMPT_TOKENS,
            "new_tokens": NEW_TOKENS,
            "prompt_text": PROMPT_TEXT,
            "targets": TARGETS,
            "work": str(work),
            "diagnostics": args.diagnostics,
            "command": "python benchmarks/runtime.py " + " ".join(argv or sys.argv[1:]),
        },
        "environment": environment(("torch", "transformers", "optimum", "tokenizers")),
        "groups": groups,
        "bandwidth": bandwidth,
        "host_load_average": {"start": load_start, "end": round(os.getloadavg()[0], 1)},
        "errors": errors,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
        log(f"wrote {args.json}")
    log(f"done in {result['seconds']} s; status {status}")
    return 0 if status == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
