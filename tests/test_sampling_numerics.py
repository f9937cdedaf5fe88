"""Sampling stays finite and means what it says: checked against a plain reference implementation.

The reference computes softmax(logits / T) over the top-k / top-p set in the obvious way; the sampler's seeded
draws must match its probabilities (binomial tolerance, fixed seeds), vanishing temperatures must be greedy,
and hostile numbers (T = 1e-310, a repetition penalty of 1e-300 or 1e-320, NaN and inf logits) must never
turn into "the last vocabulary id forever".
"""

from __future__ import annotations

import numpy as np
import pytest

from runtimes.pipelines.sampling import GREEDY_BELOW, Sampler

VOCAB = 12
DRAWS = 4000


def _logits(seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(scale=1.5, size=VOCAB).astype(np.float32)
    x[VOCAB - 1] = x.min() - 1.0  # the last id is the least likely: picking it is the old NaN bug
    return x


def reference_probs(logits: np.ndarray, *, temperature: float, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    scores = logits.astype(np.float64) / temperature
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    keep = np.ones(VOCAB, bool)
    if 0 < top_k < VOCAB:
        keep[:] = False
        keep[np.argsort(-probs, kind="stable")[:top_k]] = True
    probs = np.where(keep, probs, 0.0)
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cum = np.cumsum(probs[order])
        n = int(np.argmax(cum >= top_p)) + 1  # the token that crosses top_p stays
        mask = np.zeros(VOCAB, bool)
        mask[order[:n]] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return probs


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(1.0, 0, 1.0), (0.5, 0, 1.0), (2.0, 0, 1.0), (1.0, 3, 1.0), (1.0, 0, 0.8), (0.7, 5, 0.9), (1e-3, 0, 1.0)],
)
def test_draws_follow_the_reference_distribution(temperature: float, top_k: int, top_p: float) -> None:
    logits = _logits()
    want = reference_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    sampler = Sampler(vocab_size=VOCAB, temperature=temperature, top_k=top_k, top_p=top_p, seed=123)
    counts = np.bincount([sampler(logits) for _ in range(DRAWS)], minlength=VOCAB)
    got = counts / DRAWS
    tolerance = 5 * np.sqrt(want * (1 - want) / DRAWS) + 2e-3
    assert np.all(np.abs(got - want) <= tolerance), (got.round(3), want.round(3))
    assert np.all(counts[want == 0] == 0)  # filtered tokens are never drawn


@pytest.mark.parametrize("temperature", [1e-310, 5e-324, 1e-300, 1e-12, GREEDY_BELOW / 2])
def test_vanishing_temperature_is_greedy(temperature: float) -> None:
    for seed in range(5):
        logits = _logits(seed)
        picks = {Sampler(vocab_size=VOCAB, temperature=temperature, seed=s)(logits) for s in range(20)}
        assert picks == {int(np.argmax(logits))}


def test_tiny_temperature_above_the_greedy_cut_is_finite() -> None:
    logits = _logits()
    sampler = Sampler(vocab_size=VOCAB, temperature=GREEDY_BELOW * 2, seed=0)
    assert {sampler(logits) for _ in range(50)} == {int(np.argmax(logits))}


@pytest.mark.parametrize("penalty", [1e-300, 1e-320, 1e-30])
def test_tiny_repetition_penalty_stays_finite(penalty: float) -> None:
    logits = _logits()
    seen = [i for i in range(VOCAB - 1) if logits[i] > 0][:3]
    assert seen, "the fixture needs positive logits"
    for temperature in (0.0, 1.0):
        sampler = Sampler(vocab_size=VOCAB, temperature=temperature, repetition_penalty=penalty, seed=7)
        sampler.observe(seen)
        picks = {sampler(logits) for _ in range(30)}
        # A penalty below 1 boosts seen positive logits enormously: the pick is among them, never the last id.
        assert picks <= set(seen) and VOCAB - 1 not in picks
        # Boosts keep their order (even where they overflow to inf): the best seen token wins.
        assert picks == {max(seen, key=lambda i: logits[i])}


def test_nan_and_inf_logits() -> None:
    logits = _logits()
    logits[2] = np.nan
    assert Sampler(vocab_size=VOCAB)(logits) != 2
    assert 2 not in {Sampler(vocab_size=VOCAB, temperature=1.0, seed=s)(logits) for s in range(200)}
    inf = _logits()
    inf[[4, 7]] = np.inf
    assert {Sampler(vocab_size=VOCAB, temperature=1.0, seed=s)(inf) for s in range(200)} == {4, 7}
    assert Sampler(vocab_size=VOCAB)(inf) == 4
    all_nan = np.full(VOCAB, np.nan, np.float32)
    picks = {Sampler(vocab_size=VOCAB, temperature=1.0, seed=s)(all_nan) for s in range(200)}
    assert picks <= set(range(VOCAB)) and len(picks) > 1  # no preference left: a uniform draw


def test_filter_edges() -> None:
    logits = _logits()
    best = int(np.argmax(logits))
    assert {Sampler(vocab_size=VOCAB, temperature=1.0, top_k=1, seed=s)(logits) for s in range(50)} == {best}
    assert {Sampler(vocab_size=VOCAB, temperature=1.0, top_p=1e-9, seed=s)(logits) for s in range(50)} == {best}
    # top_k >= vocab and top_p == 1 filter nothing: the same draws as no filter at all
    for kwargs in ({"top_k": VOCAB}, {"top_k": VOCAB * 10}, {"top_p": 1.0}):
        a = [Sampler(vocab_size=VOCAB, temperature=1.0, seed=s, **kwargs)(logits) for s in range(100)]
        b = [Sampler(vocab_size=VOCAB, temperature=1.0, seed=s)(logits) for s in range(100)]
        assert a == b
    half = logits.astype(np.float16)
    assert Sampler(vocab_size=VOCAB)(half) == int(np.argmax(half))


def test_greedy_sampler_holds_no_generator_and_seeded_draws_repeat() -> None:
    """Greedy decoding never draws, so it builds no numpy Generator (importing numpy.random costs 6.6 MB)."""
    logits = np.array([0.1, 2.0, 1.5, -1.0], dtype=np.float32)
    greedy = Sampler(vocab_size=4, repetition_penalty=2.0)
    assert greedy.rng is None and [greedy(logits) for _ in range(3)] == [1, 2, 1]  # 2.0 -> 1.0 < 1.5
    draws = [[Sampler(vocab_size=4, temperature=1.0, seed=7)(logits) for _ in range(20)] for _ in range(2)]
    assert draws[0] == draws[1]
