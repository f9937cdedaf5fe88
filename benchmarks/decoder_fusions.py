"""Decoder fusions benchmark: decode tokens/s of the fused graph against the same export unfused, per family.

For each family (random weights, byte tokenizer, built in this process from transformers' config class) the
same Hugging Face directory is exported twice with one recipe: ``fusions`` true (the shipped default: the
``decoder_fusions`` step's variant) and false (optimum's graph, ORT's own session optimizations only). Both
packages generate 64 greedy tokens from a 16-token prompt on one intra-op thread. Rounds interleave the two
(each round runs both, in alternating order); a family's ratio is the median of its per-round ratios, so load
from other jobs hits both sides. Decode tokens/s is the runtime's own ``decode_tokens_per_second`` (the steps
after the first token). The greedy tokens of the two packages are compared too (fp32: equal expected).

Sizes: ``tiny`` is 2 layers, hidden 64, 4 heads (head 16), 2 KV heads, like the test suite's models;
``small`` is 4 layers, hidden 256, 4 heads (head 64), 2 KV heads. stablelm keeps its partial_rotary_factor
0.25 (tiny: 4 rotated dims -> rotary nodes; small: 16 -> rotary inside GroupQueryAttention); gemma2 gets a
32-token window on its even layers and keeps its attention logit softcap (50). The fused gemma2 graph applies
the softcap that the unfused export drops, so its tokens may differ from the unfused ones by design. gpt2 and
opt (learned positions) run ``gqa-no-rotary``; gpt_neox keeps its rotary_pct 0.25 (as stablelm); falcon is
multi-query (one KV head); gpt2, opt, gpt_neox and bloom (ALiBi, MLP 4 * hidden) have as many KV heads as heads.

    python benchmarks/decoder_fusions.py [--families phi3,stablelm] [--sizes tiny,small] [--recipes fp32,int4]
                                         [--rounds 5] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZES = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
    "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2},
}
PROMPT_TOKENS, NEW_TOKENS = 16, 64
# Config fields a family names or fixes its own way: every family's MLP is 2 * hidden as with intermediate_size
# (opt's ffn_dim defaults to 3072, gpt2's and falcon's to 4 * hidden; opt projects its embeddings unless
# word_embed_proj_dim is the hidden size); gpt2, opt and gpt_neox have one KV head per head, falcon (multi_query)
# one in all, and the export checks the config's KV heads against the graph's.
FAMILY_FIELDS = {
    "gpt2": lambda d: {"n_inner": 2 * d["hidden_size"], "num_key_value_heads": d["num_attention_heads"]},
    "opt": lambda d: {
        "ffn_dim": 2 * d["hidden_size"],
        "word_embed_proj_dim": d["hidden_size"],
        "num_key_value_heads": d["num_attention_heads"],
    },
    "gpt_neox": lambda d: {"num_key_value_heads": d["num_attention_heads"]},
    "bloom": lambda d: {"num_key_value_heads": d["num_attention_heads"]},  # its MLP is 4 * hidden, fixed
    "falcon": lambda d: {"ffn_hidden_size": 2 * d["hidden_size"], "num_key_value_heads": 1},
}


@dataclass(frozen=True)
class Row:
    family: str
    size: str
    recipe: str
    variant: str
    fused_tok_s: float
    unfused_tok_s: float
    ratio: float
    same_tokens: bool


def _build(family: str, size: str, out: Path) -> Path:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    from tests.toy_models import BOS_ID, BYTE_VOCAB_SIZE, EOS_ID, PAD_ID, save_byte_tokenizer

    dims = SIZES[size]
    head = dims["hidden_size"] // dims["num_attention_heads"]
    extra = {"head_dim": head} if family in ("gemma", "gemma2", "qwen3") else {}
    if family == "gemma2":  # its defaults: window 4096 (longer than the context here), so set one that bites
        extra |= {"query_pre_attn_scalar": head, "sliding_window": 32}
    fields = FAMILY_FIELDS.get(family, lambda _d: {})(dims)
    dims = {**dims, **{k: v for k, v in fields.items() if k in dims}}
    extra |= {k: v for k, v in fields.items() if k not in dims}
    config = transformers.AutoConfig.for_model(
        family,
        vocab_size=BYTE_VOCAB_SIZE,
        intermediate_size=2 * dims["hidden_size"],
        max_position_embeddings=256,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        **dims,
        **extra,
    )
    save_byte_tokenizer(out, max_length=256)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    model.save_pretrained(out, safe_serialization=True)
    return out


def _export(hf: Path, out: Path, recipe: str, fusions: bool) -> tuple[Path, str]:
    from exporters import export

    res = export(
        hf,
        output=out,
        task="text-generation",
        recipe=recipe,
        recipe_options={"fusions": fusions},
        progress=False,
        validation_samples=4,
        on_slower="warn",
    )
    manifest = json.loads((Path(res.package_dir) / "edgekit.json").read_text())
    step = next(s for s in manifest["recipe"]["steps"] if s["name"] == "decoder_fusions")
    return Path(res.package_dir), step["details"].get("variant", "unfused")


def _decode(lm: Any, prompt: list[int]) -> tuple[float, tuple[int, ...]]:
    r = lm.generate(prompt, max_tokens=NEW_TOKENS, ignore_eos=True)
    return float(r.timings["decode_tokens_per_second"]), tuple(r.token_ids)


def measure(family: str, size: str, recipe: str, rounds: int, work: Path) -> Row:
    import edgekit

    hf = work / f"{family}-{size}" / "hf"
    if not (hf / "config.json").is_file():
        _build(family, size, hf)
    fused_pkg, variant = _export(hf, work / f"{family}-{size}" / f"{recipe}-fused", recipe, True)
    plain_pkg, _ = _export(hf, work / f"{family}-{size}" / f"{recipe}-unfused", recipe, False)
    lms = {k: edgekit.load(p, threads=1, verify=False) for k, p in (("fused", fused_pkg), ("unfused", plain_pkg))}
    prompt = [1 + (7 * i) % 250 for i in range(PROMPT_TOKENS)]
    for lm in lms.values():  # warm-up: first-run allocations out of the timed rounds
        _decode(lm, prompt)
    rates: dict[str, list[float]] = {"fused": [], "unfused": []}
    tokens: dict[str, tuple[int, ...]] = {}
    for i in range(rounds):
        for name in ("fused", "unfused") if i % 2 == 0 else ("unfused", "fused"):
            rate, tokens[name] = _decode(lms[name], prompt)
            rates[name].append(rate)
    return Row(
        family=family,
        size=size,
        recipe=recipe,
        variant=variant,
        fused_tok_s=statistics.median(rates["fused"]),
        unfused_tok_s=statistics.median(rates["unfused"]),
        ratio=statistics.median(f / u for f, u in zip(rates["fused"], rates["unfused"], strict=True)),
        same_tokens=tokens["fused"] == tokens["unfused"],
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="phi3,stablelm")
    ap.add_argument("--sizes", default="tiny,small")
    ap.add_argument("--recipes", default="fp32,int4")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="edgekit-fusions-bench-"))
    print("| family | size | recipe | variant | fused tok/s | unfused tok/s | fused / unfused | same tokens |")
    print("|---|---|---|---|---|---|---|---|")
    for family in args.families.split(","):
        for size in args.sizes.split(","):
            for recipe in args.recipes.split(","):
                r = measure(family, size, recipe, args.rounds, work)
                print(
                    f"| {r.family} | {r.size} | {r.recipe} | {r.variant} | {r.fused_tok_s:.0f} | "
                    f"{r.unfused_tok_s:.0f} | {r.ratio:.2f}× | {'yes' if r.same_tokens else 'no'} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
