"""What a pool process does with tiles: read them with its own OpenSlide
handle, segment them, keep the nuclei each core owns, encode them. Functions
here run in the worker's process pool, so their arguments and results are
small and picklable."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import openslide

from worker_service.analysis import nucleus_scale, regions
from worker_service.analysis.measurement_stats import measure_values
from worker_service.analysis.measurements import Measured, nuclei_measurements
from worker_service.analysis.merge import OwnedNuclei, keep_owned
from worker_service.analysis.nuclei import RGB
from worker_service.analysis.tiling import Tile
from worker_service.backends.base import Recipe, Segmenter
from worker_service.errors import JobCancelled, TileReadError
from worker_service.pipeline import pool_process
from worker_service.storage import result_files
from worker_service.storage.slides import rgb_over_white
from worker_service.storage.tile_journal import TileResult

# This process's segmenters, one per recipe (a model loads once), kept small:
# a classical recipe holds one slide's stain reference.
_segmenters: dict[Recipe, Segmenter] = {}
KEPT_SEGMENTERS = 16


@dataclass(frozen=True)
class TileTask:
    slide_path: str
    level: int
    downsample: float
    tile: Tile
    mpp: float | None = None  # level-0 um per pixel, for nucleus areas in um^2
    # The job's region, for a tile not wholly inside it: its nuclei are kept
    # only where their centroid lies in the region (None: keep all it owns).
    region: regions.Vertices | None = None


def read_tile(task: TileTask) -> RGB:
    """The tile as RGB; transparent areas (outside the scanned region) become white."""
    slide = pool_process.slides.get(task.slide_path)
    tile = task.tile
    location = (round(tile.x * task.downsample), round(tile.y * task.downsample))
    try:
        region = slide.read_region(location, task.level, (tile.width, tile.height))
    except openslide.OpenSlideError as exc:
        raise TileReadError(f"cannot read tile at level-0 {location}: {exc}") from exc
    return rgb_over_white(np.asarray(region))


def nucleus_areas(task: TileTask, recipe: Recipe) -> npt.NDArray[np.int64]:
    """The pixel areas of the nuclei ``recipe``'s segmenter finds on the tile,
    but those its edge cuts: a backend's first look at a slide."""
    return nucleus_scale.inner_areas(segmenter_for(recipe)(read_tile(task)))


def segmenter_for(recipe: Recipe) -> Segmenter:
    """The segmenter of ``recipe``, built once in this process."""
    segmenter = _segmenters.get(recipe)
    if segmenter is None:
        if len(_segmenters) >= KEPT_SEGMENTERS:
            _segmenters.clear()
        segmenter = _segmenters[recipe] = recipe.build()
    return segmenter


def segment_tiles(tasks: Sequence[TileTask], recipe: Recipe, stop_token: int) -> list[TileResult]:
    """Reads and segments ``tasks`` in order, ``recipe.tiles_per_pass`` tiles
    per pass of the segmenter. With more than one pass, a reader thread decodes
    the next batch while the segmenter works on this one (OpenSlide and
    PyTorch both release the GIL). Before each pass it looks at ``stop_token``
    (see ``TilePool.imap``): a cancelled job's task ends after the pass it is
    in, not after all its tiles."""
    segmenter = segmenter_for(recipe)
    size = max(1, recipe.tiles_per_pass)
    batches = [tasks[i : i + size] for i in range(0, len(tasks), size)]
    _stop_if_cancelled(stop_token)  # a task still queued when its job stopped reads nothing
    if len(batches) == 1:
        started = time.perf_counter()
        return _segmented(
            segmenter, recipe.backend, batches[0], [read_tile(t) for t in batches[0]], started
        )
    results: list[TileResult] = []
    pending = [_tile_reader().submit(_read_all, batch) for batch in batches]
    try:
        for batch, decoded in zip(batches, pending, strict=True):
            _stop_if_cancelled(stop_token)
            started = time.perf_counter()
            results += _segmented(segmenter, recipe.backend, batch, decoded.result(), started)
    finally:
        for future in pending:  # no reads left for a stopped task
            future.cancel()
        wait(pending)
    return results


_reader: tuple[int, ThreadPoolExecutor] | None = None


def _tile_reader() -> ThreadPoolExecutor:
    """This process's reader thread, kept across tasks: a thread opens each
    slide once (``SlideCache`` is per thread), and a new reader per task
    opened the job's slide again for every few tiles (1-5 ms an OpenSlide
    open). Made anew in a forked child, which has the variable but not the
    thread."""
    global _reader
    if _reader is None or _reader[0] != os.getpid():
        _reader = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="tile-reader"))
    return _reader[1]


def _stop_if_cancelled(stop_token: int) -> None:
    if pool_process.is_cancelled(stop_token):
        raise JobCancelled()


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
    results = []
    for task, all_owned in zip(tasks, owned, strict=True):
        # Ids are given before the region's cut: a nucleus has the same id
        # in a region job as in a job of the whole slide.
        ids = nucleus_ids(task, segmenter_name, len(all_owned))
        nuclei = all_owned
        if task.region is not None:
            keep = regions.inside(task.region, all_owned.centroids)
            nuclei = all_owned.select(keep)
            ids = [i for i, kept in zip(ids, keep.tolist(), strict=True) if kept]
        measured = _measured(nuclei, task)
        texts = result_files.nuclei_feature_texts(
            ids, nuclei.points, nuclei.starts, measured.rows()
        )
        columns = measured.columns
        centroids = np.column_stack([columns["Centroid X px"], columns["Centroid Y px"]])
        results.append(
            TileResult(
                features=texts,
                centroids=centroids.reshape(-1, 2),
                seconds=per_tile,
                bounds=_bounds(nuclei),
                ids=ids,
                measures=measure_values(columns, len(nuclei)),
                origin=(round(task.tile.x * task.downsample), round(task.tile.y * task.downsample)),
            )
        )
    return results


def nucleus_ids(task: TileTask, backend: str, count: int) -> list[str]:
    """UUIDs (as QuPath gives its objects) that a rerun of the same job gives
    the same nuclei: ``uuid.uuid5(NAMESPACE_URL, f"{tile}|{backend}|{k}")`` of
    the slide, the tile, the backend and each one's place, with the hash of
    the part they share taken once."""
    tile = task.tile
    name = f"{task.slide_path}|{task.level}|{tile.x},{tile.y},{tile.width},{tile.height}"
    shared = hashlib.sha1(uuid.NAMESPACE_URL.bytes + f"{name}|{backend}|".encode())
    ids = []
    for k in range(count):
        digest = shared.copy()
        digest.update(str(k).encode())
        raw = bytearray(digest.digest()[:16])
        raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
        text = raw.hex()
        ids.append(f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}")
    return ids


def _measured(nuclei: OwnedNuclei, task: TileTask) -> Measured:
    pixel = task.downsample
    return nuclei_measurements(
        nuclei.points,
        nuclei.starts,
        nuclei.centroids,
        nuclei.areas_px * (pixel * pixel),  # in level-0 pixels
        task.mpp,
        nuclei.stains,
        pixel=pixel,
    )


def _bounds(nuclei: OwnedNuclei) -> npt.NDArray[np.float64]:
    """Each outline's box, widened by the rounding of the coordinates written
    (all of a tile's outlines in one pass: per outline it would cost more
    than the measurements)."""
    if not len(nuclei):
        return np.zeros((0, 4))
    starts = nuclei.starts[:-1]
    low = np.minimum.reduceat(nuclei.points, starts, axis=0) - 0.01
    high = np.maximum.reduceat(nuclei.points, starts, axis=0) + 0.01
    return np.concatenate([low, high], axis=1)
