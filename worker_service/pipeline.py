"""A job from slide to results: pick the level, find the tissue, segment the
tissue tiles in the process pool, stream the nuclei to disk, write the
summary. Runs in a worker thread; ``cancelled`` is polled between tiles."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw
from shapely.geometry import Polygon

from worker_service import results, tile_tasks
from worker_service.backends import (
    INSTANSEG_MPP,
    BackendSpec,
    BackendUnavailable,
    check_instanseg,
    instanseg_model_path,
)
from worker_service.nuclei import NucleusParams, stain_reference
from worker_service.slide_access import (
    SlideCache,
    SlideError,
    ThumbnailCancelled,
    describe,
    read_thumbnail,
)
from worker_service.tile_pool import Cancelled, PoolCrashed, TilePool
from worker_service.tiling import Tile, TileGrid, choose_level, usable_mpp
from worker_service.tissue import TissueMask, detect_tissue, tile_tissue_fractions, tissue_polygons
from wsi_runtime import job_params
from wsi_runtime.job_params import JobParams

THUMBNAIL_SIZE = 1024  # longest side of the image tissue is detected on (and the preview)
REFERENCE_TILES = 8  # tissue tiles sampled for the slide's stain reference
DEFAULT_MAX_TILES = 100_000  # tiles one job may cover (worker setting --max-tiles-per-job)
DEFAULT_TARGET_MPP = JobParams().target_mpp
BACKENDS = job_params.BACKENDS
JOB_TYPES = job_params.JOB_TYPES


class JobCancelled(Exception):
    pass


class JobFailed(Exception):
    """The job cannot succeed; the message tells the user why."""


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    job_type: str
    slide_path: str
    params: Mapping[str, str]


@dataclass(frozen=True)
class JobOutcome:
    files: dict[str, str]
    summary: dict[str, object]


def parse_params(spec: JobSpec) -> JobParams:
    """The job's parameters by the same schema the scheduler checked them with
    (a worker may be called by other schedulers, or an older one)."""
    try:
        return job_params.parse(spec.job_type, spec.params)
    except job_params.InvalidParams as exc:
        raise JobFailed(str(exc)) from None


@dataclass
class _Timings:
    started: float = field(default_factory=time.perf_counter)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.perf_counter() - self.started, 4)


def run_job(
    spec: JobSpec,
    results_dir: Path,
    cancelled: Callable[[], bool],
    report: Callable[[int, int], None],
    slides: SlideCache,
    pool: TilePool | None,
    on_tile: Callable[[float], None] = lambda seconds: None,
    max_tiles: int = DEFAULT_MAX_TILES,
) -> JobOutcome:
    """Runs in the calling thread; only segmentation tiles go to ``pool`` (None
    is enough for TISSUE_MASK: the worker runs such a job whole in a pool
    process, see ``run_tissue_job``). ``on_tile`` hears each segmented tile's
    processing time. ``cancelled`` is polled in every phase that can take long."""
    timings = _Timings()
    settings = parse_params(spec)
    model_path = ""
    if spec.job_type == "CELL_SEGMENTATION" and settings.backend == "instanseg":
        path = instanseg_model_path()
        try:
            check_instanseg(path)
        except BackendUnavailable as exc:
            raise JobFailed(str(exc)) from exc
        model_path = str(path)
        settings = dataclasses.replace(settings, target_mpp=INSTANSEG_MPP)
    out_dir = results_dir / spec.job_id
    try:
        slide = slides.get(spec.slide_path)
        info = describe(slide)
        thumbnail = read_thumbnail(slide, THUMBNAIL_SIZE, cancelled)
    except ThumbnailCancelled:
        raise JobCancelled() from None
    except (SlideError, OSError) as exc:
        raise JobFailed(str(exc)) from exc
    except Exception as exc:  # OpenSlideError while decoding the thumbnail
        raise JobFailed(f"cannot read slide {spec.slide_path}: {exc}") from exc
    mpp = usable_mpp(info.mpp)
    level = choose_level(info.level_downsamples, mpp, settings.target_mpp)
    downsample = info.level_downsamples[level]
    level_w, level_h = info.level_dimensions[level]
    tiles = TileGrid(level_w, level_h, settings.tile_size, settings.overlap)
    if len(tiles) > max_tiles:
        raise JobFailed(
            f"this job would cover {len(tiles):,} tiles ({level_w} x {level_h} px at level"
            f" {level}, tile_size {settings.tile_size}); a job may cover at most {max_tiles:,}."
            " Use a larger tile_size or target_mpp"
        )
    _check(cancelled)
    tissue = detect_tissue(thumbnail, info.width / thumbnail.shape[1])
    polygons = tissue_polygons(tissue)
    timings.mark("tissue_s")
    _check(cancelled)
    files = _write_tissue(out_dir, tissue, polygons, mpp)
    fractions = tile_tissue_fractions(tissue, tiles, downsample)
    tissue_tiles = [t for t, f in zip(tiles, fractions, strict=True) if f >= settings.min_tissue]
    _check(cancelled)
    preview = Image.fromarray(thumbnail).copy()
    preview_scale = preview.width / info.width  # preview pixels per level-0 pixel
    _draw_tissue(preview, polygons, preview_scale)
    summary: dict[str, object] = {
        "job_id": spec.job_id,
        "job_type": spec.job_type,
        "slide": {
            "path": spec.slide_path,
            "vendor": info.vendor,
            "width": info.width,
            "height": info.height,
            "levels": info.level_count,
            "mpp": info.mpp,
        },
        "level": level,
        "downsample": downsample,
        "mpp_used": round(mpp * downsample, 4) if mpp else None,
        "mpp_note": "" if mpp else "slide has no usable pixel size metadata: read level 0",
        "tile_size": settings.tile_size,
        "overlap": settings.overlap,
        "min_tissue": settings.min_tissue,
        "tissue_fraction": round(float(tissue.mask.mean()), 4),
        "tiles_total": len(tiles),
        "tiles_tissue": len(tissue_tiles),
        "tiles_skipped": len(tiles) - len(tissue_tiles),
    }
    if spec.job_type == "TISSUE_MASK":
        summary["tiles_processed"] = 0
    else:
        run = _Segmentation(
            slide_path=spec.slide_path,
            level=level,
            downsample=downsample,
            mpp=mpp,
            out_dir=out_dir,
            preview=preview,
            preview_scale=preview_scale,
        )
        assert pool is not None, "cell segmentation needs the tile pool"
        try:
            backend, backend_info = _backend(settings, run, tissue_tiles, pool, model_path)
        except (tile_tasks.TileReadError, PoolCrashed) as exc:
            raise JobFailed(str(exc)) from exc
        _check(cancelled)
        outcome = run.segment(backend, tissue_tiles, pool, cancelled, report, on_tile)
        files["cells.geojson"] = outcome.pop("cells.geojson")  # type: ignore[assignment]
        summary.update(outcome, backend=settings.backend, backend_details=backend_info)
        timings.mark("segmentation_s")
    # Level 1: a third faster than the default on a 1024 px preview, 9 % larger.
    files["preview.png"] = str(results.write_png(out_dir / "preview.png", preview, 1))
    timings.mark("total_s")
    summary["timings"] = timings.marks
    files["summary.json"] = str(results.write_json(out_dir / "summary.json", summary))
    return JobOutcome(files=files, summary=summary)


_slides = SlideCache(per_thread=2)


def run_tissue_job(
    spec: JobSpec, results_dir: Path, cancel_token: int, max_tiles: int = DEFAULT_MAX_TILES
) -> JobOutcome:
    """A TISSUE_MASK job, run whole inside a pool process: all of it is CPU work,
    which would otherwise hold the worker's GIL against its event loop. The
    worker cancels it through ``cancel_token`` (see ``tile_pool.CancelBoard``)."""
    return run_job(
        spec,
        results_dir,
        lambda: tile_tasks.is_cancelled(cancel_token),
        lambda done, total: None,
        _slides,
        None,
        max_tiles=max_tiles,
    )


def _check(cancelled: Callable[[], bool]) -> None:
    if cancelled():
        raise JobCancelled()


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


def _draw_tissue(preview: Image.Image, polygons: list[Polygon], scale: float) -> None:
    draw = ImageDraw.Draw(preview)
    for polygon in polygons:
        for ring in (polygon.exterior, *polygon.interiors):
            draw.line([(x * scale, y * scale) for x, y in ring.coords], fill=(0, 160, 0), width=2)


def _backend(
    settings: JobParams,
    run: _Segmentation,
    tissue_tiles: list[Tile],
    pool: TilePool,
    model_path: str,
) -> tuple[BackendSpec, dict[str, object]]:
    if settings.backend == "instanseg":
        return BackendSpec("instanseg", model_path=model_path), {
            "model": model_path,
            "model_mpp": INSTANSEG_MPP,
        }
    # Classical: one haematoxylin threshold for the whole slide, from tiles spread over it.
    step = max(1, len(tissue_tiles) // REFERENCE_TILES)
    sample = [run.task(tile) for tile in tissue_tiles[::step][:REFERENCE_TILES]]
    reference = stain_reference(pool.map_all(tile_tasks.read_tile, sample, ()))
    params = NucleusParams(mpp=(run.mpp or DEFAULT_TARGET_MPP) * run.downsample)
    return BackendSpec("classical", reference, params), {
        "threshold": round(reference.threshold, 4),
        "h_p99": round(reference.h_high, 4),
    }


@dataclass
class _Segmentation:
    """One CELL_SEGMENTATION run over the tissue tiles of a slide."""

    slide_path: str
    level: int
    downsample: float
    mpp: float | None
    out_dir: Path
    preview: Image.Image
    preview_scale: float

    def task(self, tile: Tile) -> tile_tasks.TileTask:
        return tile_tasks.TileTask(self.slide_path, self.level, self.downsample, tile)

    def segment(
        self,
        backend: BackendSpec,
        tiles: list[Tile],
        pool: TilePool,
        cancelled: Callable[[], bool],
        report: Callable[[int, int], None],
        on_tile: Callable[[float], None],
    ) -> dict[str, object]:
        """Streams every owned nucleus to cells.geojson and the preview."""
        total = len(tiles)
        report(0, total)
        um2_per_px0 = self.mpp * self.mpp if self.mpp else None
        draw = ImageDraw.Draw(self.preview)
        cells = results.FeatureCollectionWriter(self.out_dir / "cells.geojson")
        done = 0
        ok = False
        try:
            tasks = (self.task(tile) for tile in tiles)
            for _, found in pool.imap(tile_tasks.segment_tile, tasks, (backend,), cancelled):
                on_tile(found.seconds)
                for nucleus in found.nuclei:
                    area_px0 = nucleus.area_px * self.downsample * self.downsample
                    area_um2 = area_px0 * um2_per_px0 if um2_per_px0 else None
                    cells.add(
                        results.nucleus_feature(
                            nucleus.polygon, nucleus.centroid, area_um2, area_px0
                        )
                    )
                    x = nucleus.centroid[0] * self.preview_scale
                    y = nucleus.centroid[1] * self.preview_scale
                    draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=(255, 220, 0))
                done += 1
                report(done, total)
            ok = True
        except Cancelled:
            raise JobCancelled() from None
        except (tile_tasks.TileReadError, PoolCrashed) as exc:
            raise JobFailed(str(exc)) from exc
        finally:
            path = cells.close(ok)
        return {"tiles_processed": done, "nuclei": cells.count, "cells.geojson": str(path)}
