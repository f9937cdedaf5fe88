"""Decoder fusions: optimum's KV-cache causal-LM graph -> one GroupQueryAttention node per layer.

optimum exports a Llama-family decoder as ~150 small nodes per layer: shape arithmetic, the causal mask,
rotary embedding written out op by op, ``repeat_kv`` for grouped KV heads, attention as
MatMul / Add / Softmax / MatMul. At batch 1 a decode step runs each of them on a one-token tensor, so on a
small model the per-node overhead of ONNX Runtime, not the arithmetic, sets the token rate (a 2-layer
Llama: ~270 nodes after ORT's own ``all`` level, ~1 ms a token on 2 cores).

This step rewrites the graph the way onnxruntime-genai's model builder lays it out, in three stages:

1. ONNX Runtime's transformer optimizer (``onnxruntime.transformers``) fuses RMSNorm
   (``SimplifiedLayerNormalization``), residual + RMSNorm (``SkipSimplifiedLayerNormalization``) and the
   rotary embedding (``RotaryEmbedding`` with ``cos_cache`` / ``sin_cache`` initializers). Its attention
   fusions do not match optimum's Llama export, so they are switched off.
2. Our attention fusion: each layer's q/k/v projections become one MatMul on a packed weight, and
   everything from there to the o_proj input — rotary, the past/present concat, ``repeat_kv``, scores,
   mask, softmax, context — becomes one ``com.microsoft.GroupQueryAttention`` (``do_rotary=1``, fed the
   graph's ``position_ids``). ``seqlens_k`` and ``total_sequence_length`` are computed once from
   ``attention_mask``. The dead shape and mask subgraphs are pruned.
3. A self-check: the fused and the source graph run a prompt and one decode step on ONNX Runtime; the
   logits and the KV cache must agree (and the greedy token must be the same), or the step keeps the
   source graph and says why in its details. A self-check that raises (ONNX Runtime refusing the graph)
   is a failed check, never a crash.

Variants and the kernel pre-flight. ORT's CPU kernels accept a GroupQueryAttention graph at load time and
refuse it at the first ``run()`` when a shape breaks one of their checks (``head_size shall be a multiple
of 16`` with rotary fused into the node, for one). So before rewriting, every kernel constraint
(:data:`KERNEL_RULES`, one record each with the ORT source it comes from) is evaluated on the matched
shapes, and the first variant of :data:`VARIANTS` whose rules all hold is built and self-checked:

- ``gqa-fused-rotary``: one GroupQueryAttention with ``do_rotary=1`` per layer (the fewest nodes);
- ``gqa-rotary-nodes``: a Split of the packed QKV, ``com.microsoft.RotaryEmbedding`` on Q and K, and a
  GroupQueryAttention with ``do_rotary=0`` (head sizes of 8, where fused rotary needs 16; qwen3's per-head
  q/k RMSNorm, which ORT's CPU GroupQueryAttention cannot apply, stays a node before the rotary nodes);
- otherwise the source graph stays (``unfused``), with every failed rule in the details.

A variant whose self-check fails falls through to the next. The details name the variant chosen and why.

Contract kept: the graph's input and output names (``input_ids``, ``attention_mask``, ``position_ids``,
``past_key_values.{i}.key/value``, ``logits``, ``present.{i}.key/value``), their dtypes and the BNSH
KV-cache layout, with one change where nothing but the length nodes reads the mask (every fused family but
bloom, whose ALiBi reads it, and gemma's ``gqa-rotary-nodes``, whose positions come from its shape): the mask
input becomes GroupQueryAttention's ``seqlens_k`` / ``total_sequence_length`` (:func:`_lengths_as_inputs`,
six nodes fewer a step; recipe option ``length_inputs: false`` keeps the mask). The package writer names them
in the manifest; :mod:`runtimes.decoder_feeds` derives them from a mask for every feed builder.

What the fused graph assumes: ``attention_mask`` is a run of ones from the first position of each row
(no left padding), as in the runtime's batch-1 generation. GroupQueryAttention derives each row's length
from the mask's sum and applies the causal mask itself, so a mask with holes is not honoured.

Only families whose attention this matcher knows are fused (``DECODER_FAMILIES``: llama, mistral (a sliding
window shorter than the context becomes ``local_window_size``, self-checked on a prompt longer than the
window), qwen2 with its q/k/v bias packed into one Add, qwen3, gemma, gemma2, phi3, stablelm, gpt2, opt,
gpt_neox, falcon, bloom); others, and graphs where any layer fails to match, pass through unchanged with the
reason in the step's details. gemma has no ``position_ids`` input (its export computes positions in the graph;
the rotary nodes read those).

q, k and v are read as columns of one MatMul (:func:`_columns`), whatever the export packs: three MatMuls (llama),
phi3's constant Slices, gpt2's ``Split`` of its ``c_attn``, gpt_neox's per-head ``chunk`` of its
``query_key_value`` viewed as (b, s, heads, 3 * head) (:func:`_head_chunk`, bounds computed from the shape in the
export) and falcon's ranges of packed heads (:func:`_sliced_heads`); a bias on the packed output goes with its
columns. gpt2 and opt add learned positions to the embeddings, outside attention (``DecoderFamily.rotary`` false):
they run ``gqa-no-rotary``, GroupQueryAttention with ``do_rotary=0`` on the packed QKV; opt's ``q * head_size **
-0.5`` before its head Reshape becomes the node's ``scale``. falcon writes its rotary out (``x * cos +
rotate_half(x) * sin``, cos / sin computed from ``position_ids`` in the graph), which ORT's rotary fusion does not
match: :func:`_fuse_explicit_rotary` makes it RotaryEmbedding nodes with caches computed from ``rope_theta``
(refused with a ``rope_scaling``), then the usual variants apply. falcon without ``multi_query`` views its packed
projection as (b, s, heads, 3, head), as bloom does (:func:`_gathered_part`). falcon with ``alibi`` (falcon-rw) has
no rotary to match and stays unfused ("query is not a fused RotaryEmbedding"). falcon-40B's
``new_decoder_architecture`` with fewer KV heads than heads is refused by the exporter before this step
(``exporters/arch_facts.py``); with as many it was not tried here.

bloom: ALiBi. ORT's CPU GroupQueryAttention takes an additive ``attention_bias`` (input 10, shape (batch or 1,
heads or 1, sequence, total): ``CheckCustomAttentionInputs`` in
``onnxruntime/contrib_ops/cpu/bert/group_query_attention_helper.h``; the CUDA kernel refuses the input), so the
fused graph builds ``slope[h] * (0 .. total - 1)`` once per step (:func:`_alibi_nodes`, slopes from the config as
transformers' ``build_alibi_tensor``: :func:`_alibi_slopes`) and every layer's ``gqa-no-rotary`` node reads it.
bloom's export lays attention out as batched 3-D MatMuls over (batch * heads, s, head) with the ALiBi added to the
scaled scores (``baddbmm``), read by :func:`_match_batched`; its packed query_key_value is viewed as (b, s, heads,
3, head) and each of q / k / v Gathered (:func:`_gathered_part`). The ALiBi positions equal transformers'
``(cumsum(mask) - 1) * mask`` for a mask of ones, this module's assumption anyway.

phi3 and stablelm: ORT's transformer optimizer fuses their RotaryEmbedding, but the query reaching Q.K^T is
``Mul(Concat(RotaryEmbedding(Slice(q, 0, r)), Slice(q, r, end)))``, transformers' rotary / pass-through split
(an empty pass-through for phi3's full rotary, three quarters of the head for stablelm's
``partial_rotary_factor`` 0.25); the matcher reads through it (:func:`_rotary_split`), the rotated dims being
twice the cos cache width. phi3's q/k/v are constant Slices of one packed ``qkv_proj`` MatMul: their columns
of the packed weight become the q/k/v blocks of ours (:func:`_packed_columns`). stablelm scales q and k by
``head_size ** -0.25`` computed from a Shape in the graph, which :func:`_scalar_value` evaluates. A partial
rotary runs as ``gqa-fused-rotary`` when its cos cache width is a multiple of 8 (GroupQueryAttention rotates
the first ``2 * width`` dims of each head and passes the rest through: measured equal to the source on ORT
1.32, 3e-7), else as ``gqa-rotary-nodes`` with ``rotary_embedding_dim`` (and ``num_heads``) on each
RotaryEmbedding node (ORT 1.32 copies the pass-through dims; :data:`KERNEL_RULES` has the shape rules). The
ORT optimizer's residual ``Add`` + ``LayerNormalization`` fusion (stablelm's LayerNorm) is not applied, as
:mod:`edgekit.ort_policy` keeps ORT's CPU ``SkipLayerNormalization`` out of every session; the RMSNorm form
(``SkipSimplifiedLayerNormalization``) is. Measured decode gains are in README.md ("Decoder fusions").

gemma2: optimum's export applies the per-layer sliding window but drops the attention logit softcapping.
Probed (tiny 2-layer export, onnxruntime 1.32, weights N(0, 0.6) so that scores reach the cap): the export's
logits equal transformers' ``sdpa`` forward, which ignores ``attn_logit_softcapping`` too (2.8e-7), and differ
from the ``eager`` forward — Gemma 2's reference attention, ``cap * tanh(scores / cap)`` — by 2.4e-2 relative
(and from a no-window forward by 0.2, so the window is there). The fused graph follows the model, not the
export: GroupQueryAttention's ``softcap`` (:attr:`DecoderFamily.softcap`), and ``local_window_size`` on the
layers ``layer_types`` marks ``sliding_attention`` only (:attr:`DecoderFamily.windowed_layer`). The self-check
then compares with the source graph with the cap put back between each Q.K^T MatMul and its mask
(:func:`_with_softcap`): fused vs eager PyTorch 5.3e-7 on that probe, vs the export 2.4e-2. A gemma2 package
therefore differs from optimum's export (and from transformers' default sdpa forward) wherever the cap bites;
the details record ``softcap`` and ``local_window_sizes``.

Place in a recipe: first, on the converter's graph. ORT's basic-level optimization (the ``optimize`` step)
constant-folds the rotary subgraph into a shape ORT's rotary fusion no longer recognizes, and the quantizers
should see the packed QKV MatMul, so ``decoder_fusions`` goes before ``optimize`` and before ``quantize``.
The rotary caches are cut to the context window: ``ctx.max_context_tokens`` when the recipe context has it,
else ``max_position_embeddings`` from the ``config.json`` the export copied to ``ctx.work / "assets"``.
"""

from __future__ import annotations

import enum
import json
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.registry import Registry
from exporters import graph
from runtimes.decoder_feeds import SEQLENS_K, TOTAL_SEQUENCE_LENGTH, fit_to_graph, mask_feeds

log = logging.getLogger("edgekit.export")


def _sliding_window(config: dict[str, Any]) -> int | None:
    """The attention window transformers applies, or None (qwen2 keeps ``sliding_window`` unused unless
    ``use_sliding_window``)."""
    if not config.get("use_sliding_window", True):
        return None
    w = config.get("sliding_window")
    return int(w) if w else None


def _alibi_slopes(config: dict[str, Any]) -> np.ndarray:
    """transformers' ``build_alibi_tensor`` slopes for ``n_head`` heads (bloom): a geometric series from
    2 ** -(8 / n) for the largest power of two n <= heads, then every other slope of the next power's series."""
    heads = int(config.get("n_head") or config["num_attention_heads"])
    closest = 2 ** math.floor(math.log2(heads))
    base = 2.0 ** (-(2.0 ** -(math.log2(closest) - 3)))
    slopes = base ** np.arange(1, 1 + closest, dtype=np.float64)
    if closest != heads:
        extra = 2.0 ** (-(2.0 ** -(math.log2(2 * closest) - 3)))
        rest = min(closest, heads - closest)
        slopes = np.concatenate([slopes, extra ** np.arange(1, 1 + 2 * rest, 2, dtype=np.float64)])
    return slopes.astype(np.float32)


def _gemma2_windowed(config: dict[str, Any], i: int) -> bool:
    """``layer_types`` when the config lists them, else transformers' Gemma2 default (even layers windowed)."""
    types = config.get("layer_types")
    return types[i] == "sliding_attention" if isinstance(types, list) and i < len(types) else i % 2 == 0


@dataclass(frozen=True, kw_only=True)
class DecoderFamily:
    """An HF model type whose optimum export the matcher knows, and what it needs from the source config."""

    name: str
    note: str
    # The window of sliding-window attention, or None. A window shorter than the context becomes
    # GroupQueryAttention's local_window_size, and the self-check's prompt is made longer than the window
    # so that the check sees the window applied.
    window: Callable[[dict[str, Any]], int | None] = _sliding_window
    # Whether layer i applies the window (gemma2 alternates windowed and full layers).
    windowed_layer: Callable[[dict[str, Any], int], bool] = lambda _config, _i: True
    # The attention logit softcap transformers' reference (eager) attention applies, or None: becomes
    # GroupQueryAttention's softcap, and the self-check compares with the source graph with the cap restored.
    softcap: Callable[[dict[str, Any]], float | None] = lambda _config: None
    # Whether the attention rotates q and k (RoPE). False: positions are added outside attention (learned
    # absolute embeddings: gpt2, opt), so GroupQueryAttention runs with do_rotary=0 and no rotary nodes.
    rotary: bool = True
    # The rotary is written out op by op (``x * cos + rotate_half(x) * sin``), a form ONNX Runtime's rotary
    # fusion does not match (falcon): :func:`_fuse_explicit_rotary` makes it RotaryEmbedding nodes, with
    # cos/sin caches computed from the config's ``rope_theta``.
    explicit_rotary: bool = False
    # ALiBi slopes per head, or None: attention as batched 3-D MatMuls with ``slope[h] * key position`` added to
    # the scaled scores (bloom), read by :func:`_match_batched`; the bias becomes GroupQueryAttention's
    # attention_bias, built once per step.
    alibi: Callable[[dict[str, Any]], np.ndarray] | None = None


DECODER_FAMILIES: Registry[DecoderFamily] = Registry("decoder fusion family")
for _family in (
    DecoderFamily(name="llama", note="RMSNorm, rotary, grouped KV heads (also SmolLM, TinyLlama)"),
    DecoderFamily(name="mistral", note="llama's layout; a sliding window becomes GQA's local_window_size"),
    DecoderFamily(name="qwen2", note="llama's layout with q/k/v bias: one packed bias Add after the QKV MatMul"),
    DecoderFamily(name="gemma", note="llama's layout; optimum's export computes positions in-graph (no position_ids)"),
    DecoderFamily(name="qwen3", note="per-head q/k RMSNorm before rotary: GroupQueryAttention's q/k norm weights"),
    DecoderFamily(
        name="gemma2",
        note="gemma's layout; attention logit softcap (dropped by optimum's export) and a window on every other layer",
        windowed_layer=_gemma2_windowed,
        softcap=lambda c: float(c["attn_logit_softcapping"]) if c.get("attn_logit_softcapping") else None,
    ),
    DecoderFamily(
        name="phi3",
        note="one packed qkv_proj (Slices of it become the packed weight) and rotary behind a Slice / Concat split",
    ),
    DecoderFamily(
        name="stablelm",
        note="partial rotary (partial_rotary_factor) behind a Slice / Concat split; q/k scaled by head_size ** -0.25",
    ),
    DecoderFamily(
        name="gpt2",
        note="learned absolute positions (no rotary); one packed c_attn (Conv1D) Split into q/k/v",
        rotary=False,
    ),
    DecoderFamily(
        name="gpt_neox",
        note="one packed query_key_value chunked per head; partial rotary (rotary_pct) behind a Slice / Concat split",
    ),
    DecoderFamily(
        name="falcon",
        note="multi-query heads Sliced from one packed query_key_value; rotary written out (rotate_half), fused here",
        explicit_rotary=True,
    ),
    DecoderFamily(
        name="bloom",
        note="ALiBi (GroupQueryAttention's attention_bias); batched 3-D attention MatMuls; packed (heads, 3, head) qkv",
        rotary=False,
        alibi=_alibi_slopes,
    ),
    DecoderFamily(
        name="opt",
        note="learned positions (no rotary); q scaled by head_size ** -0.5 before its head Reshape",
        rotary=False,
    ),
):
    DECODER_FAMILIES.add(_family.name, _family)
GENERATION_KIND = "generation"
MS_DOMAIN = "com.microsoft"
# A self-check tolerance on logits, relative to their largest magnitude.
LOGITS_RTOL = 1e-3
# optimum's documented IO names for text-generation-with-past (the same templates the manifest records).
INPUT_IDS, ATTENTION_MASK, POSITION_IDS, LOGITS = "input_ids", "attention_mask", "position_ids", "logits"
PAST_TEMPLATES = ("past_key_values.{layer}.key", "past_key_values.{layer}.value")
PRESENT_TEMPLATES = ("present.{layer}.key", "present.{layer}.value")

# Ops that only move or replicate data between the present KV cache and the attention MatMuls
# (transformers' repeat_kv: Unsqueeze -> Expand -> Reshape).
_PASS_THROUGH = frozenset({"Unsqueeze", "Expand", "Reshape", "Identity", "Cast"})
_BHSD = [0, 2, 1, 3]
_FUSED_OPS = ("GroupQueryAttention", "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization")
_KT = [0, 1, 3, 2]


# ------------------------------------------------------------------------------ kernel pre-flight and variants

_GQA_HELPER = "onnxruntime/contrib_ops/cpu/bert/group_query_attention_helper.h"
_ROTARY_HELPER = "onnxruntime/contrib_ops/cpu/bert/rotary_embedding_helper.h"
_ROTARY_KERNEL = "onnxruntime/contrib_ops/cpu/bert/rotary_embedding.cc"
# Line numbers are those of the copies read (ORT main, commits 00b376b6 / 076ffcdf / 0941ecb9); the quoted
# messages are what ORT 1.32 prints, so a rule can be found again after the lines move.


@dataclass(frozen=True, kw_only=True)
class AttentionShape:
    """What the pre-flight knows about the matched layers before anything is rewritten."""

    num_heads: int
    kv_num_heads: int
    head_size: int
    rotary_width: int  # cos_cache / sin_cache dim 1 (half the rotated dims)
    cache_rows: int  # cos_cache dim 0 after trimming to the context window
    context: int | None  # the longest sequence the package runs (None: unknown)
    qk_norm: bool = False  # a per-head RMSNorm on q and k before rotary (qwen3)
    partial_rotary: bool = False  # the source rotates the first 2 * rotary_width dims of each head only
    rotary: bool = True  # the source's attention rotates q and k (False: learned positions outside attention)


@dataclass(frozen=True, kw_only=True)
class KernelRule:
    """One constraint an ORT CPU kernel checks at run time, and where ORT checks it."""

    name: str
    holds: Callable[[AttentionShape], bool]
    reason: str  # what breaks, in ORT's words where it has them
    source: str  # file:line in ONNX Runtime (or "edgekit" for an equivalence the fusion itself needs)


_GQA_RULES = (
    KernelRule(
        name="gqa.num_heads_multiple_of_kv_num_heads",
        holds=lambda s: s.kv_num_heads > 0 and s.num_heads % s.kv_num_heads == 0,
        reason="num_heads must be a multiple of kv_num_heads",
        source=f"{_GQA_HELPER}:51 CheckInputs",
    ),
    KernelRule(
        name="gqa.head_size_multiple_of_8",
        holds=lambda s: s.head_size % 8 == 0,
        reason="head_size must be a multiple of 8 (packed and unpacked QKV alike)",
        source=f"{_GQA_HELPER}:61,98 CheckInputs",
    ),
)
_ROTARY_SOURCE = KernelRule(
    name="source.rotary",
    holds=lambda s: s.rotary,
    reason="the source's attention has no rotary embedding (learned positions outside attention)",
    source="edgekit (equivalence with the source's attention)",
)
_NO_ROTARY_SOURCE = KernelRule(
    name="source.no_rotary",
    holds=lambda s: not s.rotary,
    reason="the source rotates q and k: GroupQueryAttention without rotary would drop its positions",
    source="edgekit (equivalence with the source's attention)",
)
_FUSED_ROTARY_RULES = (
    _ROTARY_SOURCE,
    KernelRule(
        name="gqa.rotary_head_size_multiple_of_16",
        holds=lambda s: s.head_size % 16 == 0,
        reason="with cos_cache/sin_cache: head_size shall be a multiple of 16",
        source=f"{_GQA_HELPER}:190 CheckInputs",
    ),
    KernelRule(
        name="gqa.rotary_cache_width",
        holds=lambda s: s.rotary_width <= (s.head_size // 16) * 8 and s.rotary_width % 8 == 0,
        reason="cos_cache dimension 1 must be <= head_size / 2 and a multiple of 8",
        source=f"{_GQA_HELPER}:203 CheckInputs",
    ),
    KernelRule(
        name="gqa.rotary_cache_rows",
        holds=lambda s: s.context is None or s.cache_rows >= s.context,
        reason="cos_cache dimension 0 shall not be less than total_sequence_length",
        source=f"{_GQA_HELPER}:195 CheckInputs",
    ),
    KernelRule(
        name="gqa.cpu_no_qk_norm",
        holds=lambda s: not s.qk_norm,
        reason="GroupQueryAttention (CPU): q_norm_weight / k_norm_weight inputs are not supported (CUDA and "
        "WebGPU only); with separate rotary nodes the norm stays a SimplifiedLayerNormalization before them",
        source="onnxruntime/contrib_ops/cpu/bert/group_query_attention.cc (ORT 1.32 run-time message)",
    ),
    KernelRule(
        name="gqa.rotary_dims_match_source",
        holds=lambda s: 2 * s.rotary_width == s.head_size or (s.partial_rotary and 2 * s.rotary_width < s.head_size),
        reason="GQA rotates the first 2 * cos_cache width dims of each head and passes the rest through (ORT 1.32, "
        "measured on stablelm's partial rotary); the source must rotate those dims: the whole head or a split",
        source="edgekit (equivalence with the source's RotaryEmbedding)",
    ),
)
_ROTARY_NODE_RULES = (
    _ROTARY_SOURCE,
    KernelRule(
        name="rotary.cache_width_matches_rotary_dim",
        holds=lambda s: 2 * s.rotary_width == s.head_size or (s.partial_rotary and 2 * s.rotary_width < s.head_size),
        reason="on (batch, seq, hidden) input the head size is 2 * cos_cache width, unless rotary_embedding_dim "
        "(<= head_size, with num_heads) is set, as for a partial rotary: then cos_cache width is its half",
        source=f"{_ROTARY_HELPER}:88,91,117 CheckInputs",
    ),
    KernelRule(
        name="rotary.cache_rows",
        holds=lambda s: s.context is None or s.cache_rows >= s.context,
        reason="position ids index the cos/sin caches unchecked: the caches must cover the context",
        source=f"{_ROTARY_KERNEL}:108 RotaryEmbedding::Compute",
    ),
)
KERNEL_RULES = _GQA_RULES + _FUSED_ROTARY_RULES + _ROTARY_NODE_RULES[1:] + (_NO_ROTARY_SOURCE,)


class RotaryLayout(enum.Enum):
    """Where a variant applies the source's rotary embedding."""

    FUSED = "fused"  # inside GroupQueryAttention: do_rotary=1 with cos_cache / sin_cache
    NODES = "nodes"  # com.microsoft.RotaryEmbedding on q and k, GroupQueryAttention with do_rotary=0
    NONE = "none"  # the source has none (learned positions): GroupQueryAttention with do_rotary=0 alone


@dataclass(frozen=True, kw_only=True)
class FusionVariant:
    """One way to lay out a layer's attention, with the kernel rules it must satisfy."""

    name: str
    description: str
    rotary: RotaryLayout
    rules: tuple[KernelRule, ...]

    @property
    def fused_rotary(self) -> bool:
        return self.rotary is RotaryLayout.FUSED

    def failed_rules(self, shape: AttentionShape) -> list[KernelRule]:
        return [r for r in self.rules if not r.holds(shape)]


# In order of preference: the first variant whose rules hold and whose self-check passes is kept.
VARIANTS = (
    FusionVariant(
        name="gqa-fused-rotary",
        description="GroupQueryAttention with do_rotary=1 fed cos/sin caches",
        rotary=RotaryLayout.FUSED,
        rules=_GQA_RULES + _FUSED_ROTARY_RULES,
    ),
    FusionVariant(
        name="gqa-rotary-nodes",
        description="Split QKV, RotaryEmbedding on Q and K, GroupQueryAttention with do_rotary=0",
        rotary=RotaryLayout.NODES,
        rules=_GQA_RULES + _ROTARY_NODE_RULES,
    ),
    FusionVariant(
        name="gqa-no-rotary",
        description="GroupQueryAttention with do_rotary=0 on the packed QKV (positions learned outside attention)",
        rotary=RotaryLayout.NONE,
        rules=(*_GQA_RULES, _NO_ROTARY_SOURCE),
    ),
)
UNFUSED = "unfused"


def preflight(shape: AttentionShape) -> list[dict[str, Any]]:
    """Every rule of every variant evaluated on ``shape``: one record per (variant, rule)."""
    return [
        {"variant": v.name, "rule": r.name, "ok": bool(r.holds(shape)), "reason": r.reason, "source": r.source}
        for v in VARIANTS
        for r in v.rules
    ]


@dataclass
class _Layer:
    """One matched attention block."""

    x: str  # the normalized hidden state the projections read
    projections: tuple[_Proj, _Proj, _Proj]  # q, k, v (columns of one packed weight for phi3)
    qk_norm: tuple[np.ndarray, np.ndarray, float] | None  # qwen3's per-head RMSNorm before rotary: (q w, k w, eps)
    key_concat: Any  # Concat(past_key, rotated k) -> present.{i}.key
    value_concat: Any  # Concat(past_value, v) -> present.{i}.value
    out_reshape: Any  # Reshape(Transpose(context)) -> the o_proj input
    rotary: Any | None  # the q RotaryEmbedding (its position_ids, caches and interleaving); None: no rotary
    partial_rotary: bool  # the source rotates rotary_dim dims of each head and passes the rest through
    rotary_dim: int  # twice the cos cache width (0 when the cache is not a 2-D constant)
    scale: float
    num_heads: int
    kv_num_heads: int
    head_size: int


class _Graph:
    """Producer / consumer maps over a GraphProto, and constant lookup (initializers and Constant nodes)."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.model = model
        g = model.graph
        self.producer = graph.producers(g)
        self.consumers: dict[str, list[Any]] = graph.consumers(g)
        self.inits = {i.name: i for i in g.initializer}
        self._np = numpy_helper
        self.graph_inputs = {i.name for i in g.input}
        self.graph_outputs = {o.name for o in g.output}

    def const(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return self._np.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return self._np.to_array(a.t)
        return None

    def parent(self, node: Any, index: int, op: str | Iterable[str]) -> Any | None:
        if index >= len(node.input) or not node.input[index]:
            return None
        p = self.producer.get(node.input[index])
        ops = {op} if isinstance(op, str) else set(op)
        return p if p is not None and p.op_type in ops else None

    def consumer(self, name: str, op: str) -> Any | None:
        """The one consumer of ``name`` of type ``op`` (others, such as Shape nodes, may read it too)."""
        c = [n for n in self.consumers.get(name, []) if n.op_type == op]
        return c[0] if len(c) == 1 else None

    def only_consumer(self, name: str) -> Any | None:
        c = self.consumers.get(name, [])
        return c[0] if len(c) == 1 else None


def _scalar_value(g: _Graph, name: str, head_size: int, depth: int = 8) -> float | None:
    """A scalar that is a constant, or arithmetic on one, or on the head size read from a tensor's shape.

    stablelm's export scales q and k by ``Sqrt(1 / Sqrt(Cast(Slice(Shape(q), -1))))`` (head_size ** -0.25 each)
    instead of a constant: ``Slice(Shape(t), -1)`` evaluates to ``head_size``, as every tensor scaled before
    Q.K^T ends in the head dim; the self-check guards the assumption.
    """
    c = g.const(name)
    if c is not None:
        return float(c.reshape(())) if c.size == 1 else None
    node = g.producer.get(name)
    if node is None or depth == 0:
        return None
    if node.op_type == "Slice" and g.parent(node, 0, "Shape") is not None:
        starts = g.const(node.input[1])
        return float(head_size) if starts is not None and starts.reshape(-1).tolist() == [-1] else None
    args = [_scalar_value(g, i, head_size, depth - 1) for i in node.input[:2]]
    if any(a is None for a in args):
        return None
    ops: dict[str, Callable[..., float]] = {
        "Cast": lambda a, *_: a,
        "Sqrt": lambda a, *_: float(np.sqrt(a)),
        "Mul": lambda a, b: a * b,
        "Div": lambda a, b: a / b,
    }
    fn = ops.get(node.op_type)
    return None if fn is None else fn(*args)


def _scalar(g: _Graph, mul: Any, head_size: int) -> tuple[str, float] | None:
    """``Mul(x, c)`` with a scalar ``c`` (:func:`_scalar_value`): (x, c)."""
    for data_i, const_i in ((0, 1), (1, 0)):
        v = _scalar_value(g, mul.input[const_i], head_size)
        if v is not None:
            return mul.input[data_i], v
    return None


def _unscale(g: _Graph, name: str, head_size: int) -> tuple[str, float]:
    """Walk up through ``Mul`` / ``Div`` by scalars; returns the source and the product of scales."""
    scale = 1.0
    while True:
        node = g.producer.get(name)
        if node is None or node.op_type not in ("Mul", "Div"):
            return name, scale
        if node.op_type == "Mul":
            hit = _scalar(g, node, head_size)
            if hit is None:
                return name, scale
            name, s = hit
            scale *= s
        else:
            v = _scalar_value(g, node.input[1], head_size)
            if v is None:
                return name, scale
            name, scale = node.input[0], scale / v


def _rotary_split(g: _Graph, name: str) -> tuple[Any, str, bool] | None:
    """The rotary embedding that produces ``name``: (RotaryEmbedding, the un-rotated heads, partial).

    Either ``RotaryEmbedding(x)`` on whole heads, or transformers' rotary / pass-through split that ORT's
    rotary fusion leaves around the node: ``Concat(RotaryEmbedding(Slice(x, 0, r)), Slice(x, r, end), axis=-1)``
    (phi3 and stablelm; empty pass-through for phi3's full rotary). ``r`` is read from the caches' shape in the
    export, so it is not checked here: the rotary dims are twice the cos cache width, and the self-check
    compares the result.
    """
    node = g.producer.get(name)
    if node is not None and node.op_type == "RotaryEmbedding":
        return node, node.input[0], False
    if node is None or node.op_type != "Concat" or len(node.input) != 2:
        return None
    if graph.node_attr(node, "axis", 0) not in (-1, 3):
        return None
    rot, rest = g.parent(node, 0, "RotaryEmbedding"), g.parent(node, 1, "Slice")
    head = g.parent(rot, 0, "Slice") if rot is not None else None
    if head is None or rest is None or head.input[0] != rest.input[0]:
        return None
    for sl in (head, rest):
        axes = g.const(sl.input[3]) if len(sl.input) > 3 and sl.input[3] else None
        if axes is None or axes.reshape(-1).tolist() not in ([-1], [3]):
            return None
    start = g.const(head.input[1])
    if start is None or start.reshape(-1).tolist() != [0]:
        return None
    return rot, head.input[0], True


def _head_reshape(g: _Graph, name: str, head_size: int) -> tuple[Any | None, tuple[np.ndarray, float] | None]:
    """From ``Transpose(0,2,1,3)`` up to the projection's Reshape, through qwen3's per-head RMSNorm if present.

    Returns (the Reshape or None, (norm weight, epsilon) or None).
    """
    tr = g.producer.get(name)
    if tr is None or tr.op_type != "Transpose" or list(graph.node_attr(tr, "perm", [])) != _BHSD:
        return None, None
    norm = g.parent(tr, 0, "SimplifiedLayerNormalization")
    if norm is None:
        return g.parent(tr, 0, "Reshape"), None
    w = g.const(norm.input[1]) if len(norm.input) == 2 else None
    if w is None or w.shape != (head_size,) or graph.node_attr(norm, "axis", -1) not in (-1, 3):
        return None, None
    return g.parent(norm, 0, "Reshape"), (w.astype(np.float32), float(graph.node_attr(norm, "epsilon", 1e-5)))


@dataclass(frozen=True)
class _Proj:
    """One of q / k / v: columns ``cols`` (indices) of MatMul ``matmul``'s weight, with their bias."""

    matmul: Any
    heads: int
    bias: np.ndarray | None
    cols: np.ndarray  # column indices into the weight (all of them when unpacked)
    scale: float = 1.0  # a scalar Mul between the projection and its head Reshape (opt's q * head_size ** -0.5)


def _packed_columns(g: _Graph, node: Any) -> tuple[Any, tuple[int, int]] | None:
    """``Slice(MatMul(x, W), start, end, axes=-1)`` with constant bounds (phi3's packed ``qkv_proj``):
    (the MatMul, (start, end) clipped to W's columns)."""
    mm = g.parent(node, 0, "MatMul")
    bounds = [g.const(i) if len(node.input) > k and node.input[k] else None for k, i in enumerate(node.input[:5])]
    if mm is None or mm.input[1] not in g.inits or any(b is None for b in bounds[1:4]):
        return None
    steps = bounds[4] if len(bounds) > 4 else None
    if bounds[3].reshape(-1).tolist() not in ([-1], [2]) or (steps is not None and steps.reshape(-1).tolist() != [1]):
        return None
    width = int(g.inits[mm.input[1]].dims[-1])
    # ONNX Slice semantics: a negative bound counts from the end, then clamps to [0, width]
    lo, hi = (int(np.clip(v + width if (v := int(b.reshape(-1)[0])) < 0 else v, 0, width)) for b in bounds[1:3])
    return (mm, (lo, hi)) if lo < hi else None


def _split_bounds(g: _Graph, split: Any, output: str, width: int) -> tuple[int, int] | None:
    """The column range ``output`` takes of a Split on the last axis of a ``width``-wide tensor (gpt2's c_attn)."""
    if graph.node_attr(split, "axis", 0) not in (-1, 2):
        return None
    sizes = g.const(split.input[1]) if len(split.input) > 1 and split.input[1] else None
    if sizes is None:
        attr = graph.node_attr(split, "split", None)  # before opset 13 the sizes are an attribute
        n = len(split.output)
        sizes = np.array(attr if attr else [width // n] * n if width % n == 0 else [], dtype=np.int64)
    sizes = sizes.reshape(-1).tolist()
    if len(sizes) != len(split.output) or sum(sizes) != width:
        return None
    k = list(split.output).index(output)
    return sum(sizes[:k]), sum(sizes[: k + 1])


def _columns(g: _Graph, name: str) -> tuple[Any, np.ndarray | None, np.ndarray] | None:
    """``name`` as columns of one ``MatMul(x, W)`` on an fp32 initializer: (the MatMul, the bias over all of
    W's columns or None, the column indices). Through ``+ b`` (a constant vector), phi3's constant Slices and
    gpt2's Split of the packed projection."""
    node = g.producer.get(name)
    if node is None:
        return None
    if node.op_type == "MatMul":
        w = g.inits.get(node.input[1])
        if w is None or len(w.dims) != 2 or w.data_type != 1:  # float32 [in, out]
            return None
        return node, None, np.arange(int(w.dims[1]))
    if node.op_type == "Add":
        for mm_i in (0, 1):
            mm, bias = g.parent(node, mm_i, "MatMul"), g.const(node.input[1 - mm_i])
            inner = _columns(g, mm.output[0]) if mm is not None and bias is not None else None
            if inner is not None and bias.ndim == 1 and bias.dtype == np.float32 and bias.shape[0] == inner[2].size:
                return inner[0], bias, inner[2]
        return None
    if node.op_type == "Slice" and (packed := _packed_columns(g, node)) is not None:
        inner = _columns(g, packed[0].output[0])
        return None if inner is None else (inner[0], inner[1], inner[2][packed[1][0] : packed[1][1]])
    if node.op_type == "Split":
        inner = _columns(g, node.input[0])
        bounds = None if inner is None else _split_bounds(g, node, name, inner[2].size)
        return None if bounds is None else (inner[0], inner[1], inner[2][bounds[0] : bounds[1]])
    return None


def _int_value(g: _Graph, name: str, last_dim: int, depth: int = 8) -> int | None:
    """An integer a Slice bound computes: constants, arithmetic, and a tensor's last dim read from its Shape
    (``Gather`` / ``Slice`` at -1), which is ``last_dim`` (gpt_neox's ``chunk(3)`` of the per-head q/k/v)."""
    c = g.const(name)
    if c is not None:
        return int(c.reshape(-1)[0]) if c.size == 1 and np.issubdtype(c.dtype, np.integer) else None
    node = g.producer.get(name)
    if node is None or depth == 0:
        return None
    if node.op_type in ("Gather", "Slice") and g.parent(node, 0, "Shape") is not None:
        index = g.const(node.input[1])  # -1, or 3 of the 4-D heads these bounds slice
        return last_dim if index is not None and index.reshape(-1).tolist() in ([-1], [3]) else None
    args = [_int_value(g, i, last_dim, depth - 1) for i in node.input[:2] if i]
    if not args or any(a is None for a in args):
        return None
    ops: dict[str, Callable[..., int]] = {
        "Unsqueeze": lambda a, *_: a,
        "Squeeze": lambda a, *_: a,
        "Cast": lambda a, *_: a,
        "Add": lambda a, b: a + b,
        "Sub": lambda a, b: a - b,
        "Mul": lambda a, b: a * b,
        "Div": lambda a, b: a // b if b else None,  # ONNX integer Div on the non-negative sizes here
    }
    fn = ops.get(node.op_type)
    return None if fn is None else fn(*args)


def _explicit_rotary(g: _Graph, add: Any, head_size: int) -> str | None:
    """``x * cos + rotate_half(x) * sin`` on whole heads, with ``rotate_half(x) = Concat(Neg(Slice(x, h, end)),
    Slice(x, 0, h), axis=-1)`` and ``h = head_size / 2`` (transformers' non-interleaved rotary written out, as
    falcon's export leaves it): ``x``, or None. cos / sin are not read: the caches come from the config, and
    the self-check compares the result with the source graph."""
    muls = [g.producer.get(i) for i in add.input]
    if len(muls) != 2 or any(m is None or m.op_type != "Mul" for m in muls):
        return None
    for plain, rotated in (muls, muls[::-1]):
        for cat in (g.parent(rotated, j, "Concat") for j in (0, 1)):
            if cat is None or len(cat.input) != 2 or graph.node_attr(cat, "axis", 0) not in (-1, 3):
                continue
            neg, low = g.parent(cat, 0, "Neg"), g.parent(cat, 1, "Slice")
            high = g.parent(neg, 0, "Slice") if neg is not None else None
            if high is None or low is None or high.input[0] != low.input[0] or low.input[0] not in plain.input:
                continue
            half = head_size // 2
            if _head_chunk(g, high, head_size) == (half, head_size) and _head_chunk(g, low, head_size) == (0, half):
                return low.input[0]
    return None


def _fuse_explicit_rotary(model: Any, config: dict[str, Any], rows: int | None, head_size: int) -> int:
    """Each written-out rotary (:func:`_explicit_rotary`) -> ``com.microsoft.RotaryEmbedding(x, position_ids,
    cos_cache, sin_cache)`` in its place, the caches ``cos / sin(p * theta ** (-2i / head_size))`` for the
    ``rows`` positions of the context. The number replaced (0 without position_ids, a context length, or with a
    ``rope_scaling`` this does not compute)."""
    from onnx import helper, numpy_helper

    if POSITION_IDS not in {i.name for i in model.graph.input} or not rows or config.get("rope_scaling"):
        return 0
    g = _Graph(model)
    hits = {id(n): x for n in model.graph.node if n.op_type == "Add" and (x := _explicit_rotary(g, n, head_size))}
    if not hits:
        return 0
    inv_freq = float(config.get("rope_theta", 10000.0)) ** (-np.arange(0, head_size, 2, dtype=np.float64) / head_size)
    angles = np.outer(np.arange(rows, dtype=np.float64), inv_freq)
    cos, sin = "gqa/rotary/cos_cache", "gqa/rotary/sin_cache"
    model.graph.initializer.extend(
        numpy_helper.from_array(f(angles).astype(np.float32), name) for f, name in ((np.cos, cos), (np.sin, sin))
    )
    for k, n in enumerate(model.graph.node):
        if id(n) in hits:  # in place: x and position_ids are there before the Add that read them
            rot = helper.make_node(
                "RotaryEmbedding", [hits[id(n)], POSITION_IDS, cos, sin], list(n.output), name=f"gqa/rotary/{k}",
                domain=MS_DOMAIN, interleaved=0,
            )  # fmt: skip
            n.CopyFrom(rot)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(hits)


def _head_chunk(g: _Graph, sl: Any, width: int) -> tuple[int, int] | None:
    """``Slice(heads, start, end, axes=-1)`` of (b, n, s, ``width``) heads: the (start, end) it keeps.

    gpt_neox reshapes its packed ``query_key_value`` to (b, s, heads, 3 * head_size) and ``chunk``s the last
    axis into q, k and v; the export computes the bounds from the tensor's shape.
    """
    ins = list(sl.input) + [""] * (5 - len(sl.input))
    axes = g.const(ins[3]) if ins[3] else None
    steps = g.const(ins[4]) if ins[4] else None
    if axes is None or axes.reshape(-1).tolist() not in ([-1], [3]):
        return None
    if steps is not None and steps.reshape(-1).tolist() != [1]:
        return None
    bounds = [_int_value(g, i, width) for i in ins[1:3]]
    if any(b is None for b in bounds):
        return None
    lo, hi = (int(np.clip(b + width if b < 0 else b, 0, width)) for b in bounds)
    return (lo, hi) if lo < hi else None


def _sliced_heads(g: _Graph, name: str) -> tuple[Any, tuple[int, int]] | None:
    """``Transpose(0,2,1,3)(Slice(Reshape(P, (b, s, heads, head)), start, end, axes=2))``, or a ``Gather`` on
    axis 2 of consecutive constant indices (falcon's packed query_key_value: q heads, then k, then v):
    (the Reshape, (start, end)); negative bounds count from the last head."""
    tr = g.producer.get(name)
    if tr is None or tr.op_type != "Transpose" or list(graph.node_attr(tr, "perm", [])) != _BHSD:
        return None
    pick = g.parent(tr, 0, ("Slice", "Gather"))
    rs = g.parent(pick, 0, "Reshape") if pick is not None else None
    if rs is None:
        return None
    if pick.op_type == "Gather":
        idx = g.const(pick.input[1])
        if graph.node_attr(pick, "axis", 0) != 2 or idx is None or idx.ndim != 1 or idx.size == 0:
            return None
        if np.any(np.diff(idx) != 1) or (idx[0] < 0) != (idx[-1] < 0):
            return None
        end = int(idx[-1]) + 1
        return rs, (int(idx[0]), end if end != 0 else 2**62)
    bounds = [g.const(i) if i else None for i in (list(pick.input) + [""] * 5)[1:5]]
    if any(b is None for b in bounds[:3]) or bounds[2].reshape(-1).tolist() != [2]:
        return None
    if bounds[3] is not None and bounds[3].reshape(-1).tolist() != [1]:
        return None
    return rs, (int(bounds[0].reshape(-1)[0]), int(bounds[1].reshape(-1)[0]))


def _gathered_part(g: _Graph, name: str) -> tuple[Any, tuple[int, int]] | None:
    """``Transpose(0,2,1,3)(Gather(Reshape(P, (b, s, heads, parts, head)), k, axis=3))`` with a constant
    scalar ``k`` (bloom's query_key_value viewed as (heads, 3, head)): (the Reshape, (k, parts))."""
    tr = g.producer.get(name)
    if tr is None or tr.op_type != "Transpose" or list(graph.node_attr(tr, "perm", [])) != _BHSD:
        return None
    pick = g.parent(tr, 0, "Gather")
    rs = g.parent(pick, 0, "Reshape") if pick is not None else None
    k = g.const(pick.input[1]) if pick is not None else None
    if rs is None or k is None or k.ndim != 0 or graph.node_attr(pick, "axis", 0) not in (3, -2):
        return None
    dims = _reshape_dims(g, rs)
    if dims is None or len(dims) != 5 or dims[3] <= 0:
        return None
    return rs, (int(k) % int(dims[3]), int(dims[3]))


def _projection(g: _Graph, name: str, head_size: int, *, allow_norm: bool = False) -> _Proj | None:
    """``Transpose(0,2,1,3)([norm](Reshape([Mul(] P [, c)], (b, s, heads, width))))``, optionally a
    ``Slice`` of the last axis of it (gpt_neox), with ``P`` columns of one MatMul (:func:`_columns`) ->
    the projection.

    Instead of the plain heads: a range of packed heads (falcon, :func:`_sliced_heads`) or one part of
    (heads, parts, head) (bloom, :func:`_gathered_part`). The per-head norm (:func:`_head_reshape`) is allowed
    for q and k only (``allow_norm``). ``width`` is ``head_size`` unless a Slice chunks the heads; the
    Reshape's target shape is a constant or a Concat whose last element is the constant ``width``.
    """
    node = g.producer.get(name)
    chunk_of = node if node is not None and node.op_type == "Slice" else None
    heads_name = name if chunk_of is None else chunk_of.input[0]
    rs, norm = _head_reshape(g, heads_name, head_size)
    head_range = None
    if rs is None and (sliced := _sliced_heads(g, heads_name)) is not None:
        rs, head_range = sliced
    part = None
    if rs is None and (gathered := _gathered_part(g, heads_name)) is not None:
        rs, part = gathered
    dims = _reshape_dims(g, rs) if rs is not None else None
    if dims is None or len(dims) != (4 if part is None else 5) or dims[-1] <= 0:
        return None
    width = dims[-1]
    if norm is not None and not allow_norm:
        return None
    src, scale = rs.input[0], 1.0
    mul = g.parent(rs, 0, "Mul")
    if mul is not None and (hit := _scalar(g, mul, head_size)) is not None:
        src, scale = hit
    found = _columns(g, src)
    if found is None or found[2].size % width:
        return None
    mm, bias, cols = found
    heads = cols.size // width
    if part is not None:  # bloom: (heads, parts, head) -> part k of every head
        if cols.size % (part[1] * width):
            return None
        heads = cols.size // (part[1] * width)
        cols = cols.reshape(heads, part[1], width)[:, part[0]].reshape(-1)
    if head_range is not None:  # falcon: a range of the packed heads
        lo, hi = (int(np.clip(b + heads if b < 0 else b, 0, heads)) for b in head_range)
        if lo >= hi:
            return None
        cols, heads = cols.reshape(heads, width)[lo:hi].reshape(-1), hi - lo
    if chunk_of is not None:
        chunk = _head_chunk(g, chunk_of, width)
        if chunk is None:
            return None
        cols = cols.reshape(heads, width)[:, chunk[0] : chunk[1]].reshape(-1)
    if cols.size != heads * head_size:
        return None
    return _Proj(matmul=mm, heads=heads, bias=None if bias is None else bias[cols], cols=cols, scale=scale)


def _reshape_dims(g: _Graph, rs: Any) -> list[int] | None:
    """A Reshape's target shape: a constant, or a Concat of one-element parts (-1 for a part not constant)."""
    shape = g.const(rs.input[1])
    if shape is not None:
        return [int(v) for v in shape.reshape(-1)]
    cat = g.producer.get(rs.input[1])
    if cat is None or cat.op_type != "Concat":
        return None
    parts = [g.const(i) for i in cat.input]
    if any(p is not None and p.size != 1 for p in parts):
        return None
    return [-1 if p is None else int(p.reshape(-1)[0]) for p in parts]


def _to_concat(g: _Graph, name: str) -> Any | None:
    """From an attention MatMul operand up through repeat_kv to the present-cache Concat."""
    node = g.producer.get(name)
    while node is not None and node.op_type in _PASS_THROUGH:
        node = g.producer.get(node.input[0])
    if node is None or node.op_type != "Concat" or len(node.input) != 2:
        return None
    if node.output[0] not in g.graph_outputs or node.input[0] not in g.graph_inputs:
        return None
    return node


@dataclass(frozen=True)
class _Rotated:
    """The query / key side of one attention block, from Q.K^T up to the rotary nodes."""

    rot_q: Any | None  # None: the source has no rotary
    q_src: str  # the un-rotated query heads (BNSH)
    k_src: str
    key_concat: Any
    scale: float
    partial: bool  # rotary on the first dims of each head only (the Slice / Concat split)


def _match_rotated(g: _Graph, scores: Any, head_size: int, rotary: bool) -> _Rotated | str:
    """The q / k side; ``rotary`` False (learned positions) takes q and k as they reach Q.K^T."""
    q_name, q_scale = _unscale(g, scores.input[0], head_size)
    kt_name, k_scale = _unscale(g, scores.input[1], head_size)
    q_rot = _rotary_split(g, q_name) if rotary else None
    if rotary and q_rot is None:
        return "query is not a fused RotaryEmbedding (whole heads or a rotary / pass-through split)"
    kt = g.producer.get(kt_name)
    if kt is None or kt.op_type != "Transpose" or list(graph.node_attr(kt, "perm", [])) != _KT:
        return "no K^T Transpose"
    key_concat = _to_concat(g, kt.input[0])
    if key_concat is None:
        return "key does not come from a past/present Concat"
    if not rotary:
        return _Rotated(
            rot_q=None, q_src=q_name, k_src=key_concat.input[1], key_concat=key_concat, scale=q_scale * k_scale,
            partial=False,
        )  # fmt: skip
    k_rot = _rotary_split(g, key_concat.input[1])
    (rot_q, q_src, q_partial), (rot_k, k_src, k_partial) = q_rot, k_rot or (None, "", False)
    if rot_k is None or list(rot_k.input[1:]) != list(rot_q.input[1:]) or q_partial != k_partial:
        return "key rotary differs from query rotary"
    if graph.node_attr(rot_k, "interleaved", 0) != graph.node_attr(rot_q, "interleaved", 0):
        return "key and query rotary interleaving differ"
    for rot in (rot_q, rot_k):  # the rotary dims are read from the caches' width, with unit scale
        if graph.node_attr(rot, "rotary_embedding_dim", 0) or graph.node_attr(rot, "scale", 1.0) != 1.0:
            return "RotaryEmbedding with its own rotary_embedding_dim or scale"
    return _Rotated(
        rot_q=rot_q, q_src=q_src, k_src=k_src, key_concat=key_concat, scale=q_scale * k_scale, partial=q_partial
    )


def _rotary_dim(g: _Graph, rot: Any) -> int:
    cos = g.const(rot.input[2])
    return 2 * int(cos.shape[1]) if cos is not None and cos.ndim == 2 else 0


def _probs_value(g: _Graph, softmax: Any) -> Any | None:
    """Softmax -> (IsNaN / Where guard) -> the MatMul with V."""
    probs, pv = softmax.output[0], None
    for c in g.consumers.get(probs, []):
        if c.op_type == "MatMul" and c.input[0] == probs:
            pv = c
        elif c.op_type == "Where":
            pv = next((d for d in g.consumers.get(c.output[0], []) if d.op_type == "MatMul"), pv)
    return pv


def _match(g: _Graph, softmax: Any, head_size: int, rotary: bool = True) -> _Layer | str:
    """Match one attention block around ``softmax``; a string says what did not match."""
    if graph.node_attr(softmax, "axis", -1) not in (-1, 3):
        return "softmax axis"
    scores = g.producer.get(softmax.input[0])
    if scores is not None and scores.op_type == "Add":  # + the causal / padding mask
        scores = next((p for i in (0, 1) if (p := g.parent(scores, i, "MatMul")) is not None), None)
    if scores is None or scores.op_type != "MatMul":
        return "no Q.K^T MatMul before Softmax"
    r = _match_rotated(g, scores, head_size, rotary)
    if isinstance(r, str):
        return r
    q_norm, k_norm = (_head_reshape(g, src, head_size)[1] for src in (r.q_src, r.k_src))
    if (q_norm is None) != (k_norm is None) or (q_norm and k_norm and q_norm[1] != k_norm[1]):
        return "q and k per-head norms differ"
    pv = _probs_value(g, softmax)
    if pv is None:
        return "no probs.V MatMul after Softmax"
    value_concat = _to_concat(g, pv.input[1])
    if value_concat is None:
        return "value does not come from a past/present Concat"
    q = _projection(g, r.q_src, head_size, allow_norm=True)
    k = _projection(g, r.k_src, head_size, allow_norm=True)
    v = _projection(g, value_concat.input[1], head_size)
    if q is None or k is None or v is None:
        return "q/k/v are not Transpose(Reshape(MatMul(x, W) [+ b] or a Slice of a packed MatMul))"
    if not (q.matmul.input[0] == k.matmul.input[0] == v.matmul.input[0]):
        return "q/k/v read different inputs"
    if k.heads != v.heads or q.heads % k.heads:
        return "k/v head counts"
    if v.scale != 1.0:
        return "value scaled before attention"
    tr = g.only_consumer(pv.output[0])
    if tr is None or tr.op_type != "Transpose" or list(graph.node_attr(tr, "perm", [])) != _BHSD:
        return "context is not transposed back to BSNH"
    out = g.only_consumer(tr.output[0])
    if out is None or out.op_type != "Reshape":
        return "context is not reshaped to (batch, seq, hidden)"
    return _Layer(
        x=q.matmul.input[0],
        projections=(q, k, v),
        qk_norm=None if q_norm is None or k_norm is None else (q_norm[0], k_norm[0], q_norm[1]),
        key_concat=r.key_concat,
        value_concat=value_concat,
        out_reshape=out,
        rotary=r.rot_q,
        partial_rotary=r.partial,
        rotary_dim=0 if r.rot_q is None else _rotary_dim(g, r.rot_q),
        scale=r.scale * q.scale * k.scale,
        num_heads=q.heads,
        kv_num_heads=k.heads,
        head_size=head_size,
    )


def _match_batched(g: _Graph, softmax: Any, head_size: int) -> _Layer | str:
    """bloom's attention around ``softmax``: ``Reshape(s * MatMul(Reshape(q), Transpose(Reshape(present_k)))
    + alibi * 1, (b, heads, s, t)) + mask``, then ``MatMul(Reshape(probs), Reshape(present_v))`` back to
    (b, heads, s, head), BSNH and (b, s, hidden). The ALiBi term is not read: the fused graph builds it from the
    config (:func:`_alibi_slopes`), and the self-check compares."""
    mask_add = g.producer.get(softmax.input[0])
    rs4 = next((p for i in (0, 1) if (p := g.parent(mask_add, i, "Reshape")) is not None), None) if mask_add else None
    biased = g.parent(rs4, 0, "Add") if rs4 is not None else None
    if biased is None:
        return "no Reshape(scores + alibi) before the mask"
    terms = [_unscale(g, i, head_size) for i in biased.input]
    scores_i = next((i for i, (n, _) in enumerate(terms) if g.producer.get(n) is not None
                     and g.producer[n].op_type == "MatMul"), None)  # fmt: skip
    if scores_i is None or terms[1 - scores_i][1] != 1.0:
        return "scores are not scale * Q.K^T + alibi"
    scores, scale = g.producer[terms[scores_i][0]], terms[scores_i][1]
    q3, kt = g.parent(scores, 0, "Reshape"), g.parent(scores, 1, "Transpose")
    if q3 is None or kt is None or list(graph.node_attr(kt, "perm", [])) != [0, 2, 1]:
        return "no (batch * heads, s, head) Q and K^T"
    key_concat = _to_concat(g, kt.input[0])
    rs_p = next((c for c in g.consumers.get(softmax.output[0], []) if c.op_type == "Reshape"), None)
    pv = next((c for c in g.consumers.get(rs_p.output[0], []) if c.op_type == "MatMul"), None) if rs_p else None
    value_concat = _to_concat(g, pv.input[1]) if pv is not None else None
    if key_concat is None or value_concat is None:
        return "key / value do not come from a past/present Concat"
    rs_c = g.consumer(pv.output[0], "Reshape")  # its other consumers are Shapes for the Reshape targets
    tr = g.consumer(rs_c.output[0], "Transpose") if rs_c is not None else None
    out = (
        g.consumer(tr.output[0], "Reshape")
        if tr is not None and list(graph.node_attr(tr, "perm", [])) == _BHSD
        else None
    )
    if out is None:
        return "context is not reshaped back to (batch, seq, hidden)"
    q, k, v = (_projection(g, n, head_size) for n in (q3.input[0], key_concat.input[1], value_concat.input[1]))
    if q is None or k is None or v is None or not (q.matmul.input[0] == k.matmul.input[0] == v.matmul.input[0]):
        return "q/k/v are not parts of one packed (heads, 3, head) projection"
    if k.heads != v.heads or q.heads % k.heads or v.scale != 1.0:
        return "k/v head counts"
    return _Layer(
        x=q.matmul.input[0], projections=(q, k, v), qk_norm=None, key_concat=key_concat, value_concat=value_concat,
        out_reshape=out, rotary=None, partial_rotary=False, rotary_dim=0, scale=scale * q.scale * k.scale,
        num_heads=q.heads, kv_num_heads=k.heads, head_size=head_size,
    )  # fmt: skip


def _ort_fusions(src: Path) -> tuple[Any, dict[str, int]]:
    """RMSNorm, Skip-RMSNorm and RotaryEmbedding fusions from ONNX Runtime's transformer optimizer."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    opts = FusionOptions("gpt2")
    for flag in (
        "enable_attention",
        "enable_gelu",
        "enable_bias_gelu",
        "enable_embed_layer_norm",
        "enable_bias_skip_layer_norm",
        "enable_qordered_matmul",
        "enable_skip_layer_norm",  # both Skip fusions; the RMSNorm one is applied below, alone
    ):
        setattr(opts, flag, False)
    # opt_level 0: our fusions only; ONNX Runtime's graph optimizations run later in the device's session.
    opt = optimize_model(
        str(src), model_type="gpt2", num_heads=0, hidden_size=0, opt_level=0, optimization_options=opts
    )
    # Residual Add + LayerNormalization (stablelm) stay two nodes: edgekit.ort_policy keeps ORT's CPU
    # SkipLayerNormalization out of every session, as slower than the pair. The RMSNorm form is fused.
    opt.fuse_skip_simplified_layer_norm()
    opt.prune_graph()
    opt.topological_sort()  # the fused nodes are appended last
    stats = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    return opt.model, stats


def _kv_names(n_layers: int) -> tuple[list[str], list[str]]:
    past = [t.format(layer=i) for i in range(n_layers) for t in PAST_TEMPLATES]
    present = [t.format(layer=i) for i in range(n_layers) for t in PRESENT_TEMPLATES]
    return past, present


def _heads_from_io(model: Any) -> tuple[int, int] | None:
    """(kv heads, head size) from the fixed dims of layer 0's past key, when the graph declares them."""
    name = PAST_TEMPLATES[0].format(layer=0)
    for i in model.graph.input:
        if i.name == name:
            dims = i.type.tensor_type.shape.dim
            if len(dims) == 4 and dims[1].HasField("dim_value") and dims[3].HasField("dim_value"):
                return int(dims[1].dim_value), int(dims[3].dim_value)
    return None


def _source_config(ctx: Any) -> dict[str, Any]:
    """The source's ``config.json`` that the export copied among its assets ({} when absent or unreadable)."""
    path = Path(ctx.work) / "assets" / "config.json"
    try:
        c = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return c if isinstance(c, dict) else {}


def _max_positions(ctx: Any) -> int | None:
    """The context window, so the rotary caches hold exactly the positions the model can see.

    ``ctx.max_context_tokens`` when the recipe context carries it; else ``max_position_embeddings`` from
    the source's ``config.json``; else None (ORT's default cache length stays).
    """
    n = getattr(ctx, "max_context_tokens", None) or _source_config(ctx).get("max_position_embeddings")
    return int(n) if n else None


def _shared_nodes(model: Any, variant: FusionVariant) -> tuple[list[Any], str | None]:
    """The nodes every layer's attention reads, computed once: (nodes, the positions input or None).

    seqlens_k = sum(mask) - 1 (int32, [batch]); total_sequence_length = mask.shape[1] (int32 scalar).
    Positions: None means each rotary node's own input (the graph's position_ids). Without that input
    (gemma) the graph computes positions from the past's shape, wrong with a shared KV buffer: GQA's fused
    rotary takes them from seqlens_k instead, and rotary nodes get the first position.
    """
    from onnx import TensorProto, helper, numpy_helper

    g, mask = model.graph, ATTENTION_MASK
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array([1], dtype=np.int64), "gqa/axes_1"),
            numpy_helper.from_array(np.array(1, dtype=np.int64), "gqa/one_i64"),
            numpy_helper.from_array(np.array(1, dtype=np.int64), "gqa/index_1"),
        ]
    )
    head = [
        helper.make_node("ReduceSum", [mask, "gqa/axes_1"], ["gqa/mask_sum"], name="gqa/ReduceSum", keepdims=0),
        helper.make_node("Sub", ["gqa/mask_sum", "gqa/one_i64"], ["gqa/seqlens_k_i64"], name="gqa/Sub"),
        helper.make_node(
            "Cast", ["gqa/seqlens_k_i64"], ["gqa/seqlens_k"], name="gqa/Cast_seqlens", to=TensorProto.INT32
        ),
        helper.make_node("Shape", [mask], ["gqa/mask_shape"], name="gqa/Shape"),
        helper.make_node("Gather", ["gqa/mask_shape", "gqa/index_1"], ["gqa/total_i64"], name="gqa/Gather", axis=0),
        helper.make_node("Cast", ["gqa/total_i64"], ["gqa/total_len"], name="gqa/Cast_total", to=TensorProto.INT32),
    ]
    if POSITION_IDS in {i.name for i in g.input}:
        return head, None
    head += [
        helper.make_node("Shape", [INPUT_IDS], ["gqa/ids_shape"], name="gqa/Shape_ids"),
        helper.make_node("Gather", ["gqa/ids_shape", "gqa/axes_1"], ["gqa/seq_1"], name="gqa/Gather_seq", axis=0),
        helper.make_node("Sub", ["gqa/total_i64", "gqa/seq_1"], ["gqa/position_start"], name="gqa/Sub_start"),
    ]
    return head, ("" if variant.fused_rotary else "gqa/position_start")


@dataclass(frozen=True)
class _Semantics:
    """What the source config says each layer's attention does beyond what the graph shows."""

    windows: tuple[int | None, ...] = ()  # GQA local_window_size per layer (None: full causal)
    softcap: float | None = None
    rotary: bool = True  # the source's attention rotates q and k (DecoderFamily.rotary)
    alibi: np.ndarray | None = None  # ALiBi slopes per head (DecoderFamily.alibi)

    @property
    def window(self) -> int | None:
        return next((w for w in self.windows if w is not None), None)

    def layer_window(self, i: int) -> int | None:
        return self.windows[i] if i < len(self.windows) else None


def _rewrite(
    model: Any,
    layers: list[_Layer],
    max_positions: int | None,
    variant: FusionVariant,
    sem: _Semantics,
    length_inputs: bool = True,
) -> dict[str, Any]:
    from onnx import helper, numpy_helper

    g = model.graph
    gm = _Graph(model)
    head, positions = _shared_nodes(model, variant)
    if sem.alibi is not None:
        head += _alibi_nodes(model, sem.alibi)
    drop = set()
    new_nodes: dict[int, list[Any]] = {}  # insert position (the o_proj input's Reshape) -> nodes
    for i, layer in enumerate(layers):
        wq, wk, wv = (gm.const(pr.matmul.input[1])[:, pr.cols] for pr in layer.projections)
        biases = [pr.bias for pr in layer.projections]
        w_name = f"gqa/layers.{i}/qkv_proj.weight"
        g.initializer.append(numpy_helper.from_array(np.concatenate([wq, wk, wv], axis=1), w_name))
        if any(b is not None for b in biases):  # one packed bias; a missing one is zeros
            cols = (wq.shape[1], wk.shape[1], wv.shape[1])
            packed = [np.zeros(n, np.float32) if b is None else b for b, n in zip(biases, cols, strict=True)]
            g.initializer.append(numpy_helper.from_array(np.concatenate(packed), f"gqa/layers.{i}/qkv_proj.bias"))
        if layer.qk_norm is not None:
            g.initializer.extend(
                numpy_helper.from_array(w, f"gqa/layers.{i}/{n}_norm.weight")
                for n, w in zip("qk", layer.qk_norm[:2], strict=True)
            )
            shapes = {"heads_shape": [0, 0, -1, layer.head_size], "flat_shape": [0, 0, -1]}
            g.initializer.extend(
                numpy_helper.from_array(np.array(v, dtype=np.int64), f"gqa/layers.{i}/{k}") for k, v in shapes.items()
            )
        if variant.rotary is RotaryLayout.NODES:
            widths = [layer.num_heads * layer.head_size] + [layer.kv_num_heads * layer.head_size] * 2
            g.initializer.append(numpy_helper.from_array(np.array(widths, dtype=np.int64), f"gqa/layers.{i}/split"))
        drop.update(id(n) for n in (layer.key_concat, layer.value_concat, layer.out_reshape))
        new_nodes[id(layer.out_reshape)] = _layer_nodes(i, layer, w_name, variant, sem, positions)
    # Keep a topological order: each layer's new nodes go where its o_proj-input Reshape was, and every
    # input they read (x, past caches, rotary caches, position_ids) is produced before that point.
    out = list(head)
    for n in g.node:
        if id(n) in new_nodes:
            out.extend(new_nodes[id(n)])
        if id(n) not in drop:
            out.append(n)
    del g.node[:]
    g.node.extend(out)
    cache_rows = _trim_rotary_caches(model, layers, max_positions)
    removed = _prune(model)
    lengths = length_inputs and _lengths_as_inputs(model)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return {"nodes_pruned": removed, "rotary_cache_rows": cache_rows, "lengths_as_inputs": lengths}


# The nodes of :func:`_shared_nodes` that turn the mask into GroupQueryAttention's two length inputs.
_LENGTH_NODES = ("gqa/ReduceSum", "gqa/Sub", "gqa/Cast_seqlens", "gqa/Shape", "gqa/Gather", "gqa/Cast_total")
_LENGTH_TENSORS = {"gqa/seqlens_k": SEQLENS_K, "gqa/total_len": TOTAL_SEQUENCE_LENGTH}


def _lengths_as_inputs(model: Any) -> bool:
    """Take ``seqlens_k`` and ``total_sequence_length`` as graph inputs in place of the attention mask, where
    nothing but the length nodes reads the mask or their intermediates (gemma's positions and bloom's ALiBi
    read them: those graphs keep the mask). Six nodes fewer a step: 0.91-0.95x a tiny decoder's step time, 1 and
    2 threads, on Zen 4 and the Xeon (benchmarks/README.md, Runtime). False, graph untouched, where the mask must stay."""
    from onnx import TensorProto, helper

    g = model.graph
    own = [n for n in g.node if n.name in _LENGTH_NODES]
    if len(own) != len(_LENGTH_NODES) or ATTENTION_MASK not in {i.name for i in g.input}:
        return False
    inner = {o for n in own for o in n.output} - set(_LENGTH_TENSORS)
    for n in g.node:
        if n.name not in _LENGTH_NODES and any(i == ATTENTION_MASK or i in inner for i in n.input):
            return False
    keep = [n for n in g.node if n.name not in _LENGTH_NODES]
    for n in keep:
        n.input[:] = [_LENGTH_TENSORS.get(i, i) for i in n.input]
    del g.node[:]
    g.node.extend(keep)
    at = [i.name for i in g.input].index(ATTENTION_MASK)
    batch = g.input[at].type.tensor_type.shape.dim[0]
    seqlens = helper.make_tensor_value_info(SEQLENS_K, TensorProto.INT32, [batch.dim_param or batch.dim_value or None])
    total = helper.make_tensor_value_info(TOTAL_SEQUENCE_LENGTH, TensorProto.INT32, [])
    inputs = list(g.input)
    inputs[at : at + 1] = [seqlens, total]
    del g.input[:]
    g.input.extend(inputs)
    _prune(model)  # the length nodes' constants
    return True


def _layer_nodes(
    i: int, layer: _Layer, w_name: str, variant: FusionVariant, sem: _Semantics, pos: str | None
) -> list[Any]:
    """One layer's packed QKV MatMul and attention, laid out as ``variant`` says; ``pos`` feeds the positions."""
    from onnx import helper

    p = f"gqa/layers.{i}"
    nodes = [helper.make_node("MatMul", [layer.x, w_name], [f"{p}/qkv"], name=f"{p}/qkv_proj/MatMul")]
    attrs: dict[str, Any] = {}
    if sem.layer_window(i) is not None:  # the value that matched optimum's export (window - 1 did not)
        attrs["local_window_size"] = sem.layer_window(i)
    if sem.softcap is not None:  # cap * tanh(scores / cap) on the scaled scores, before the mask, as eager
        attrs["softcap"] = float(sem.softcap)
    if any(pr.bias is not None for pr in layer.projections):
        nodes[0].output[0] = f"{p}/qkv_nobias"
        nodes.append(
            helper.make_node("Add", [f"{p}/qkv_nobias", f"{p}/qkv_proj.bias"], [f"{p}/qkv"], name=f"{p}/qkv_proj/Add")
        )
    qkv_inputs, rotary_inputs = [f"{p}/qkv", "", ""], []
    if sem.alibi is not None:  # cos_cache, sin_cache, position_ids, then attention_bias
        rotary_inputs = ["", "", "", ALIBI_BIAS]
    if variant.rotary is RotaryLayout.FUSED:
        rot = layer.rotary
        attrs |= {"do_rotary": 1, "rotary_interleaved": int(graph.node_attr(rot, "interleaved", 0))}
        rotary_inputs = [rot.input[2], rot.input[3], rot.input[1] if pos is None else pos]
        if layer.qk_norm is not None:  # attention_bias, head_sink, k_scale, v_scale, then the norm weights
            rotary_inputs += ["", "", "", "", f"{p}/q_norm.weight", f"{p}/k_norm.weight"]
            attrs["qk_norm_epsilon"] = layer.qk_norm[2]
    elif variant.rotary is RotaryLayout.NODES:
        nodes += _rotary_nodes(p, layer, pos)
        qkv_inputs = [f"{p}/q_rot", f"{p}/k_rot", f"{p}/v"]
    nodes.append(
        helper.make_node(
            "GroupQueryAttention",
            [
                *qkv_inputs,
                layer.key_concat.input[0],
                layer.value_concat.input[0],
                "gqa/seqlens_k",
                "gqa/total_len",
                *rotary_inputs,
            ],
            [layer.out_reshape.output[0], layer.key_concat.output[0], layer.value_concat.output[0]],
            name=f"{p}/GroupQueryAttention",
            domain=MS_DOMAIN,
            num_heads=layer.num_heads,
            kv_num_heads=layer.kv_num_heads,
            scale=float(layer.scale),
            **attrs,
        )
    )
    return nodes


ALIBI_BIAS = "gqa/alibi_bias"


def _alibi_nodes(model: Any, slopes: np.ndarray) -> list[Any]:
    """``attention_bias = slope[h] * (0 .. total - 1)`` as (1, heads, s, total), once for every layer: bloom's
    ALiBi for an attention mask of ones (``(cumsum(mask) - 1) * mask``), which GroupQueryAttention adds to
    the scaled scores before its causal mask. Reads ``gqa/total_i64`` from :func:`_shared_nodes`."""
    from onnx import TensorProto, helper, numpy_helper

    model.graph.initializer.extend(
        [
            numpy_helper.from_array(slopes.reshape(1, -1, 1, 1).astype(np.float32), "gqa/alibi_slopes"),
            numpy_helper.from_array(np.array(0, dtype=np.int64), "gqa/zero_i64"),
            numpy_helper.from_array(np.array([1, slopes.size], dtype=np.int64), "gqa/alibi_lead"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "gqa/axes_0"),
        ]
    )
    return [
        helper.make_node("Range", ["gqa/zero_i64", "gqa/total_i64", "gqa/one_i64"], ["gqa/key_pos"], name="gqa/Range"),
        helper.make_node("Cast", ["gqa/key_pos"], ["gqa/key_pos_f"], name="gqa/Cast_pos", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["gqa/alibi_slopes", "gqa/key_pos_f"], ["gqa/alibi_row"], name="gqa/Mul_alibi"),
        helper.make_node("Shape", [INPUT_IDS], ["gqa/alibi_ids_shape"], name="gqa/Shape_alibi"),
        helper.make_node("Gather", ["gqa/alibi_ids_shape", "gqa/axes_1"], ["gqa/alibi_seq"], name="gqa/Gather_alibi"),
        helper.make_node("Unsqueeze", ["gqa/total_i64", "gqa/axes_0"], ["gqa/total_1d"], name="gqa/Unsqueeze_total"),
        helper.make_node(
            "Concat",
            ["gqa/alibi_lead", "gqa/alibi_seq", "gqa/total_1d"],
            ["gqa/alibi_shape"],
            name="gqa/Concat_alibi",
            axis=0,
        ),  # fmt: skip
        helper.make_node("Expand", ["gqa/alibi_row", "gqa/alibi_shape"], [ALIBI_BIAS], name="gqa/Expand_alibi"),
    ]


def _rotary_nodes(p: str, layer: _Layer, pos: str | None) -> list[Any]:
    """Split of the packed QKV, then (qwen3's per-head norm and) a RotaryEmbedding on q and on k."""
    from onnx import helper

    rot = layer.rotary
    pos = rot.input[1] if pos is None else pos
    nodes = [
        helper.make_node(
            "Split", [f"{p}/qkv", f"{p}/split"], [f"{p}/q", f"{p}/k", f"{p}/v"], name=f"{p}/Split", axis=-1
        )
    ]
    for name, heads in (("q", layer.num_heads), ("k", layer.kv_num_heads)):
        nodes += _head_norm_nodes(p, name, layer)
        nodes.append(
            helper.make_node(
                "RotaryEmbedding",
                [f"{p}/{name}_normed" if layer.qk_norm is not None else f"{p}/{name}", pos, rot.input[2], rot.input[3]],
                [f"{p}/{name}_rot"],
                name=f"{p}/{name}_rotary",
                domain=MS_DOMAIN,
                num_heads=heads,
                interleaved=int(graph.node_attr(rot, "interleaved", 0)),
                **({"rotary_embedding_dim": layer.rotary_dim} if layer.partial_rotary else {}),
            )
        )
    return nodes


def _head_norm_nodes(p: str, name: str, layer: _Layer) -> list[Any]:
    """qwen3's per-head RMSNorm as ORT's fusion wrote it, between the Split and the rotary node:
    (b, s, heads * head) -> (b, s, heads, head) -> SimplifiedLayerNormalization -> (b, s, heads * head)."""
    from onnx import helper

    if layer.qk_norm is None:
        return []
    return [
        helper.make_node("Reshape", [f"{p}/{name}", f"{p}/heads_shape"], [f"{p}/{name}_heads"], name=f"{p}/{name}_r1"),
        helper.make_node(
            "SimplifiedLayerNormalization",
            [f"{p}/{name}_heads", f"{p}/{name}_norm.weight"],
            [f"{p}/{name}_heads_normed"],
            name=f"{p}/{name}_norm",
            axis=-1,
            epsilon=layer.qk_norm[2],
        ),
        helper.make_node(
            "Reshape", [f"{p}/{name}_heads_normed", f"{p}/flat_shape"], [f"{p}/{name}_normed"], name=f"{p}/{name}_r2"
        ),
    ]


def _rotary_caches(model: Any, layers: list[_Layer]) -> list[Any]:
    names = {n for lay in layers if lay.rotary is not None for n in (lay.rotary.input[2], lay.rotary.input[3])}
    return [init for init in model.graph.initializer if init.name in names]


def _trim_rotary_caches(model: Any, layers: list[_Layer], max_positions: int | None) -> int | None:
    """ORT's rotary fusion sizes cos/sin caches for 131072 positions; keep the model's context window."""
    from onnx import numpy_helper

    rows = None
    for init in _rotary_caches(model, layers):
        arr = numpy_helper.to_array(init)
        if max_positions and arr.shape[0] > max_positions:
            arr = arr[:max_positions]
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr), init.name))
        rows = int(arr.shape[0]) if rows is None else min(rows, int(arr.shape[0]))
    return rows


def _attention_shape(model: Any, layers: list[_Layer], max_positions: int | None) -> AttentionShape | str:
    """The shapes the kernel rules read; a string when the layers disagree or the caches are not constant."""
    heads = {(lay.num_heads, lay.kv_num_heads, lay.head_size) for lay in layers}
    if len(heads) != 1:
        return "layers disagree on head counts"
    ((num_heads, kv_num_heads, head_size),) = heads
    if all(lay.rotary is None for lay in layers):  # learned positions: no caches to read
        return AttentionShape(
            num_heads=num_heads, kv_num_heads=kv_num_heads, head_size=head_size, rotary_width=0, cache_rows=0,
            context=max_positions, rotary=False,
        )  # fmt: skip
    caches = _rotary_caches(model, layers)
    dims = {tuple(int(d) for d in c.dims) for c in caches}
    if not caches or len({d[1:] for d in dims}) != 1 or any(len(d) != 2 for d in dims):
        return "rotary cos/sin caches are not 2-D initializers of one width"
    rows = min(d[0] for d in dims)
    return AttentionShape(
        num_heads=num_heads,
        kv_num_heads=kv_num_heads,
        head_size=head_size,
        rotary_width=next(iter(dims))[1],
        cache_rows=min(rows, max_positions) if max_positions else rows,
        context=max_positions,
        qk_norm=any(lay.qk_norm is not None for lay in layers),
        partial_rotary=any(lay.partial_rotary for lay in layers),
    )


def _prune(model: Any) -> int:
    """Drop nodes and initializers nothing reaches from the graph outputs; graph inputs stay as they are."""
    g = model.graph
    needed = {o.name for o in g.output}
    keep = []
    for n in reversed(list(g.node)):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
            for a in n.attribute:  # subgraphs (If / Loop) read outer names too
                if a.g is not None and a.g.node:
                    needed.update(i for sub in a.g.node for i in sub.input if i)
    removed = len(g.node) - len(keep)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    inits = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    return removed


def _with_softcap(src: Path, cap: float) -> bytes:
    """The source graph with ``cap * tanh(scores / cap)`` between each Q.K^T MatMul and its mask Add: the
    reference attention the export dropped (gemma2), for the self-check to compare the fused graph with."""
    from onnx import helper, numpy_helper

    model = graph.load_model(src, check=False)
    g = _Graph(model)
    cap_name = "softcap/cap"
    model.graph.initializer.append(numpy_helper.from_array(np.array(cap, dtype=np.float32), cap_name))
    out = []
    for n in model.graph.node:
        out.append(n)
        consumers = g.consumers.get(n.output[0], []) if n.op_type == "MatMul" and n.output else []
        add = consumers[0] if len(consumers) == 1 and consumers[0].op_type == "Add" else None
        if add is None or not any(c.op_type == "Softmax" for c in g.consumers.get(add.output[0], [])):
            continue
        x, p = n.output[0], f"softcap/{len(out)}"
        out += [
            helper.make_node("Div", [x, cap_name], [f"{p}/div"], name=f"{p}/Div"),
            helper.make_node("Tanh", [f"{p}/div"], [f"{p}/tanh"], name=f"{p}/Tanh"),
            helper.make_node("Mul", [f"{p}/tanh", cap_name], [f"{p}/capped"], name=f"{p}/Mul"),
        ]
        add.input[list(add.input).index(x)] = f"{p}/capped"
    del model.graph.node[:]
    model.graph.node.extend(out)
    return model.SerializeToString()


def _self_check(src: Path | bytes, fused: Any, kv: tuple[int, int], n_layers: int, prompt: int = 5) -> dict[str, Any]:
    """:func:`_compare`, with anything ONNX Runtime raises turned into a failed check (kept source), not a crash."""
    try:
        return _compare(src, fused, kv, n_layers, prompt)
    except Exception as e:  # ORT raises its own pybind classes (InvalidArgument, Fail, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return {"ok": False, "reason": f"ONNX Runtime raised {type(e).__name__}: {first[:400]}"}


def _compare(src: Path | bytes, fused: Any, kv: tuple[int, int], n_layers: int, prompt: int) -> dict[str, Any]:
    """Run a ``prompt``-token prompt and one decode step through both graphs; compare logits and the KV cache."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4  # a refused node is reported in the check's reason, not on stderr
    so.intra_op_num_threads = 1
    ref = ort.InferenceSession(src if isinstance(src, bytes) else str(src), so, providers=["CPUExecutionProvider"])
    new = ort.InferenceSession(fused.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ins = {i.name for i in ref.get_inputs()}
    new_ins = {i.name for i in new.get_inputs()}
    past_names, present_names = _kv_names(n_layers)
    out_names = [LOGITS, *present_names]
    vocab = next(o.shape[-1] for o in ref.get_outputs() if o.name == LOGITS)
    if not isinstance(vocab, int):  # a symbolic vocabulary dim: learn it from one run
        vocab = ref.run([LOGITS], _feeds(ins, [0], 0, past_names, kv, None))[0].shape[-1]
    ids = np.random.default_rng(0).integers(0, vocab, size=prompt).tolist()
    worst, same_argmax, past, n_past, steps = 0.0, True, None, 0, []
    for _ in range(2):  # the prompt, then one decode step with the reference's greedy token
        feeds = _feeds(ins, ids, n_past, past_names, kv, past)
        r_out = ref.run(out_names, feeds)
        n_out = new.run(out_names, fit_to_graph(feeds, new_ins))
        for name, a, b in zip(out_names, r_out, n_out, strict=True):
            if a.shape != b.shape:
                return {"ok": False, "reason": f"{name}: shape {list(b.shape)} != {list(a.shape)}"}
            worst = max(worst, float(np.abs(a - b).max()) / max(1.0, float(np.abs(a).max())))
        same_argmax &= bool(np.array_equal(r_out[0][0].argmax(-1), n_out[0][0].argmax(-1)))
        steps.append((ids, r_out[0]))
        past = dict(zip(past_names, r_out[1:], strict=True))
        n_past += len(ids)
        ids = [int(np.argmax(r_out[0][0, -1]))]
    shared = _shared_buffer_diff(new, ins, steps, past_names, out_names, kv)
    ok = worst <= LOGITS_RTOL and same_argmax and shared <= LOGITS_RTOL
    check = {"ok": ok, "max_rel_diff": worst, "same_greedy_tokens": same_argmax, "shared_kv_rel_diff": shared}
    if ok:
        return check
    where = "with a shared KV buffer" if worst <= LOGITS_RTOL and same_argmax else "logits / KV cache"
    return {**check, "reason": f"{where} differ (max rel diff {max(worst, shared):.2e})"}


def _shared_buffer_diff(
    new: Any,
    ins: set[str],
    steps: list[tuple[list[int], np.ndarray]],
    past_names: list[str],
    out_names: list[str],
    kv: tuple[int, int],
) -> float:
    """The fused graph as the runtime drives it (one past/present buffer sized for the whole call, the mask
    growing): the largest relative logits difference from the reference's ``steps``."""
    total = sum(len(ids) for ids, _ in steps)
    past = {n: np.zeros((1, kv[0], total, kv[1]), dtype=np.float32) for n in past_names}
    worst, n_past = 0.0, 0
    new_ins = {i.name for i in new.get_inputs()}
    for ids, ref_logits in steps:
        feeds = _feeds(ins, ids, n_past, past_names, kv, past)
        out = new.run(out_names, fit_to_graph(feeds, new_ins))
        if not np.array_equal(out[0][0].argmax(-1), ref_logits[0].argmax(-1)):
            return float("inf")  # another greedy token: fails whatever the tolerance
        worst = max(worst, float(np.abs(out[0] - ref_logits).max()) / max(1.0, float(np.abs(ref_logits).max())))
        past = dict(zip(past_names, out[1:], strict=True))
        n_past += len(ids)
    return worst


def _feeds(
    ins: set[str],
    ids: list[int],
    n_past: int,
    past_names: list[str],
    kv: tuple[int, int],
    past: dict[str, np.ndarray] | None,
) -> dict[str, np.ndarray]:
    n = len(ids)
    feeds: dict[str, np.ndarray] = {INPUT_IDS: np.asarray([ids], dtype=np.int64)}
    feeds.update(mask_feeds(np.ones((1, n_past + n), dtype=np.int64), ins, ATTENTION_MASK))
    if POSITION_IDS in ins:
        feeds[POSITION_IDS] = np.arange(n_past, n_past + n, dtype=np.int64)[None, :]
    for name in past_names:
        feeds[name] = np.zeros((1, kv[0], 0, kv[1]), dtype=np.float32) if past is None else past[name]
    return feeds


def _io(model: Any) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    inits = {i.name for i in model.graph.initializer}
    ins = [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input if i.name not in inits]
    outs = [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output]
    return ins, outs


def _with_length_inputs(io: Any) -> Any:
    """``io`` (from :func:`_io`) with the attention mask replaced by GroupQueryAttention's two length inputs."""
    from onnx import TensorProto

    ins, outs = io
    at = [name for name, _ in ins].index(ATTENTION_MASK)
    lengths = [(SEQLENS_K, TensorProto.INT32), (TOTAL_SEQUENCE_LENGTH, TensorProto.INT32)]
    return ins[:at] + lengths + ins[at + 1 :], outs


def _passthrough(src: Path, dst: Path, reason: str, **details: Any) -> tuple[bool, dict[str, Any]]:
    graph.save_model(graph.load_model(src, check=False), dst)
    return False, {"fused": {}, "variant": UNFUSED, "skipped": reason, **details}


def step_decoder_fusions(src: Path, dst: Path, cfg: Any, ctx: Any) -> tuple[bool, dict[str, Any]]:
    """Fuse a KV-cache decoder's attention into GroupQueryAttention (see the module docstring).

    A recipe step: reads ``src``, writes ``dst``, returns ``(changed, details)``. Runs when
    ``ctx.task_kind == "generation"``, ``ctx.model_type`` is in :data:`DECODER_FAMILIES` and
    ``cfg.fusions`` is true (configs without the field count as true); otherwise ``dst`` is ``src``.
    ``details["variant"]`` names the layout kept (a :data:`VARIANTS` name or ``"unfused"``) and
    ``details["variant_reason"]`` why.
    """
    if not getattr(cfg, "fusions", True):
        return _passthrough(src, dst, "fusions switched off in the recipe options")
    if ctx.task_kind != GENERATION_KIND:
        return _passthrough(src, dst, f"decoder fusions are for generation, not {ctx.task_kind}")
    if (ctx.model_type or "") not in DECODER_FAMILIES:
        known = ", ".join(sorted(DECODER_FAMILIES.names()))
        return _passthrough(src, dst, f"model type {ctx.model_type!r} has no decoder fusion (known: {known})")
    family = DECODER_FAMILIES.get(ctx.model_type)
    window, context = family.window(_source_config(ctx)), _max_positions(ctx)
    if window is not None and context is None:
        return _passthrough(src, dst, f"sliding window {window} and an unknown context: cannot check the window")
    window = window if window is not None and context is not None and window < context else None
    source = graph.load_model(src, check=False)
    kv = _heads_from_io(source)
    names_in = {i.name for i in source.graph.input}
    if kv is None or ATTENTION_MASK not in names_in:
        return _passthrough(src, dst, "not a KV-cache decoder graph with attention_mask")
    io_before = _io(source)
    del source
    prepared = _matched_source(src, ctx, family, kv, context)
    if isinstance(prepared, str):
        return _passthrough(src, dst, prepared)
    model, stats, layers = prepared
    max_positions = context
    shape = _attention_shape(model, layers, max_positions)
    if isinstance(shape, str):
        return _passthrough(src, dst, shape)
    config = _source_config(ctx)
    sem = _Semantics(
        windows=tuple(window if family.windowed_layer(config, i) else None for i in range(len(layers))),
        softcap=family.softcap(config),
        rotary=family.rotary,
        alibi=None if family.alibi is None else family.alibi(config),
    )
    base = {**stats, "preflight": preflight(shape), "nodes_before": len(model.graph.node)}
    attempts: list[dict[str, Any]] = []
    lengths = bool(getattr(cfg, "length_inputs", True))
    for variant in VARIANTS:
        failed = variant.failed_rules(shape)
        if failed:
            attempts.append({"variant": variant.name, "refused_by": [r.name for r in failed]})
            continue
        try:
            fused, details = _attempt(model, kv, max_positions, variant, io_before, src, sem, lengths)
        except Exception as e:  # a rewrite that breaks on an unforeseen graph keeps the source, never a crash
            log.warning("decoder fusion %s failed: %s: %s", variant.name, type(e).__name__, e)
            fused, details = None, {"error": f"the rewrite raised {type(e).__name__}: {e}"}
        attempts.append({"variant": variant.name, **{k: v for k, v in details.items() if k in ("check", "error")}})
        if fused is not None:
            return _keep(fused, dst, variant, shape, attempts, {**base, **details})
    return _passthrough(src, dst, _unfused_reason(attempts), **base, attempts=attempts, variant_reason="")


def _matched_source(
    src: Path, ctx: Any, family: DecoderFamily, kv: tuple[int, int], context: int | None
) -> tuple[Any, dict[str, Any], list[_Layer]] | str:
    """ORT's fusions (and ours of a rotary written out, :attr:`DecoderFamily.explicit_rotary`), then every
    layer matched: (the model, what was fused, the layers), or why not."""
    try:
        model, ort_stats = _ort_fusions(src)
    except Exception as e:  # ORT's transformer optimizer may raise anything on an odd graph
        return f"ONNX Runtime's transformer optimizer failed ({type(e).__name__}: {e})"
    stats: dict[str, Any] = {"ort_fusions": ort_stats}
    if family.explicit_rotary:
        stats["explicit_rotary_nodes"] = _fuse_explicit_rotary(model, _source_config(ctx), context, kv[1])
    layers = _match_all(model, kv, family.rotary, family.alibi is not None)
    return layers if isinstance(layers, str) else (model, stats, layers)


def _match_all(model: Any, kv: tuple[int, int], rotary: bool = True, batched: bool = False) -> list[_Layer] | str:
    g = _Graph(model)
    layers: list[_Layer] = []
    for sm in (n for n in model.graph.node if n.op_type == "Softmax"):
        hit = _match_batched(g, sm, kv[1]) if batched else _match(g, sm, kv[1], rotary)
        if isinstance(hit, str):
            return f"attention pattern not matched at {sm.name or sm.output[0]}: {hit}"
        layers.append(hit)
    if not layers:
        return "no attention Softmax in the graph"
    if any((lay.kv_num_heads, lay.head_size) != kv for lay in layers):
        return "matched head sizes disagree with the KV-cache inputs"
    return layers


def _attempt(
    model: Any,
    kv: tuple[int, int],
    max_positions: int | None,
    variant: FusionVariant,
    io_before: Any,
    src: Path,
    sem: _Semantics,
    length_inputs: bool = True,
) -> tuple[Any | None, dict[str, Any]]:
    """Rewrite a copy of ``model`` as ``variant`` and self-check it; (the fused model or None, details)."""
    from onnx import ModelProto

    work = ModelProto()
    work.CopyFrom(model)  # each variant starts from the ORT-fused graph, untouched by a failed attempt
    layers = _match_all(work, kv, sem.rotary, sem.alibi is not None)
    if isinstance(layers, str):
        return None, {"error": layers}
    details = _rewrite(work, layers, max_positions, variant, sem, length_inputs)
    if _io(work) != (_with_length_inputs(io_before) if details["lengths_as_inputs"] else io_before):
        return None, {"error": "the rewrite changed the graph's inputs or outputs (bug)"}
    # A prompt longer than the sliding window, so the check sees the window applied (and fits the caches).
    window = sem.window
    prompt = 5 if window is None or max_positions is None else min(window + 3, max_positions - 1)
    reference = src if sem.softcap is None else _with_softcap(src, sem.softcap)
    check = _self_check(reference, work, kv, len(layers), prompt)
    details = {**details, "check": check, "layers": len(layers), "local_window_size": window}
    if len(set(sem.windows)) > 1:  # windowed and full layers alternate (gemma2)
        details["local_window_sizes"] = list(sem.windows)
    if sem.softcap is not None:
        details["softcap"] = sem.softcap
    if sem.alibi is not None:
        details["alibi_slopes"] = [float(v) for v in sem.alibi]
    return (work if check["ok"] else None), details


def _keep(
    model: Any,
    dst: Path,
    variant: FusionVariant,
    shape: AttentionShape,
    attempts: list[dict[str, Any]],
    details: dict[str, Any],
) -> tuple[bool, dict[str, Any]]:
    graph.save_model(model, dst)
    final_ops = graph.op_histogram(model)
    earlier = [a for a in attempts if a["variant"] != variant.name]
    why = f"{variant.description}: its kernel rules hold and its self-check passed"
    if earlier:
        why += "; preferred " + "; ".join(_attempt_summary(a) for a in earlier)
    return True, {
        "fused": {op: final_ops[op] for op in _FUSED_OPS if final_ops.get(op)},
        "variant": variant.name,
        "variant_reason": why,
        "attempts": attempts,
        "num_heads": shape.num_heads,
        "kv_num_heads": shape.kv_num_heads,
        "head_size": shape.head_size,
        "nodes_after": len(model.graph.node),
        **details,
    }


def _attempt_summary(attempt: dict[str, Any]) -> str:
    name = attempt["variant"]
    if attempt.get("refused_by"):
        return f"{name} refused by {', '.join(attempt['refused_by'])}"
    check = attempt.get("check") or {}
    return f"{name} failed: {attempt.get('error') or check.get('reason', 'self-check failed')}"


def _unfused_reason(attempts: list[dict[str, Any]]) -> str:
    return "no fusion variant runs on ONNX Runtime's CPU kernels, kept the source: " + "; ".join(
        _attempt_summary(a) for a in attempts
    )
