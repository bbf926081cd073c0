"""Answers to "which nuclei are here" from a job's cells.geojson and its cell
index: a few recent jobs' indexes kept in memory, the file read by slices."""

from __future__ import annotations

import mmap
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import numpy.typing as npt

from worker_service.analysis import cell_index
from worker_service.analysis.cell_index import CellIndex
from worker_service.storage import result_files
from wsi_runtime.boxes import Box

MAX_NUCLEI_PER_BOX = 50_000
KEPT_INDEXES = 8


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

    def features(self, cells: Path, box: Box) -> list[bytes]:
        """The encoded features whose outlines meet ``box``, in file order."""
        index = self.index(cells)
        rows, within = index.near(box)
        if len(rows) > MAX_NUCLEI_PER_BOX:
            raise TooManyNuclei(
                f"the box holds about {len(rows):,} nuclei, more than {MAX_NUCLEI_PER_BOX:,};"
                " ask for a smaller box, or for the density"
            )
        if not len(rows):
            return []
        with (
            cells.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data,
        ):
            found = _slices(data, index.offsets[rows], index.lengths[rows])
        return [
            feature
            for feature, sure in zip(found, within.tolist(), strict=True)
            if sure or cell_index.outline_meets(feature, box)
        ]

    def density(self, cells: Path, cell_px: float) -> tuple[float, int, int, npt.NDArray[np.int64]]:
        return self.index(cells).density(cell_px)


def _slices(
    data: mmap.mmap, offsets: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]
) -> list[bytes]:
    pairs = zip(offsets.tolist(), lengths.tolist(), strict=True)
    return [data[start : start + length] for start, length in pairs]
