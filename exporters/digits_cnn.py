"""The demo's digits CNN as a standalone factory, exportable as ``digits_cnn.py:make_model`` (``make demo`` copies
this file to ``out/digits_cnn.py`` so the README's command line works from the output folder alone).

Input: float32 ``(N, 1, 8, 8)`` images in [0, 1]. Output: ``(N, 10)`` logits. The weights file is a
``torch.save(state_dict)`` written by :func:`exporters.demo_models.train_digits_cnn`.
This file imports only torch: a factory file is loaded by path, outside any package.
"""

from __future__ import annotations

import torch
from torch import nn


class DigitsConvNet(nn.Module):
    """Two 3x3 conv layers, one 2x2 max-pool, two linear layers: 38,282 parameters."""

    # The ONNX names and the dynamic batch axis ``edgekit export file.py:factory`` picks up.
    edgekit_io = {
        "input_names": ["x"],
        "output_names": ["logits"],
        "dynamic_axes": {"x": {0: "batch"}, "logits": {0: "batch"}},
    }

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
