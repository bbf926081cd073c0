"""The phases of a job, each with a typed result: the slide's overview and
working level, the tissue analysis, the cell segmentation. Every phase takes
the job's ``JobContext`` (cancellation, progress, tile timings, limits) and
raises only the worker's own errors (``errors.py``)."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from shapely.geometry import Polygon

from worker_service.analysis import cell_index, regions, tissue_codec
from worker_service.analysis.measurement_stats import MeasureStats
from worker_service.analysis.nuclei import RGB
from worker_service.analysis.tiling import (
    Tile,
    TileGrid,
    choose_level,
    finer_level,
)
from worker_service.analysis.tissue import (
    TissueMask,
    detect_tissue,
    tile_tissue_fractions,
    tissue_polygons,
)
from worker_service.analysis.tissue_codec import ReusedTissue
from worker_service.backends.base import Backend, JobSlide, Prepared, Recipe, SizeLook
from worker_service.errors import JobFailed, RegionOutsideSlide
from worker_service.pipeline import tile_work
from worker_service.pipeline.context import JobContext
from worker_service.pipeline.preview import Preview
from worker_service.pipeline.tile_pool import TilePool
from worker_service.storage import result_files
from worker_service.storage.nucleus_table import NucleusSpool
from worker_service.storage.slides import SlideCache, SlideInfo, describe, read_thumbnail
from worker_service.storage.tile_journal import TileJournal, TileResult
from wsi_protocol import result_files as names
from wsi_runtime.job_params import JobParams
from wsi_runtime.pixel_size import usable_mpp
from wsi_runtime.version import VERSION

OVERVIEW_SIZE = 1024  # longest side of the image tissue is found on (and the preview)
DEFAULT_MPP = JobParams().target_mpp  # taken for a slide that gives no pixel size
JOURNAL = ".tiles-journal"  # a segmentation job's finished tiles, for a retry (tile_journal)


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

    def task(self, tile: Tile, region: regions.Vertices | None = None) -> tile_work.TileTask:
        return tile_work.TileTask(self.path, self.level, self.downsample, tile, self.mpp, region)


@dataclass(frozen=True)
class TissueAnalysis:
    mask: TissueMask
    polygons: list[Polygon]
    grid: TileGrid
    tissue_tiles: list[Tile]  # the tiles with at least min_tissue tissue (in the region)
    # Per tissue tile, the region to cut its nuclei to (None: keep all it owns).
    cuts: list[regions.Vertices | None]
    files: dict[str, str]  # tissue.geojson, tissue_mask.png
    reused_from: str = ""  # the job whose mask this is, when not found here
    region_area_px: float = 0.0  # of the job's region on the slide (level-0 px^2)

    def tasks(self, overview: Overview) -> list[tile_work.TileTask]:
        pairs = zip(self.tissue_tiles, self.cuts, strict=True)
        return [overview.task(tile, cut) for tile, cut in pairs]


@dataclass(frozen=True)
class Cells:
    nuclei: int
    tiles_processed: int
    cells_file: str
    backend_details: dict[str, object] = field(default_factory=dict)
    look: SizeLook | None = None  # the model's choice of pixel size, where it made one
    reference_s: float = 0.0  # preparing the backend (a stain reference, a model's first look)
    measures: dict[str, dict[str, float]] = field(default_factory=dict)  # MeasureStats.summary
    table_file: str = ""  # nuclei.parquet
    tiles_resumed: int = 0  # taken from the journal of an earlier run, not segmented again


def read_overview(
    path: str,
    params: JobParams,
    slides: SlideCache,
    ctx: JobContext,
    finest_mpp: float | None = None,
) -> Overview:
    """The slide at a glance, and the level nearest ``target_mpp``; or, for a
    backend whose nuclei are outlined on finer pixels than it segments at
    (``finest_mpp``), a finer level that gives them, unless its tiles would
    be more than a job may cover."""
    slide = slides.get(path)
    info = describe(slide)
    image = read_thumbnail(slide, OVERVIEW_SIZE, ctx.cancelled)
    mpp = params.slide_mpp or usable_mpp(info.mpp)
    level = choose_level(info.level_downsamples, mpp, params.target_mpp)
    finer = finer_level(info.level_downsamples, mpp, level, finest_mpp)
    width, height = info.level_dimensions[finer]
    if len(TileGrid(width, height, params.tile_size, params.overlap)) <= ctx.max_tiles:
        level = finer
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
    region, region_area = _region_on(overview, params)
    ctx.check()
    scale = overview.info.width / overview.image.shape[1]
    if reused is not None and tissue_codec.fits(reused.mask, overview.image.shape[:2], scale):
        mask, reused_from = reused.mask, reused.source_job_id
    else:
        mask, reused_from = detect_tissue(overview.image, scale), ""
    polygons = tissue_polygons(mask)
    if region is not None:
        polygons = regions.clip(polygons, region)
    ctx.check()
    files = _write_tissue(out_dir, mask, polygons, overview.mpp)
    fractions = tile_tissue_fractions(mask, grid, overview.downsample)
    tissue_tiles = [t for t, f in zip(grid, fractions, strict=True) if f >= params.min_tissue]
    cuts: list[regions.Vertices | None] = [None] * len(tissue_tiles)
    if region is not None:
        chosen = regions.tiles_for(region, tissue_tiles, overview.downsample)
        tissue_tiles, cuts = [t for t, _ in chosen], [cut for _, cut in chosen]
    ctx.check()
    return TissueAnalysis(
        mask, polygons, grid, tissue_tiles, cuts, files, reused_from, region_area_px=region_area
    )


def _region_on(overview: Overview, params: JobParams) -> tuple[Polygon | None, float]:
    """The job's region and its area on the slide (level-0 px^2), checked
    against the slide (RegionOutsideSlide if they do not meet)."""
    if params.region is None:
        return None, 0.0
    region = Polygon(params.region.vertices)
    width, height = overview.info.width, overview.info.height
    area = regions.area_on_slide(region, width, height)
    if area <= 0:
        x0, y0, x1, y1 = (round(v) for v in params.region.bounds)
        raise RegionOutsideSlide(
            f"param region ({x0},{y0} to {x1},{y1}) lies outside the slide, which is"
            f" {width} x {height} px at level 0"
        )
    return region, area


def segment_cells(
    overview: Overview,
    tissue: TissueAnalysis,
    backend: Backend,
    pool: TilePool,
    out_dir: Path,
    preview: Preview,
    ctx: JobContext,
) -> Cells:
    """Segments the tissue tiles in the pool and streams every nucleus a tile's
    core owns to the result files. Each finished tile is recorded in the
    job's journal, and the tiles an earlier run of the job recorded are
    taken from there instead of being segmented again."""
    started = time.perf_counter()
    prepared = _prepare(backend, overview, tissue.tissue_tiles, pool, ctx)
    reference_s = time.perf_counter() - started
    ctx.check()
    tasks = tissue.tasks(overview)
    fingerprint = _fingerprint(overview, tasks, prepared.recipe)
    journal = TileJournal(out_dir / JOURNAL, fingerprint, ctx.cancelled)
    try:
        if journal.held:  # the partial files are a killed run's, not a running one's
            _remove_partial_files(out_dir)
        sink = _CellSink(out_dir, preview)
        published = False
        try:
            resumed = sink.replay(journal)
            tiles_done = _segment(tasks, resumed, prepared, pool, sink, journal, ctx)
            table_file = sink.table.publish()
            published = True
        finally:
            sink.close(published)
        result_files.write_cell_index(out_dir / names.CELL_INDEX, sink.index.build())
    except BaseException:
        journal.close()  # kept: a retry continues from it
        raise
    journal.remove()  # the files are whole
    return Cells(
        nuclei=sink.cells.count,
        tiles_processed=tiles_done,
        cells_file=str(sink.cells.path),
        backend_details=prepared.details,
        look=prepared.look,
        reference_s=reference_s,
        measures=sink.stats.summary(),
        table_file=str(table_file),
        tiles_resumed=len(resumed),
    )


def _segment(
    tasks: list[tile_work.TileTask],
    resumed: set[int],
    prepared: Prepared,
    pool: TilePool,
    sink: _CellSink,
    journal: TileJournal,
    ctx: JobContext,
) -> int:
    """The tiles not ``resumed``, segmented in the pool and taken by ``sink``
    as they finish; returns the tiles done, resumed ones included."""
    total, done = len(tasks), len(resumed)
    ctx.report(done, total)
    position = {task: i for i, task in enumerate(tasks)}
    remaining = [task for i, task in enumerate(tasks) if i not in resumed]
    # One tile per pool task (a batch for a model): every process busy to the last tile.
    size = prepared.recipe.tiles_per_task
    chunks = (remaining[i : i + size] for i in range(0, len(remaining), size))
    recipe = (prepared.recipe,)
    for chunk, results in pool.imap(tile_work.segment_tiles, chunks, recipe, ctx.cancelled):
        for task, found in zip(chunk, results, strict=True):
            ctx.on_tile(found.seconds)
            sink.take(found)
            journal.add(position[task], found)
            done += 1
        ctx.report(done, total)
    return done


class _CellSink:
    """Where a job's nuclei go, tile by tile: cells.geojson, its index, the
    preview, the measurement statistics and the nucleus table."""

    def __init__(self, out_dir: Path, preview: Preview) -> None:
        self.preview = preview
        self.index = cell_index.IndexBuilder()
        self.stats = MeasureStats()
        self.table = NucleusSpool(out_dir / ".nuclei-spool", out_dir / names.NUCLEI_TABLE)
        try:
            self.cells = result_files.FeatureCollectionWriter(out_dir / names.CELLS)
        except BaseException:
            self.table.discard()
            raise

    def take(self, found: TileResult) -> None:
        offsets = [self.cells.add_text(feature) for feature in found.features]
        self.index.add(offsets, map(len, found.features), found.bounds)
        self.preview.nuclei(found.centroids)
        self.stats.add(found.measures)
        self.table.add(found.ids, found.centroids, found.measures, found.origin)

    def replay(self, journal: TileJournal) -> set[int]:
        """The tiles ``journal`` holds, taken as if just segmented; their indices."""
        taken: set[int] = set()
        for index, found in journal.recorded():
            if index not in taken:
                self.take(found)
                taken.add(index)
        return taken

    def close(self, ok: bool) -> None:
        self.cells.close(ok)
        if not ok:
            self.table.discard()


def _fingerprint(overview: Overview, tasks: list[tile_work.TileTask], recipe: Recipe) -> str:
    """What a journal's records are valid for: this worker's version, the
    slide file as it is now, the tiles in their order (the tissue found, the
    region's cuts) and the segmenter's recipe (its stain reference, say)."""
    stat = os.stat(overview.path)
    digest = hashlib.sha256()
    digest.update(f"{VERSION}|{overview.path}|{stat.st_size}|{stat.st_mtime_ns}|".encode())
    digest.update(f"{overview.level}|{overview.downsample}|{recipe!r}|".encode())
    for task in tasks:
        tile = task.tile
        digest.update(f"{tile.x},{tile.y},{tile.width},{tile.height},{task.region}|".encode())
    return digest.hexdigest()


def _remove_partial_files(out_dir: Path) -> None:
    for partial in out_dir.glob(".tmp-*"):
        partial.unlink(missing_ok=True)


def _prepare(
    backend: Backend, overview: Overview, tissue_tiles: list[Tile], pool: TilePool, ctx: JobContext
) -> Prepared:
    def spread(count: int) -> list[tile_work.TileTask]:
        """``count`` tissue tiles spread over the slide."""
        step = max(1, len(tissue_tiles) // count)
        return [overview.task(tile) for tile in tissue_tiles[::step][:count]]

    def sample_tiles(count: int) -> list[RGB]:
        return pool.map_all(tile_work.read_tile, spread(count), ())

    def sample_areas(recipe: Recipe, count: int) -> npt.NDArray[np.int64]:
        found = pool.map_all(tile_work.nucleus_areas, spread(count), (recipe,))
        return np.concatenate([np.zeros(0, np.int64), *found])

    pixel_um = (overview.mpp or DEFAULT_MPP) * overview.downsample
    slide = JobSlide(overview.working_mpp, pixel_um, sample_tiles, sample_areas)
    return backend.prepare(slide, ctx.models)


def _write_tissue(
    out_dir: Path, tissue: TissueMask, polygons: list[Polygon], mpp: float | None
) -> dict[str, str]:
    collection = result_files.FeatureCollectionWriter(out_dir / names.TISSUE)
    for polygon in polygons:
        area_um2 = polygon.area * mpp * mpp if mpp else None
        collection.add(
            result_files.tissue_feature(
                list(polygon.exterior.coords), [list(r.coords) for r in polygon.interiors], area_um2
            )
        )
    return {
        names.TISSUE: str(collection.close()),
        names.TISSUE_MASK: str(
            result_files.write_png(
                out_dir / names.TISSUE_MASK, result_files.mask_image(tissue.mask)
            )
        ),
    }
