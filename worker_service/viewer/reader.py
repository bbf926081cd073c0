"""The viewer's reads, off the event loop: Deep Zoom tiles of a slide (its own
slide handles) and a finished job's nuclei by box or by density, in a few
threads of their own, so a viewer's burst of tile requests (or one slow
slide) waits for these, not for the jobs' threads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import openslide

from worker_service.storage.slides import SlideCache
from worker_service.viewer import slide_tiles
from worker_service.viewer.cell_queries import CellQueries, Selection
from wsi_runtime.boxes import Box, check_box
from wsi_runtime.slide_paths import resolve_slide

T = TypeVar("T")
VIEWER_THREADS = 4


class ViewerReader:
    def __init__(self, slide_roots: Sequence[Path], threads: int = VIEWER_THREADS) -> None:
        self.slide_roots = list(slide_roots)
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="viewer")
        self._slides = SlideCache(per_thread=2, roots=self.slide_roots)
        self._cells = CellQueries()

    async def _in_thread(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def _slide(self, wsi_path: str) -> openslide.AbstractSlide:
        return self._slides.get(str(resolve_slide(wsi_path, self.slide_roots)))

    async def describe(self, wsi_path: str) -> slide_tiles.DeepZoomShape:
        return await self._in_thread(lambda: slide_tiles.shape(self._slide(wsi_path)))

    async def tile(self, wsi_path: str, level: int, col: int, row: int) -> bytes:
        return await self._in_thread(
            lambda: slide_tiles.tile_jpeg(self._slide(wsi_path), level, col, row)
        )

    async def select_cells(self, cells_file: Path, box: Box) -> Selection:
        """BoxError for a malformed box, before any thread is taken."""
        checked = check_box(box)
        return await self._in_thread(lambda: self._cells.select(cells_file, checked))

    async def read_cells(self, selection: Selection, start: int, stop: int) -> bytes:
        """The features of candidates ``start`` to ``stop`` that meet the box,
        comma-separated (joined here, not on the event loop)."""
        return await self._in_thread(lambda: b",".join(self._cells.read(selection, start, stop)))

    async def density(
        self, cells_file: Path, cell_px: float
    ) -> tuple[float, int, int, npt.NDArray[np.int64]]:
        return await self._in_thread(lambda: self._cells.density(cells_file, cell_px))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
