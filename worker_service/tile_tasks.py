"""What a pool process does with one tile: read it with its own OpenSlide
handle, segment it, keep the nuclei its core owns. Functions here run in the
worker's process pool, so their arguments and results are small and picklable."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import openslide

from worker_service import results
from worker_service.backends import BackendSpec, Segmenter, build
from worker_service.errors import TileReadError
from worker_service.measurements import nucleus_measurements
from worker_service.merge import SlideNucleus, keep_owned
from worker_service.nuclei import (
    RGB,
    NucleusParams,
    StainReference,
    segment_nuclei,
)
from worker_service.slide_access import SlideCache, rgb_over_white
from worker_service.tiling import Tile

# One per pool process, for every job it serves; confined to the slide roots at start.
slides = SlideCache(per_thread=2)
_cancel_board: Any = None  # the worker's CancelBoard array, set when the process starts


@dataclass(frozen=True)
class TileTask:
    slide_path: str
    level: int
    downsample: float
    tile: Tile
    mpp: float | None = None  # level-0 um per pixel, for nucleus areas in um^2


def read_tile(task: TileTask) -> RGB:
    """The tile as RGB; transparent areas (outside the scanned region) become white."""
    slide = slides.get(task.slide_path)
    tile = task.tile
    location = (round(tile.x * task.downsample), round(tile.y * task.downsample))
    try:
        region = slide.read_region(location, task.level, (tile.width, tile.height))
    except openslide.OpenSlideError as exc:
        raise TileReadError(f"cannot read tile at level-0 {location}: {exc}") from exc
    return rgb_over_white(np.asarray(region))


@dataclass(frozen=True)
class TileResult:
    """A tile's nuclei as GeoJSON features ready to write (encoded here, in
    the pool, not in the worker's one main process) and their level-0
    centroids, for the preview, and bounding boxes, for the cell index."""

    features: list[str]
    centroids: list[tuple[float, float]]
    seconds: float  # reading and segmenting it, in the pool process
    bounds: npt.NDArray[np.float64]  # (n, 4): x0, y0, x1, y1 of each outline


def segment_tiles(tasks: Sequence[TileTask], backend: BackendSpec) -> list[TileResult]:
    """Reads and segments ``tasks`` in order, ``backend.batch_size`` tiles per
    pass of the segmenter. With more than one pass, a reader thread decodes
    the next batch while the segmenter works on this one (OpenSlide and
    PyTorch both release the GIL)."""
    segmenter = build(backend)
    size = max(1, backend.batch_size)
    batches = [tasks[i : i + size] for i in range(0, len(tasks), size)]
    if len(batches) == 1:
        started = time.perf_counter()
        return _segmented(
            segmenter, backend.name, batches[0], [read_tile(t) for t in batches[0]], started
        )
    results: list[TileResult] = []
    with ThreadPoolExecutor(1, thread_name_prefix="tile-reader") as reader:
        pending = [reader.submit(_read_all, batch) for batch in batches]
        for batch, decoded in zip(batches, pending, strict=True):
            started = time.perf_counter()
            results += _segmented(segmenter, backend.name, batch, decoded.result(), started)
    return results


def _read_all(tasks: Sequence[TileTask]) -> list[RGB]:
    return [read_tile(task) for task in tasks]


def _segmented(
    segmenter: Segmenter,
    segmenter_name: str,
    tasks: Sequence[TileTask],
    tiles: list[RGB],
    started: float,
) -> list[TileResult]:
    owned = [
        keep_owned(task.tile, nuclei, task.downsample)
        for task, nuclei in zip(tasks, segmenter.find(tiles), strict=True)
    ]
    per_tile = (time.perf_counter() - started) / max(1, len(tasks))
    return [
        TileResult(
            [
                _feature(nucleus, task, _nucleus_id(task, segmenter_name, k))
                for k, nucleus in enumerate(nuclei)
            ],
            [n.centroid for n in nuclei],
            per_tile,
            _bounds(nuclei),
        )
        for task, nuclei in zip(tasks, owned, strict=True)
    ]


def _nucleus_id(task: TileTask, backend: str, k: int) -> str:
    """A UUID (as QuPath gives its objects) that a rerun of the same job gives
    the same nucleus: from the slide, the tile, the backend and its place."""
    tile = task.tile
    name = f"{task.slide_path}|{task.level}|{tile.x},{tile.y},{tile.width},{tile.height}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}|{backend}|{k}"))


def _feature(nucleus: SlideNucleus, task: TileTask, feature_id: str) -> str:
    area_px0 = nucleus.area_px * task.downsample * task.downsample
    measured = nucleus_measurements(
        nucleus.polygon,
        nucleus.centroid,
        area_px0,
        task.mpp,
        nucleus.mean_haematoxylin,
        pixel=task.downsample,
    )
    return results.nucleus_feature_text(feature_id, nucleus.polygon, measured)


def _bounds(nuclei: Sequence[SlideNucleus]) -> npt.NDArray[np.float64]:
    """Each outline's box, widened by the rounding of the coordinates written
    (all of a tile's outlines in one pass: per outline it would cost more
    than the measurements)."""
    if not nuclei:
        return np.zeros((0, 4))
    points = np.concatenate([n.polygon for n in nuclei])
    starts = np.cumsum([0] + [len(n.polygon) for n in nuclei[:-1]])
    low = np.minimum.reduceat(points, starts, axis=0) - 0.01
    high = np.maximum.reduceat(points, starts, axis=0) + 0.01
    return np.concatenate([low, high], axis=1)


def start_process(parent_pid: int, cancel_board: Any, slide_roots: Sequence[Path] = ()) -> None:
    """Pool initializer: keeps the worker's cancellation board, opens slides
    only inside the slide roots, ends with the worker, and keeps OpenCV to one
    thread: the pool is the parallelism, and OpenCV's own threads in every
    process would only fight over the cores."""
    global _cancel_board
    _cancel_board = cancel_board
    slides.confine(slide_roots)
    cv2.setNumThreads(1)
    exit_with_parent(parent_pid)


def is_cancelled(token: int) -> bool:
    """Whether the worker cancelled the job holding ``token`` (a shared-memory
    read: cheap enough to poll between strips and phases)."""
    board = _cancel_board
    return board is not None and token > 0 and board[token % len(board)] == token


def exit_with_parent(parent_pid: int) -> None:
    """A pool process ends when its worker dies, even by SIGKILL, instead of
    lingering as an orphan."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def warm_up() -> None:
    """Imports done and caches ready before the first real tile."""
    segment_nuclei(np.full((8, 8, 3), 255, np.uint8), StainReference(0.1, 0.3), NucleusParams())
