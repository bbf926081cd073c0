"""The seam rule, pure: a nucleus belongs to the tile whose core holds its
centroid, so each nucleus is kept exactly once, whole, from one tile."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from worker_service.analysis.nuclei import Nucleus
from worker_service.analysis.shapes import Ring
from worker_service.analysis.tiling import Tile


@dataclass(frozen=True)
class SlideNucleus:
    """A nucleus in level-0 pixel coordinates."""

    centroid: tuple[float, float]
    polygon: Ring  # closed ring of (x, y), shape (n, 2)
    area_px: int  # at the level it was segmented
    mean_haematoxylin: float = 0.0


def keep_owned(tile: Tile, found: Iterable[Nucleus], downsample: float) -> list[SlideNucleus]:
    """The nuclei of ``tile`` (found in tile pixel coordinates) that its core
    owns, moved to level-0 coordinates (level pixel x ``downsample``)."""
    owned = []
    for nucleus in found:
        cx, cy = nucleus.centroid[0] + tile.x, nucleus.centroid[1] + tile.y
        if not tile.core_contains(cx, cy):
            continue
        owned.append(
            SlideNucleus(
                centroid=(cx * downsample, cy * downsample),
                polygon=(nucleus.polygon + np.array([tile.x, tile.y])) * downsample,
                area_px=nucleus.area_px,
                mean_haematoxylin=nucleus.mean_haematoxylin,
            )
        )
    return owned
