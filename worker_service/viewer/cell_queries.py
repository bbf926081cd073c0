"""Answers to "which nuclei are here" from a job's cells.geojson and its cell
index: a few recent jobs' indexes kept in memory, the file read by slices,
a bounded number of nuclei at a time (a whole-slide box can hold 50,000
nuclei, about 40 MB of GeoJSON: an answer is streamed, never held whole)."""

from __future__ import annotations

import mmap
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from worker_service.analysis import cell_index
from worker_service.analysis.cell_index import CellIndex
from worker_service.storage import result_files
from wsi_runtime.boxes import Box

MAX_NUCLEI_PER_BOX = 50_000
KEPT_INDEXES = 8
NUCLEI_PER_READ = 2_000  # about 2 MB of GeoJSON: what one call holds at a time


@dataclass(frozen=True)
class Selection:
    """The nuclei whose boxes meet a query box, in file order: ``within[k]``
    where nucleus k's box lies inside it (its outline surely meets it)."""

    cells: Path
    box: Box
    offsets: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.int64]
    within: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.offsets)


class TooManyNuclei(ValueError):
    pass


class CellQueries:
    def __init__(self, kept: int = KEPT_INDEXES) -> None:
        self.kept = kept
        self._indexes: OrderedDict[tuple[str, int, int], CellIndex] = OrderedDict()
        self._lock = threading.Lock()

    def index(self, cells: Path) -> CellIndex:
        """The index of a cells.geojson (built and saved beside it when the job
        predates indexes), kept while recently used."""
        stat = cells.stat()
        key = (str(cells), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            found = self._indexes.get(key)
            if found is not None:
                self._indexes.move_to_end(key)
                return found
        saved = cells.with_name(cell_index.INDEX_NAME)
        if saved.is_file():
            index = cell_index.load(saved)
        else:
            index = cell_index.from_collection(cells.read_bytes())
            result_files.write_cell_index(saved, index)
        index.tree  # built here, in the caller's thread, not under the lock  # noqa: B018
        with self._lock:
            self._indexes[key] = index
            while len(self._indexes) > self.kept:
                self._indexes.popitem(last=False)
        return index

    def select(self, cells: Path, box: Box) -> Selection:
        """The candidates for ``box``; TooManyNuclei past the cap."""
        index = self.index(cells)
        rows, within = index.near(box)
        if len(rows) > MAX_NUCLEI_PER_BOX:
            raise TooManyNuclei(
                f"the box holds about {len(rows):,} nuclei, more than {MAX_NUCLEI_PER_BOX:,};"
                " ask for a smaller box, or for the density"
            )
        return Selection(cells, box, index.offsets[rows], index.lengths[rows], within)

    def read(self, selection: Selection, start: int, stop: int) -> list[bytes]:
        """The encoded features of candidates ``start`` to ``stop`` whose
        outlines meet the box, in file order."""
        offsets, lengths = selection.offsets[start:stop], selection.lengths[start:stop]
        if not len(offsets):
            return []
        with (
            selection.cells.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data,
        ):
            found = _slices(data, offsets, lengths)
        sure = selection.within[start:stop].tolist()
        return [
            feature
            for feature, inside in zip(found, sure, strict=True)
            if inside or cell_index.outline_meets(feature, selection.box)
        ]

    def density(self, cells: Path, cell_px: float) -> tuple[float, int, int, npt.NDArray[np.int64]]:
        return self.index(cells).density(cell_px)


def _slices(
    data: mmap.mmap, offsets: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]
) -> list[bytes]:
    pairs = zip(offsets.tolist(), lengths.tolist(), strict=True)
    return [data[start : start + length] for start, length in pairs]
