"""The learned backend's network: a small U-Net (four scales, two 3 x 3
convolutions per block, batch norm, bilinear upsampling), RGB in, three class
logits out (background, nucleus interior, nucleus boundary). Needs PyTorch;
the worker imports it only to run the model on a GPU or to train it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from worker_service.backends.learned import WIDTHS

CLASSES = 3


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
        nn.Conv2d(outputs, outputs, 3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):  # type: ignore[misc]
    """Input: (N, 3, H, W) float RGB in [0, 1], H and W multiples of
    ``learned.MULTIPLE``. Output: (N, 3, H, W) logits."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        self.down = nn.ModuleList()
        previous = 3
        for width in widths:
            self.down.append(_block(previous, width))
            previous = width
        self.up = nn.ModuleList(
            _block(widths[i] + widths[i + 1], widths[i]) for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], CLASSES, 1)

    def forward(self, x: Any) -> Any:
        x = x - 0.5
        skips = []
        for index, block in enumerate(self.down):
            if index:
                x = nn.functional.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = nn.functional.interpolate(
                x, size=skip.shape[-2:], mode="bilinear", align_corners=False
            )
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)
