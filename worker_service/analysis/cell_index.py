"""The nuclei of a finished job by place: each nucleus's outline box and where
its feature sits in cells.geojson, saved beside it when the job ends, so that
a viewer's box is answered from an R-tree and a few slices of the file instead
of reading (and parsing) the whole collection.

Pure logic on arrays and bytes: no gRPC, no files but the ones named."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import shapely

from wsi_protocol import result_files
from wsi_runtime.boxes import Box

INDEX_NAME = result_files.CELL_INDEX
MAX_DENSITY_CELLS = 512  # a density grid's longest side, in cells
# Asked for no particular cell: 256 level-0 px (128 um at 0.5 um/px, some tens
# of nuclei in tissue), larger on a slide over 256 such cells across.
DEFAULT_DENSITY_CELL_PX = 256
DEFAULT_DENSITY_CELLS = 256


@dataclass
class CellIndex:
    """Row i: the i-th feature of cells.geojson, its outline box (widened by
    the coordinates' rounding) and its bytes ``offsets[i]`` to
    ``offsets[i] + lengths[i]`` in the file."""

    bounds: npt.NDArray[np.float64]  # (n, 4)
    offsets: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.int64]
    _tree: shapely.STRtree | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def tree(self) -> shapely.STRtree:
        if self._tree is None:
            self._tree = shapely.STRtree(shapely.box(*self.bounds.T))
        return self._tree

    def near(self, box: Box) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """The rows whose outline box meets ``box``, in file order, and for each
        whether its box lies within ``box`` (then the outline surely meets it;
        the others need their outline checked)."""
        if not len(self):
            return np.zeros(0, np.int64), np.zeros(0, bool)
        rows = np.sort(self.tree.query(shapely.box(*box)).astype(np.int64))
        x0, y0, x1, y1 = box
        b = self.bounds[rows]
        within = (b[:, 0] >= x0) & (b[:, 1] >= y0) & (b[:, 2] <= x1) & (b[:, 3] <= y1)
        return rows, within

    def density(self, cell_px: float) -> tuple[float, int, int, npt.NDArray[np.int64]]:
        """Nuclei per square cell of a grid from (0, 0) over all of them, by
        the centre of each outline box: (cell size used, columns, rows,
        counts row-major). ``cell_px`` 0 picks the default; the cell grows
        so that no side has more than ``MAX_DENSITY_CELLS``."""
        centres_x = (self.bounds[:, 0] + self.bounds[:, 2]) / 2
        centres_y = (self.bounds[:, 1] + self.bounds[:, 3]) / 2
        extent = max(float(centres_x.max(initial=0)), float(centres_y.max(initial=0)), 1.0)
        if cell_px <= 0:
            cell_px = max(DEFAULT_DENSITY_CELL_PX, math.ceil(extent / DEFAULT_DENSITY_CELLS))
        cell = float(max(cell_px, math.ceil(extent / MAX_DENSITY_CELLS), 1.0))
        if not len(self):
            return cell, 0, 0, np.zeros(0, np.int64)
        columns = int(centres_x.max() // cell) + 1
        rows = int(centres_y.max() // cell) + 1
        col = np.clip(centres_x // cell, 0, columns - 1).astype(np.int64)
        row = np.clip(centres_y // cell, 0, rows - 1).astype(np.int64)
        counts = np.bincount(row * columns + col, minlength=rows * columns)
        return cell, columns, rows, counts


def outline_meets(feature: bytes, box: Box) -> bool:
    """Whether a cells.geojson feature's outline meets ``box`` (touching counts)."""
    geometry = json.loads(feature)["geometry"]
    rings = geometry["coordinates"]
    polygon = shapely.Polygon(rings[0], rings[1:])
    return bool(polygon.intersects(shapely.box(*box)))


class IndexBuilder:
    """Collects rows as the features are written, a tile's worth at a time."""

    def __init__(self) -> None:
        self._bounds: list[npt.NDArray[np.float64]] = []
        self._offsets: list[int] = []
        self._lengths: list[int] = []

    def add(
        self, offsets: Iterable[int], lengths: Iterable[int], bounds: npt.NDArray[np.float64]
    ) -> None:
        """Rows of consecutive features: their offsets, lengths and boxes (n, 4)."""
        self._offsets.extend(offsets)
        self._lengths.extend(lengths)
        self._bounds.append(np.asarray(bounds, np.float64).reshape(-1, 4))

    def build(self) -> CellIndex:
        bounds = np.concatenate(self._bounds) if self._bounds else np.zeros((0, 4))
        return CellIndex(
            bounds, np.asarray(self._offsets, np.int64), np.asarray(self._lengths, np.int64)
        )


def save(index: CellIndex, handle: IO[Any]) -> None:
    np.savez(handle, bounds=index.bounds, offsets=index.offsets, lengths=index.lengths)


def load(path: Path) -> CellIndex:
    with np.load(path, allow_pickle=False) as saved:
        return CellIndex(
            saved["bounds"].astype(np.float64),
            saved["offsets"].astype(np.int64),
            saved["lengths"].astype(np.int64),
        )


def from_collection(data: bytes) -> CellIndex:
    """The index of a cells.geojson written one feature per line (every
    version of it the worker has written), for results older than their index."""
    builder = IndexBuilder()
    offset = 0
    for line in data.splitlines(keepends=True):
        start, text = offset, line.rstrip(b",\r\n")
        offset += len(line)
        if not text.startswith(b'{"type":"Feature"'):
            continue
        rings = json.loads(text)["geometry"]["coordinates"]
        points = np.asarray(rings[0], np.float64)
        low, high = points.min(axis=0) - 0.01, points.max(axis=0) + 0.01
        builder.add([start], [len(text)], np.concatenate([low, high]))
    return builder.build()


# A GeoJSON FeatureCollection of encoded features: this, the features
# separated by commas, then COLLECTION_END.
COLLECTION_START = b'{"type":"FeatureCollection","features":['
COLLECTION_END = b"]}"
