"""Resident memory of one package, loaded and run through edgekit's own runtime in a fresh process.

``python -m runtimes.memory_probe JOB.json`` prints one JSON line. The process does nothing else, so no
memory freed by an earlier model can hide an allocation, and no peer's pages are counted. Phases:

1. baseline: numpy, onnxruntime, tokenizers and edgekit's runtime (its pipelines too, and the modules a load
   imports on first use, :data:`RUNTIME_LOAD_MODULES`: what they add is ``runtime_modules_bytes``) imported, the host
   detected and ONNX Runtime's environment created (a 4x4 MatMul session, then run): libraries and the
   runtime itself, which a second model in the same app would not pay again; not the model's cost. A second
   4x4 session is then built and run, and what it adds is reported as the runtime's fixed cost of a session
   (``session_fixed_bytes``: in the baseline, not subtracted from the figures below);
2. load: ``runtimes.load(package)`` (checksums, session, pipeline): resident after it and its transient peak;
3. inference: the job's call (``embed`` texts, ``generate`` token ids, ``run`` arrays from an ``.npz``)
   ``repeats`` times, the peak after resetting it post-load (:func:`edgekit.memory_budget.reset_peak`);
   With ``job['warm']`` (another package's job), that package is loaded and called before the baseline, so
   the figures are what the package adds in a process where the runtime's first use is already paid;
4. afterwards, the resident pages of the mapped weight file (``mapped_weight_bytes``), what a second copy of the package's tokenizer costs (``tokenizer_bytes``: in the load figure,
   reported apart because it is neither weights, KV cache nor activations) and, when the job asks
   (``second_copy``), what a second load of the whole package, called once, adds (``second_copy_bytes``).

Figures are bytes above the baseline. Library code paged in on a kernel's first use (``*.so`` mappings, which
never shrink) is counted in them and also reported on its own (:func:`edgekit.memory_budget.library_code_bytes`). The job may name ``ort_config`` entries and ``session`` flags to try
(benchmarks/memory.py measures each candidate setting); by default the session is exactly what
``runtimes.load`` builds.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgekit.memory_budget import library_code_bytes, mapped_file_bytes, read_process_memory, reset_peak

__all__ = ["measure", "tiny_model_bytes"]


def tiny_model_bytes() -> bytes:
    """A 4x4 MatMul model, serialized by hand (no onnx import): it brings ONNX Runtime's environment up."""
    import numpy as np

    from edgekit.devices.host import matmul_model_bytes

    return matmul_model_bytes("MatMul", "float32", np.eye(4, dtype=np.float32), "float32")


def _call(model: Any, job: Mapping[str, Any]) -> Any:
    kind = job["call"]
    if kind == "embed":
        return model.embed(list(job["texts"]))
    if kind == "generate":
        return model.generate(list(job["prompt_ids"]), max_tokens=int(job["new_tokens"]), ignore_eos=True)
    import numpy as np

    with np.load(job["feeds"], allow_pickle=False) as data:
        feeds = {k: data[k] for k in data.files}
    return model.run(feeds)


def _override(job: Mapping[str, Any]) -> None:
    """Apply a candidate memory policy (edgekit.ort_policy) for this process only."""
    from edgekit import ort_policy

    if "env_arena" in job:  # an environment allocator, which sessions use with session.use_env_allocators
        import onnxruntime as ort

        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(dict(job["env_arena"])))
    if "ort_config" in job or "session" in job:
        ort_policy.MEMORY_POLICY = ort_policy.MemoryPolicy(
            config_entries=dict(job.get("ort_config", {})), **dict(job.get("session", {}))
        )


def _trivial_session_bytes(ort: Any, np: Any) -> tuple[int | None, Any]:
    """Resident bytes a second 4x4 MatMul session adds once ORT's environment is up: the runtime's fixed cost
    of a session (its graph, kernel registry look-ups, allocators, thread pool), whatever model it runs.
    The session is returned to be kept alive: freed, its pages would be reused by the model's session and
    hide part of that session's own cost.
    """
    before = read_process_memory().rss
    session = ort.InferenceSession(tiny_model_bytes(), providers=["CPUExecutionProvider"])
    session.run(None, {"A": np.ones((4, 4), np.float32)})
    after = read_process_memory().rss
    return (None if before is None or after is None else after - before), session


# The runtime's modules a load imports on first use (runtimes.load imports runtimes.model lazily, and it
# the package reader, the text preprocessing and the tokenizer loader): edgekit's own code, paid once per
# process whatever the package, so imported before the baseline and reported apart.
RUNTIME_LOAD_MODULES = ("runtimes.model", "edgekit.package", "runtimes.preprocess", "runtimes.wordpiece")


def _runtime_module_bytes() -> int | None:
    """Resident bytes the modules of :data:`RUNTIME_LOAD_MODULES` add (none of them a package's cost)."""
    import importlib

    before = read_process_memory().rss
    for name in RUNTIME_LOAD_MODULES:
        importlib.import_module(name)
    after = read_process_memory().rss
    return None if before is None or after is None else after - before


def _warm_up(partner: Mapping[str, Any]) -> str:
    """Load and call another package first (``job['warm']``, a job of its own), so what the measured package
    adds is its own: the runtime's per-process first use (ONNX Runtime's set-up for these op types, the
    tokenizer library's, the pipeline's) is then paid already. The partner stays loaded; what its load freed
    goes back to the OS first (as every load does), so the measured package does not reuse it.
    """
    import runtimes
    from edgekit.ort_policy import release_freed_heap

    model = runtimes.load(
        partner["package"], threads=int(partner.get("threads", 1)), cache_dir=partner.get("cache_dir")
    )
    for _ in range(int(partner.get("repeats", 1))):
        _call(model, partner)
    _WARM.append(model)
    release_freed_heap()
    return str(partner["package"])


_WARM: list[Any] = []  # the warm-up partner, alive until the process ends


def _mapped_weight_bytes(model: Any) -> int | None:
    """Resident bytes of the weight files ONNX Runtime maps for ``model`` (the cache entry's ``.data`` file)."""
    path = model.session.cache.path
    return mapped_file_bytes([f"{path}.data"]) if path else None


def _tokenizer_bytes(package: Path) -> int | None:
    """Resident bytes of a second copy of the package's tokenizer, read after the measured phases.

    Why: the package's tokenizer (its vocabulary: :class:`runtimes.wordpiece.CompactWordPiece` for a WordPiece
    file, the tokenizers library's structures otherwise) is loaded by the pipeline beside the session and is in
    the figures; it is neither weights, KV cache nor activations, so it is reported on its own. A second copy,
    loaded as the runtime loads it, costs what the first did without the library code the first paged in.
    None for a package without ``tokenizer.json``.
    """
    path = package / "tokenizer.json" if package.is_dir() else None
    if path is None or not path.is_file():
        return None
    from runtimes.wordpiece import load_tokenizer

    before = read_process_memory().rss
    copy = load_tokenizer(path)
    after = read_process_memory().rss
    del copy
    return None if before is None or after is None else after - before


def _second_copy_bytes(job: Mapping[str, Any]) -> int | None:
    """Resident bytes a second load of the package, called once, adds beside the first (kept alive).

    Why: the first load of a kind of model also pays what the runtime does once per process for it (modules
    imported on first use, ONNX Runtime's kernel set-up for those op types, the pipeline's first-call state);
    a second copy pays only what is the model's own. Reported beside the figures, never in place of them.
    """
    import runtimes

    before = read_process_memory().rss
    copy = runtimes.load(job["package"], threads=int(job.get("threads", 1)), cache_dir=job.get("cache_dir"))
    _call(copy, job)
    after = read_process_memory().rss
    return None if before is None or after is None else after - before


def measure(job: Mapping[str, Any]) -> dict[str, Any]:
    """Baseline, load and inference memory of ``job['package']`` (see the module docstring)."""
    import numpy as np
    import onnxruntime as ort
    import tokenizers  # noqa: F401  (a library the pipelines use: part of the baseline, not the model)

    import runtimes
    import runtimes.pipelines.classify
    import runtimes.pipelines.embed
    import runtimes.pipelines.generate
    from runtimes.session import host_fingerprint, physical_cores

    _override(job)
    physical_cores(), host_fingerprint()  # host detection, cached for the process: not the model's cost
    modules = _runtime_module_bytes()
    partner = _warm_up(job["warm"]) if job.get("warm") else None  # kept alive: the process stays warm
    tiny = ort.InferenceSession(tiny_model_bytes(), providers=["CPUExecutionProvider"])
    tiny.run(None, {"A": np.ones((4, 4), np.float32)})
    session_fixed, _second = _trivial_session_bytes(ort, np)
    base, base_code = read_process_memory(), library_code_bytes()
    peak_reset = reset_peak()
    tick = time.perf_counter()
    model = runtimes.load(job["package"], threads=int(job.get("threads", 1)), cache_dir=job.get("cache_dir"))
    load_s = time.perf_counter() - tick
    loaded, loaded_code = read_process_memory(), library_code_bytes()
    reset_peak()
    times = []
    for _ in range(int(job.get("repeats", 2))):
        tick = time.perf_counter()
        _call(model, job)
        times.append(time.perf_counter() - tick)
    ran, ran_code = read_process_memory(), library_code_bytes()
    mapped = _mapped_weight_bytes(model)
    tokenizer = _tokenizer_bytes(Path(job["package"]))
    second = _second_copy_bytes(job) if job.get("second_copy") else None

    def above(value: int | None) -> int | None:
        return None if value is None or base.rss is None else value - base.rss

    return {
        "baseline_bytes": base.rss,
        "session_fixed_bytes": session_fixed,
        "load_bytes": above(loaded.rss),
        "load_peak_bytes": above(loaded.peak) if peak_reset else None,
        "inference_peak_bytes": above(ran.peak if peak_reset else ran.rss),
        "peak_reset": peak_reset,
        # library code paged in (never released): included in the figures above, reported to be read apart
        "load_library_code_bytes": None if base_code is None or loaded_code is None else loaded_code - base_code,
        "library_code_bytes": None if base_code is None or ran_code is None else ran_code - base_code,
        "tokenizer_bytes": tokenizer,
        "runtime_modules_bytes": modules,
        "mapped_weight_bytes": mapped,
        "warm_with": partner,
        "second_copy_bytes": second,
        "load_seconds": load_s,
        "call_seconds": times,
        "cache": model.session.cache.status,
        "cache_path": model.session.cache.path,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(args[0]).read_text())
    sys.stdout.write(json.dumps({"event": "result", **measure(job)}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
