"""The learned backend's network: a light U-Net, RGB in, four maps out: three
class logits (background, nucleus interior, nucleus boundary) and the logit
of the distance to the nucleus edge (``analysis/instances.py``). Needs
PyTorch; the worker imports it only to run the model on a GPU or to train it.

Light where the pixels are many: one convolution at full resolution, two
per block at the coarser scales (where they are cheap), and a decoder that
narrows each coarse map with a 1 x 1 convolution *before* upsampling it,
adds the skip instead of concatenating it and refines with one 3 x 3
convolution. About 17,000 multiply-adds per pixel against the plain U-Net's
41,000 at the same widths, for the same receptive field (see the model card
for what it cost in quality: nothing measurable)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from worker_service.analysis.instances import CLASSES
from worker_service.backends.learned import SPACE_TO_DEPTH, WIDTHS

OUTPUTS = CLASSES + 1  # the class logits and the distance logit


def _conv(inputs: int, outputs: int, size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, size, padding=size // 2, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):  # type: ignore[misc]
    """Input: (N, 3, H, W) float RGB in [0, 1], H and W multiples of
    ``learned.MULTIPLE``. Output: (N, 4, H, W) logits.

    ``space_to_depth`` s > 1: each s x s block of pixels becomes one pixel of
    3 s^2 channels on the way in, and each output pixel of 3 s^2 logits an
    s x s block on the way out (pixel (un)shuffle), so the network runs on
    s^2 times fewer pixels without losing any of the input's."""

    def __init__(
        self, widths: tuple[int, ...] = WIDTHS, space_to_depth: int = SPACE_TO_DEPTH
    ) -> None:
        super().__init__()
        self.space_to_depth = space_to_depth
        block = space_to_depth * space_to_depth
        self.stem = _conv(3 * block, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(_conv(widths[i - 1], widths[i]), _conv(widths[i], widths[i]))
            for i in range(1, len(widths))
        )
        coarse_to_fine = list(reversed(range(1, len(widths))))
        self.narrow = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(widths[i], widths[i - 1], 1, bias=False), nn.BatchNorm2d(widths[i - 1])
            )
            for i in coarse_to_fine
        )
        self.refine = nn.ModuleList(_conv(widths[i - 1], widths[i - 1]) for i in coarse_to_fine)
        self.head = nn.Conv2d(widths[0], OUTPUTS * block, 1)

    def forward(self, x: Any) -> Any:
        x = x - 0.5
        if self.space_to_depth > 1:
            x = nn.functional.pixel_unshuffle(x, self.space_to_depth)
        x = self.stem(x)
        skips = [x]
        for block in self.down:
            x = block(nn.functional.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for narrow, refine in zip(self.narrow, self.refine, strict=True):
            skip = skips.pop()
            x = nn.functional.interpolate(
                narrow(x), size=skip.shape[-2:], mode="bilinear", align_corners=False
            )
            x = refine(torch.relu(x + skip))
        x = self.head(x)
        if self.space_to_depth > 1:
            x = nn.functional.pixel_shuffle(x, self.space_to_depth)
        return x
