"""Small models ``make demo`` trains in code, offline, with fixed seeds, so every README example has a model.

Each builder trains to a quality target with a step cap (training trajectories differ between CPUs, so a
fixed step count would not give one quality everywhere) and writes a Hugging Face model directory or a
state-dict file that the exporters take like any user's model.

    build_demo_lm            a ~107k-parameter Llama (GQA) that learned 2-digit addition: "07+45=" -> "52"
    build_colour_classifier  a tiny ViT image classifier: which of red / green / blue dominates a picture
    train_digits_cnn         ``exporters/digits_cnn.py``'s CNN on synthetic 8x8 digit glyphs
    write_cat_png            a generated 64x64 picture (an orange cat's face) for ``edgekit run --image``

The LM's tokenizer is byte-level, built with the ``tokenizers`` library (ids: 0 ``<pad>``, 1 ``<s>``,
2 ``</s>``, 3 + b for the byte b), so any UTF-8 prompt works, though the model only knows addition.
Heavy imports (torch, transformers, tokenizers, PIL) stay inside the functions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")
BYTE_OFFSET = 3
BYTE_VOCAB_SIZE = BYTE_OFFSET + 256
INFO_FILE = "demo_model.json"
COLOUR_LABELS = ("red", "green", "blue")

Log = Callable[[str], None]


def _no_log(_: str) -> None:
    return None


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """One thread: on a small shared host it trains these tiny models several times faster than two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------- byte tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, the alphabet of tokenizers' ByteLevel."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def build_byte_tokenizer() -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` without merges: one token per byte, ``<s>`` prepended."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    b2u = bytes_to_unicode()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({b2u[b]: BYTE_OFFSET + b for b in range(256)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", BOS_ID)]
    )
    return tok


def save_byte_tokenizer(out_dir: Path, *, max_length: int) -> None:
    """tokenizer.json plus the config files ``AutoTokenizer`` reads."""
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(
        tokenizer_object=build_byte_tokenizer(),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"],
    ).save_pretrained(out_dir)


# ----------------------------------------------------------------------------------------- addition LM


@dataclass(frozen=True, kw_only=True)
class DemoLMSpec:
    hidden: int = 64
    layers: int = 2
    heads: int = 4  # head size 16: ORT's GroupQueryAttention CPU kernel needs a multiple of 16
    kv_heads: int = 2
    intermediate: int = 128
    max_positions: int = 512  # rotary positions cost nothing: room for long prompts and max_tokens
    seed: int = 0
    max_steps: int = 1200  # the cap; training stops as soon as the held-out target is met
    eval_every: int = 50
    min_exact_match: float = 0.95
    batch_size: int = 128  # half 256's cost per step; met the target in 400 steps where 256 took 450
    lr: float = 5e-3
    warmup_steps: int = 100
    eval_problems: int = 200


@dataclass(frozen=True, kw_only=True)
class DemoModel:
    path: Path
    num_parameters: int
    metric: str
    score: float  # on held-out data the model never trained on
    steps: int
    train_seconds: float


def addition_pairs(seed: int = 1234, held_out: int = 1000) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """All 10,000 two-digit pairs split into (train, held-out); the held-out ones are never trained on."""
    pairs = [(a, b) for a in range(100) for b in range(100)]
    held = set(random.Random(seed).sample(pairs, held_out))
    return [p for p in pairs if p not in held], sorted(held)


def addition_prompt(a: int, b: int) -> str:
    """The task's prompt format: operands zero-padded to two digits; the answer is the plain sum."""
    return f"{a:02d}+{b:02d}="


def _addition_batch(pairs: list[tuple[int, int]]) -> tuple[Any, Any]:
    """Right-padded ``<s>07+45=52</s>`` ids, and labels that score only the answer and ``</s>``."""
    import torch

    rows = []
    for a, b in pairs:
        prompt = [BOS_ID] + [BYTE_OFFSET + c for c in addition_prompt(a, b).encode()]
        target = [BYTE_OFFSET + c for c in str(a + b).encode()] + [EOS_ID]
        rows.append((prompt + target, [-100] * len(prompt) + target))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([r + [PAD_ID] * (width - len(r)) for r, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    return ids, labels


def _exact_match(model: Any, ids: Any, labels: Any) -> float:
    """Greedy exact match in one batched pass: greedy decoding reproduces answer + ``</s>`` exactly when the
    argmax at every scored position is the target (teacher forcing then equals the model's own prefix)."""
    import torch

    with torch.no_grad():
        pred = model(input_ids=ids).logits.argmax(-1)
    # Position t predicts token t + 1.
    target, guess = labels[:, 1:], pred[:, :-1]
    ok = (guess == target) | (target == -100)
    return int(ok.all(dim=1).sum()) / ok.shape[0]  # a count over a count: exact, not a float32 mean


def _lm_config(spec: DemoLMSpec) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=BYTE_VOCAB_SIZE,
        hidden_size=spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        intermediate_size=spec.intermediate,
        max_position_embeddings=spec.max_positions,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )


def _train_lm(model: Any, spec: DemoLMSpec, log: Log) -> tuple[int, float]:
    """AdamW with warm-up and cosine decay over the cap; stops at the first evaluation meeting the target."""
    import torch

    train, held = addition_pairs()
    ids, labels = _addition_batch(train)
    eval_ids, eval_labels = _addition_batch(random.Random(spec.seed).sample(held, spec.eval_problems))
    gen = torch.Generator().manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_factor(step: int) -> float:
        warmup = min(1.0, (step + 1) / spec.warmup_steps)
        return warmup * max(0.05, 0.5 * (1 + math.cos(math.pi * step / spec.max_steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    score = 0.0
    for step in range(1, spec.max_steps + 1):
        model.train()
        idx = torch.randint(0, len(ids), (spec.batch_size,), generator=gen)
        # Right padding after </s> never reaches earlier positions of a causal model: no attention mask.
        loss = model(input_ids=ids[idx], labels=labels[idx]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % spec.eval_every == 0 or step == spec.max_steps:
            model.eval()
            score = _exact_match(model, eval_ids, eval_labels)
            log(f"step {step}: loss {loss.item():.3f}, held-out exact match {score:.0%}")
            if score >= spec.min_exact_match:
                return step, score
    return spec.max_steps, score


def build_demo_lm(out_dir: str | Path, *, spec: DemoLMSpec | None = None, log: Log = _no_log) -> DemoModel:
    """Train the addition Llama into ``out_dir`` (config.json, model.safetensors, tokenizer, demo_model.json).

    Raises ``RuntimeError`` if the step cap ends below the target: a demo model that cannot add is a bug.
    """
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    spec = spec or DemoLMSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_byte_tokenizer(out, max_length=spec.max_positions)
    with torch_threads(1):
        torch.manual_seed(spec.seed)
        model = LlamaForCausalLM(_lm_config(spec))
        model.generation_config = GenerationConfig(
            bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, do_sample=False, max_new_tokens=8
        )
        t0 = time.perf_counter()
        steps, score = _train_lm(model, spec, log)
        seconds = time.perf_counter() - t0
    if score < spec.min_exact_match:
        raise RuntimeError(f"the demo LM reached {score:.0%} exact match in {steps} steps, below the target")
    model.eval().save_pretrained(out, safe_serialization=True)
    result = DemoModel(
        path=out,
        num_parameters=sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        metric="held-out exact match",
        score=round(score, 4),
        steps=steps,
        train_seconds=round(seconds, 1),
    )
    _write_info(result, spec, task={"prompt_format": "{a:02d}+{b:02d}=", "answer": "{a+b}</s>"})
    return result


def _write_info(result: DemoModel, spec: Any, **extra: Any) -> None:
    data = {"spec": dataclasses.asdict(spec), **{k: v for k, v in dataclasses.asdict(result).items() if k != "path"}}
    (result.path / INFO_FILE).write_text(json.dumps({**data, **extra}, indent=2) + "\n")


def load_demo_model(path: str | Path, spec: Any) -> DemoModel | None:
    """The record of a model built earlier with ``spec``, or None (absent, or built from another spec)."""
    info = Path(path) / INFO_FILE
    try:
        data = json.loads(info.read_text())
    except (OSError, ValueError):
        return None
    if data.get("spec") != dataclasses.asdict(spec):
        return None
    fields = {f.name for f in dataclasses.fields(DemoModel)} - {"path"}
    return DemoModel(path=Path(path), **{k: data[k] for k in fields})


# ----------------------------------------------------------------------------------------- digits CNN

# 3x5 glyphs of 0-9, one string per row ("#" = ink); drawn at 2x into the 8x8 frame at random offsets.
_GLYPHS = (
    ("###", "#.#", "#.#", "#.#", "###"),
    (".#.", "##.", ".#.", ".#.", "###"),
    ("###", "..#", "###", "#..", "###"),
    ("###", "..#", ".##", "..#", "###"),
    ("#.#", "#.#", "###", "..#", "..#"),
    ("###", "#..", "###", "..#", "###"),
    ("###", "#..", "###", "#.#", "###"),
    ("###", "..#", ".#.", ".#.", ".#."),
    ("###", "#.#", "###", "#.#", "###"),
    ("###", "#.#", "###", "..#", "###"),
)


def synthetic_digits(n: int, *, seed: int = 0) -> tuple[Any, Any]:
    """``(x, y)``: ``n`` float32 ``(1, 8, 8)`` digit images in [0, 1] (glyph at a random offset, random ink,
    Gaussian noise) and their int64 labels, cycling 0-9."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, 8, 8), dtype=np.float32)
    y = np.arange(n, dtype=np.int64) % 10
    for i, label in enumerate(y):
        glyph = np.array([[c == "#" for c in row] for row in _GLYPHS[label]], dtype=np.float32)
        dy, dx = rng.integers(0, 4), rng.integers(0, 6)
        x[i, 0, dy : dy + 5, dx : dx + 3] = glyph * rng.uniform(0.6, 1.0)
    x += rng.normal(0.0, 0.08, size=x.shape).astype(np.float32)
    return np.clip(x, 0.0, 1.0), y


@dataclass(frozen=True, eq=False)
class DigitsCNN:
    model: Any  # exporters.digits_cnn.DigitsConvNet, eval mode
    x_test: Any
    y_test: Any
    accuracy: float  # PyTorch fp32 on the test images
    epochs: int


def train_digits_cnn(
    *, seed: int = 0, min_accuracy: float = 0.97, max_epochs: int = 20, log: Log = _no_log
) -> DigitsCNN:
    """Train ``exporters/digits_cnn.py``'s model until test accuracy meets ``min_accuracy`` (or the cap)."""
    import torch

    from exporters.digits_cnn import make_model

    x_tr, y_tr = synthetic_digits(2000, seed=seed)
    x_te, y_te = synthetic_digits(500, seed=seed + 1)
    with torch_threads(1):
        torch.manual_seed(seed)
        model = make_model().train()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        xt, yt, xe = torch.from_numpy(x_tr), torch.from_numpy(y_tr), torch.from_numpy(x_te)
        gen = torch.Generator().manual_seed(seed)
        accuracy = 0.0
        for epoch in range(1, max_epochs + 1):
            model.train()
            for idx in torch.randperm(len(xt), generator=gen).split(64):
                loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                accuracy = round(float((model(xe).argmax(1).numpy() == y_te).mean()), 4)
            log(f"epoch {epoch}: test accuracy {accuracy:.1%}")
            if accuracy >= min_accuracy:
                break
    if accuracy < min_accuracy:
        raise RuntimeError(f"the digits CNN reached {accuracy:.1%} test accuracy, below {min_accuracy:.0%}")
    return DigitsCNN(model=model, x_test=x_te, y_test=y_te, accuracy=accuracy, epochs=epoch)


# ----------------------------------------------------------------------------------------- colour classifier


@dataclass(frozen=True, kw_only=True)
class ColourSpec:
    image_size: int = 32
    seed: int = 0
    max_steps: int = 400
    eval_every: int = 25
    min_accuracy: float = 0.95


def colour_images(n: int, *, size: int = 32, seed: int = 0) -> tuple[Any, Any]:
    """``(uint8 (n, size, size, 3) pictures, labels)``: noisy blobs on a background; the label is the channel
    that dominates the picture (red, green, blue)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    img = rng.uniform(0, 110, size=(n, size, size, 3))
    for i, label in enumerate(y):
        img[i, :, :, label] += rng.uniform(90, 145)
        r0, c0 = rng.integers(0, size // 2, size=2)
        img[i, r0 : r0 + size // 3, c0 : c0 + size // 3, rng.integers(0, 3)] += 60  # a distracting blob
    return np.clip(img, 0, 255).astype(np.uint8), y.astype(np.int64)


def _colour_model(spec: ColourSpec) -> Any:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=spec.image_size,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=dict(enumerate(COLOUR_LABELS)),
        label2id={n: i for i, n in enumerate(COLOUR_LABELS)},
    )
    return ViTForImageClassification(config)


def build_colour_classifier(out_dir: str | Path, *, spec: ColourSpec | None = None, log: Log = _no_log) -> DemoModel:
    """A tiny ViT (32x32 RGB, patch 8) trained to tell the dominant colour, with its image processor config."""
    import torch
    from transformers import ViTImageProcessor

    spec = spec or ColourSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The package's preprocessing: resize, scale to [0, 1], normalize to [-1, 1]; training feeds the same.
    ViTImageProcessor(
        size={"height": spec.image_size, "width": spec.image_size},
        rescale_factor=1 / 255,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    ).save_pretrained(out)

    def pixels(images: Any) -> Any:
        return torch.from_numpy((images.astype("float32") / 255 - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()

    x_tr, y_tr = colour_images(2048, size=spec.image_size, seed=spec.seed)
    x_te, y_te = colour_images(300, size=spec.image_size, seed=spec.seed + 1)
    xt, yt, xe = pixels(x_tr), torch.from_numpy(y_tr), pixels(x_te)
    t0 = time.perf_counter()
    with torch_threads(1):
        torch.manual_seed(spec.seed)
        model = _colour_model(spec)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(spec.seed)
        accuracy, step = 0.0, 0
        for step in range(1, spec.max_steps + 1):
            model.train()
            idx = torch.randint(0, len(xt), (64,), generator=gen)
            loss = model(pixel_values=xt[idx], labels=yt[idx]).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % spec.eval_every == 0:
                model.eval()
                with torch.no_grad():
                    accuracy = float((model(pixel_values=xe).logits.argmax(1).numpy() == y_te).mean())
                log(f"step {step}: test accuracy {accuracy:.1%}")
                if accuracy >= spec.min_accuracy:
                    break
    if accuracy < spec.min_accuracy:
        raise RuntimeError(f"the colour classifier reached {accuracy:.1%}, below {spec.min_accuracy:.0%}")
    model.eval().save_pretrained(out, safe_serialization=True)
    result = DemoModel(
        path=out,
        num_parameters=sum(p.numel() for p in model.parameters()),
        metric="test accuracy",
        score=round(accuracy, 4),
        steps=step,
        train_seconds=round(time.perf_counter() - t0, 1),
    )
    _write_info(result, spec, labels=list(COLOUR_LABELS))
    return result


def write_cat_png(path: str | Path, size: int = 64) -> Path:
    """An orange cat's face on a pale background, drawn with Pillow (a picture to classify, offline)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (235, 225, 200))
    d = ImageDraw.Draw(img)
    s = size / 64
    orange = (225, 120, 40)
    d.polygon([(14 * s, 26 * s), (18 * s, 6 * s), (30 * s, 20 * s)], fill=orange)  # ears
    d.polygon([(50 * s, 26 * s), (46 * s, 6 * s), (34 * s, 20 * s)], fill=orange)
    d.ellipse([10 * s, 14 * s, 54 * s, 56 * s], fill=orange)  # head
    for x in (22, 42):
        d.ellipse([(x - 4) * s, 28 * s, (x + 4) * s, 36 * s], fill=(90, 160, 60))  # eyes
        d.ellipse([(x - 1) * s, 29 * s, (x + 1) * s, 35 * s], fill=(20, 20, 20))
    d.polygon([(29 * s, 40 * s), (35 * s, 40 * s), (32 * s, 44 * s)], fill=(240, 140, 150))  # nose
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out
