"""What the profiler runs a package on: realistic inputs per task, prefill and decode for generation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import UsageError
from edgekit.package import open_package
from edgekit.profiler.feeds import DEFAULT_TEXT_TOKENS, Target, make_phases
from edgekit.profiler.static import analyze_model, graph_input_specs, load_onnx


def _target(path: Path) -> tuple[Target, dict]:
    pkg = open_package(path)
    target = Target(label=path.name, model_path=pkg.model_path, root=pkg.root, manifest=pkg.manifest)
    return target, graph_input_specs(load_onnx(pkg.model_path))


def test_text_packages_run_on_a_window_of_real_text(embed_package: Path) -> None:
    target, specs = _target(embed_package)
    (phase,) = make_phases(target, None, specs)
    assert phase.name == "forward" and phase.item == "tokens"
    ids, mask = phase.feeds["input_ids"], phase.feeds["attention_mask"]
    assert ids.shape == (1, DEFAULT_TEXT_TOKENS) and mask.all()  # no padding: real tokens fill the window
    assert len(set(ids[0].tolist())) > 5
    (batched,) = make_phases(target, {"input_ids": (2, 12)}, specs)
    assert batched.feeds["input_ids"].shape == (2, 12) and batched.items_per_run == 24


def test_too_many_tokens_is_a_usage_error(embed_package: Path) -> None:
    target, specs = _target(embed_package)
    with pytest.raises(UsageError, match="at most 64"):
        make_phases(target, {"input_ids": (1, 500)}, specs)


def test_generation_has_a_prefill_and_a_decode_phase(lm_package: Path) -> None:
    target, specs = _target(lm_package)
    prefill, decode = make_phases(target, None, specs)
    gen = target.manifest.generation
    prompt = prefill.feeds[gen.input_ids_name].shape[1]
    assert prefill.name == "prefill" and decode.name == "decode"
    assert decode.feeds[gen.input_ids_name].shape == (1, 1)
    past = decode.feeds[gen.past_key_template.format(layer=0)]
    assert past.shape == (1, gen.num_kv_heads, prompt, gen.head_size)
    assert prefill.feeds[gen.past_key_template.format(layer=0)].shape[2] == 0
    # the graph takes GroupQueryAttention's lengths in place of the mask: prompt + 1 tokens attended
    assert gen.attention_mask_name is None
    assert decode.feeds[gen.seqlens_k_name].tolist() == [prompt] and decode.feeds[gen.seqlens_k_name].dtype == "int32"
    assert (
        decode.feeds[gen.total_sequence_length_name].shape == ()
        and int(decode.feeds["total_sequence_length"]) == prompt + 1
    )
    assert prefill.feeds[gen.seqlens_k_name].tolist() == [prompt - 1]
    assert decode.feeds[gen.position_ids_name].tolist() == [[prompt]]
    model = load_onnx(target.model_path)
    a_prefill = analyze_model(model, feeds=prefill.feeds)
    a_decode = analyze_model(model, feeds=decode.feeds)
    # one token instead of a whole prompt: far fewer FLOPs, the same weights
    assert a_decode.flops * 4 < a_prefill.flops
    assert a_decode.weight_bytes == a_prefill.weight_bytes


@pytest.mark.slow
def test_profiling_a_language_model_reports_both_phases_and_end_to_end(lm_package: Path) -> None:
    from edgekit.profiler import profile

    report = profile([lm_package], devices=["host", "lowend-a53-phone"], runs=5, progress=False).to_dict()
    variant = report["result"]["variants"][0]
    assert [p["name"] for p in variant["phases"]] == ["prefill", "decode"]
    generation = variant["measurement"]["generation"]
    assert generation.get("error") is None, generation
    assert generation["time_to_first_token_ms"] > 0 and generation["decode_tokens_per_s"] > 0
    phone = next(d for d in variant["devices"] if d["device"] == "lowend-a53-phone")
    prefill, decode = (p["latency_ms"] for p in phone["estimate"]["phases"])
    assert np.isfinite(prefill) and 0 < decode < prefill
