"""Source converters: a HF model directory, a PyTorch module, or an ONNX file -> an fp32 ONNX graph.

Each converter is one ``SOURCES`` entry with a ``matches`` test and a ``convert`` callable, so a new source
kind is one new entry. Conversion writes into a work directory; the package is assembled later.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import (
    CorruptModelError,
    SourceNotFoundError,
    UnsupportedModelError,
    UsageError,
)
from edgekit.hashing import sha256_file, sha256_tree
from edgekit.manifest import MANIFEST_NAME, GenerationSpec, SourceInfo
from edgekit.registry import Registry
from edgekit.tasks import TaskSpec
from exporters import arch_facts, graph
from runtimes.preprocess import AudioSettings, ImageSettings

log = logging.getLogger("edgekit.export")

# Files a device needs beside the graph to preprocess inputs and decode outputs.
ASSET_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "preprocessor_config.json",
    "config.json",
    "generation_config.json",
    "chat_template.jinja",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")


@dataclass(kw_only=True)
class ConvertedModel:
    onnx_path: Path
    source: SourceInfo
    assets: list[Path] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None
    generation: GenerationSpec | None = None
    model_type: str | None = None  # the HF config's model_type, which picks ORT's transformer fusions


@dataclass(frozen=True, kw_only=True)
class TorchSource:
    """A PyTorch module with what ``torch.onnx.export`` needs to trace it."""

    module: Any
    example_inputs: tuple[Any, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]] | None = None
    path: str = "<module>"
    weights_sha256: str | None = None


@dataclass(frozen=True, kw_only=True)
class ConvertOptions:
    task: TaskSpec
    with_kv_cache: bool = True
    opset: int | None = None
    labels: list[str] | None = None
    image_settings: ImageSettings | None = None


@dataclass(frozen=True)
class SourceKind:
    name: str
    matches: Callable[[Any], bool]
    convert: Callable[[Any, Path, ConvertOptions], ConvertedModel]


SOURCES: Registry[SourceKind] = Registry("source kind")


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for mod in ("edgekit", "onnx", "onnxruntime", "torch", "transformers", "optimum", "numpy"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod if mod != "optimum" else "optimum-onnx")
        except Exception:
            continue
    return versions


def convert_source(source: Any, work: Path, options: ConvertOptions) -> ConvertedModel:
    for kind in SOURCES:
        if kind.matches(source):
            return kind.convert(source, work, options)
    if isinstance(source, (str, Path)) and not Path(source).exists():
        raise SourceNotFoundError(
            f"the source {source} does not exist",
            hint="pass a Hugging Face model directory, an .onnx file, or file.py:factory with --weights",
        )
    raise UsageError(
        f"cannot tell what kind of model {source!r} is",
        hint="pass a Hugging Face model directory (with config.json), an .onnx file, or a PyTorch module",
    )


# ------------------------------------------------------------------------------------------- ONNX file


def _is_onnx(source: Any) -> bool:
    return isinstance(source, (str, Path)) and Path(source).suffix == ".onnx" and Path(source).exists()


def _convert_onnx(source: Any, work: Path, options: ConvertOptions) -> ConvertedModel:
    src = Path(source)
    model = graph.load_model(src)
    model = _infer_shapes(model, src)
    out = work / "fp32.onnx"
    graph.save_model(model, out)
    assets = [src.parent / name for name in ASSET_FILES if (src.parent / name).is_file()]
    return ConvertedModel(
        onnx_path=out,
        source=SourceInfo(
            kind="onnx",
            path=str(src.resolve()),
            sha256=sha256_file(src),
            opset=graph.opset(model),
            library_versions=library_versions(),
        ),
        assets=assets,
        labels=options.labels,
        preprocessing=_tensor_preprocessing(options),
    )


def _infer_shapes(model: Any, src: Path) -> Any:
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:
        raise CorruptModelError(
            f"shape inference fails on {src}: {str(exc).strip().splitlines()[0]}",
            hint="the graph is inconsistent (wrong shapes or types between nodes): re-export it from its source",
        ) from None


def _tensor_preprocessing(options: ConvertOptions) -> dict[str, Any]:
    if options.image_settings is not None:
        return {"image": options.image_settings.to_dict()}
    return {}


SOURCES.add("onnx", SourceKind("onnx", _is_onnx, _convert_onnx))


# ---------------------------------------------------------------------------------------- PyTorch module


def _is_torch(source: Any) -> bool:
    return isinstance(source, TorchSource)


def _convert_torch(source: TorchSource, work: Path, options: ConvertOptions) -> ConvertedModel:
    import torch

    out = work / "fp32.onnx"
    source.module.eval()
    try:
        with torch.no_grad():
            torch.onnx.export(
                source.module,
                tuple(source.example_inputs),
                str(out),
                input_names=source.input_names,
                output_names=source.output_names,
                dynamic_axes=source.dynamic_axes,
                opset_version=options.opset or 17,
                # The TorchScript exporter: the dynamo one needs onnxscript, which the device never needs.
                dynamo=False,
            )
    except Exception as exc:
        raise UnsupportedModelError(
            f"torch.onnx.export failed for {source.path}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            hint="check example_inputs match the module's forward(), and that its ops are exportable",
        ) from None
    model = graph.load_model(out)
    return ConvertedModel(
        onnx_path=out,
        source=SourceInfo(
            kind="torch",
            path=source.path,
            sha256=source.weights_sha256 or sha256_file(out),
            opset=graph.opset(model),
            library_versions=library_versions(),
        ),
        labels=options.labels,
        preprocessing=_tensor_preprocessing(options),
    )


SOURCES.add("torch", SourceKind("torch", _is_torch, _convert_torch))


def torch_source_from_spec(
    spec: str,
    *,
    weights: str | Path | None,
    example_shapes: dict[str, tuple[int, ...]] | None = None,
) -> TorchSource:
    """``path/to/file.py:factory`` + a state-dict file -> a :class:`TorchSource` (the CLI's torch path).

    The factory returns the module, or ``(module, example_inputs)``; the module may define
    ``edgekit_io = {"input_names": [...], "output_names": [...], "dynamic_axes": {...}}`` and
    ``edgekit_example_inputs()``.
    """
    import torch

    file_part, _, factory_name = spec.rpartition(":")
    path = Path(file_part)
    if not file_part or not factory_name:
        raise UsageError(f"expected path/to/file.py:factory, got {spec!r}")
    if not path.is_file():
        raise SourceNotFoundError(f"the module file {path} does not exist", hint="check the path before ':'")
    mod_spec = importlib.util.spec_from_file_location(f"edgekit_user_{path.stem}", path)
    assert mod_spec is not None and mod_spec.loader is not None
    module_obj = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module_obj)
    except Exception as exc:
        raise UsageError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
    factory = getattr(module_obj, factory_name, None)
    if not callable(factory):
        names = [n for n in dir(module_obj) if callable(getattr(module_obj, n)) and not n.startswith("_")]
        raise UsageError(f"{path} has no callable {factory_name!r}", hint=f"callables there: {', '.join(names)}")
    made = factory()
    module, example = made if isinstance(made, tuple) else (made, None)
    weights_sha = None
    if weights is not None:
        wpath = Path(weights)
        if not wpath.is_file():
            raise SourceNotFoundError(f"the weights file {wpath} does not exist")
        try:
            state = torch.load(str(wpath), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CorruptModelError(
                f"{wpath} is not a loadable state dict ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                hint="save it with torch.save(module.state_dict(), path)",
            ) from None
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise CorruptModelError(
                f"{wpath} does not fit {spec}: {str(exc).splitlines()[0]}",
                hint="the weights were saved from a different architecture",
            ) from None
        weights_sha = sha256_file(wpath)
    io = dict(getattr(module, "edgekit_io", {}) or {})
    if example is None and example_shapes:
        # Shapes from the command line: float32 examples, axis 0 dynamic as the batch.
        example = tuple(torch.zeros(shape) for shape in example_shapes.values())
        io.setdefault("input_names", list(example_shapes))
        names = list(io["input_names"]) + list(io.get("output_names") or ["output"])
        io.setdefault("dynamic_axes", {n: {0: "batch"} for n in names})
    if example is None and hasattr(module, "edgekit_example_inputs"):
        example = module.edgekit_example_inputs()
    if example is None:
        raise UsageError(
            f"{spec} gives no example inputs",
            hint="pass --input-shape NAME=1x3x224x224, return (module, example_inputs) from the factory,"
            " or define module.edgekit_example_inputs()",
        )
    example = example if isinstance(example, tuple) else (example,)
    return TorchSource(
        module=module,
        example_inputs=example,
        input_names=list(io.get("input_names") or [f"input_{i}" for i in range(len(example))]),
        output_names=list(io.get("output_names") or ["output"]),
        dynamic_axes=io.get("dynamic_axes"),
        path=str(path.resolve()) + ":" + factory_name,
        weights_sha256=weights_sha,
    )


# ------------------------------------------------------------------------------------ Hugging Face dir


def _is_hf_dir(source: Any) -> bool:
    # A package also carries config.json; its manifest makes it a package source, not an HF dir.
    p = Path(source) if isinstance(source, (str, Path)) else None
    return p is not None and (p / "config.json").is_file() and not (p / MANIFEST_NAME).is_file()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CorruptModelError(f"{path} is not valid JSON: {exc}") from None


def _convert_hf(source: Any, work: Path, options: ConvertOptions) -> ConvertedModel:
    src = Path(source)
    task = options.task
    if task.optimum_task is None:
        raise UsageError(
            f"the task {task.name!r} is for ONNX files and PyTorch modules, not Hugging Face directories",
            hint="pick a task such as feature-extraction, text-classification or text-generation",
        )
    config = _read_json(src / "config.json")
    if not any(p.suffix in WEIGHT_SUFFIXES for p in src.iterdir()):
        raise SourceNotFoundError(
            f"{src} has a config.json but no weights file (model.safetensors or pytorch_model.bin)",
            hint="save the model with save_pretrained() into that directory",
        )
    optimum_task = task.optimum_task
    if task.kind == "generation" and options.with_kv_cache:
        optimum_task += "-with-past"
    out_dir = work / "optimum"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as exc:
        from edgekit.errors import MissingDependencyError

        raise MissingDependencyError.for_extra("optimum-onnx", "export") from exc
    model_type = config.get("model_type", "?")
    arch_facts.refuse_unexportable(src, config, optimum_task)
    try:
        main_export(
            str(src),
            output=out_dir,
            task=optimum_task,
            opset=options.opset,
            library_name="transformers",
            do_validation=False,  # we validate ourselves, with per-output tolerances
            local_files_only=True,
        )
    except (KeyError, ValueError, NotImplementedError, RuntimeError) as exc:  # RuntimeError: torch tracing
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedModelError(
            f"optimum cannot export the architecture {model_type!r} for the task {optimum_task!r}: {msg}",
            hint="check the task matches the model (edgekit export --help lists tasks), or export to ONNX yourself"
            " and pass the .onnx file",
        ) from None
    except OSError as exc:
        raise CorruptModelError(f"reading the model in {src} failed: {str(exc).splitlines()[0]}") from None
    onnx_path = out_dir / "model.onnx"
    if not onnx_path.is_file():
        raise UnsupportedModelError(
            f"optimum exported {model_type!r} for {optimum_task!r} as several graphs"
            f" ({', '.join(p.name for p in out_dir.glob('*.onnx'))}); edgekit packages one graph",
        )
    model = graph.load_model(onnx_path)
    assets = [src / name for name in ASSET_FILES if (src / name).is_file()]
    converted = ConvertedModel(
        onnx_path=onnx_path,
        source=SourceInfo(
            kind="hf",
            path=str(src.resolve()),
            sha256=sha256_tree(src) if _tree_small(src) else _weights_digest(src),
            opset=graph.opset(model),
            library_versions=library_versions(),
        ),
        assets=assets,
        model_type=model_type,
    )
    converted.preprocessing = _hf_preprocessing(src, config, task)
    if task.kind == "classification":
        id2label = config.get("id2label") or {}
        converted.labels = [id2label.get(str(i), id2label.get(i, f"LABEL_{i}")) for i in range(len(id2label))]
    if task.kind == "generation":
        _attach_generation(converted, src, config, model, options.with_kv_cache)
    return converted


def _attach_generation(
    converted: ConvertedModel, src: Path, config: dict[str, Any], model: Any, with_kv_cache: bool
) -> None:
    sizes = arch_facts.decoder_sizes(src, config)
    converted.generation = _generation_spec(src, config, model, with_kv_cache, sizes)
    # Prompts are bounded by the context (a position table, or a recorded default for ALiBi models).
    converted.preprocessing["max_length"] = sizes.max_context_tokens
    converted.preprocessing.pop("max_length_limits", None)  # an encoder's limits; the context replaces them
    converted.preprocessing["context_source"] = sizes.context_source


def _tree_small(src: Path) -> bool:
    return sum(p.stat().st_size for p in src.rglob("*") if p.is_file()) < 4 << 30


def _weights_digest(src: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in sorted(src.iterdir()):
        if p.suffix in WEIGHT_SUFFIXES:
            h.update(bytes.fromhex(sha256_file(p)))
    return h.hexdigest()


def _text_preprocessing(src: Path, config: dict[str, Any], task: TaskSpec) -> dict[str, Any]:
    pre: dict[str, Any] = {"tokenizer_file": "tokenizer.json"}
    if not (src / "tokenizer.json").is_file():
        raise UnsupportedModelError(
            f"{src} has no tokenizer.json; the device runtime reads only the fast-tokenizer format",
            hint="save it with AutoTokenizer.from_pretrained(dir).save_pretrained(dir) (a fast tokenizer)",
        )
    # The longest sequence that runs: the runtime's TextEncoder truncates to it, the samples fit in it.
    length = arch_facts.text_length(src, config)
    pre["max_length"] = length.max_length
    if length.limits:
        pre["max_length_limits"] = length.limits
    if task.kind == "embedding":
        pooling = "mean"
        pool_cfg = src / "1_Pooling" / "config.json"
        if pool_cfg.is_file():
            pc = _read_json(pool_cfg)
            pooling = (
                "cls" if pc.get("pooling_mode_cls_token") else "max" if pc.get("pooling_mode_max_tokens") else "mean"
            )
        pre["pooling"] = pooling
        pre["normalize"] = True
    return pre


def _hf_preprocessing(src: Path, config: dict[str, Any], task: TaskSpec) -> dict[str, Any]:
    if task.modality == "text":
        return _text_preprocessing(src, config, task)
    if task.modality in _PROCESSOR_SETTINGS:
        return _processor_preprocessing(src, config, task.modality)
    return {}


# What a device needs to reproduce the source's image processor / feature extractor, per modality.
_PROCESSOR_SETTINGS: dict[str, type[ImageSettings] | type[AudioSettings]] = {
    "image": ImageSettings,
    "audio": AudioSettings,
}


def _processor_preprocessing(src: Path, config: dict[str, Any], modality: str) -> dict[str, Any]:
    """The processor recorded beside the model, reduced to the runtime's settings (refused when unknown)."""
    cfg_path = src / "preprocessor_config.json"
    cfg = _read_json(cfg_path) if cfg_path.is_file() else {}
    settings = _PROCESSOR_SETTINGS[modality].from_hf_config(cfg, model_config=config)
    return {modality: settings.to_dict()}


def _generation_spec(
    src: Path, config: dict[str, Any], model: Any, with_kv_cache: bool, sizes: arch_facts.DecoderSizes
) -> GenerationSpec:
    inputs, outputs = graph.io_specs(model)
    in_names = {t.name for t in inputs}
    out_names = {t.name for t in outputs}
    layers = sizes.num_layers
    templates: dict[str, str | None] = dict.fromkeys(
        ("past_key_template", "past_value_template", "present_key_template", "present_value_template")
    )
    kv_dtype = "float32"
    if with_kv_cache:
        templates = {
            "past_key_template": "past_key_values.{layer}.key",
            "past_value_template": "past_key_values.{layer}.value",
            "present_key_template": "present.{layer}.key",
            "present_value_template": "present.{layer}.value",
        }
        # Check the names optimum documents against this graph rather than discovering them by substring.
        for layer in range(layers):
            for key in ("past_key_template", "past_value_template"):
                name = templates[key].format(layer=layer)  # type: ignore[union-attr]
                if name not in in_names:
                    raise UnsupportedModelError(f"the exported graph has no KV-cache input {name!r}")
            for key in ("present_key_template", "present_value_template"):
                name = templates[key].format(layer=layer)  # type: ignore[union-attr]
                if name not in out_names:
                    raise UnsupportedModelError(f"the exported graph has no KV-cache output {name!r}")
        past_key = next(t for t in inputs if t.name == templates["past_key_template"].format(layer=0))  # type: ignore[union-attr]
        kv_dtype = past_key.dtype
        # The manifest states the KV heads the graph really has (Falcon's multi-query caches one head).
        sizes = arch_facts.check_kv_against_graph(sizes, past_key, config.get("model_type"))
    gen_cfg_path = src / "generation_config.json"
    gen_cfg = _read_json(gen_cfg_path) if gen_cfg_path.is_file() else {}
    eos = gen_cfg.get("eos_token_id", config.get("eos_token_id"))
    eos_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos])] if eos is not None else []
    tok_cfg_path = src / "tokenizer_config.json"
    chat_template = _read_json(tok_cfg_path).get("chat_template") if tok_cfg_path.is_file() else None
    if chat_template is None and (src / "chat_template.jinja").is_file():
        # transformers >= 4.5x saves the template in its own file rather than in tokenizer_config.json.
        chat_template = (src / "chat_template.jinja").read_text(encoding="utf-8")
    if isinstance(chat_template, list):  # named templates: keep the default one
        chat_template = next((t.get("template") for t in chat_template if t.get("name") == "default"), None)
    return GenerationSpec(
        with_kv_cache=with_kv_cache,
        num_layers=layers,
        num_attention_heads=sizes.num_attention_heads,
        num_kv_heads=sizes.num_kv_heads,
        head_size=sizes.head_size,
        vocab_size=int(config.get("vocab_size", 0)),
        max_context_tokens=sizes.max_context_tokens,
        kv_dtype=kv_dtype,
        logits_name="logits",
        input_ids_name="input_ids",
        attention_mask_name="attention_mask" if "attention_mask" in in_names else None,
        position_ids_name="position_ids" if "position_ids" in in_names else None,
        bos_token_id=gen_cfg.get("bos_token_id", config.get("bos_token_id")),
        eos_token_ids=eos_ids,
        pad_token_id=gen_cfg.get("pad_token_id", config.get("pad_token_id")),
        chat_template=chat_template,
        **templates,
    )


SOURCES.add("hf", SourceKind("hf", _is_hf_dir, _convert_hf))


def copy_assets(assets: list[Path], dest: Path) -> list[str]:
    copied = []
    for a in assets:
        shutil.copy2(a, dest / a.name)
        copied.append(a.name)
    return copied
