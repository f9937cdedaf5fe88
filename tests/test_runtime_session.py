"""Sessions: input validation, the optimized-graph cache, threads and memory options, package checks."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import runtimes
from edgekit.errors import ChecksumError, ConfigError, InvalidInputError, PackageError, SourceNotFoundError
from edgekit.manifest import MANIFEST_NAME
from runtimes.session import SessionConfig, physical_cores


@pytest.fixture(scope="module")
def tensor_model(tensor_package: Path) -> Any:
    return runtimes.load(tensor_package, threads=1)


def _ok() -> dict[str, Any]:
    return {"x": np.ones((2, 4), np.float32), "ids": np.array([1, 2], np.int64)}


def test_run_returns_named_outputs(tensor_model: Any) -> None:
    out = tensor_model.run(_ok())
    assert list(out) == ["y"]
    np.testing.assert_allclose(out["y"], [[3, 3, 3, 3], [4, 4, 4, 4]])


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            {"z": np.ones(1)},
            "the model has no input named 'z'. The model expects: x: float32\\[batch, 4\\]; ids: int64\\[batch\\]",
        ),
        ({"x": None}, "missing input 'x'"),
        (
            {"x": np.ones((2, 4), np.float64)},
            "input 'x' has dtype float64, the model expects float32; .* can lose values",
        ),
        ({"ids": np.array([1, 2], np.float32)}, "input 'ids' has dtype float32, the model expects int64"),
        ({"x": np.ones((2, 4, 1), np.float32)}, "input 'x' has rank 3 .* expects rank 2"),
        ({"x": np.ones((2, 5), np.float32)}, "input 'x' has size 5 on axis 1, the model fixes it at 4"),
        ({"ids": np.array([1, 2, 3], np.int64)}, "input 'ids' has batch=3 on axis 0, but input 'x' has batch=2"),
        ({"ids": [1.5, 2.0]}, "input 'ids' holds values that change when read as int64"),
        ({"x": "text"}, "input 'x' cannot be read as float32"),
    ],
)
def test_bad_inputs_are_refused_before_onnxruntime(tensor_model: Any, change: dict[str, Any], error: str) -> None:
    feeds = {**_ok(), **change}
    feeds = {k: v for k, v in feeds.items() if v is not None}
    with pytest.raises(InvalidInputError, match=error):
        tensor_model.run(feeds)


def test_lossless_casts_and_lists_are_accepted(tensor_model: Any) -> None:
    out = tensor_model.run({"x": np.ones((2, 4), np.float16), "ids": np.array([1, 2], np.int32)})["y"]
    np.testing.assert_allclose(out[:, 0], [3, 4])
    out = tensor_model.run({"x": [[1.0] * 4, [0.5] * 4], "ids": [1, 2]})["y"]
    np.testing.assert_allclose(out[:, 0], [3, 3])
    with pytest.raises(InvalidInputError, match="must be a mapping"):
        tensor_model.run([np.ones((2, 4))])


def test_optimized_graph_cache_written_then_hit(
    embed_package: Path, fresh_copy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = fresh_copy(embed_package)
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "c"))
    before = sorted(p.name for p in pkg.rglob("*"))
    first = runtimes.load(pkg, threads=1)
    assert first.session.cache.status == "written"
    cached = Path(first.session.cache.path)
    # the cache lives in the user cache dir, never inside the package
    assert cached.is_file() and cached.parent.parent == tmp_path / "c" / "graphs"
    assert sorted(p.name for p in pkg.rglob("*")) == before
    assert "ort" in cached.parent.name and "-cpu-all" in cached.parent.name
    second = runtimes.load(pkg, threads=1)
    assert second.session.cache.status == "hit"
    np.testing.assert_allclose(first.embed(["a b c", "d"]), second.embed(["a b c", "d"]), rtol=1e-6)
    # the cache directory does not disturb the checksum verification of the package
    runtimes.load(pkg, threads=1, verify=True)
    other_level = runtimes.load(pkg, threads=1, graph_optimization="basic")
    assert other_level.session.cache.status == "written"  # keyed by optimization level
    assert runtimes.load(pkg, threads=1, cache_optimized_graph=False).session.cache.status == "disabled"


def test_damaged_cache_entry_is_rebuilt(
    embed_package: Path, fresh_copy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = fresh_copy(embed_package)
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "c"))
    path = Path(runtimes.load(pkg, threads=1).session.cache.path)
    path.write_bytes(b"garbage")
    again = runtimes.load(pkg, threads=1)
    assert again.session.cache.status == "written"
    assert again.embed("hello").shape == (16,)


def test_read_only_package_caches_under_env_dir(
    embed_package: Path, fresh_copy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtimes.session import _cache_root

    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "c"))
    assert _cache_root(None) == tmp_path / "c" / "graphs"
    monkeypatch.delenv("EDGEKIT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache_root(None) == tmp_path / "xdg" / "edgekit" / "graphs"
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "c"))
    pkg = fresh_copy(embed_package)
    for p in [pkg, *pkg.iterdir()]:
        p.chmod(stat.S_IRUSR | stat.S_IXUSR if p.is_dir() else stat.S_IRUSR)
    try:
        model = runtimes.load(pkg, threads=1)
        assert Path(model.session.cache.path).is_relative_to(tmp_path / "c" / "graphs")
        assert not (pkg / ".edgekit-cache").exists()
    finally:
        pkg.chmod(stat.S_IRWXU)


def test_threads_and_low_memory(embed_package: Path) -> None:
    assert runtimes.load(embed_package).session.threads == physical_cores()
    model = runtimes.load(embed_package, threads=1, low_memory=True)
    opts = model.session.session.get_session_options()
    assert model.session.low_memory and not opts.enable_cpu_mem_arena and not opts.enable_mem_pattern
    assert runtimes.load(embed_package, threads=1).session.session.get_session_options().enable_cpu_mem_arena
    with pytest.raises(ConfigError, match="threads must be a positive integer"):
        runtimes.load(embed_package, threads=0)
    with pytest.raises(ConfigError, match="graph_optimization must be one of"):
        runtimes.load(embed_package, graph_optimization="max")
    with pytest.raises(ConfigError, match="unknown session option 'thread'"):
        SessionConfig.from_dict({"thread": 2})
    assert SessionConfig.from_dict(SessionConfig(threads=2).to_dict()) == SessionConfig(threads=2)


def test_checksum_failure(embed_package: Path, fresh_copy: Any) -> None:
    pkg = fresh_copy(embed_package)
    tok = pkg / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"[PAD]"', '"[PAX]"'))
    with pytest.raises(ChecksumError, match="tokenizer.json"):
        runtimes.load(pkg)
    assert runtimes.load(pkg, verify=False).embed("x").shape == (16,)


def test_newer_schema_is_refused(embed_package: Path, fresh_copy: Any) -> None:
    pkg = fresh_copy(embed_package)
    data = json.loads((pkg / MANIFEST_NAME).read_text())
    data["schema_version"] = "2.0"
    (pkg / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(PackageError, match="schema_version 2.0 is newer"):
        runtimes.load(pkg)


def test_missing_package_and_missing_tokenizer(embed_package: Path, fresh_copy: Any, tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError):
        runtimes.load(tmp_path / "nope")
    pkg = fresh_copy(embed_package)
    (pkg / "tokenizer.json").unlink()
    with pytest.raises(PackageError, match="no tokenizer file"):
        runtimes.load(pkg, verify=False)


def test_bare_onnx_file_loads_for_run(tensor_package: Path) -> None:
    model = runtimes.load(tensor_package / "model.onnx", threads=1)
    assert model.task == "tensor" and model.methods == ("run",)
    assert model.run(_ok())["y"].shape == (2, 4)
