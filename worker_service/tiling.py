"""Tile geometry and pyramid level choice: pure arithmetic, no OpenSlide.

Tiles overlap by ``overlap`` pixels. Each tile has a *core*: the tile minus half
the overlap on every side it shares with a neighbour. The cores partition the
image exactly, so an object is owned by the one tile whose core holds its
centroid: nothing is lost or counted twice at a seam."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    col: int
    row: int
    x: int
    y: int
    width: int
    height: int
    core_x0: int
    core_y0: int
    core_x1: int
    core_y1: int

    def core_contains(self, cx: float, cy: float) -> bool:
        return self.core_x0 <= cx < self.core_x1 and self.core_y0 <= cy < self.core_y1


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    count = math.ceil((length - tile) / stride) + 1
    return [min(i * stride, length - tile) for i in range(count)]


def _cores(starts: Sequence[int], tile: int, length: int) -> list[tuple[int, int]]:
    """Core interval of each tile along one axis: the midpoint of each overlap."""
    cores = []
    for i, start in enumerate(starts):
        end = min(start + tile, length)
        lo = 0 if i == 0 else (start + min(starts[i - 1] + tile, length)) // 2
        hi = length if i == len(starts) - 1 else (starts[i + 1] + end) // 2
        cores.append((lo, hi))
    return cores


def tile_grid(width: int, height: int, tile_size: int = 512, overlap: int = 64) -> list[Tile]:
    """Tiles covering a ``width`` x ``height`` image, row by row. The last tile of a
    row or column is shifted back to stay inside the image (never padded)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if tile_size <= 0 or overlap < 0 or overlap >= tile_size:
        raise ValueError(f"need 0 <= overlap < tile_size, got tile {tile_size}, overlap {overlap}")
    stride = tile_size - overlap
    xs, ys = _starts(width, tile_size, stride), _starts(height, tile_size, stride)
    x_cores, y_cores = _cores(xs, tile_size, width), _cores(ys, tile_size, height)
    return [
        Tile(
            col=c,
            row=r,
            x=x,
            y=y,
            width=min(tile_size, width - x),
            height=min(tile_size, height - y),
            core_x0=x_cores[c][0],
            core_y0=y_cores[r][0],
            core_x1=x_cores[c][1],
            core_y1=y_cores[r][1],
        )
        for r, y in enumerate(ys)
        for c, x in enumerate(xs)
    ]


PLAUSIBLE_MPP = (0.01, 100.0)
"""Microscope pixel sizes in um/px. A TIFF that only carries a screen
resolution (72 dpi is 352.8 um/px) has no real pixel size."""


def usable_mpp(mpp: float | None) -> float | None:
    if mpp is None or not PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]:
        return None
    return mpp


def choose_level(
    level_downsamples: Sequence[float], base_mpp: float | None, target_mpp: float
) -> int:
    """The pyramid level whose pixel size is closest to ``target_mpp`` (compared
    on a log scale); level 0 when the slide has no pixel size."""
    if not base_mpp or base_mpp <= 0 or target_mpp <= 0 or not level_downsamples:
        return 0
    return min(
        range(len(level_downsamples)),
        key=lambda i: (abs(math.log(base_mpp * level_downsamples[i] / target_mpp)), i),
    )
