"""The stages of a job, each with a typed result: the slide's overview and
working level, the tissue analysis, the cell segmentation. Every stage takes
the job's ``JobContext`` (cancellation, progress, tile timings, limits) and
raises only the worker's own errors (``errors.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter
from shapely.geometry import Polygon

from worker_service import cell_index, results, tile_tasks, tissue_codec
from worker_service.backends import INSTANSEG_MPP, BackendSpec, model_settings
from worker_service.errors import BackendUnavailable, JobCancelled, JobFailed
from worker_service.learned import LEARNED_MPP, model_zoom
from worker_service.nuclei import NucleusParams, stain_reference
from worker_service.slide_access import SlideCache, SlideInfo, describe, read_thumbnail
from worker_service.tile_pool import TilePool
from worker_service.tiling import Tile, TileGrid, choose_level, usable_mpp
from worker_service.tissue import TissueMask, detect_tissue, tile_tissue_fractions, tissue_polygons
from worker_service.tissue_codec import ReusedTissue
from wsi_runtime.job_params import JobParams

OVERVIEW_SIZE = 1024  # longest side of the image tissue is found on (and the preview)
REFERENCE_TILES = 8  # tissue tiles sampled for the slide's stain reference
DEFAULT_MAX_TILES = 100_000  # tiles one job may cover (worker setting --max-tiles-per-job)
# Tiles per pool task. Classical: four row neighbours share decoded slide tiles
# in one process's cache. InstanSeg: four batches, so that a reader thread
# decodes each next batch while the model runs on one.
CLASSICAL_TILES_PER_TASK = 4
BATCHES_PER_TASK = 4


@dataclass(frozen=True)
class JobContext:
    """What the worker gives a running job: how to see a cancel, where to
    report progress and tile timings, and its limits."""

    cancelled: Callable[[], bool] = lambda: False
    report: Callable[[int, int], None] = lambda done, total: None
    on_tile: Callable[[float], None] = lambda seconds: None
    max_tiles: int = DEFAULT_MAX_TILES
    default_backend: str = "classical"  # for a job that names none (worker setting)

    def check(self) -> None:
        """Between phases: stop here if the job was cancelled."""
        if self.cancelled():
            raise JobCancelled()


@dataclass(frozen=True)
class Overview:
    """The slide at a glance, and the pyramid level the job works at."""

    path: str
    info: SlideInfo
    image: npt.NDArray[np.uint8]  # RGB, longest side OVERVIEW_SIZE
    mpp: float | None  # level-0 pixel size, if the slide has a plausible one
    level: int
    downsample: float

    @property
    def level_size(self) -> tuple[int, int]:
        return self.info.level_dimensions[self.level]

    @property
    def working_mpp(self) -> float | None:
        return round(self.mpp * self.downsample, 4) if self.mpp else None

    def task(self, tile: Tile) -> tile_tasks.TileTask:
        return tile_tasks.TileTask(self.path, self.level, self.downsample, tile, self.mpp)


@dataclass(frozen=True)
class TissueAnalysis:
    mask: TissueMask
    polygons: list[Polygon]
    grid: TileGrid
    tissue_tiles: list[Tile]  # the tiles with at least min_tissue tissue
    files: dict[str, str]  # tissue.geojson, tissue_mask.png
    reused_from: str = ""  # the job whose mask this is, when not found here


@dataclass(frozen=True)
class Cells:
    nuclei: int
    tiles_processed: int
    cells_file: str
    backend_details: dict[str, object] = field(default_factory=dict)
    reference_s: float = 0.0  # choosing the backend: the classical stain reference


def read_overview(path: str, params: JobParams, slides: SlideCache, ctx: JobContext) -> Overview:
    slide = slides.get(path)
    info = describe(slide)
    image = read_thumbnail(slide, OVERVIEW_SIZE, ctx.cancelled)
    mpp = usable_mpp(info.mpp)
    level = choose_level(info.level_downsamples, mpp, params.target_mpp)
    return Overview(path, info, image, mpp, level, info.level_downsamples[level])


def analyse_tissue(
    overview: Overview,
    params: JobParams,
    out_dir: Path,
    ctx: JobContext,
    reused: ReusedTissue | None = None,
) -> TissueAnalysis:
    """Finds the tissue (or takes ``reused``, an earlier job's mask of this
    slide's overview), writes it out, and picks the tiles worth segmenting.
    A grid over ``ctx.max_tiles`` fails the job before any tile is made."""
    width, height = overview.level_size
    grid = TileGrid(width, height, params.tile_size, params.overlap)
    if len(grid) > ctx.max_tiles:
        raise JobFailed(
            f"this job would cover {len(grid):,} tiles ({width} x {height} px at level"
            f" {overview.level}, tile_size {params.tile_size}); a job may cover at most"
            f" {ctx.max_tiles:,}. Use a larger tile_size or target_mpp"
        )
    ctx.check()
    scale = overview.info.width / overview.image.shape[1]
    if reused is not None and tissue_codec.fits(reused.mask, overview.image.shape[:2], scale):
        mask, reused_from = reused.mask, reused.source_job_id
    else:
        mask, reused_from = detect_tissue(overview.image, scale), ""
    polygons = tissue_polygons(mask)
    ctx.check()
    files = _write_tissue(out_dir, mask, polygons, overview.mpp)
    fractions = tile_tissue_fractions(mask, grid, overview.downsample)
    tissue_tiles = [t for t, f in zip(grid, fractions, strict=True) if f >= params.min_tissue]
    ctx.check()
    return TissueAnalysis(mask, polygons, grid, tissue_tiles, files, reused_from)


def segment_cells(
    overview: Overview,
    tissue: TissueAnalysis,
    params: JobParams,
    model_path: str,
    pool: TilePool,
    out_dir: Path,
    preview: Preview,
    ctx: JobContext,
) -> Cells:
    """Segments the tissue tiles in the pool and streams every nucleus a tile's
    core owns to cells.geojson and the preview."""
    started = time.perf_counter()
    backend, details = _backend(overview, tissue.tissue_tiles, params, model_path, pool)
    reference_s = time.perf_counter() - started
    ctx.check()
    tiles = tissue.tissue_tiles
    total = len(tiles)
    ctx.report(0, total)
    cells = results.FeatureCollectionWriter(out_dir / "cells.geojson")
    index = cell_index.IndexBuilder()
    done = 0
    ok = False
    try:
        # One tile per pool task (a batch for a model): every process busy to the last tile.
        size = backend.tiles_per_task
        chunks = ([overview.task(t) for t in tiles[i : i + size]] for i in range(0, total, size))
        for _, chunk in pool.imap(tile_tasks.segment_tiles, chunks, (backend,), ctx.cancelled):
            for found in chunk:
                ctx.on_tile(found.seconds)
                offsets = [cells.add_text(feature) for feature in found.features]
                index.add(offsets, map(len, found.features), found.bounds)
                preview.nuclei(found.centroids)
                done += 1
            ctx.report(done, total)
        ok = True
    finally:
        path = cells.close(ok)
    results.write_cell_index(out_dir / cell_index.INDEX_NAME, index.build())
    return Cells(cells.count, done, str(path), details, reference_s)


def _backend(
    overview: Overview,
    tissue_tiles: list[Tile],
    params: JobParams,
    model_path: str,
    pool: TilePool,
) -> tuple[BackendSpec, dict[str, object]]:
    if params.backend in ("instanseg", "learned"):
        try:
            device, batch_size, engine = model_settings()
        except ValueError as exc:
            raise BackendUnavailable(str(exc)) from exc
        spec = BackendSpec(
            params.backend,
            model_path=model_path,
            device=device,
            engine=engine,
            tile_mpp=overview.working_mpp or 0.0,
            batch_size=batch_size,
            tiles_per_task=BATCHES_PER_TASK * batch_size,
        )
        details: dict[str, object] = {"device": device, "batch_size": batch_size}
        if params.backend == "learned":
            return spec, {
                "model": "nuclei_unet",
                "model_mpp": LEARNED_MPP,
                "engine": engine,
                "tiles_resampled": model_zoom(overview.working_mpp or LEARNED_MPP) != 1.0,
                **details,
            }
        return spec, {"model": model_path, "model_mpp": INSTANSEG_MPP, **details}
    # Classical: one haematoxylin threshold for the whole slide, from tiles spread over it.
    step = max(1, len(tissue_tiles) // REFERENCE_TILES)
    sample = [overview.task(tile) for tile in tissue_tiles[::step][:REFERENCE_TILES]]
    reference = stain_reference(pool.map_all(tile_tasks.read_tile, sample, ()))
    nucleus_params = NucleusParams(
        mpp=(overview.mpp or JobParams().target_mpp) * overview.downsample
    )
    spec = BackendSpec(
        "classical",
        reference,
        nucleus_params,
        batch_size=CLASSICAL_TILES_PER_TASK,
        tiles_per_task=CLASSICAL_TILES_PER_TASK,
    )
    return spec, {
        "threshold": round(reference.threshold, 4),
        "h_p99": round(reference.h_high, 4),
    }


class Preview:
    """The overview with the tissue outline and a dot per nucleus, for the UI.
    Nuclei are marked in a mask as tiles arrive and drawn once at the end:
    the worker's main process stays free for the pool's results."""

    DOT = (255, 220, 0)

    def __init__(self, overview: Overview, polygons: list[Polygon]) -> None:
        self.image = Image.fromarray(overview.image).copy()
        self.scale = self.image.width / overview.info.width  # preview px per level-0 px
        draw = ImageDraw.Draw(self.image)
        for polygon in polygons:
            for ring in (polygon.exterior, *polygon.interiors):
                points = [(x * self.scale, y * self.scale) for x, y in ring.coords]
                draw.line(points, fill=(0, 160, 0), width=2)
        self._dots = np.zeros((self.image.height, self.image.width), np.uint8)

    def nuclei(self, centroids: list[tuple[float, float]]) -> None:
        if not centroids:
            return
        at = np.rint(np.asarray(centroids) * self.scale).astype(np.int64)
        height, width = self._dots.shape
        inside = (at[:, 0] >= 0) & (at[:, 0] < width) & (at[:, 1] >= 0) & (at[:, 1] < height)
        self._dots[at[inside, 1], at[inside, 0]] = 255

    def write(self, out_dir: Path) -> str:
        dots = Image.fromarray(self._dots, mode="L").filter(ImageFilter.MaxFilter(3))
        self.image.paste(self.DOT, mask=dots)  # a 3 x 3 dot on each nucleus
        # Level 1: a third faster than the default on a 1024 px preview, 9 % larger.
        return str(results.write_png(out_dir / "preview.png", self.image, 1))


def _write_tissue(
    out_dir: Path, tissue: TissueMask, polygons: list[Polygon], mpp: float | None
) -> dict[str, str]:
    collection = results.FeatureCollectionWriter(out_dir / "tissue.geojson")
    for polygon in polygons:
        area_um2 = polygon.area * mpp * mpp if mpp else None
        collection.add(
            results.tissue_feature(
                list(polygon.exterior.coords), [list(r.coords) for r in polygon.interiors], area_um2
            )
        )
    return {
        "tissue.geojson": str(collection.close()),
        "tissue_mask.png": str(
            results.write_png(out_dir / "tissue_mask.png", results.mask_image(tissue.mask))
        ),
    }
