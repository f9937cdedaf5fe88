"""Hostile packages: tampered files, paths leading out, wrong-typed manifests, a poisoned graph cache, bad zips.

Each case asserts the error type, its stable ``code``, a message fragment and a hint, and that nothing is left
on disk (no partials, no staging dirs) and the package itself is untouched.
"""

from __future__ import annotations

import copy
import os
import stat
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgekit.package as package_mod
import runtimes
from edgekit.errors import ChecksumError, CorruptModelError, PackageError
from edgekit.manifest import SCHEMA_VERSION
from edgekit.package import open_package
from tests.hostile_helpers import (
    check_error,
    copy_package,
    edit_manifest,
    export_mlp,
    leftovers,
    mlp_reference,
    read_manifest_json,
    relist,
    snapshot,
    write_manifest_json,
)

X = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)


@pytest.fixture(autouse=True)
def user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="module")
def pkg_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_mlp(tmp_path_factory.mktemp("hostile") / "mlp-a", seed=0)


@pytest.fixture(scope="module")
def pkg_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same inputs and outputs as pkg_a, other weights: a stale graph would give pkg_a's numbers."""
    return export_mlp(tmp_path_factory.mktemp("hostile") / "mlp-b", seed=1)


@pytest.fixture
def pkg(pkg_a: Path, tmp_path: Path) -> Path:
    return copy_package(pkg_a, tmp_path / "pkg")


def _refused(pkg: Path, cls: type, code: str, fragment: str, *, verify: bool = True) -> None:
    before = snapshot(pkg)
    with pytest.raises(cls) as err:
        runtimes.load(pkg, verify=verify, threads=1)
    check_error(err.value, cls, code, fragment)
    assert snapshot(pkg) == before
    assert leftovers(pkg.parent) == []


# ------------------------------------------------------------------------------------------ tampered files


def _flip_byte(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


TAMPER = {
    "model-byte-flipped": (lambda p: _flip_byte(p / "model.onnx"), "does not match its sha256"),
    "model-truncated": (lambda p: (p / "model.onnx").write_bytes((p / "model.onnx").read_bytes()[:100]), "truncated"),
    "model-empty": (lambda p: (p / "model.onnx").write_bytes(b""), "truncated"),
    "model-missing": (lambda p: (p / "model.onnx").unlink(), "missing"),
    "model-is-a-dir": (lambda p: ((p / "model.onnx").unlink(), (p / "model.onnx").mkdir()), "missing"),
    "files-empty-and-model-edited": (
        lambda p: (_flip_byte(p / "model.onnx"), edit_manifest(p, lambda m: m.update(files=[]))),
        "model.onnx is not listed",
    ),
    "model-unlisted": (
        lambda p: edit_manifest(p, lambda m: m.update(files=[e for e in m["files"] if e["path"] != "model.onnx"])),
        "model.onnx is not listed",
    ),
    "unlisted-external-data": (lambda p: (p / "model.onnx.data").write_bytes(b"w" * 64), "model.onnx.data is not"),
    "unlisted-tokenizer": (lambda p: (p / "tokenizer.json").write_text("{}"), "tokenizer.json is not listed"),
    "listed-extra-file-edited": (
        lambda p: ((p / "notes.txt").write_text("a"), relist(p, "notes.txt"), (p / "notes.txt").write_text("b")),
        "notes.txt does not match",
    ),
    "listed-extra-file-missing": (
        lambda p: ((p / "notes.txt").write_text("a"), relist(p, "notes.txt"), (p / "notes.txt").unlink()),
        "notes.txt listed in the manifest is missing",
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_tampered_package_is_refused(pkg: Path, case: str) -> None:
    change, fragment = TAMPER[case]
    change(pkg)
    _refused(pkg, ChecksumError, "checksum_mismatch", fragment)


def test_tampered_tokenizer_is_refused(embed_package: Path, tmp_path: Path) -> None:
    pkg = copy_package(embed_package, tmp_path / "embed")
    tok = pkg / "tokenizer.json"
    tok.write_text(tok.read_text().replace("the", "thx", 1))
    _refused(pkg, ChecksumError, "checksum_mismatch", "tokenizer.json does not match")


def _npz_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, x=np.zeros(3))
    return buf.getvalue()


CORRUPT_MODELS = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 3]),
    "zero-bytes": lambda p: p.write_bytes(b""),
    "text": lambda p: p.write_text("not a model\n" * 10),
    "npz": lambda p: p.write_bytes(_npz_bytes()),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_MODELS))
def test_corrupt_model_without_verify_is_a_corrupt_model_error(pkg: Path, case: str) -> None:
    CORRUPT_MODELS[case](pkg / "model.onnx")
    _refused(pkg, CorruptModelError, "corrupt_model", "is not a valid ONNX model", verify=False)


# --------------------------------------------------------------------------------------- paths leading out

TRAVERSAL = {
    "dotdot-etc-passwd": ("../../etc/passwd", "climbs out with .."),
    "absolute": ("/etc/hostname", "is an absolute path"),
    "inner-dotdot": ("a/../../x", "climbs out with .."),
    "bare-dotdot": ("..", "climbs out with .."),
    "dot-component": ("./model.onnx", "not in normal form"),
    "double-slash": ("a//b", "not in normal form"),
    "trailing-slash": ("sub/", "not in normal form"),
    "drive-letter": ("C:/Windows/win.ini", "is an absolute path"),
    "backslashes": ("..\\..\\etc\\passwd", "uses backslashes"),
    "empty": ("", "is empty"),
    "nul": ("model.onnx\x00.txt", "NUL character"),
}


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
@pytest.mark.parametrize("case", sorted(TRAVERSAL))
def test_files_entry_leading_out_is_refused(pkg: Path, case: str, verify: bool) -> None:
    path, fragment = TRAVERSAL[case]
    edit_manifest(pkg, lambda m: m["files"].append({"path": path, "bytes": 1, "sha256": "0" * 64}))
    _refused(pkg, PackageError, "invalid_package", fragment, verify=verify)


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
@pytest.mark.parametrize("case", ["dotdot", "absolute", "nested-dotdot"])
def test_tokenizer_file_leading_out_is_refused(embed_package: Path, tmp_path: Path, case: str, verify: bool) -> None:
    pkg = copy_package(embed_package, tmp_path / "embed")
    value = {"dotdot": "../tokenizer.json", "absolute": "/etc/passwd", "nested-dotdot": "a/../../t.json"}[case]
    edit_manifest(pkg, lambda m: m["preprocessing"].update(tokenizer_file=value))
    _refused(pkg, PackageError, "invalid_package", "preprocessing.tokenizer_file", verify=verify)


def test_nested_preprocessing_path_is_confined(pkg: Path) -> None:
    edit_manifest(pkg, lambda m: m["preprocessing"].update(image={"mean_file": "../../m.npy"}))
    _refused(pkg, PackageError, "invalid_package", "preprocessing.image.mean_file")


def test_tokenizer_file_of_wrong_type(embed_package: Path, tmp_path: Path) -> None:
    pkg = copy_package(embed_package, tmp_path / "embed")
    edit_manifest(pkg, lambda m: m["preprocessing"].update(tokenizer_file=["tokenizer.json"]))
    _refused(pkg, PackageError, "invalid_package", "preprocessing.tokenizer_file must be a string")


def _outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text("not for the package")
    return secret


def _link_listed(pkg: Path, name: str, target: Path) -> None:
    (pkg / name).symlink_to(target)
    relist(pkg, name)  # even with a matching sha256 the link is refused


SYMLINKS = {
    "listed-file-to-outside": lambda pkg, out: _link_listed(pkg, "notes.txt", out),
    "model-to-outside-copy": lambda pkg, out: (
        out.write_bytes((pkg / "model.onnx").read_bytes()),
        (pkg / "model.onnx").unlink(),
        (pkg / "model.onnx").symlink_to(out),
    ),
    "dir-link-to-outside": lambda pkg, out: (
        (pkg / "sub").symlink_to(out.parent, target_is_directory=True),
        relist(pkg, "sub/secret.txt"),
    ),
    "tokenizer-to-outside": lambda pkg, out: (pkg / "tokenizer.json").symlink_to(out),
    "manifest-to-outside": lambda pkg, out: (
        out.write_bytes((pkg / "edgekit.json").read_bytes()),
        (pkg / "edgekit.json").unlink(),
        (pkg / "edgekit.json").symlink_to(out),
    ),
}


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
@pytest.mark.parametrize("case", sorted(SYMLINKS))
def test_symlink_leading_out_is_refused(pkg: Path, tmp_path: Path, case: str, verify: bool) -> None:
    outside = _outside(tmp_path)
    SYMLINKS[case](pkg, outside)
    _refused(pkg, PackageError, "invalid_package", "leads outside the package", verify=verify)
    assert outside.read_bytes()  # the outside file is untouched


def test_symlink_inside_the_package_is_fine(pkg: Path) -> None:
    (pkg / "real.txt").write_text("notes")
    (pkg / "alias.txt").symlink_to("real.txt")
    relist(pkg, "real.txt")
    relist(pkg, "alias.txt")
    model = runtimes.load(pkg, threads=1)
    assert model.verified and model.run({"x": X})["logits"].shape == (2, 4)


def test_package_file_accessor_is_confined(pkg: Path) -> None:
    p = open_package(pkg)
    assert p.file("model.onnx") == pkg / "model.onnx"
    assert p.file("nope.txt") is None
    with pytest.raises(PackageError, match="climbs out"):
        p.file("../edgekit.json")


# --------------------------------------------------------------------------------------- wrong-typed fields


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path with [i] indices: 'files[0].bytes'."""
    keys: list[Any] = []
    for part in path.split("."):
        name, _, rest = part.partition("[")
        if name:
            keys.append(name)
        if rest:
            keys += [int(i) for i in rest.rstrip("]").split("][")]
    target: Any = data
    for k in keys[:-1]:
        target = target[k]
    target[keys[-1]] = value


WRONG_TYPES = {
    "task": (3, "must be a string"),
    "name": (None, "must be a string"),
    "created_at": (0, "must be a string"),
    "recipe": ("fp32", "must be an object"),
    "recipe.name": (["fp32"], "must be a string"),
    "recipe.options": ([], "must be an object"),
    "recipe.float_nodes": ("fc1", "must be an array"),
    "recipe.float_nodes[0]": (7, "must be a string"),
    "recipe.steps": ({}, "must be an array"),
    "recipe.steps[0]": ("optimize", "must be an object"),
    "inputs": ({"x": 1}, "must be an array"),
    "inputs[0]": ("x", "must be an object"),
    "inputs[0].name": (1, "must be a string"),
    "inputs[0].dtype": (32, "must be a string"),
    "inputs[0].shape": ("batch,16", "must be an array"),
    "inputs[0].shape[1]": (16.5, "must be an integer or a string or null"),
    "inputs[0].shape[0]": (True, "must be an integer or a string or null"),
    "outputs": (None, "must be an array"),
    "outputs[0].name": ({}, "must be a string"),
    "source": ([], "must be an object"),
    "source.kind": (1, "must be a string"),
    "source.path": (False, "must be a string"),
    "source.sha256": (123, "must be a string"),
    "source.opset": ("17", "must be an integer"),
    "source.opset ": (17.0, "must be an integer"),
    "source.library_versions": ("onnx 1.23", "must be an object"),
    "source.library_versions.onnx": (1.23, "must be a string"),
    "files": ({"model.onnx": {}}, "must be an array"),
    "files[0]": ("model.onnx", "must be an object"),
    "files[0].path": (["model.onnx"], "must be a string"),
    "files[0].bytes": ("6106", "must be an integer"),
    "files[0].bytes ": (True, "must be an integer"),
    "files[0].sha256": (None, "must be a string"),
    "weights": (1348, "must be an object"),
    "weights.parameter_count": ("1348", "must be an integer"),
    "weights.bytes_by_dtype": ([], "must be an object"),
    "weights.bytes_by_dtype.float32": ("5392", "must be an integer"),
    "preprocessing": ([], "must be an object"),
    "labels": ("cat,dog", "must be an array or null"),
    "labels[0]": (1, "must be a string"),
    "accuracy": ("good", "must be an object or null"),
    "generation": ([], "must be an object or null"),
}


@pytest.mark.parametrize("field", sorted(WRONG_TYPES))
def test_wrong_typed_manifest_field_names_the_field(pkg: Path, field: str) -> None:
    value, fragment = WRONG_TYPES[field]
    path = field.strip()
    # list items need a list to live in
    if path.startswith("labels["):
        edit_manifest(pkg, lambda m: m.update(labels=["a", "b"]))
    if path.startswith("recipe.float_nodes["):
        edit_manifest(pkg, lambda m: m["recipe"].update(float_nodes=["fc1"]))
    edit_manifest(pkg, lambda m: _set(m, path, value))
    before = snapshot(pkg)
    with pytest.raises(PackageError) as err:
        runtimes.load(pkg, threads=1, verify=False)
    check_error(err.value, PackageError, "invalid_package", f"the manifest field {path} {fragment}")
    assert err.value.param == path
    assert snapshot(pkg) == before


GENERATION = {
    "with_kv_cache": True,
    "num_layers": 2,
    "num_attention_heads": 2,
    "num_kv_heads": 2,
    "head_size": 8,
    "vocab_size": 300,
    "max_context_tokens": 64,
    "eos_token_ids": [1],
}
WRONG_GENERATION = {
    "with_kv_cache": ("yes", "must be true or false"),
    "num_layers": ("2", "must be an integer"),
    "head_size": (8.5, "must be an integer"),
    "eos_token_ids": (1, "must be an array"),
    "eos_token_ids[0]": ("eos", "must be an integer"),
    "bos_token_id": (1.5, "must be an integer or null"),
    "past_key_template": (7, "must be a string or null"),
}


@pytest.mark.parametrize("field", sorted(WRONG_GENERATION))
def test_wrong_typed_generation_field(pkg: Path, field: str) -> None:
    value, fragment = WRONG_GENERATION[field]
    gen = copy.deepcopy(GENERATION)
    _set(gen, field, value)
    edit_manifest(pkg, lambda m: m.update(generation=gen))
    _refused(pkg, PackageError, "invalid_package", f"the manifest field generation.{field} {fragment}", verify=False)


@pytest.mark.parametrize(
    "field", ["task", "name", "recipe", "inputs", "outputs", "source", "files", "weights", "created_at"]
)
def test_missing_manifest_field(pkg: Path, field: str) -> None:
    edit_manifest(pkg, lambda m: m.pop(field))
    _refused(pkg, PackageError, "invalid_package", f"the manifest has no field {field}", verify=False)


@pytest.mark.parametrize(
    ("field", "fragment"),
    [("files[0].path", "no field files[0].path"), ("source.sha256", "no field source.sha256")],
)
def test_missing_nested_field(pkg: Path, field: str, fragment: str) -> None:
    parent, _, key = field.rpartition(".")

    def drop(m: dict[str, Any]) -> None:
        node: Any = m
        for part in parent.replace("[", ".").replace("]", "").split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        node.pop(key)

    edit_manifest(pkg, drop)
    _refused(pkg, PackageError, "invalid_package", fragment, verify=False)


SEMANTIC = {
    "negative-bytes": (lambda m: _set(m, "files[0].bytes", -1), "files[0].bytes is negative"),
    "bad-sha": (lambda m: _set(m, "files[0].sha256", "ABC"), "files[0].sha256 is not a sha256"),
    "uppercase-sha": (lambda m: _set(m, "files[0].sha256", m["files"][0]["sha256"].upper()), "not a sha256"),
    "duplicate-entry": (lambda m: m["files"].append(dict(m["files"][0])), "lists 'model.onnx' twice"),
}


@pytest.mark.parametrize("case", sorted(SEMANTIC))
def test_inconsistent_manifest(pkg: Path, case: str) -> None:
    change, fragment = SEMANTIC[case]
    edit_manifest(pkg, change)
    _refused(pkg, PackageError, "invalid_package", fragment, verify=False)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


_VERSION = f'"schema_version": "{SCHEMA_VERSION}"'
MANIFEST_DOCS = {
    "truncated-json": (lambda t: t[: len(t) // 2], "is not valid JSON"),
    "not-utf8": (lambda t: "\udcff", "is not valid JSON"),
    "empty": (lambda t: "", "is not valid JSON"),
    "array": (lambda t: "[1, 2]", "is not a JSON object (got an array)"),
    "string": (lambda t: '"edgekit"', "is not a JSON object (got a string)"),
    "deeply-nested": (lambda t: _nested(100_000), "nested too deeply"),
    "newer-major": (lambda t: t.replace(_VERSION, '"schema_version": "2.0"'), "is newer than"),
    "version-number": (lambda t: t.replace(_VERSION, '"schema_version": 1.1'), "schema_version 1.1"),
    "version-garbage": (lambda t: t.replace(_VERSION, '"schema_version": "one"'), "MAJOR.MINOR"),
    "version-missing": (lambda t: t.replace(_VERSION + ",", ""), "has no schema_version"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_DOCS))
def test_broken_manifest_document(pkg: Path, case: str) -> None:
    change, fragment = MANIFEST_DOCS[case]
    text = (pkg / "edgekit.json").read_text()
    new = change(text)
    if case == "not-utf8":
        (pkg / "edgekit.json").write_bytes(b'{"task": "\xff\xfe"}')
    else:
        (pkg / "edgekit.json").write_text(new)
    _refused(pkg, PackageError, "invalid_package", fragment, verify=False)
    if case == "newer-major":
        with pytest.raises(PackageError) as err:
            runtimes.load(pkg)
        assert "upgrade edgekit" in err.value.hint


def test_oversized_manifest(pkg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(package_mod, "MANIFEST_MAX_BYTES", 1024)
    _refused(pkg, PackageError, "invalid_package", "too large for a manifest", verify=False)


# ------------------------------------------------------------------------------------ optimized-graph cache


def test_edited_cached_graph_never_runs(pkg: Path, pkg_b: Path, user_cache: Path) -> None:
    first = runtimes.load(pkg, threads=1)
    assert first.session.cache.status == "written"
    cached = Path(first.session.cache.path)
    assert cached.is_relative_to(user_cache / "graphs")
    cached.write_bytes((pkg_b / "model.onnx").read_bytes())  # a graph that runs, with other weights
    again = runtimes.load(pkg, threads=1)
    assert again.session.cache.status == "written"
    assert "does not match its sha256" in again.session.cache.reason
    assert again.info()["checksums_verified"] is True
    np.testing.assert_allclose(again.run({"x": X})["logits"], mlp_reference(pkg / "model.onnx", X), rtol=1e-5)
    assert runtimes.load(pkg, threads=1).session.cache.status == "hit"  # the rebuilt entry is trusted again


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
def test_edited_model_never_reuses_a_stale_graph(pkg: Path, pkg_b: Path, verify: bool) -> None:
    runtimes.load(pkg, threads=1)  # caches pkg_a's graph
    (pkg / "model.onnx").write_bytes((pkg_b / "model.onnx").read_bytes())
    if verify:
        relist(pkg, "model.onnx")  # a consistent hand edit: the checksums now describe pkg_b's model
    model = runtimes.load(pkg, threads=1, verify=verify)
    assert model.session.cache.status == "written"
    assert model.verified is verify
    np.testing.assert_allclose(model.run({"x": X})["logits"], mlp_reference(pkg_b / "model.onnx", X), rtol=1e-5)


@pytest.mark.parametrize("damage", ["checksums-removed", "extra-file", "graph-truncated", "checksums-garbage"])
def test_damaged_cache_entry_is_rebuilt(pkg: Path, damage: str) -> None:
    cached = Path(runtimes.load(pkg, threads=1).session.cache.path)
    entry = cached.parent
    if damage == "checksums-removed":
        (entry / "checksums.json").unlink()
    elif damage == "extra-file":
        (entry / "model.onnx.data").write_bytes(b"x")
    elif damage == "graph-truncated":
        cached.write_bytes(cached.read_bytes()[:50])
    else:
        (entry / "checksums.json").write_text("[")
    model = runtimes.load(pkg, threads=1)
    assert model.session.cache.status == "written" and "rebuilt" in model.session.cache.reason
    np.testing.assert_allclose(model.run({"x": X})["logits"], mlp_reference(pkg / "model.onnx", X), rtol=1e-5)
    assert leftovers(entry.parent) == []


def test_bare_onnx_edit_is_seen(pkg: Path, pkg_b: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.onnx"
    bare.write_bytes((pkg / "model.onnx").read_bytes())
    runtimes.load(bare, threads=1)
    bare.write_bytes((pkg_b / "model.onnx").read_bytes())
    model = runtimes.load(bare, threads=1)
    np.testing.assert_allclose(model.run({"x": X})["logits"], mlp_reference(pkg_b / "model.onnx", X), rtol=1e-5)


def test_read_only_package_loads_and_is_never_written(pkg: Path, user_cache: Path) -> None:
    before = snapshot(pkg)
    for p in [*pkg.iterdir(), pkg]:
        p.chmod(stat.S_IRUSR | stat.S_IXUSR if p.is_dir() else stat.S_IRUSR)
    try:
        for _ in range(2):
            model = runtimes.load(pkg, threads=1)
            assert model.run({"x": X})["logits"].shape == (2, 4)
        assert model.session.cache.status == "hit"
    finally:
        pkg.chmod(stat.S_IRWXU)
    assert snapshot(pkg) == before  # no .edgekit-cache or anything else inside the package
    assert any((user_cache / "graphs").iterdir())


def test_no_cache_dir_still_loads(pkg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("runtimes.session.user_cache_dir", lambda: None)
    model = runtimes.load(pkg, threads=1)
    assert model.session.cache.status == "disabled" and "EDGEKIT_CACHE_DIR" in model.session.cache.reason
    assert model.run({"x": X})["logits"].shape == (2, 4)


def test_passed_package_object_is_verified(pkg: Path) -> None:
    unverified = open_package(pkg, verify=False)
    _flip_byte(pkg / "model.onnx")
    with pytest.raises(ChecksumError):
        runtimes.load(unverified, threads=1)


# -------------------------------------------------------------------------------------------- zip packages


def _zip(pkg: Path, dest: Path, *, folder: bool = False, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(pkg.iterdir()):
            zf.write(p, f"{pkg.name}/{p.name}" if folder else p.name)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return dest


def _zip_refused(archive: Path, user_cache: Path, fragment: str, *, cls: type = PackageError) -> None:
    outside = archive.parent / "evil.txt"
    with pytest.raises(cls) as err:
        runtimes.load(archive, threads=1)
    check_error(err.value, cls, cls.code, fragment)
    assert not outside.exists()
    packages = user_cache / "packages"
    assert not packages.exists() or list(packages.iterdir()) == []  # nothing half-extracted, no staging
    assert leftovers(archive.parent) == []


@pytest.mark.parametrize("folder", [False, True], ids=["flat", "zipped-folder"])
def test_zip_package_loads_from_a_staging_dir_named_by_its_hash(
    pkg: Path, tmp_path: Path, user_cache: Path, folder: bool
) -> None:
    import hashlib

    archive = _zip(pkg, tmp_path / "pkg.zip", folder=folder)
    model = runtimes.load(archive, threads=1)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert Path(model.root) == user_cache / "packages" / digest / "pkg"  # the package keeps a readable name
    assert model.verified
    np.testing.assert_allclose(model.run({"x": X})["logits"], mlp_reference(pkg / "model.onnx", X), rtol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["cache", "pkg", "pkg.zip"])  # nothing beside it


def test_updated_archive_is_never_served_stale(pkg: Path, pkg_b: Path, tmp_path: Path) -> None:
    archive = _zip(pkg, tmp_path / "model.zip")
    first = runtimes.load(archive, threads=1)
    _zip(pkg_b, archive)  # the same path, new content
    second = runtimes.load(archive, threads=1)
    assert first.root != second.root
    np.testing.assert_allclose(second.run({"x": X})["logits"], mlp_reference(pkg_b / "model.onnx", X), rtol=1e-5)


def test_tampered_model_inside_zip(pkg: Path, tmp_path: Path, user_cache: Path) -> None:
    _flip_byte(pkg / "model.onnx")
    archive = _zip(pkg, tmp_path / "pkg.zip")
    with pytest.raises(ChecksumError) as err:
        runtimes.load(archive, threads=1)
    check_error(err.value, ChecksumError, "checksum_mismatch", "model.onnx does not match")


def test_tampered_extraction_is_caught(pkg: Path, tmp_path: Path) -> None:
    archive = _zip(pkg, tmp_path / "pkg.zip")
    root = Path(runtimes.load(archive, threads=1).root)
    _flip_byte(root / "model.onnx")
    with pytest.raises(ChecksumError, match="model.onnx does not match"):
        runtimes.load(archive, threads=1)


def _member(name: str, data: bytes = b"x", *, mode: int | None = None) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    if mode is not None:
        info.external_attr = mode << 16
    return info, data


UNSAFE_MEMBERS = {
    "zip-slip": (_member("../evil.txt"), "unsafe member name '../evil.txt'"),
    "zip-slip-deep": (_member("a/../../evil.txt"), "climbs out"),
    "absolute": (_member("/tmp/evil.txt"), "is an absolute path"),
    "backslash": (_member("..\\evil.txt"), "uses backslashes"),
    "drive": (_member("C:/evil.txt"), "is an absolute path"),
    "symlink": (_member("link", b"/etc/passwd", mode=stat.S_IFLNK | 0o777), "holds a symbolic link 'link'"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE_MEMBERS))
def test_unsafe_zip_member_is_refused(pkg: Path, tmp_path: Path, user_cache: Path, case: str) -> None:
    (info, data), fragment = UNSAFE_MEMBERS[case]
    archive = _zip(pkg, tmp_path / "pkg.zip")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(info, data)
    _zip_refused(archive, user_cache, fragment)


def test_duplicate_zip_member(pkg: Path, tmp_path: Path, user_cache: Path) -> None:
    archive = _zip(pkg, tmp_path / "pkg.zip")
    with warnings.catch_warnings(), zipfile.ZipFile(archive, "a") as zf:
        warnings.simplefilter("ignore")
        zf.writestr("model.onnx", b"shadow")
    _zip_refused(archive, user_cache, "holds 'model.onnx' twice")


def test_zip_member_count_limit(pkg: Path, tmp_path: Path, user_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(package_mod, "ZIP_MAX_MEMBERS", 5)
    archive = _zip(pkg, tmp_path / "pkg.zip", extra={f"f{i}.txt": b"x" for i in range(5)})
    _zip_refused(archive, user_cache, "more than the limit of 5")


def test_zip_size_limit(pkg: Path, tmp_path: Path, user_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(package_mod, "ZIP_MAX_BYTES", 1 << 20)
    archive = _zip(pkg, tmp_path / "pkg.zip", extra={"big.bin": os.urandom(1 << 20)})
    _zip_refused(archive, user_cache, "more than the limit of 1048576")


def test_zip_bomb_ratio(pkg: Path, tmp_path: Path, user_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(package_mod, "ZIP_RATIO_MIN_BYTES", 1 << 20)
    archive = _zip(pkg, tmp_path / "pkg.zip", extra={"zeros.bin": bytes(4 << 20)})
    _zip_refused(archive, user_cache, "looks like a zip bomb")


def test_zip_larger_than_free_space(
    pkg: Path, tmp_path: Path, user_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10, 10, 100))
    _zip_refused(_zip(pkg, tmp_path / "pkg.zip"), user_cache, "bytes free")


def _corrupt_member(archive: Path, name: str) -> None:
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(name)
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 5, start + min(info.compress_size, 60)):
        data[i] ^= 0x5A
    archive.write_bytes(bytes(data))


@pytest.mark.parametrize("member", ["model.onnx", "edgekit.json"])
def test_corrupt_member_leaves_nothing_half_written(pkg: Path, tmp_path: Path, user_cache: Path, member: str) -> None:
    archive = _zip(pkg, tmp_path / "pkg.zip")
    _corrupt_member(archive, member)
    _zip_refused(archive, user_cache, "is corrupt")
    # a good archive afterwards loads: no 0-byte manifest was left to break later runs
    good = _zip(pkg, tmp_path / "good.zip")
    assert runtimes.load(good, threads=1).run({"x": X})["logits"].shape == (2, 4)


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_archive(pkg: Path, tmp_path: Path, user_cache: Path, cut: float) -> None:
    archive = _zip(pkg, tmp_path / "pkg.zip")
    archive.write_bytes(archive.read_bytes()[: int(archive.stat().st_size * cut)])
    _zip_refused(archive, user_cache, "is not a valid zip archive")


def test_zip_without_manifest(pkg: Path, tmp_path: Path, user_cache: Path) -> None:
    archive = tmp_path / "pkg.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(pkg / "model.onnx", "model.onnx")
    _zip_refused(archive, user_cache, "holds no edgekit.json at its top or in a single folder")


def test_zip_with_wrong_typed_manifest(pkg: Path, tmp_path: Path, user_cache: Path) -> None:
    edit_manifest(pkg, lambda m: _set(m, "files[0].bytes", "many"))
    archive = _zip(pkg, tmp_path / "pkg.zip")
    with pytest.raises(PackageError, match="files\\[0\\].bytes must be an integer"):
        runtimes.load(archive, threads=1)


def test_zip_in_read_only_dir_loads(pkg: Path, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    archive = _zip(pkg, ro / "pkg.zip")
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert runtimes.load(archive, threads=1).run({"x": X})["logits"].shape == (2, 4)
    finally:
        ro.chmod(stat.S_IRWXU)
    assert sorted(p.name for p in ro.iterdir()) == ["pkg.zip"]


def test_manifest_roundtrip_still_reads_real_packages(pkg: Path) -> None:
    """The typed reader accepts what the exporter writes (the safe outcome for the non-hostile case)."""
    m = read_manifest_json(pkg)
    write_manifest_json(pkg, m)
    p = open_package(pkg)
    assert p.manifest.files[0].path == "model.onnx" and set(p.verified) == {"model.onnx"}


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update(schema_version="1.9", future_field={"any": 1}),
        lambda m: m["source"].update(new_key=[1, 2]),
        lambda m: m.update(generation=dict(GENERATION)),
        lambda m: m.update(labels=None, accuracy=None),
    ],
    ids=["newer-minor-with-new-keys", "new-nested-key", "valid-generation", "nulls"],
)
def test_additive_changes_are_accepted(pkg: Path, change: Any) -> None:
    """Within a major version changes are additive: a reader ignores keys it does not know."""
    edit_manifest(pkg, change)
    model = runtimes.load(pkg, threads=1)
    assert model.verified and model.run({"x": X})["logits"].shape == (2, 4)


def test_stale_staging_of_a_killed_extraction_is_swept(pkg: Path, tmp_path: Path, user_cache: Path) -> None:
    stale = user_cache / "packages" / ".0123456789abcdef.dead.partial"
    stale.mkdir(parents=True)
    (stale / "edgekit.json").write_bytes(b"")  # what a killed extraction leaves
    os.utime(stale, (0, 0))
    assert runtimes.load(_zip(pkg, tmp_path / "pkg.zip"), threads=1).verified
    assert not stale.exists()
    assert leftovers(user_cache) == []
