"""runtimes/decoder_feeds.py: GroupQueryAttention's lengths derived from an attention mask, for graphs that
take them in place of the mask (the fused decoders), and feeds written for a mask graph fitted to either."""

from __future__ import annotations

import numpy as np
import pytest

from runtimes.decoder_feeds import attention_feeds, fit_to_graph, length_values, mask_feeds


def test_lengths_are_each_rows_valid_tokens_minus_one_and_the_masks_length() -> None:
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int64)
    seqlens, total = length_values(mask)
    assert seqlens.dtype == np.int32 and seqlens.tolist() == [2, 4]
    assert total.dtype == np.int32 and total.shape == () and int(total) == 5


def test_a_mask_that_is_not_two_dimensional_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(batch, length\), got shape \[4\]"):
        length_values(np.ones(4, np.int64))


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ({"attention_mask"}, {"attention_mask"}),
        ({"seqlens_k", "total_sequence_length"}, {"seqlens_k", "total_sequence_length"}),
        (
            {"attention_mask", "seqlens_k", "total_sequence_length"},
            {"attention_mask", "seqlens_k", "total_sequence_length"},
        ),
        ({"input_ids"}, set()),
    ],
)
def test_mask_feeds_give_what_the_graph_takes(names: set[str], expected: set[str]) -> None:
    mask = np.ones((1, 7), np.int64)
    feeds = mask_feeds(mask, names)
    assert set(feeds) == expected
    if "seqlens_k" in feeds:
        assert feeds["seqlens_k"].tolist() == [6] and int(feeds["total_sequence_length"]) == 7
    if "attention_mask" in feeds:
        assert feeds["attention_mask"] is mask


def test_feeds_for_a_mask_graph_fit_a_lengths_graph() -> None:
    ids, mask = np.array([[5, 6]], np.int64), np.array([[1, 1, 1, 0]], np.int64)
    fitted = fit_to_graph(
        {"input_ids": ids, "attention_mask": mask}, ["input_ids", "seqlens_k", "total_sequence_length"]
    )
    assert set(fitted) == {"input_ids", "seqlens_k", "total_sequence_length"}
    assert fitted["seqlens_k"].tolist() == [2] and int(fitted["total_sequence_length"]) == 4
    assert fitted["input_ids"] is ids


def test_a_mask_graph_and_feeds_without_a_mask_pass_unchanged() -> None:
    feeds = {"input_ids": np.ones((1, 3), np.int64), "attention_mask": np.ones((1, 3), np.int64)}
    assert fit_to_graph(feeds, ["input_ids", "attention_mask"]) == feeds
    no_mask = {"pixel_values": np.zeros((1, 3, 8, 8), np.float32)}
    assert fit_to_graph(no_mask, ["pixel_values"]) == no_mask


def test_lengths_already_in_the_feeds_are_kept() -> None:
    given = np.array([9], np.int32)
    feeds = {"attention_mask": np.ones((1, 3), np.int64), "seqlens_k": given}
    fitted = fit_to_graph(feeds, ["seqlens_k", "total_sequence_length"])
    assert fitted["seqlens_k"] is given and int(fitted["total_sequence_length"]) == 3


def test_attention_feeds_follow_the_manifests_names() -> None:
    import dataclasses

    from edgekit.manifest import GenerationSpec

    base = GenerationSpec(
        with_kv_cache=True, num_layers=1, num_attention_heads=2, num_kv_heads=1, head_size=8, vocab_size=10,
        max_context_tokens=16,
    )  # fmt: skip
    mask = np.ones((1, 4), np.int64)
    assert set(attention_feeds(base, mask)) == {"attention_mask"}
    lengths = dataclasses.replace(
        base, attention_mask_name=None, seqlens_k_name="seqlens_k", total_sequence_length_name="total_sequence_length"
    )
    feeds = attention_feeds(lengths, mask)
    assert set(feeds) == {"seqlens_k", "total_sequence_length"}
    assert feeds["seqlens_k"].tolist() == [3] and int(feeds["total_sequence_length"]) == 4
