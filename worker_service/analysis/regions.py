"""A job's region of interest applied to its analysis, pure: the part of the
slide it covers, the tiles worth reading for it, the nuclei it keeps, the
tissue cut to it. Coordinates are level-0 pixels throughout.

A tile is read only if its core meets the region: the nuclei a tile owns
are those whose centroid its core holds (``merge``), so a tile whose core
lies outside owns none inside. A tile wholly inside needs no further check;
the others keep only the nuclei whose centroid lies in the region."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from worker_service.analysis.tiling import Tile

Vertices = tuple[tuple[float, float], ...]


def area_on_slide(region: Polygon, width: int, height: int) -> float:
    """The region's area (level-0 px^2) within the slide's extent: 0 if they do not meet."""
    return float(region.intersection(box(0, 0, width, height)).area)


def _level0_box(tile: Tile, downsample: float, core: bool) -> Polygon:
    if core:
        x0, y0, x1, y1 = tile.core_x0, tile.core_y0, tile.core_x1, tile.core_y1
    else:
        x0, y0, x1, y1 = tile.x, tile.y, tile.x + tile.width, tile.y + tile.height
    return box(x0 * downsample, y0 * downsample, x1 * downsample, y1 * downsample)


def tiles_for(
    region: Polygon, tiles: Sequence[Tile], downsample: float
) -> list[tuple[Tile, Vertices | None]]:
    """The tiles (at a level of ``downsample``) whose core meets ``region``,
    each with the region's vertices to filter its nuclei by, or None when the
    whole tile lies inside."""
    shapely.prepare(region)
    chosen: list[tuple[Tile, Vertices | None]] = []
    vertices = tuple((float(x), float(y)) for x, y in region.exterior.coords[:-1])
    for tile in tiles:
        core = _level0_box(tile, downsample, core=True)
        if not region.intersects(core) or region.touches(core):
            continue
        whole = region.contains(_level0_box(tile, downsample, core=False))
        chosen.append((tile, None if whole else vertices))
    return chosen


def inside(vertices: Vertices, points: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Whether each (x, y) row of ``points`` lies in the region (its edge included)."""
    if not len(points):
        return np.zeros(0, dtype=bool)
    result: npt.NDArray[np.bool_] = shapely.intersects_xy(
        Polygon(vertices), points[:, 0], points[:, 1]
    )
    return result


def clip(polygons: Sequence[Polygon], region: Polygon) -> list[Polygon]:
    """The parts of ``polygons`` (tissue) inside ``region``."""
    clipped: list[Polygon] = []
    for polygon in polygons:
        part: BaseGeometry = polygon.intersection(region)
        clipped += [
            g for g in getattr(part, "geoms", [part]) if isinstance(g, Polygon) and g.area > 0
        ]
    return clipped
