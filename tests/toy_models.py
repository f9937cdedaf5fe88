"""Tiny models built in code, with fixed seeds, for tests and benchmarks. Nothing here touches the network.

Builders
    byte_tokenizer_json / save_byte_tokenizer   byte-level BPE tokenizer, one token per byte
    build_tiny_causal_lm / cached_tiny_lm       Llama (GQA) or GPT-2 trained on 2-digit addition
    build_random_llama / cached_random_llama    untrained ~32M-parameter Llama for benchmarks
    train_digits_cnn / trained_digits_cnn       small CNN on sklearn's 8x8 digits (the latter once per process)
    tiny_bert_classifier                        random BertForSequenceClassification + WordPiece tokenizer
    tiny_vit_image_classifier                   random ViTForImageClassification + ViTImageProcessor config
    tiny_wav2vec2_audio_classifier              random Wav2Vec2ForSequenceClassification + feature extractor

Byte tokenizer ids (``BYTE_VOCAB_SIZE`` = 259)::

    0 <pad>    1 <s> (bos)    2 </s> (eos)    3 + b  the byte b, for b in 0..255

The tokenizer prepends ``<s>`` to every encoded text (a template post-processor, so plain ``tokenizers`` and
``AutoTokenizer`` agree). A larger vocabulary (``byte_tokenizer_json(vocab_size=8192)``) keeps those ids and
appends BPE merges of printable-ASCII byte pairs, so any UTF-8 text still round-trips.

Addition task: the prompt is ``"07+45="`` (operands zero-padded to two digits), the answer is the plain sum
(``"52"``), and a training sequence is ``<s>07+45=52</s>``. 1000 of the 10000 pairs are held out; the
model never trains on them and ``addition_problems`` draws only from them. Of the other 9000, 500 are a dev set
(``dev_problems``), also never trained on, that decides when training stops.

Training to a target: the same seed follows different trajectories on AVX2 and AVX-512 kernels, so a fixed step
count reaches different accuracies on different CPUs (a tiny GPT-2 reached 0.90 exact match on an AVX-512 host
where an AVX2 host reached 0.98). Training therefore runs until the dev-set exact match reaches
``TinyLMSpec.target_exact_match``, checked every ``eval_every`` steps, and fails loudly at ``max_steps``.

Cached builds live in ``$EDGEKIT_TEST_CACHE`` or ``<repo>/.cache/toy_models/``, one directory per builder
config, named by a hash of the config, ``TOY_MODELS_VERSION`` and the torch/transformers versions. Bump
``TOY_MODELS_VERSION`` whenever a builder's output changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from torch import nn

# One byte alphabet and one training-thread policy for the product's demo models and the tests' toy models.
from exporters.demo_models import bytes_to_unicode, torch_threads

if __package__:  # imported as tests.toy_models
    from .digits_cnn_factory import DigitsConvNet, make_model
else:  # imported as toy_models, with tests/ on sys.path (pytest's default rootdir import)
    from digits_cnn_factory import DigitsConvNet, make_model

TOY_MODELS_VERSION = "3"  # 2: trained to a dev-set target with a step cap; 3: batch 128, held-out score batched
REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_ENV = "EDGEKIT_TEST_CACHE"

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN)
BYTE_OFFSET = 3
BYTE_VOCAB_SIZE = BYTE_OFFSET + 256

Arch = Literal["llama", "gpt2"]


# --------------------------------------------------------------------------------------------------------------
# Byte-level tokenizer
# --------------------------------------------------------------------------------------------------------------


# Printable ASCII in rough order of frequency in English text; merges pair up its prefix first.
_MERGE_ALPHABET = "etaoinshrdlcumwfgypbvkjxqz ETAOINSHRDLCUMWFGYPBVKJXQZ0123456789.,'\"-:;!?()/&%$#@*+=<>[]{}_|\\^`~"
MAX_BYTE_BPE_VOCAB = BYTE_VOCAB_SIZE + len(_MERGE_ALPHABET) ** 2


def _pair_merges(count: int) -> list[tuple[str, str]]:
    """``count`` byte-pair merges over ``_MERGE_ALPHABET``, every pair of its first k characters before the next."""
    b2u = bytes_to_unicode()
    chars = [b2u[ord(c)] for c in _MERGE_ALPHABET]
    pairs: list[tuple[str, str]] = []
    for k in range(len(chars)):
        pairs.extend((chars[i], chars[k]) for i in range(k))
        pairs.extend((chars[k], chars[j]) for j in range(k + 1))
    return pairs[:count]


def build_byte_tokenizer(vocab_size: int = BYTE_VOCAB_SIZE) -> Tokenizer:
    """A byte-level BPE ``Tokenizer``: 3 specials, 256 byte tokens and ``vocab_size - 259`` pair merges."""
    if not BYTE_VOCAB_SIZE <= vocab_size <= MAX_BYTE_BPE_VOCAB:
        raise ValueError(f"vocab_size must be in [{BYTE_VOCAB_SIZE}, {MAX_BYTE_BPE_VOCAB}], got {vocab_size}")
    b2u = bytes_to_unicode()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({b2u[b]: BYTE_OFFSET + b for b in range(256)})
    merges = _pair_merges(vocab_size - BYTE_VOCAB_SIZE)
    for left, right in merges:
        vocab[left + right] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=vocab_size > BYTE_VOCAB_SIZE)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, BOS_ID)]
    )
    if tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"built a vocabulary of {tok.get_vocab_size()} tokens, expected {vocab_size}")
    return tok


def byte_tokenizer_json(vocab_size: int = BYTE_VOCAB_SIZE) -> str:
    """The ``tokenizer.json`` text of :func:`build_byte_tokenizer`."""
    return build_byte_tokenizer(vocab_size).to_str()


def save_byte_tokenizer(out_dir: str | Path, vocab_size: int = BYTE_VOCAB_SIZE, *, max_length: int = 64) -> Path:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json that ``AutoTokenizer`` loads."""
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_byte_tokenizer(vocab_size),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
    )
    fast.save_pretrained(out)
    return out


# --------------------------------------------------------------------------------------------------------------
# The addition task
# --------------------------------------------------------------------------------------------------------------

HELDOUT_POOL_SIZE = 1000
_HELDOUT_SEED = 1234


@dataclass(frozen=True)
class AdditionProblem:
    a: int
    b: int

    @property
    def prompt(self) -> str:
        return f"{self.a:02d}+{self.b:02d}="

    @property
    def answer(self) -> str:
        return str(self.a + self.b)


def _all_pairs() -> list[tuple[int, int]]:
    return [(a, b) for a in range(100) for b in range(100)]


def _heldout_pool() -> list[AdditionProblem]:
    pairs = random.Random(_HELDOUT_SEED).sample(_all_pairs(), HELDOUT_POOL_SIZE)
    return [AdditionProblem(a, b) for a, b in pairs]


def addition_problems(n: int = 200, seed: int = 0) -> tuple[AdditionProblem, ...]:
    """``n`` distinct problems from the held-out pool (never trained on), in a seed-determined order."""
    if not 0 < n <= HELDOUT_POOL_SIZE:
        raise ValueError(f"n must be in [1, {HELDOUT_POOL_SIZE}], got {n}")
    return tuple(random.Random(seed).sample(_heldout_pool(), n))


DEV_SIZE = 500
_DEV_SEED = 4321


def _outside_heldout() -> list[AdditionProblem]:
    held = set(_heldout_pool())
    return [p for p in (AdditionProblem(a, b) for a, b in _all_pairs()) if p not in held]


def dev_problems() -> tuple[AdditionProblem, ...]:
    """500 problems outside the held-out pool and outside training: they decide when training has reached its target."""
    return tuple(random.Random(_DEV_SEED).sample(_outside_heldout(), DEV_SIZE))


def training_problems() -> tuple[AdditionProblem, ...]:
    """The 8500 problems the model trains on: neither held out nor in the dev set."""
    dev = set(dev_problems())
    return tuple(p for p in _outside_heldout() if p not in dev)


def addition_exact_match(generate_fn: Callable[[str], str], problems: Sequence[AdditionProblem]) -> float:
    """Fraction of problems where ``generate_fn(prompt).strip()`` equals the answer exactly.

    ``generate_fn`` maps ``"07+45="`` to the completion only (``"52"``), stopping at ``</s>``.
    """
    if not problems:
        raise ValueError("no problems to score")
    return sum(generate_fn(p.prompt).strip() == p.answer for p in problems) / len(problems)


def hf_greedy_generate_fn(model: Any, tokenizer: Any, max_new_tokens: int = 4) -> Callable[[str], str]:
    """A ``generate_fn`` for a transformers causal LM: greedy, stops at eos, returns the decoded completion."""

    def generate(prompt: str) -> str:
        enc = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    return generate


# --------------------------------------------------------------------------------------------------------------
# Caching
# --------------------------------------------------------------------------------------------------------------


def cache_root() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else REPO_ROOT / ".cache" / "toy_models"


def _cache_key(kind: str, config: dict[str, Any]) -> str:
    blob = json.dumps(
        {
            "kind": kind,
            "config": config,
            "toy_models_version": TOY_MODELS_VERSION,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so parallel test workers build a cache entry once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the atomic rename still keeps the cache consistent
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cached_build(kind: str, config: dict[str, Any], build: Callable[[Path], object]) -> Path:
    """Return ``<cache>/<kind>-<hash>``, running ``build(tmp_dir)`` and renaming it into place on a miss."""
    return build_once(cache_root() / f"{kind}-{_cache_key(kind, config)}", build)


def build_once(final: Path, build: Callable[[Path], object]) -> Path:
    """``final``, built by ``build(tmp_dir)`` (an empty directory beside it, renamed into place) unless it exists;
    parallel workers wait on a lock beside it, so only the first one builds."""
    root = final.parent
    if final.is_dir():
        return final
    with _file_lock(root / f".{final.name}.lock"):
        if final.is_dir():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=root))
        try:
            build(tmp)
            tmp.chmod(0o755)  # mkdtemp makes it 0700
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# --------------------------------------------------------------------------------------------------------------
# Tiny causal LM trained on addition
# --------------------------------------------------------------------------------------------------------------

TOY_INFO_FILE = "toy_model.json"


@dataclass(frozen=True, kw_only=True)
class TinyLMSpec:
    arch: Arch = "llama"
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2  # llama only (GQA); GPT-2 has one KV head per head
    intermediate: int = 128
    max_positions: int = 64
    trained: bool = True
    seed: int = 0
    steps: int = 1200  # length of the warmup + cosine schedule; training continues at its floor until the target
    max_steps: int = 5000  # the cap: not reaching the target by then is a build error, never a weaker model
    target_exact_match: float = 0.98  # on dev_problems (teacher-forced, equal to greedy exact match)
    eval_every: int = 50
    # Half of 256 costs half a step (~45 ms on one AVX2 core) and reaches the target in about as many steps:
    # the tiny Llama needed 700 steps at 128 against 750 at 256, GPT-2 1500 against 1400 (AVX2 EPYC, one thread).
    batch_size: int = 128
    lr: float = 5e-3
    warmup_steps: int = 100
    threads: int = 1
    eval_problems: int = 200

    def __post_init__(self) -> None:
        if self.arch not in ("llama", "gpt2"):
            raise ValueError(f"arch must be 'llama' or 'gpt2', got {self.arch!r}")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError("hidden must divide by heads, and heads by kv_heads")

    @classmethod
    def default(cls, arch: Arch, *, trained: bool = True, seed: int = 0, steps: int | None = None) -> TinyLMSpec:
        """Schedule lengths near where the target is reached (GPT-2's learned positions learn slower)."""
        default_steps = {"llama": 1200, "gpt2": 1500}[arch]
        return cls(arch=arch, trained=trained, seed=seed, steps=default_steps if steps is None else steps)


@dataclass(frozen=True)
class TinyLM:
    path: Path
    spec: TinyLMSpec
    num_parameters: int
    exact_match: float | None  # greedy (scored batched, teacher-forced), on ``eval_problems``; None when untrained
    dev_exact_match: float | None  # what stopped training (>= spec.target_exact_match); None when untrained
    steps_trained: int
    train_seconds: float  # wall clock
    train_cpu_seconds: float
    eval_problems: tuple[AdditionProblem, ...]


def _tiny_lm_config(spec: TinyLMSpec) -> transformers.PretrainedConfig:
    common = {"vocab_size": BYTE_VOCAB_SIZE, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
    if spec.arch == "llama":
        return transformers.LlamaConfig(
            hidden_size=spec.hidden,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.kv_heads,
            intermediate_size=spec.intermediate,
            max_position_embeddings=spec.max_positions,
            **common,
        )
    return transformers.GPT2Config(
        n_embd=spec.hidden,
        n_layer=spec.layers,
        n_head=spec.heads,
        n_inner=spec.intermediate,
        n_positions=spec.max_positions,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **common,
    )


def _addition_batch(problems: Sequence[AdditionProblem]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``<s>prompt answer</s>`` ids, and labels that score only the answer and ``</s>``."""
    rows: list[tuple[list[int], list[int]]] = []
    for p in problems:
        prompt = [BOS_ID] + [BYTE_OFFSET + b for b in p.prompt.encode()]
        target = [BYTE_OFFSET + b for b in p.answer.encode()] + [EOS_ID]
        rows.append((prompt + target, [-100] * len(prompt) + target))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([r + [PAD_ID] * (width - len(r)) for r, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    return ids, labels


def teacher_forced_exact_match(model: nn.Module, problems: Sequence[AdditionProblem]) -> float:
    """Share of problems whose answer and ``</s>`` are all the argmax given the true prefix, in one batch.

    That is exactly greedy exact match: greedy decoding follows the true path while every argmax is on it and
    stops at ``</s>``; one wrong argmax makes the completion differ. A batch forward is ~100x cheaper than
    generating, so training can check its target often.
    """
    ids, labels = _addition_batch(problems)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        pred = model(input_ids=ids).logits[:, :-1].argmax(-1)
    model.train(was_training)
    target = labels[:, 1:]
    scored = target != -100
    return int(((pred == target) | ~scored).all(dim=1).sum()) / len(problems)  # exact, as addition_exact_match


class TrainingTargetError(RuntimeError):
    """A toy model missed its quality target within the step cap: the builder fails rather than ship it."""


def _train_addition(model: nn.Module, spec: TinyLMSpec) -> tuple[int, float]:
    """Train until the dev set's exact match reaches the target; returns (steps, dev exact match)."""
    ids, labels = _addition_batch(training_problems())
    dev = dev_problems()
    gen = torch.Generator().manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_factor(step: int) -> float:
        warmup = min(1.0, (step + 1) / spec.warmup_steps)
        # Past the schedule's end the rate stays at its floor (the cosine would climb again).
        return warmup * max(0.05, 0.5 * (1 + math.cos(math.pi * min(step, spec.steps) / spec.steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    model.train()
    dev_exact = 0.0
    for step in range(1, spec.max_steps + 1):
        idx = torch.randint(0, len(ids), (spec.batch_size,), generator=gen)
        # Right padding after </s> never influences earlier positions of a causal model: no attention mask.
        loss = model(input_ids=ids[idx], labels=labels[idx]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % spec.eval_every == 0:
            dev_exact = teacher_forced_exact_match(model, dev)
            if dev_exact >= spec.target_exact_match:
                model.eval()
                return step, dev_exact
    raise TrainingTargetError(
        f"tiny {spec.arch} reached {dev_exact:.3f} dev exact match after {spec.max_steps} steps,"
        f" short of the target {spec.target_exact_match}; raise TinyLMSpec.max_steps or tune lr / steps"
    )


def build_tiny_causal_lm(
    out_dir: str | Path,
    arch: Arch = "llama",
    *,
    trained: bool = True,
    seed: int = 0,
    steps: int | None = None,
    spec: TinyLMSpec | None = None,
) -> TinyLM:
    """Build (and by default train) a tiny causal LM into ``out_dir`` as a transformers model directory.

    The directory holds config.json, model.safetensors, generation_config.json (greedy, eos ``</s>``), the byte
    tokenizer files and ``toy_model.json`` (spec, held-out problems, accuracy, timings).
    """
    from transformers import AutoModelForCausalLM, GenerationConfig

    spec = spec or TinyLMSpec.default(arch, trained=trained, seed=seed, steps=steps)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_byte_tokenizer(out, max_length=spec.max_positions)
    problems = addition_problems(spec.eval_problems, seed=spec.seed)

    with torch_threads(spec.threads):
        torch.manual_seed(spec.seed)
        model = AutoModelForCausalLM.from_config(_tiny_lm_config(spec))
        model.generation_config = GenerationConfig(
            bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, do_sample=False, max_new_tokens=8
        )
        wall0, cpu0 = time.perf_counter(), time.process_time()
        steps_trained, dev_exact = _train_addition(model, spec) if spec.trained else (0, None)
        train_seconds, train_cpu_seconds = time.perf_counter() - wall0, time.process_time() - cpu0
        model.eval()
        # Batched teacher forcing equals greedy exact match (tests/test_toy_models.py checks it against generate)
        # at a hundredth of the cost of generating each answer.
        exact = teacher_forced_exact_match(model, problems) if spec.trained else None

    model.save_pretrained(out, safe_serialization=True)
    info = TinyLM(
        path=out,
        spec=spec,
        num_parameters=count_parameters(model),
        exact_match=exact,
        dev_exact_match=dev_exact,
        steps_trained=steps_trained,
        train_seconds=round(train_seconds, 2),
        train_cpu_seconds=round(train_cpu_seconds, 2),
        eval_problems=problems,
    )
    _write_tiny_lm_info(info)
    return info


def _write_tiny_lm_info(info: TinyLM) -> None:
    data = {
        "builder": "tests/toy_models.py:build_tiny_causal_lm",
        "toy_models_version": TOY_MODELS_VERSION,
        "spec": dataclasses.asdict(info.spec),
        "num_parameters": info.num_parameters,
        "exact_match": info.exact_match,
        "dev_exact_match": info.dev_exact_match,
        "steps_trained": info.steps_trained,
        "train_seconds": info.train_seconds,
        "train_cpu_seconds": info.train_cpu_seconds,
        "task": {"prompt_format": "{a:02d}+{b:02d}=", "answer_format": "{a+b}", "bos": BOS_TOKEN, "eos": EOS_TOKEN},
        "eval_problems": [{"a": p.a, "b": p.b, "prompt": p.prompt, "answer": p.answer} for p in info.eval_problems],
    }
    (info.path / TOY_INFO_FILE).write_text(json.dumps(data, indent=2) + "\n")


def load_tiny_lm(path: str | Path) -> TinyLM:
    """The :class:`TinyLM` record of a directory written by :func:`build_tiny_causal_lm`."""
    root = Path(path)
    data = json.loads((root / TOY_INFO_FILE).read_text())
    return TinyLM(
        path=root,
        spec=TinyLMSpec(**data["spec"]),
        num_parameters=data["num_parameters"],
        exact_match=data["exact_match"],
        dev_exact_match=data["dev_exact_match"],
        steps_trained=data["steps_trained"],
        train_seconds=data["train_seconds"],
        train_cpu_seconds=data["train_cpu_seconds"],
        eval_problems=tuple(AdditionProblem(p["a"], p["b"]) for p in data["eval_problems"]),
    )


def cached_tiny_lm(arch: Arch = "llama", *, trained: bool = True, seed: int = 0) -> Path:
    """The directory of :func:`build_tiny_causal_lm`, built once per config into the cache."""
    spec = TinyLMSpec.default(arch, trained=trained, seed=seed)
    return _cached_build(
        f"tiny-{arch}" + ("" if trained else "-untrained"),
        dataclasses.asdict(spec),
        lambda tmp: build_tiny_causal_lm(tmp, spec=spec),
    )


# --------------------------------------------------------------------------------------------------------------
# Random ~32M-parameter Llama for benchmarks
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RandomLlamaSpec:
    hidden: int = 512
    layers: int = 8
    heads: int = 8
    kv_heads: int = 4
    intermediate: int = 1408
    vocab: int = 8192
    max_positions: int = 2048
    seed: int = 0


@dataclass(frozen=True)
class RandomLM:
    path: Path
    spec: RandomLlamaSpec
    num_parameters: int
    weight_bytes: int  # fp32 safetensors payload


def build_random_llama(
    out_dir: str | Path,
    *,
    hidden: int = 512,
    layers: int = 8,
    heads: int = 8,
    kv_heads: int = 4,
    intermediate: int = 1408,
    vocab: int = 8192,
    max_positions: int = 2048,
    seed: int = 0,
) -> RandomLM:
    """An untrained LlamaForCausalLM (default ~32.5M parameters) with a byte-level BPE tokenizer of ``vocab``."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    spec = RandomLlamaSpec(
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        intermediate=intermediate,
        vocab=vocab,
        max_positions=max_positions,
        seed=seed,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_byte_tokenizer(out, vocab_size=vocab, max_length=max_positions)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    model.save_pretrained(out, safe_serialization=True)
    n = count_parameters(model)
    return RandomLM(path=out, spec=spec, num_parameters=n, weight_bytes=4 * n)


def cached_random_llama(*, seed: int = 0) -> Path:
    spec = RandomLlamaSpec(seed=seed)
    return _cached_build(
        "random-llama", dataclasses.asdict(spec), lambda tmp: build_random_llama(tmp, **dataclasses.asdict(spec))
    )


# --------------------------------------------------------------------------------------------------------------
# Digits CNN
# --------------------------------------------------------------------------------------------------------------

DIGITS_FACTORY_FILE = Path(__file__).resolve().with_name("digits_cnn_factory.py")
DIGITS_FACTORY = f"{DIGITS_FACTORY_FILE}:make_model"
DIGITS_FACTORY_RELATIVE = "tests/digits_cnn_factory.py:make_model"


@dataclass(frozen=True, eq=False)
class DigitsCNN:
    """A trained :class:`DigitsConvNet` (eval mode) and its data, all float32 ``(N, 1, 8, 8)`` in [0, 1]."""

    model: DigitsConvNet
    x_train: np.ndarray
    y_train: np.ndarray  # int64
    x_test: np.ndarray
    y_test: np.ndarray
    test_accuracy: float  # fp32, PyTorch
    train_seconds: float
    dev_accuracy: float  # what stopped training (>= the target)
    epochs: int
    factory: str = DIGITS_FACTORY  # absolute "<path>:make_model"; DIGITS_FACTORY_RELATIVE from the repo root

    def save_weights(self, path: str | Path) -> Path:
        """``torch.save(state_dict)``: what ``make_model().load_state_dict(torch.load(path))`` expects."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), out)
        return out

    def calibration(self, n: int = 64) -> np.ndarray:
        """The first ``n`` training images, for static quantization calibration."""
        return self.x_train[:n]


def load_digits_arrays(seed: int = 0, test_size: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: stratified split of sklearn's digits, images scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    return x_tr, y_tr, x_te, y_te


DIGITS_DEV_SHARE = 0.15


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        acc = float((model(x).argmax(dim=1) == y).float().mean())
    model.train()
    return acc


def train_digits_cnn(
    seed: int = 0,
    *,
    target_accuracy: float = 0.97,
    max_epochs: int = 60,
    batch_size: int = 64,
    threads: int = 1,
) -> DigitsCNN:
    """Train the factory's model until a dev split of the training images reaches ``target_accuracy``.

    The dev split (``DIGITS_DEV_SHARE`` of the 75% training share) is never trained on and the test split is never
    looked at while training; the epoch count follows from the target, so every CPU ends at the same quality.
    """
    x_all, y_all, x_te, y_te = load_digits_arrays(seed)
    n_dev = int(len(x_all) * DIGITS_DEV_SHARE)
    x_tr, y_tr = x_all[n_dev:], y_all[n_dev:]
    x_dev, y_dev = torch.from_numpy(x_all[:n_dev]), torch.from_numpy(y_all[:n_dev])
    with torch_threads(threads):
        torch.manual_seed(seed)
        model = make_model().train()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
        gen = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        epochs = 0
        while epochs < max_epochs:
            epochs += 1
            for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
                loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            dev_acc = _accuracy(model, x_dev, y_dev)
            if dev_acc >= target_accuracy:
                break
        if dev_acc < target_accuracy:
            raise TrainingTargetError(
                f"the digits CNN reached {dev_acc:.3f} dev accuracy after {max_epochs} epochs, short of {target_accuracy}"
            )
        seconds = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            pred = model(torch.from_numpy(x_te)).argmax(dim=1).numpy()
    return DigitsCNN(
        model=model,
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        test_accuracy=float((pred == y_te).mean()),
        train_seconds=round(seconds, 2),
        dev_accuracy=dev_acc,
        epochs=epochs,
    )


@functools.cache
def trained_digits_cnn(seed: int = 0) -> DigitsCNN:
    """:func:`train_digits_cnn` at its defaults, trained once per process: several test modules use the same CNN.

    Callers only read it (export, evaluate, save weights); :func:`train_digits_cnn` itself trains afresh.
    """
    return train_digits_cnn(seed)


# --------------------------------------------------------------------------------------------------------------
# Tiny random classifiers (text, image, audio)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToyModelDir:
    path: Path
    task: str  # optimum task name
    labels: tuple[str, ...]  # by class id
    num_parameters: int


SENTIMENT_LABELS = ("negative", "positive")
IMAGE_LABELS = ("cat", "dog", "bird")
AUDIO_LABELS = ("silence", "speech", "music")

_BERT_WORDS = (  # noqa: SIM905 (a word list reads better as one string)
    "the a an is was it this that and or but not very so too i you we they movie film book food place "
    "good great excellent amazing love loved like best fun nice happy wonderful "
    "bad awful terrible boring hate hated worst poor sad horrible slow "
    "really quite plot acting story service"
).split()


def _bert_wordpiece_tokenizer() -> Tokenizer:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [*"abcdefghijklmnopqrstuvwxyz0123456789", *".,!?'-"]
    pieces = [*specials, *chars, *(f"##{c}" for c in chars if c.isalnum()), *_BERT_WORDS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(pieces))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _labels(names: Sequence[str]) -> dict[str, Any]:
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def tiny_bert_classifier(out_dir: str | Path, *, seed: int = 0) -> ToyModelDir:
    """A random 2-layer BertForSequenceClassification (negative/positive) and its WordPiece tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _bert_wordpiece_tokenizer()
    fast = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        do_lower_case=True,
        model_max_length=128,
    )
    fast.save_pretrained(out)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
        **_labels(SENTIMENT_LABELS),
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    return ToyModelDir(out, "text-classification", SENTIMENT_LABELS, count_parameters(model))


def tiny_vit_image_classifier(out_dir: str | Path, *, seed: int = 0) -> ToyModelDir:
    """A random 2-layer ViTForImageClassification on 32x32 RGB (patch 8) with a ViTImageProcessor config."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ViTImageProcessor(
        do_resize=True,
        size={"height": 32, "width": 32},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    ).save_pretrained(out)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        **_labels(IMAGE_LABELS),
    )
    torch.manual_seed(seed)
    model = ViTForImageClassification(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    return ToyModelDir(out, "image-classification", IMAGE_LABELS, count_parameters(model))


def tiny_wav2vec2_audio_classifier(out_dir: str | Path, *, seed: int = 0) -> ToyModelDir:
    """A random 2-layer Wav2Vec2ForSequenceClassification (16 kHz) with a Wav2Vec2FeatureExtractor config."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(out)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32, 32, 32),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 8, 8),
        # wav2vec2-base layout (group norm): like optimum's export, the model takes input_values only.
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=16,
        use_weighted_layer_sum=False,
        **_labels(AUDIO_LABELS),
    )
    torch.manual_seed(seed)
    model = Wav2Vec2ForSequenceClassification(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    return ToyModelDir(out, "audio-classification", AUDIO_LABELS, count_parameters(model))
