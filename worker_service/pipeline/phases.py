"""The phases of a job, each with a typed result: the slide's overview and
working level, the tissue analysis, the cell segmentation. Every phase takes
the job's ``JobContext`` (cancellation, progress, tile timings, limits) and
raises only the worker's own errors (``errors.py``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from shapely.geometry import Polygon

from worker_service.analysis import cell_index, tissue_codec
from worker_service.analysis.measurement_stats import MeasureStats
from worker_service.analysis.nuclei import RGB
from worker_service.analysis.tiling import Tile, TileGrid, choose_level, usable_mpp
from worker_service.analysis.tissue import (
    TissueMask,
    detect_tissue,
    tile_tissue_fractions,
    tissue_polygons,
)
from worker_service.analysis.tissue_codec import ReusedTissue
from worker_service.backends.base import Backend, JobSlide, Prepared
from worker_service.errors import JobFailed
from worker_service.pipeline import tile_work
from worker_service.pipeline.context import JobContext
from worker_service.pipeline.preview import Preview
from worker_service.pipeline.tile_pool import TilePool
from worker_service.storage import result_files
from worker_service.storage.nucleus_table import NucleusSpool
from worker_service.storage.slides import SlideCache, SlideInfo, describe, read_thumbnail
from wsi_protocol import result_files as names
from wsi_runtime.job_params import JobParams

OVERVIEW_SIZE = 1024  # longest side of the image tissue is found on (and the preview)
DEFAULT_MPP = JobParams().target_mpp  # taken for a slide that gives no pixel size


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

    def task(self, tile: Tile) -> tile_work.TileTask:
        return tile_work.TileTask(self.path, self.level, self.downsample, tile, self.mpp)


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
    reference_s: float = 0.0  # preparing the backend (the classical stain reference)
    measures: dict[str, dict[str, float]] = field(default_factory=dict)  # MeasureStats.summary
    table_file: str = ""  # nuclei.parquet


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
    backend: Backend,
    pool: TilePool,
    out_dir: Path,
    preview: Preview,
    ctx: JobContext,
) -> Cells:
    """Segments the tissue tiles in the pool and streams every nucleus a tile's
    core owns to cells.geojson and the preview."""
    started = time.perf_counter()
    prepared = _prepare(backend, overview, tissue.tissue_tiles, pool, ctx)
    reference_s = time.perf_counter() - started
    ctx.check()
    tiles = tissue.tissue_tiles
    total = len(tiles)
    ctx.report(0, total)
    cells = result_files.FeatureCollectionWriter(out_dir / names.CELLS)
    index = cell_index.IndexBuilder()
    stats = MeasureStats()
    table = NucleusSpool(out_dir / ".nuclei-spool", out_dir / names.NUCLEI_TABLE)
    done = 0
    ok = False
    try:
        # One tile per pool task (a batch for a model): every process busy to the last tile.
        size = prepared.recipe.tiles_per_task
        chunks = ([overview.task(t) for t in tiles[i : i + size]] for i in range(0, total, size))
        recipe = (prepared.recipe,)
        for _, chunk in pool.imap(tile_work.segment_tiles, chunks, recipe, ctx.cancelled):
            for found in chunk:
                ctx.on_tile(found.seconds)
                offsets = [cells.add_text(feature) for feature in found.features]
                index.add(offsets, map(len, found.features), found.bounds)
                preview.nuclei(found.centroids)
                stats.add(found.measures)
                table.add(found.ids, found.centroids, found.measures, found.origin)
                done += 1
            ctx.report(done, total)
        table_file = table.publish()
        ok = True
    finally:
        path = cells.close(ok)
        if not ok:
            table.discard()
    result_files.write_cell_index(out_dir / names.CELL_INDEX, index.build())
    return Cells(
        nuclei=cells.count,
        tiles_processed=done,
        cells_file=str(path),
        backend_details=prepared.details,
        reference_s=reference_s,
        measures=stats.summary(),
        table_file=str(table_file),
    )


def _prepare(
    backend: Backend, overview: Overview, tissue_tiles: list[Tile], pool: TilePool, ctx: JobContext
) -> Prepared:
    def sample_tiles(count: int) -> list[RGB]:
        """``count`` tissue tiles spread over the slide, read in the pool."""
        step = max(1, len(tissue_tiles) // count)
        sample = [overview.task(tile) for tile in tissue_tiles[::step][:count]]
        return pool.map_all(tile_work.read_tile, sample, ())

    pixel_um = (overview.mpp or DEFAULT_MPP) * overview.downsample
    return backend.prepare(JobSlide(overview.working_mpp, pixel_um, sample_tiles), ctx.models)


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
