"""The learned backend's network: a light U-Net, RGB in, four maps out: three
class logits (background, nucleus interior, nucleus boundary) and the logit
of the distance to the nucleus edge (``analysis/instances.py``). Needs
PyTorch; the worker imports it only to run the model on a GPU or to train it.

Light where the pixels are many: it works on 2 x 2 blocks of pixels, with
one convolution at the finest scale, two per block at the coarser ones
(where they are cheap), and a decoder that narrows each coarse map with a
1 x 1 convolution *before* upsampling it, adds the skip instead of
concatenating it and refines with one 3 x 3 convolution. About 4,900
multiply-adds per pixel, against the 41,000 of the plain U-Net first shipped
(the model card says what each step cost in quality)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from worker_service.analysis.instances import CLASSES
from worker_service.backends.learned import SPACE_TO_DEPTH, WIDTHS

OUTPUTS = CLASSES + 1  # the class logits and the distance logit
OFFSET_OUTPUTS = OUTPUTS + 2  # and the horizontal and vertical offsets


def _conv(inputs: int, outputs: int) -> nn.Sequential:
    """3 x 3 convolution ("same" padding), batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):  # type: ignore[misc]
    """``forward`` (training): (N, 3, H, W) float RGB in [0, 1], H and W
    multiples of ``learned.MULTIPLE``, to (N, 4, H, W) logits. ``blocks``
    (the worker's engines, the exported graph): ``learned.pixel_blocks``,
    ``learned.centred``, (N, H/s, W/s, 3 s^2), to (N, H/s, W/s, 4 s^2)
    logits of the same blocks, channels last (``learned.pixels_from_blocks``).

    ``space_to_depth`` s > 1: the network works on s x s blocks of pixels,
    so on s^2 times fewer positions without losing any of the input's
    pixels: its first convolution, over each block's 3 s^2 values, sees the
    same pixels as an (s k) x (s k) convolution of stride s over the image.
    Each output position holds the 4 logits of its s^2 pixels. The blocks are
    made and undone outside the graph (on bytes, and as runs of floats), and
    both ends stay channels last, so ONNX Runtime's int8 graph moves no data
    between layouts (each such move, and a pixel shuffle inside the graph,
    cost it more than a convolution)."""

    def __init__(
        self,
        widths: tuple[int, ...] = WIDTHS,
        space_to_depth: int = SPACE_TO_DEPTH,
        outputs: int = OUTPUTS,
    ) -> None:
        super().__init__()
        self.space_to_depth = s = space_to_depth
        self.outputs = outputs
        self.stem = _conv(3 * s * s, widths[0])
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
        self.head = nn.Conv2d(widths[0], outputs * s * s, 1)

    def blocks(self, x: Any) -> Any:
        x = self.stem(x.permute(0, 3, 1, 2))
        skips = [x]
        for block in self.down:
            x = block(nn.functional.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for narrow, refine in zip(self.narrow, self.refine, strict=True):
            # A fixed factor, not the skip's size: the exported graph then reads
            # no shapes at run time; equal, as every side is a multiple of MULTIPLE.
            x = nn.functional.interpolate(
                narrow(x), scale_factor=2, mode="bilinear", align_corners=False
            )
            x = refine(torch.relu(x + skips.pop()))
        return self.head(x).permute(0, 2, 3, 1)

    def forward(self, x: Any) -> Any:
        s = self.space_to_depth
        n, _, height, width = x.shape
        # learned.pixel_blocks: (n, c, Y, i, X, j) -> (n, Y, X, i, j, c)
        blocks = (x - 0.5).reshape(n, 3, height // s, s, width // s, s).permute(0, 2, 4, 3, 5, 1)
        out = self.blocks(blocks.reshape(n, height // s, width // s, 3 * s * s))
        return nn.functional.pixel_shuffle(out.permute(0, 3, 1, 2), s)


class Blocks(nn.Module):  # type: ignore[misc]
    """``UNet.blocks`` as a module's forward, for the ONNX export."""

    def __init__(self, model: UNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Any) -> Any:
        return self.model.blocks(x)
