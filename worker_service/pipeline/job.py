"""A job from slide to results, as phases (``phases.py``): read the overview
and pick the level, analyse the tissue, segment the tissue tiles in the
process pool (CELL_SEGMENTATION), then write the preview and the summary.
Runs in a worker thread, or whole in a pool process for a TISSUE_MASK job."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from worker_service.analysis.tissue import TissueMask
from worker_service.analysis.tissue_codec import ReusedTissue
from worker_service.backends import registry
from worker_service.backends.base import SizeLook
from worker_service.pipeline import pool_process
from worker_service.pipeline.context import DEFAULT_MAX_TILES, JobContext
from worker_service.pipeline.phases import (
    DEFAULT_MPP,
    Cells,
    Overview,
    TissueAnalysis,
    analyse_tissue,
    read_overview,
    segment_cells,
)
from worker_service.pipeline.preview import Preview
from worker_service.pipeline.tile_pool import TilePool
from worker_service.storage import result_files
from worker_service.storage.slides import SlideCache
from wsi_protocol import result_files as names
from wsi_protocol.job_types import JobType
from wsi_runtime import job_params
from wsi_runtime.job_params import JobParams
from wsi_runtime.pixel_size import usable_mpp


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    job_type: JobType
    slide_path: str
    params: Mapping[str, str]
    tissue: ReusedTissue | None = None  # found by an earlier job on this slide
    slide_name: str = ""  # the slide as users name it (relative to its root), for answers


@dataclass(frozen=True)
class JobOutcome:
    files: dict[str, str]
    summary: dict[str, object]
    tissue_mask: TissueMask | None = None  # a TISSUE_MASK job's, for later jobs to reuse


@dataclass
class _Timings:
    """Seconds per phase of a job, for summary.json: where a job's time goes
    (everything but the tiles is serial work)."""

    started: float = field(default_factory=time.perf_counter)
    last: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)

    def phase(self, name: str) -> float:
        """Ends the phase ``name`` now; returns its length."""
        now = time.perf_counter()
        seconds = now - (self.last or self.started)
        self.last = now
        self.phases[name] = round(seconds, 4)
        return seconds

    def total(self) -> dict[str, float]:
        """The job's time to the end of its last phase: read from the clock
        again, a thread switch between the two reads (seen under load: 15 ms)
        put time in the total that no phase had."""
        self.phases["total_s"] = round((self.last or time.perf_counter()) - self.started, 4)
        return self.phases


def run_job(
    spec: JobSpec,
    results_dir: Path,
    ctx: JobContext,
    slides: SlideCache,
    pool: TilePool | None,
) -> JobOutcome:
    """Only segmentation tiles go to ``pool`` (None is enough for TISSUE_MASK,
    which the worker runs whole in a pool process: see ``run_tissue_job``)."""
    timings = _Timings()
    # Parsed again by the schema the scheduler checked them with: a worker may
    # be called by another scheduler, or an older one.
    params = job_params.parse(spec.job_type, spec.params)
    if not params.backend:
        params = dataclasses.replace(params, backend=ctx.default_backend)
    backend = None
    if spec.job_type == JobType.CELL_SEGMENTATION:
        backend = registry.get(params.backend)
        backend.check(ctx.models)
        if backend.mpp:  # a model's own pixel size decides the level read
            params = dataclasses.replace(params, target_mpp=backend.mpp)
    out_dir = result_files.job_folder(results_dir, spec.job_id)
    finest = backend.outline_mpp if backend else None
    overview = read_overview(spec.slide_path, params, slides, ctx, finest)
    timings.phase("overview_s")  # opening the slide, reading its overview
    tissue = analyse_tissue(overview, params, out_dir, ctx, spec.tissue)
    timings.phase("tissue_s")  # the mask, its polygons and files, the tile choice
    files = dict(tissue.files)
    preview = Preview(overview.image, overview.info.width, tissue.polygons)
    cells: Cells | None = None
    if backend is not None:
        assert pool is not None, "cell segmentation needs the tile pool"
        cells = segment_cells(overview, tissue, backend, pool, out_dir, preview, ctx)
        files[names.CELLS] = cells.cells_file
        files[names.NUCLEI_TABLE] = cells.table_file
        segmentation = timings.phase("segmentation_s")
        # Preparing the backend: the classical stain reference, the learned first look.
        timings.phases["reference_s"] = round(cells.reference_s, 4)
        timings.phases["tiles_s"] = round(segmentation - cells.reference_s, 4)
    files[names.PREVIEW] = preview.write(out_dir)
    timings.phase("preview_s")
    summary = _summary(spec, params, overview, tissue, cells, timings.total())
    files[names.SUMMARY] = str(result_files.write_json(out_dir / names.SUMMARY, summary))
    mask = tissue.mask if spec.job_type == JobType.TISSUE_MASK else None
    return JobOutcome(files=files, summary=summary, tissue_mask=mask)


def _summary(
    spec: JobSpec,
    params: JobParams,
    overview: Overview,
    tissue: TissueAnalysis,
    cells: Cells | None,
    timings: dict[str, float],
) -> dict[str, object]:
    tiles_total = len(tissue.grid)
    summary: dict[str, object] = {
        "job_id": spec.job_id,
        "job_type": spec.job_type,
        "slide": _slide_summary(spec, overview),
        "level": overview.level,
        "downsample": overview.downsample,
        "mpp_used": overview.working_mpp,
        "mpp_note": _mpp_note(spec, params, overview, cells),
        "tile_size": params.tile_size,
        "overlap": params.overlap,
        "min_tissue": params.min_tissue,
        "tissue_fraction": round(float(tissue.mask.mask.mean()), 4),
        # The tissue outlines' area (tissue.geojson), for densities; None without a pixel size.
        "tissue_area_mm2": _mm2(sum(p.area for p in tissue.polygons), overview.mpp),
        # The scale and threshold of tissue_mask.png: what a later job on this
        # slide needs to take the mask instead of finding the tissue again.
        "tissue_mask": {"downsample": tissue.mask.downsample, "threshold": tissue.mask.threshold},
        # The TISSUE_MASK job whose mask this job took instead of finding it again.
        "tissue_mask_from": tissue.reused_from or None,
        "tiles_total": tiles_total,
        "tiles_tissue": len(tissue.tissue_tiles),
        "tiles_skipped": tiles_total - len(tissue.tissue_tiles),
        "tiles_processed": cells.tiles_processed if cells else 0,
        # Of those, the tiles an earlier, interrupted run of the job had done.
        "tiles_resumed": cells.tiles_resumed if cells else 0,
    }
    if params.region is not None:
        # The job covered this region only: tissue, tiles and nuclei inside it.
        summary["region"] = {
            "text": params.region.text(),
            "bounds": [round(v, 2) for v in params.region.bounds],
            "area_mm2": _mm2(tissue.region_area_px, overview.mpp),
        }
    if cells is not None:
        summary.update(
            nuclei=cells.nuclei,
            backend=params.backend,
            # Whether the job named its backend or took the worker's default.
            backend_from="job" if spec.params.get("backend") else "worker default",
            backend_details=cells.backend_details,
            # Mean and quantiles of each nucleus measurement over the slide.
            measurements=cells.measures,
        )
    summary["timings"] = timings
    return summary


def _slide_summary(spec: JobSpec, overview: Overview) -> dict[str, object]:
    info = overview.info
    return {
        "path": spec.slide_name or Path(spec.slide_path).name,
        "vendor": info.vendor,
        "width": info.width,
        "height": info.height,
        "levels": info.level_count,
        "mpp": info.mpp,
    }


def _mm2(area_px: float, mpp: float | None) -> float | None:
    """A level-0 area in mm^2 (6 significant digits); None without a pixel size."""
    if not mpp:
        return None
    return float(f"{area_px * mpp * mpp / 1e6:.6g}")


def _mpp_note(spec: JobSpec, params: JobParams, overview: Overview, cells: Cells | None) -> str:
    """Why the pixel size used is not the one asked for, when it is not."""
    look = cells.look if cells else None
    notes = [] if overview.mpp else [_unknown_pixel_size_note(look)]
    own = usable_mpp(overview.info.mpp)
    if params.slide_mpp and own and own != params.slide_mpp:
        notes.append(f"slide_mpp={params.slide_mpp:g} used instead of the slide's {own:g} um/px")
    asked = spec.params.get("target_mpp", "").strip()
    if asked and params.backend and spec.job_type == JobType.CELL_SEGMENTATION:
        model_mpp = registry.get(params.backend).mpp
        if model_mpp and float(asked) != model_mpp:
            notes.append(
                f"target_mpp={asked} not used: the {params.backend} backend segments at"
                f" {model_mpp} um/px, the pixel size its model was trained at"
            )
    if look is not None and look.model_mpp != look.trained_mpp:
        notes.append(
            f"the {params.backend} model looked at the slide at {look.model_mpp} um/px,"
            f" closer than its own: its nuclei are small (first look: median"
            f" {look.sample_nucleus_um2} um^2)"
        )
    return "; ".join(notes)


def _unknown_pixel_size_note(look: SizeLook | None) -> str:
    """What a slide without a pixel size was taken as, why, and how to say
    otherwise. The learned backend's two first looks say which scan its
    nuclei look like; other backends take the default."""
    taken = look.slide_mpp_from_nuclei if look else None
    looks = look.first_looks_um2 if look else {}
    medians = ", ".join(f"{median} um^2 taken as {mpp} um/px" for mpp, median in looks.items())
    if taken is not None and taken < DEFAULT_MPP:
        return (
            "slide has no usable pixel size metadata: level 0 read; its nuclei look like a"
            f" 40x scan's (first looks: median {medians}), so the model took it as"
            f" {taken:g} um/px (measurements stay in pixels); if it is another,"
            " give it as slide_mpp"
        )
    why = f", as its nuclei say (first looks: median {medians})" if medians else ""
    return (
        "slide has no usable pixel size metadata: level 0 read and taken as"
        f" {DEFAULT_MPP:g} um/px{why}; if it is another, give it as slide_mpp"
        " (0.25 for a 40x scan)"
    )


def run_tissue_job(
    spec: JobSpec, results_dir: Path, cancel_token: int, max_tiles: int = DEFAULT_MAX_TILES
) -> JobOutcome:
    """A TISSUE_MASK job, run whole inside a pool process: all of it is CPU work,
    which would otherwise hold the worker's GIL against its event loop. The
    worker cancels it through ``cancel_token`` (see ``cancel_board``)."""
    ctx = JobContext(cancelled=lambda: pool_process.is_cancelled(cancel_token), max_tiles=max_tiles)
    return run_job(spec, results_dir, ctx, pool_process.slides, None)
