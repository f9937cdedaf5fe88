"""The digits CNN as a standalone factory, so the CLI can export it as ``tests/digits_cnn_factory.py:make_model``.

Input: float32 ``(N, 1, 8, 8)`` images scaled to [0, 1] (sklearn's ``load_digits`` divided by 16).
Output: ``(N, 10)`` logits. Weights are a ``torch.save(state_dict)`` file written by ``toy_models``.
"""

from __future__ import annotations

import torch
from torch import nn


class DigitsConvNet(nn.Module):
    """Two 3x3 conv layers, one 2x2 max-pool, two linear layers: 38,282 parameters."""

    def __init__(self, channels: int = 16, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * channels * 4 * 4, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def make_model() -> DigitsConvNet:
    """A fresh, untrained model in eval mode; load the trained ``state_dict`` into it."""
    return DigitsConvNet().eval()
