"""The worker's gRPC face: RunJob streams a job's progress and outcome.

A segmentation job runs in a thread (its tiles in the shared process pool), a
tissue-mask job whole in the pool; the handler only relays. Cancelling the call
(the scheduler's cancel, or a broken stream) stops the loop at the next tile."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc
import openslide
from prometheus_client import CollectorRegistry

from worker_service.analysis import tissue_codec
from worker_service.analysis.cell_index import collection
from worker_service.analysis.progress_throttle import ProgressThrottle
from worker_service.analysis.tissue import TissueMask
from worker_service.analysis.tissue_codec import ReusedTissue
from worker_service.backends import registry
from worker_service.backends.base import ModelSettings
from worker_service.errors import InternalError, JobCancelled, JobError, SlideError
from worker_service.pipeline.context import DEFAULT_MAX_TILES, JobContext
from worker_service.pipeline.job import JOB_TYPES, JobOutcome, JobSpec, run_job, run_tissue_job
from worker_service.pipeline.tile_pool import TilePool
from worker_service.server.metrics import WorkerMetrics
from worker_service.storage import result_files
from worker_service.storage.slides import SlideCache
from worker_service.viewer import slide_tiles
from worker_service.viewer.cell_queries import CellQueries, TooManyNuclei
from wsi_protocol.ids import is_scheduler_id
from wsi_protocol.scheduler.v1 import scheduler_pb2 as spb
from wsi_protocol.worker.v1 import worker_pb2 as pb
from wsi_protocol.worker.v1 import worker_pb2_grpc as pb_grpc
from wsi_runtime.boxes import BoxError, check_box
from wsi_runtime.job_params import InvalidParams
from wsi_runtime.slide_paths import SlidePathError, resolve_slide, shown_path
from wsi_runtime.version import VERSION

if TYPE_CHECKING:
    from wsi_runtime.serving import Context

log = logging.getLogger("wsi.worker")
T = TypeVar("T")
RESULT_CHUNK_BYTES = 256 * 1024
# Threads reading Deep Zoom tiles and answering cell queries: a viewer's burst
# of tile requests (or one slow slide) waits for these, not for the jobs' threads.
VIEWER_THREADS = 4

_JOB_TYPE_NAMES = {spb.JobType.Value(name): name for name in JOB_TYPES}


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
    ) -> None:
        self.slots = slots
        self.default_backend = default_backend
        self.models = models or ModelSettings()
        self.max_tiles = max_tiles
        self.results_dir = results_dir
        self.slide_roots = list(slide_roots)
        self.progress_interval = progress_interval
        self.executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="tiles")
        self.slides = SlideCache(roots=self.slide_roots)
        self.viewer_executor = ThreadPoolExecutor(VIEWER_THREADS, thread_name_prefix="viewer")
        self.viewer_slides = SlideCache(per_thread=2, roots=self.slide_roots)
        self.cell_queries = CellQueries()
        self.pool = pool
        self.running = 0
        self.metrics = metrics or WorkerMetrics(CollectorRegistry())
        self.metrics.watch_slots(slots, lambda: self.running)

    async def GetInfo(self, request: pb.GetInfoRequest, context: Context) -> pb.WorkerInfo:
        return self.info()

    def info(self) -> pb.WorkerInfo:
        backends = registry.available(self.models)
        return pb.WorkerInfo(
            slots=self.slots,
            job_types=list(_JOB_TYPE_NAMES),
            version=VERSION,
            backends=list(backends),
            backend_mpp=backends,
        )

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
        await context.abort(grpc.StatusCode.NOT_FOUND, f"no result {name!r} of job {job_id!r} here")
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

    async def _in_viewer_thread(self, context: Context, work: Callable[[], T]) -> T:
        """Runs ``work`` in a viewer thread; the worker's own errors become
        the status a viewer can act on."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.viewer_executor, work)
        except (BoxError, TooManyNuclei) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except slide_tiles.NoSuchTile as exc:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, str(exc))
        except SlidePathError as exc:
            denied = grpc.StatusCode.PERMISSION_DENIED
            code = denied if exc.permission else grpc.StatusCode.NOT_FOUND
            await context.abort(code, "the slide is not readable on this worker")
        except SlideError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except FileNotFoundError:  # the job's results deleted (retention) while asked
            await context.abort(grpc.StatusCode.NOT_FOUND, "the job's results are gone")
        raise AssertionError("unreachable")

    def _slide(self, wsi_path: str) -> openslide.OpenSlide:
        return self.viewer_slides.get(str(resolve_slide(wsi_path, self.slide_roots)))

    async def DescribeDeepZoom(
        self, request: pb.DeepZoomRequest, context: Context
    ) -> spb.DeepZoomInfo:
        found = await self._in_viewer_thread(
            context, lambda: slide_tiles.shape(self._slide(request.wsi_path))
        )
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
        data = await self._in_viewer_thread(
            context,
            lambda: slide_tiles.tile_jpeg(
                self._slide(request.wsi_path), request.level, request.col, request.row
            ),
        )
        return spb.DeepZoomTile(data=data, content_type="image/jpeg")

    async def QueryCells(
        self, request: pb.QueryCellsRequest, context: Context
    ) -> AsyncIterator[pb.FileChunk]:
        cells = await self._result_path(request.job_id, "cells.geojson", context)
        box = (request.x0, request.y0, request.x1, request.y1)
        features = await self._in_viewer_thread(
            context, lambda: self.cell_queries.features(cells, check_box(box))
        )
        buffered: list[bytes] = []
        size = 0
        for piece in collection(features):
            buffered.append(piece)
            size += len(piece)
            if size >= RESULT_CHUNK_BYTES:
                yield pb.FileChunk(data=b"".join(buffered))
                buffered, size = [], 0
        yield pb.FileChunk(data=b"".join(buffered))

    async def CellDensity(
        self, request: pb.CellDensityRequest, context: Context
    ) -> spb.CellDensity:
        cells = await self._result_path(request.job_id, "cells.geojson", context)
        cell, columns, rows, counts = await self._in_viewer_thread(
            context, lambda: self.cell_queries.density(cells, request.cell_px)
        )
        return spb.CellDensity(
            cell_px=cell,
            columns=columns,
            rows=rows,
            counts=counts.tolist(),
            nuclei=int(counts.sum()),
        )

    async def RunJob(
        self, request: pb.RunJobRequest, context: Context
    ) -> AsyncIterator[pb.JobUpdate]:
        job_type = _JOB_TYPE_NAMES.get(request.job_type, "")
        if not job_type:
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
            yield pb.JobUpdate(
                error=pb.JobError(
                    message=f"slide {shown!r} is {where} on this worker",
                    code="PERMISSION_DENIED" if exc.permission else "INVALID_ARGUMENT",
                )
            )
            return
        spec = JobSpec(
            request.job_id,
            job_type,
            str(slide),
            dict(request.params),
            _reused_tissue(request),
            slide_name=shown,
        )
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
        stop = threading.Event()
        throttle = ProgressThrottle(self.progress_interval)

        def report(done: int, total: int) -> None:
            if throttle.should_emit(time.monotonic(), done, total):
                loop.call_soon_threadsafe(updates.put_nowait, (done, total))

        ctx = JobContext(
            cancelled=stop.is_set,
            report=report,
            on_tile=self.metrics.tile_observer(spec.job_type),
            max_tiles=self.max_tiles,
            default_backend=self.default_backend,
            models=self.models,
        )
        token = self.pool.cancel_board.new_token()

        async def run() -> JobOutcome:
            if spec.job_type == "TISSUE_MASK":
                return await self.pool.run(
                    run_tissue_job, spec, self.results_dir, token, self.max_tiles
                )
            return await loop.run_in_executor(
                self.executor, run_job, spec, self.results_dir, ctx, self.slides, self.pool
            )

        async def work() -> JobOutcome:
            """The one place where what stopped a job becomes its outcome. A job's
            own trouble (a bad slide, a full disk, a crashed pool process, a bug in
            the pipeline) fails it, never breaks the stream: only a lost stream
            makes the scheduler retry a job elsewhere."""
            try:
                return await run()
            except (JobError, JobCancelled, asyncio.CancelledError):
                raise
            except InvalidParams as exc:  # a scheduler that did not check them
                raise JobError(str(exc)) from exc
            except OSError as exc:
                log.exception("job %s: cannot write its results", spec.job_id)
                reason = exc.strerror or type(exc).__name__  # never the file's path
                raise InternalError(f"cannot write the job's results: {reason}") from exc
            except Exception as exc:
                log.exception("job %s: unexpected error", spec.job_id)
                raise InternalError(
                    f"internal error in the worker ({type(exc).__name__});"
                    " the worker's log has the details"
                ) from exc

        log.debug("job %s attempt %d: %s on %s", spec.job_id, request.attempt, spec.job_type, slide)
        future = asyncio.ensure_future(work())
        future.add_done_callback(lambda _: updates.put_nowait(None))
        self.running += 1
        outcome_name = "cancelled"
        try:
            while (item := await updates.get()) is not None:
                done, total = item
                yield pb.JobUpdate(progress=pb.TileProgress(tiles_done=done, tiles_total=total))
            try:
                outcome = await future
            except JobError as exc:
                log.info("job %s failed: %s", spec.job_id, exc)
                outcome_name = "failed"
                await self._discard_results(spec.job_id)
                yield pb.JobUpdate(error=pb.JobError(message=str(exc), code=exc.code))
                return
            # Paths relative to the results folder: answers say nothing of the worker's disk.
            files = {
                name: f"{spec.job_id}/{Path(path).name}" for name, path in outcome.files.items()
            }
            result = pb.JobOutput(files=files, summary=json.dumps(outcome.summary))
            if outcome.tissue_mask is not None:
                result.tissue_mask.CopyFrom(_tissue_message(outcome.tissue_mask, spec.job_id))
            log.debug("job %s succeeded", spec.job_id)
            outcome_name = "succeeded"
            yield pb.JobUpdate(result=result)
        finally:
            # Reached on success, on error, and when the caller cancels the call.
            stop.set()
            self.pool.cancel_board.cancel(token)
            self.running -= 1
            self.metrics.job_ended(spec.job_type, outcome_name)
            if not future.done():
                log.info("job %s: call ended, stopping its tiles", spec.job_id)
                future.cancel()
            elif not future.cancelled():
                future.exception()  # seen: an outcome the ended call never awaited is no error

    async def _discard_results(self, job_id: str) -> None:
        """A job that did not succeed leaves no files behind (half-written
        results, temporary files): its folder goes."""
        folder = result_files.job_folder(self.results_dir, job_id)
        await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.viewer_executor.shutdown(wait=False, cancel_futures=True)


def _result_file(results_dir: Path, job_id: str, name: str) -> Path | None:
    folder = result_files.job_folder(results_dir, job_id)
    path = Path(os.path.realpath(folder / name))
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


def _tissue_message(mask: TissueMask, job_id: str) -> pb.TissueMask:
    return pb.TissueMask(
        mask_png=tissue_codec.encode(mask),
        downsample=mask.downsample,
        threshold=mask.threshold,
        source_job_id=job_id,
    )
