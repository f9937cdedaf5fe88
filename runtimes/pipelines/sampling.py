"""Choosing the next token from a logits row: greedy, temperature, top-k, top-p, repetition penalty.

The order follows transformers' ``generate`` so a seeded run means the same thing in both: repetition
penalty on the raw logits, then (when sampling) temperature, top-k, top-p, and a draw. ``temperature == 0``
is greedy (argmax after the penalty), as in transformers with ``do_sample=False``. A seed makes the draws
reproducible: one ``numpy.random.Generator`` per generation, one uniform draw per token.

Numerics stay finite whatever the options: scores are float64, shifted so the best is 0 *before* the
division by the temperature (so 1e-310 gives 0 and -inf, not inf - inf = NaN, which made every draw the last
vocabulary id), NaN logits never win, +inf logits (a repetition penalty near 0 overflows) are ranked by
their raw logits, and a temperature below ``GREEDY_BELOW`` is greedy: its distribution already is a point mass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

# Below this temperature, softmax(logits / T) puts all its mass on the argmax for any logits gap above
# ~1e-4 (exp(-1e-4 / 1e-6) = exp(-100)): sampling would be greedy with extra rounding, so it is greedy.
GREEDY_BELOW = 1e-6


class Sampler:
    __slots__ = ("_penalized", "_seen", "greedy", "penalty", "rng", "temperature", "top_k", "top_p")

    def __init__(
        self,
        *,
        vocab_size: int,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
    ) -> None:
        self.temperature = float(temperature)
        self.greedy = self.temperature < GREEDY_BELOW
        self.top_k = int(top_k)
        self.top_p = float(top_p)
        self.penalty = float(repetition_penalty)
        # Greedy decoding never draws: no generator, so a greedy app never imports numpy.random (6.6 MB resident
        # on first import, measured here: more than the whole tiny Llama's weights and KV cache).
        self.rng = None if self.greedy else np.random.default_rng(seed)
        self._penalized = self.penalty != 1.0
        # Tokens seen so far (prompt and output), as a boolean mask: O(1) per token, no set -> array copies.
        self._seen = np.zeros(max(1, vocab_size), dtype=bool) if self._penalized else None

    def observe(self, token_ids: Iterable[int]) -> None:
        if self._seen is not None:
            ids = np.fromiter(token_ids, dtype=np.int64)
            ids = ids[(ids >= 0) & (ids < self._seen.size)]
            self._seen[ids] = True

    def __call__(self, logits: np.ndarray) -> int:
        """Pick a token from a 1-D logits row (any float dtype); records it for the repetition penalty."""
        if self.greedy and not self._penalized:
            # The common case in one argmax on the row as it is: float64 is exact for any float dtype, so the
            # first maximum is the same; argmax returns the first NaN when there is one, and then (and for
            # +inf) the general path below decides.
            token = int(logits.argmax())  # the method: no dispatch through np.argmax's wrapper
            if math.isfinite(logits[token]):
                return token
        # float64 and NaN -> -inf: a penalty of 1e-30 overflows float32, and argmax would pick a NaN.
        raw = np.nan_to_num(logits.astype(np.float64), nan=-np.inf, posinf=np.inf, neginf=-np.inf)
        logits = raw
        if self._penalized:
            logits = raw.copy()
            seen = self._seen[: logits.shape[0]]  # type: ignore[index]
            picked = logits[seen]
            with np.errstate(over="ignore"):
                logits[seen] = np.where(picked > 0, picked / self.penalty, picked * self.penalty)
        if np.max(logits) == np.inf:
            logits = _infinite_candidates(logits, raw)
        token = int(np.argmax(logits)) if self.greedy else self._sample(logits)
        if self._seen is not None and token < self._seen.size:
            self._seen[token] = True
        return token

    def _sample(self, logits: np.ndarray) -> int:
        scores = _shifted(logits) / self.temperature
        ids: np.ndarray | None = None
        if 0 < self.top_k < scores.shape[0]:
            ids = np.argpartition(scores, -self.top_k)[-self.top_k :]
            scores = scores[ids]
        if self.top_p < 1.0:
            order = np.argsort(-scores, kind="stable")
            scores = scores[order]
            ids = order if ids is None else ids[order]
            probs = np.exp(scores - scores[0])
            probs /= probs.sum()
            # Keep the smallest head whose mass reaches top_p (the token that crosses it stays, as in HF).
            keep = max(1, int(np.searchsorted(np.cumsum(probs), self.top_p, side="left")) + 1)
            probs = probs[:keep]
            ids = ids[:keep]
        else:
            probs = np.exp(scores - scores.max())
        cdf = np.cumsum(probs)
        j = int(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"))  # type: ignore[union-attr]
        j = min(j, cdf.shape[0] - 1)
        return int(ids[j]) if ids is not None else j


def _shifted(logits: np.ndarray) -> np.ndarray:
    """Logits with the best at 0 and the rest <= 0 (or -inf): finite under any division by a temperature.

    (+inf logits were resolved by :func:`_infinite_candidates` before.)
    """
    top = float(np.max(logits))
    if top == -np.inf:  # every logit is -inf or NaN: no preference left, draw uniformly
        return np.zeros_like(logits)
    return logits - top


def _infinite_candidates(logits: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Scores (0 or -inf) for the +inf logits: those that overflowed under a penalty near 0, or were +inf.

    A finite boost keeps their order, so the candidates with the best raw logit win (ties share the draw);
    raw +inf logits tie with each other.
    """
    ranked = np.where(logits == np.inf, raw, -np.inf)
    return np.where(ranked == ranked.max(), 0.0, -np.inf)
