"""What a decoder graph takes in place of its attention mask.

edgekit's fused decoders (``exporters/decoder_fusions.py``) take GroupQueryAttention's two length inputs
directly where nothing else in the graph reads the mask: ``seqlens_k`` (int32, one per row: the row's valid
tokens, past and new, minus one) and ``total_sequence_length`` (int32 scalar: the mask's length, the KV
length the step attends over). Computing them in the graph took six nodes a step (ReduceSum, Sub, Cast,
Shape, Gather, Cast), 5-9 % of a tiny decoder's step. Every feed builder derives them from the mask it
would have sent, here, so a sample, a profiler workload or a generation loop reads the same for both kinds
of graph.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from edgekit.manifest import GenerationSpec

__all__ = [
    "ATTENTION_MASK",
    "SEQLENS_K",
    "TOTAL_SEQUENCE_LENGTH",
    "attention_feeds",
    "fit_to_graph",
    "length_values",
    "mask_feeds",
]

ATTENTION_MASK = "attention_mask"
SEQLENS_K = "seqlens_k"
TOTAL_SEQUENCE_LENGTH = "total_sequence_length"


def length_values(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(seqlens_k, total_sequence_length)`` for a (batch, length) attention mask of ones and zeros."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"an attention mask is (batch, length), got shape {list(m.shape)}")
    seqlens = (m.sum(axis=1, dtype=np.int64) - 1).astype(np.int32)
    return seqlens, np.array(m.shape[1], dtype=np.int32)


def mask_feeds(mask: np.ndarray, input_names: Collection[str], mask_name: str | None = ATTENTION_MASK) -> dict:
    """The feeds a graph with ``input_names`` takes for ``mask``: the mask itself, its lengths, or both."""
    feeds: dict[str, np.ndarray] = {}
    if mask_name and mask_name in input_names:
        feeds[mask_name] = mask
    if SEQLENS_K in input_names and TOTAL_SEQUENCE_LENGTH in input_names:  # GroupQueryAttention takes both
        feeds[SEQLENS_K], feeds[TOTAL_SEQUENCE_LENGTH] = length_values(mask)
    return feeds


def attention_feeds(gen: GenerationSpec, mask: np.ndarray) -> dict[str, np.ndarray]:
    """What a package's graph takes for ``mask``, by its manifest: the mask, GroupQueryAttention's lengths, or
    neither."""
    feeds: dict[str, np.ndarray] = {}
    if gen.attention_mask_name:
        feeds[gen.attention_mask_name] = mask
    if gen.seqlens_k_name and gen.total_sequence_length_name:
        feeds[gen.seqlens_k_name], feeds[gen.total_sequence_length_name] = length_values(mask)
    return feeds


def fit_to_graph(feeds: Mapping[str, np.ndarray], input_names: Collection[str]) -> dict[str, np.ndarray]:
    """``feeds`` written for a graph that takes the attention mask, for one with ``input_names``.

    The lengths come from the mask where the graph takes them and the feeds lack them; the mask is dropped
    where the graph does not take it. Feeds with no mask, or a graph that takes the mask, pass unchanged.
    """
    out = dict(feeds)
    mask = out.get(ATTENTION_MASK)
    if mask is None:
        return out
    for name, value in mask_feeds(mask, input_names).items():
        out.setdefault(name, value)
    if ATTENTION_MASK not in input_names:
        del out[ATTENTION_MASK]
    return out
