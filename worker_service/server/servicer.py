"""The worker's gRPC face, thin: RunJob admits a request and relays its
``JobRun``; the viewer's calls go to the ``ViewerReader``; result files are
served by job id and plain name. The worker's own errors become statuses
here, once (``_viewer_status``), in the public API's terms: the scheduler
relays INVALID_ARGUMENT and NOT_FOUND to the user as they come."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc
from prometheus_client import CollectorRegistry

from worker_service.analysis import tissue_codec
from worker_service.analysis.cell_index import COLLECTION_END, COLLECTION_START
from worker_service.analysis.tissue_codec import ReusedTissue
from worker_service.backends import registry
from worker_service.backends.base import ModelSettings
from worker_service.errors import SlideError
from worker_service.pipeline.cancel_board import CancelBoard
from worker_service.pipeline.context import DEFAULT_MAX_TILES, JobContext
from worker_service.pipeline.job import JobSpec
from worker_service.pipeline.tile_pool import TilePool
from worker_service.server.job_run import JobExecution, JobRun, RunOne
from worker_service.server.metrics import WorkerMetrics
from worker_service.storage import result_files
from worker_service.storage.slides import SlideCache
from worker_service.viewer import slide_tiles
from worker_service.viewer.cell_queries import NUCLEI_PER_READ, TooManyNuclei
from worker_service.viewer.reader import ViewerReader
from wsi_protocol import result_files as names
from wsi_protocol.ids import is_scheduler_id
from wsi_protocol.job_types import JobType
from wsi_protocol.scheduler.v1 import scheduler_pb2 as spb
from wsi_protocol.worker.v1 import worker_pb2 as pb
from wsi_protocol.worker.v1 import worker_pb2_grpc as pb_grpc
from wsi_runtime.boxes import BoxError
from wsi_runtime.slide_paths import SlidePathError, resolve_slide, shown_path
from wsi_runtime.version import VERSION

if TYPE_CHECKING:
    from wsi_runtime.serving import Context

log = logging.getLogger("wsi.worker")
T = TypeVar("T")
RESULT_CHUNK_BYTES = 256 * 1024


class WorkerServicer(pb_grpc.WorkerServicer):
    def __init__(
        self,
        slots: int,
        results_dir: Path,
        slide_roots: Sequence[Path],
        pool: TilePool,
        progress_interval: float = 0.2,
        metrics: WorkerMetrics | None = None,
        max_tiles: int = DEFAULT_MAX_TILES,
        default_backend: str = "classical",
        models: ModelSettings | None = None,
        run: RunOne | None = None,
        viewer: ViewerReader | None = None,
    ) -> None:
        """``run`` and ``viewer`` default to the real ones (jobs in threads and
        the pool, slides through OpenSlide); tests pass their own."""
        self.slots = slots
        # Kept while the process lives: the scheduler counts this worker once
        # under every address it is reached by.
        self.worker_id = uuid.uuid4().hex
        self.default_backend = default_backend
        self.models = models or ModelSettings()
        self.max_tiles = max_tiles
        self.results_dir = results_dir
        self.slide_roots = list(slide_roots)
        self.progress_interval = progress_interval
        self.executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="tiles")
        self.board: CancelBoard = pool.cancel_board
        self.run = run or JobExecution(
            self.executor, pool, SlideCache(roots=self.slide_roots), results_dir
        )
        self.viewer = viewer or ViewerReader(self.slide_roots)
        self.running = 0
        self.metrics = metrics or WorkerMetrics(CollectorRegistry())
        self.metrics.watch_slots(slots, lambda: self.running)

    async def GetInfo(self, request: pb.GetInfoRequest, context: Context) -> pb.WorkerInfo:
        return self.info()

    def info(self) -> pb.WorkerInfo:
        backends = registry.available(self.models)
        return pb.WorkerInfo(
            slots=self.slots,
            job_types=[job_type.number for job_type in JobType],
            version=VERSION,
            backends=list(backends),
            backend_mpp=backends,
            worker_id=self.worker_id,
        )

    # ---- jobs ------------------------------------------------------------------

    async def RunJob(
        self, request: pb.RunJobRequest, context: Context
    ) -> AsyncIterator[pb.JobUpdate]:
        admitted = await self._admit(request, context)
        if isinstance(admitted, pb.JobUpdate):
            yield admitted
            return
        spec = admitted
        job_context = JobContext(
            on_tile=self.metrics.tile_observer(spec.job_type),
            max_tiles=self.max_tiles,
            default_backend=self.default_backend,
            models=self.models,
        )
        run = JobRun(
            spec, self.run, job_context, self.board, self.progress_interval, self._discard_results
        )
        log.debug("job %s attempt %d: %s", spec.job_id, request.attempt, spec.job_type)
        self.running += 1
        ended = False

        def end() -> None:
            nonlocal ended
            if not ended:
                ended = True
                self.running -= 1
                self.metrics.job_ended(spec.job_type, run.outcome)

        try:
            async for update in run.updates():
                if update.WhichOneof("update") in ("result", "error"):
                    # Counted before the scheduler hears of it, so that this
                    # worker's metrics never lag the job's state there.
                    end()
                yield update
        finally:
            end()  # a cancelled or lost call

    async def _admit(self, request: pb.RunJobRequest, context: Context) -> JobSpec | pb.JobUpdate:
        """The job to run, or the error update that refuses it (a slide it may
        not read fails the job; a malformed request is refused outright)."""
        job_type = JobType.from_number(request.job_type)
        if job_type is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"unknown job type {request.job_type!r}"
            )
        if not is_scheduler_id(request.job_id):
            # It names the job's results folder: never a path.
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "job_id must be a scheduler job id (a lowercase UUID)",
            )
        shown = shown_path(request.wsi_path, self.slide_roots)
        try:
            slide = resolve_slide(request.wsi_path, self.slide_roots)
        except SlidePathError as exc:
            log.warning("job %s: slide %s refused: %s", request.job_id, request.wsi_path, exc)
            where = "outside the slide roots" if exc.permission else "not a readable file"
            return pb.JobUpdate(
                error=pb.JobError(
                    message=f"slide {shown!r} is {where} on this worker",
                    code="PERMISSION_DENIED" if exc.permission else "INVALID_ARGUMENT",
                )
            )
        return JobSpec(
            request.job_id,
            job_type,
            str(slide),
            dict(request.params),
            _reused_tissue(request),
            slide_name=shown,
        )

    async def _discard_results(self, job_id: str) -> None:
        """A job that did not succeed leaves no files behind (half-written
        results, temporary files): its folder goes."""
        folder = result_files.job_folder(self.results_dir, job_id)
        await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)

    # ---- result files ----------------------------------------------------------------

    async def ReadResult(
        self, request: pb.ReadResultRequest, context: Context
    ) -> AsyncIterator[pb.FileChunk]:
        path = await self._result_path(request.job_id, request.name, context)
        with await asyncio.to_thread(open, path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            first = True
            while True:
                data = await asyncio.to_thread(handle.read, RESULT_CHUNK_BYTES)
                if not data and not first:
                    return
                yield pb.FileChunk(data=data, size=size if first else 0)
                first = False

    async def _result_path(self, job_id: str, name: str, context: Context) -> Path:
        """A result file of this worker's, by job id and plain name; NOT_FOUND
        for anything else (a path, a link out of the job's folder, a folder)."""
        if is_scheduler_id(job_id) and "/" not in name:
            path = await asyncio.to_thread(_result_file, self.results_dir, job_id, name)
            if path is not None:
                return path
        await context.abort(grpc.StatusCode.NOT_FOUND, "gone from its worker")
        raise AssertionError("unreachable")

    async def DeleteResults(
        self, request: pb.DeleteResultsRequest, context: Context
    ) -> pb.DeleteResultsResponse:
        if not is_scheduler_id(request.job_id):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "job_id must be a scheduler job id"
            )
        await self._discard_results(request.job_id)
        log.info("job %s: results deleted (retention)", request.job_id)
        return pb.DeleteResultsResponse()

    # ---- the viewer ----------------------------------------------------------------

    async def DescribeDeepZoom(
        self, request: pb.DeepZoomRequest, context: Context
    ) -> spb.DeepZoomInfo:
        found = await _viewer_answer(context, self.viewer.describe(request.wsi_path))
        return spb.DeepZoomInfo(
            width=found.width,
            height=found.height,
            tile_size=slide_tiles.TILE_SIZE,
            overlap=slide_tiles.OVERLAP,
            format="jpeg",
            levels=[
                spb.DeepZoomLevel(width=w, height=h, columns=c, rows=r)
                for w, h, c, r in found.levels
            ],
            offset_x=found.offset_x,
            offset_y=found.offset_y,
        )

    async def ReadDeepZoomTile(
        self, request: pb.DeepZoomTileRequest, context: Context
    ) -> spb.DeepZoomTile:
        data = await _viewer_answer(
            context, self.viewer.tile(request.wsi_path, request.level, request.col, request.row)
        )
        return spb.DeepZoomTile(data=data, content_type="image/jpeg")

    async def QueryCells(
        self, request: pb.QueryCellsRequest, context: Context
    ) -> AsyncIterator[pb.FileChunk]:
        """A FeatureCollection in chunks, read ``NUCLEI_PER_READ`` nuclei at a
        time: what one call holds stays bounded however large the box."""
        cells = await self._result_path(request.job_id, names.CELLS, context)
        box = (request.x0, request.y0, request.x1, request.y1)
        selection = await _viewer_answer(context, self.viewer.select_cells(cells, box))
        pending = bytearray(COLLECTION_START)
        separator = b""
        for start in range(0, len(selection), NUCLEI_PER_READ):
            found = await _viewer_answer(
                context, self.viewer.read_cells(selection, start, start + NUCLEI_PER_READ)
            )
            if found:
                pending += separator
                pending += found
                separator = b","
            while len(pending) >= RESULT_CHUNK_BYTES:
                yield pb.FileChunk(data=bytes(pending[:RESULT_CHUNK_BYTES]))
                del pending[:RESULT_CHUNK_BYTES]
        pending += COLLECTION_END
        yield pb.FileChunk(data=bytes(pending))

    async def CellDensity(
        self, request: pb.CellDensityRequest, context: Context
    ) -> spb.CellDensity:
        cells = await self._result_path(request.job_id, names.CELLS, context)
        cell, columns, rows, counts = await _viewer_answer(
            context, self.viewer.density(cells, request.cell_px)
        )
        return spb.CellDensity(
            cell_px=cell,
            columns=columns,
            rows=rows,
            counts=counts.tolist(),
            nuclei=int(counts.sum()),
        )

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.viewer.close()


def _viewer_status(exc: Exception) -> tuple[grpc.StatusCode, str] | None:
    """The public status and message for one of the worker's own errors; the
    scheduler puts what was asked in front. Where a slide cannot be read the
    user learns no more than that (not whether it exists)."""
    if isinstance(exc, BoxError | TooManyNuclei):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, slide_tiles.NoSuchTile | SlideError):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, SlidePathError):
        return grpc.StatusCode.NOT_FOUND, "not readable on its worker now"
    if isinstance(exc, FileNotFoundError):  # the job's results deleted (retention) while asked
        return grpc.StatusCode.NOT_FOUND, "gone from its worker"
    return None


async def _viewer_answer(context: Context, work: Awaitable[T]) -> T:
    try:
        return await work
    except Exception as exc:
        status = _viewer_status(exc)
        if status is None:
            raise
        await context.abort(*status)
        raise AssertionError("unreachable") from None


def _result_file(results_dir: Path, job_id: str, name: str) -> Path | None:
    try:
        folder = result_files.job_folder(results_dir, job_id)
        path = Path(os.path.realpath(folder / name))
    except (ValueError, OSError):  # a NUL in the name; a job folder linked out of the root
        return None
    return path if path.parent == folder and path.is_file() else None


def _reused_tissue(request: pb.RunJobRequest) -> ReusedTissue | None:
    """The earlier job's mask the scheduler sent, if any and readable: a
    mask that cannot be read is not an error, the job finds its own."""
    if not request.HasField("tissue_mask"):
        return None
    sent = request.tissue_mask
    try:
        mask = tissue_codec.decode(sent.mask_png, sent.downsample, sent.threshold)
    except ValueError as exc:
        log.warning(
            "job %s: tissue mask of job %s not used: %s", request.job_id, sent.source_job_id, exc
        )
        return None
    return ReusedTissue(mask, sent.source_job_id)
