"""Tile geometry and pyramid level choice: pure arithmetic, no OpenSlide.

Tiles overlap by ``overlap`` pixels. Each tile has a *core*: the tile minus half
the overlap on every side it shares with a neighbour. The cores partition the
image exactly, so an object is owned by the one tile whose core holds its
centroid: nothing is lost or counted twice at a seam."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt


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

    def core_holds(self, points: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """Whether the core holds each (x, y) row of ``points`` (its left and
        top edges in, its right and bottom edges out: the cores partition the
        image)."""
        x, y = points[:, 0], points[:, 1]
        inside: npt.NDArray[np.bool_] = (
            (self.core_x0 <= x) & (x < self.core_x1) & (self.core_y0 <= y) & (y < self.core_y1)
        )
        return inside


def _axis_count(length: int, tile: int, stride: int) -> int:
    return 1 if length <= tile else math.ceil((length - tile) / stride) + 1


def _start(index: int, count: int, length: int, tile: int, stride: int) -> int:
    """Where tile ``index`` of ``count`` begins along one axis: the last one is
    shifted back to end at the image's edge (never padded)."""
    return 0 if count == 1 else min(index * stride, length - tile)


class TileGrid:
    """Tiles covering a ``width`` x ``height`` image, row by row, made one at a
    time as they are iterated: its size is known from arithmetic alone, so a
    job can refuse a grid that is too large before building any of it."""

    def __init__(self, width: int, height: int, tile_size: int = 512, overlap: int = 64) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        if tile_size <= 0 or overlap < 0 or overlap >= tile_size:
            raise ValueError(
                f"need 0 <= overlap < tile_size, got tile {tile_size}, overlap {overlap}"
            )
        self.width, self.height = width, height
        self.tile_size, self.stride = tile_size, tile_size - overlap
        self.cols = _axis_count(width, tile_size, self.stride)
        self.rows = _axis_count(height, tile_size, self.stride)

    def __len__(self) -> int:
        return self.cols * self.rows

    def __iter__(self) -> Iterator[Tile]:
        for row in range(self.rows):
            for col in range(self.cols):
                yield self.tile(col, row)

    def _span(self, index: int, count: int, length: int) -> tuple[int, int, int, int]:
        """(start, end, core start, core end) of tile ``index`` along one axis.
        A core runs between the midpoints of the overlaps with its neighbours."""
        tile, stride = self.tile_size, self.stride
        start = _start(index, count, length, tile, stride)
        end = min(start + tile, length)
        if index == 0:
            core_lo = 0
        else:
            before = _start(index - 1, count, length, tile, stride)
            core_lo = (start + min(before + tile, length)) // 2
        if index == count - 1:
            core_hi = length
        else:
            core_hi = (_start(index + 1, count, length, tile, stride) + end) // 2
        return start, end, core_lo, core_hi

    def tile(self, col: int, row: int) -> Tile:
        x, x_end, cx0, cx1 = self._span(col, self.cols, self.width)
        y, y_end, cy0, cy1 = self._span(row, self.rows, self.height)
        return Tile(col, row, x, y, x_end - x, y_end - y, cx0, cy0, cx1, cy1)


def tile_grid(width: int, height: int, tile_size: int = 512, overlap: int = 64) -> list[Tile]:
    """Every tile of a ``TileGrid``, as a list (for small images and tests)."""
    return list(TileGrid(width, height, tile_size, overlap))


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


# Pixel sizes within 15 % of each other are taken as one: a tile that close
# to a model's pixel size is not resampled for it, a level that close to the
# pixels wanted is fine enough.
PIXEL_SIZE_TOLERANCE = 0.15


def finer_level(
    level_downsamples: Sequence[float],
    base_mpp: float | None,
    level: int,
    wanted_mpp: float | None,
) -> int:
    """The level to read instead of ``level`` for a segmenter that wants
    pixels of ``wanted_mpp`` (a model outlining its nuclei on finer pixels
    than it segments at): the coarsest level no coarser than ``wanted_mpp``
    (within ``PIXEL_SIZE_TOLERANCE``), else the finest there is; ``level``
    where it is fine enough already or where the slide has no pixel size."""
    if not wanted_mpp or not base_mpp or base_mpp <= 0:
        return level
    enough = wanted_mpp * (1 + PIXEL_SIZE_TOLERANCE)
    for candidate in range(level, 0, -1):  # from the level chosen towards level 0
        if base_mpp * level_downsamples[candidate] <= enough:
            return candidate
    return 0


T = TypeVar("T", bound=np.ndarray)
R = TypeVar("R")


def per_size(tiles: Sequence[T], run: Callable[[list[T]], list[R]]) -> list[R]:
    """``run`` on the tiles of each size together (a model stacks a batch of
    one size; edge tiles are smaller), results back in the tiles' order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, tile in enumerate(tiles):
        groups.setdefault(tile.shape, []).append(index)
    results: dict[int, R] = {}
    for indices in groups.values():
        results.update(zip(indices, run([tiles[i] for i in indices]), strict=True))
    return [results[i] for i in range(len(tiles))]
