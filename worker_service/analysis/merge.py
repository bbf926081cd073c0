"""The seam rule, pure: a nucleus belongs to the tile whose core holds its
centroid, so each nucleus is kept exactly once, whole, from one tile."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from worker_service.analysis.nuclei import Nucleus
from worker_service.analysis.tiling import Tile


@dataclass(frozen=True)
class OwnedNuclei:
    """The nuclei a tile owns, in level-0 pixel coordinates, as arrays over
    all of them: a tile's hundreds of nuclei are then moved, measured and
    encoded a few array operations at a time instead of a few per nucleus."""

    centroids: npt.NDArray[np.float64]  # (n, 2) of (x, y)
    points: npt.NDArray[np.float64]  # every closed outline ring, end to end: (m, 2) of (x, y)
    starts: npt.NDArray[np.int64]  # (n + 1,): ring k is points[starts[k] : starts[k + 1]]
    areas_px: npt.NDArray[np.int64]  # pixel counts at the level segmented
    stains: npt.NDArray[np.float64]  # mean haematoxylin optical density

    def __len__(self) -> int:
        return len(self.centroids)

    def select(self, keep: npt.NDArray[np.bool_]) -> OwnedNuclei:
        """The nuclei where ``keep`` (one flag per nucleus) is True, in order."""
        lengths = np.diff(self.starts)
        kept_points = np.repeat(keep, lengths)
        return OwnedNuclei(
            centroids=self.centroids[keep],
            points=self.points[kept_points],
            starts=np.cumsum([0, *lengths[keep]], dtype=np.int64),
            areas_px=self.areas_px[keep],
            stains=self.stains[keep],
        )


def keep_owned(tile: Tile, found: Sequence[Nucleus], downsample: float) -> OwnedNuclei:
    """The nuclei of ``tile`` (found in tile pixel coordinates) that its core
    owns, moved to level-0 coordinates (level pixel x ``downsample``)."""
    offset = np.array([tile.x, tile.y], np.float64)
    centroids = np.array([n.centroid for n in found], np.float64).reshape(-1, 2) + offset
    owned = tile.core_holds(centroids)
    kept = [n for n, keep in zip(found, owned.tolist(), strict=True) if keep]
    rings = [n.polygon for n in kept]
    points = np.concatenate(rings) if rings else np.zeros((0, 2))
    return OwnedNuclei(
        centroids=centroids[owned] * downsample,
        points=(points + offset) * downsample,
        starts=np.cumsum([0, *map(len, rings)], dtype=np.int64),
        areas_px=np.array([n.area_px for n in kept], np.int64),
        stains=np.array([n.mean_haematoxylin for n in kept], np.float64),
    )
