"""Per-architecture config facts: what each Hugging Face ``model_type`` calls its sizes, and the quirks that
decide how long an input can really be.

Each family with a quirk is one :class:`ArchFacts` record in ``ARCH_FACTS``; a ``model_type`` not listed gets
the defaults, which cover the common names (``num_hidden_layers`` / GPT-2's ``n_layer``, ...). Lengths and
sizes are resolved into small frozen records that carry where each figure came from, so the manifest can say
why a length is what it is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import ConfigError, UnsupportedModelError
from edgekit.manifest import TensorSpec
from edgekit.registry import Registry

log = logging.getLogger("edgekit.export")

Config = Mapping[str, Any]
# transformers writes this "no limit" sentinel (int(1e30)) as a tokenizer's model_max_length.
_NO_LIMIT = 10**29


def _no_offset(cfg: Config) -> int:
    return 0


def _padding_idx_offset(cfg: Config) -> int:
    # RoBERTa-style positions count from padding_idx + 1 (padding_idx = pad_token_id, 1 in every checkpoint).
    pad = cfg.get("pad_token_id")
    return (1 if pad is None else int(pad)) + 1


def _mpnet_offset(cfg: Config) -> int:
    # MPNetEmbeddings hard-codes padding_idx = 1, whatever pad_token_id says.
    return 2


def _standard_kv_heads(cfg: Config, heads: int) -> int:
    return int(cfg.get("num_key_value_heads") or heads)


def _falcon_kv_heads(cfg: Config, heads: int) -> int:
    # FalconAttention: the new decoder architecture broadcasts K/V to every query head before caching;
    # the old one caches one head with multi_query, else num_kv_heads.
    if cfg.get("new_decoder_architecture"):
        return heads
    if cfg.get("multi_query", True):
        return 1
    return int(cfg.get("num_kv_heads") or heads)


def _always_exportable(cfg: Config) -> str | None:
    return None


def _falcon_unexportable(cfg: Config) -> str | None:
    heads, kv = cfg.get("num_attention_heads"), cfg.get("num_kv_heads")
    if cfg.get("new_decoder_architecture") and kv and heads and kv != heads:
        # optimum-onnx builds its dummy cache with num_kv_heads heads; transformers caches every query head.
        return (
            f"Falcon's new decoder architecture with num_kv_heads {kv} != num_attention_heads {heads}:"
            " optimum's exporter traces it with a cache of the wrong head count"
        )
    return None


@dataclass(frozen=True, kw_only=True)
class ArchFacts:
    """How one family names its sizes (first key present wins) and what limits its positions."""

    layer_keys: tuple[str, ...] = ("num_hidden_layers", "n_layer", "num_layers")
    head_keys: tuple[str, ...] = ("num_attention_heads", "n_head", "num_heads")
    hidden_keys: tuple[str, ...] = ("hidden_size", "n_embd", "d_model")
    position_keys: tuple[str, ...] = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
    # Rows of the position table consumed before the first token (RoBERTa's padding_idx + 1).
    position_offset: Callable[[Config], int] = _no_offset
    # KV heads the cache holds, from the config and the query head count.
    kv_heads: Callable[[Config, int], int] = _standard_kv_heads
    # For families without a position table (ALiBi): the context to assume, and why.
    default_context: int | None = None
    default_context_reason: str = ""
    # Why a config of this family cannot be exported (a known converter limit), or None.
    unexportable: Callable[[Config], str | None] = _always_exportable


DEFAULT_FACTS = ArchFacts()
ARCH_FACTS: Registry[ArchFacts] = Registry("architecture facts")
for _name in (
    "roberta",
    "roberta-prelayernorm",
    "xlm-roberta",
    "xlm-roberta-xl",
    "camembert",
    "longformer",
    "data2vec-text",
    "xmod",
    "ibert",
    "luke",
    "markuplm",
    "esm",
    "lilt",
    "layoutlmv3",
):
    ARCH_FACTS.add(_name, ArchFacts(position_offset=_padding_idx_offset))
ARCH_FACTS.add("mpnet", ArchFacts(position_offset=_mpnet_offset))
ARCH_FACTS.add("falcon", ArchFacts(kv_heads=_falcon_kv_heads, unexportable=_falcon_unexportable))
ARCH_FACTS.add(
    "bloom",
    ArchFacts(
        default_context=2048,
        default_context_reason="BLOOM uses ALiBi (no position table) and was trained on 2048-token sequences",
    ),
)


def facts_for(model_type: str | None) -> ArchFacts:
    return ARCH_FACTS.get(model_type) if model_type in ARCH_FACTS else DEFAULT_FACTS


def refuse_unexportable(src: Path, cfg: Config, task: str) -> None:
    """Raise before conversion when this config hits a known converter limit, naming it and the way out."""
    reason = facts_for(cfg.get("model_type")).unexportable(cfg)
    if reason is not None:
        raise UnsupportedModelError(
            f"{src} cannot be exported for {task}: {reason}",
            hint="export the model to ONNX yourself and pass the .onnx file, or use a checkpoint of a supported"
            " configuration",
        )


def _first(cfg: Config, keys: tuple[str, ...]) -> tuple[str, int] | None:
    for key in keys:
        value = cfg.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return key, value
    return None


def tokenizer_max_length(src: Path) -> int | None:
    """The tokenizer's ``model_max_length``, or None when absent or transformers' no-limit sentinel."""
    path = src / "tokenizer_config.json"
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("model_max_length")
    except (OSError, json.JSONDecodeError):
        return None  # a broken tokenizer_config is reported where the tokenizer is loaded
    if not isinstance(value, (int, float)) or value <= 0 or value >= _NO_LIMIT:
        return None
    return int(value)


def _sentence_bert_max_length(src: Path) -> int | None:
    path = src / "sentence_bert_config.json"
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("max_seq_length")
    except (OSError, json.JSONDecodeError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


@dataclass(frozen=True, kw_only=True)
class TextLength:
    """The longest token sequence that runs, and each limit that bounded it (for the manifest)."""

    max_length: int | None
    limits: dict[str, int]  # position_table (already less the offset), tokenizer / sentence-transformers caps
    position_offset: int = 0


def text_length(src: Path, config: Config) -> TextLength:
    """min(position table - offset, tokenizer model_max_length, sentence-transformers max_seq_length)."""
    model_type = config.get("model_type")
    facts = facts_for(model_type)
    limits: dict[str, int] = {}
    table = _first(config, facts.position_keys)
    offset = facts.position_offset(config)
    if table is not None:
        limits["position_table"] = table[1] - offset
    tok = tokenizer_max_length(src)
    if tok is not None:
        limits["tokenizer_model_max_length"] = tok
    st = _sentence_bert_max_length(src)
    if st is not None:
        limits["sentence_bert_max_seq_length"] = st
    length = min(limits.values()) if limits else None
    return TextLength(max_length=length, limits=limits, position_offset=offset)


# --------------------------------------------------------------------------------------------- decoders


@dataclass(frozen=True, kw_only=True)
class DecoderSizes:
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_size: int
    max_context_tokens: int
    context_source: str


def _require(cfg: Config, keys: tuple[str, ...], what: str, src: Path) -> int:
    found = _first(cfg, keys)
    if found is None:
        raise ConfigError(
            f"{src}/config.json has no {what}: none of {', '.join(keys)} is set to a positive integer",
            hint=f'add "{keys[0]}": N to config.json ({what})',
            param=keys[0],
        )
    return found[1]


def _context(src: Path, cfg: Config, facts: ArchFacts) -> tuple[int, str]:
    table = _first(cfg, facts.position_keys)
    if table is not None:
        return table[1] - facts.position_offset(cfg), f"config.{table[0]}"
    tok = tokenizer_max_length(src)
    if tok is not None:
        return tok, "tokenizer_config.model_max_length"
    if facts.default_context is not None:
        log.info("context length %d assumed: %s", facts.default_context, facts.default_context_reason)
        return facts.default_context, f"default for {cfg.get('model_type')}: {facts.default_context_reason}"
    raise ConfigError(
        f"{src} gives no context length: config.json has none of {', '.join(facts.position_keys)}"
        " and tokenizer_config.json has no model_max_length",
        hint=f'add "{facts.position_keys[0]}": N to config.json, or "model_max_length": N to tokenizer_config.json',
        param=facts.position_keys[0],
    )


def decoder_sizes(src: Path, cfg: Config) -> DecoderSizes:
    """Layer, head and context sizes of a causal LM from its config, each missing one named in the error."""
    facts = facts_for(cfg.get("model_type"))
    layers = _require(cfg, facts.layer_keys, "layer count", src)
    heads = _require(cfg, facts.head_keys, "attention head count", src)
    head_dim = _first(cfg, ("head_dim",))
    if head_dim is not None:
        head_size = head_dim[1]
    else:
        hidden = _require(cfg, facts.hidden_keys, "hidden size", src)
        if hidden % heads:
            raise ConfigError(
                f"{src}/config.json: hidden size {hidden} is not a multiple of {heads} heads",
                hint='add "head_dim": N to config.json',
                param="head_dim",
            )
        head_size = hidden // heads
    context, source = _context(src, cfg, facts)
    return DecoderSizes(
        num_layers=layers,
        num_attention_heads=heads,
        num_kv_heads=facts.kv_heads(cfg, heads),
        head_size=head_size,
        max_context_tokens=context,
        context_source=source,
    )


def check_kv_against_graph(sizes: DecoderSizes, past_key: TensorSpec, model_type: str | None) -> DecoderSizes:
    """The graph's static KV dims (batch, kv_heads, past, head_size) win; a disagreement is refused.

    The config is how the family describes itself; the graph is what the runtime must feed. When they
    differ, edgekit misreads this family, and a package built on the config would fail at its first run.
    """
    shape = list(past_key.shape)
    if len(shape) != 4:
        return sizes
    heads_dim, size_dim = shape[1], shape[3]
    graph_heads = heads_dim if isinstance(heads_dim, int) and heads_dim > 0 else None
    graph_size = size_dim if isinstance(size_dim, int) and size_dim > 0 else None
    mismatch = [
        f"{what} {cfg_v} from config.json but {graph_v} in the graph's {past_key.name}"
        for what, cfg_v, graph_v in (
            ("KV heads", sizes.num_kv_heads, graph_heads),
            ("head size", sizes.head_size, graph_size),
        )
        if graph_v is not None and graph_v != cfg_v
    ]
    if mismatch:
        raise UnsupportedModelError(
            f"the {model_type!r} config and its exported graph disagree: {'; '.join(mismatch)}",
            hint="edgekit reads this family's config wrongly: register its facts in exporters/arch_facts.py"
            " (ARCH_FACTS), or report the model",
        )
    return sizes
