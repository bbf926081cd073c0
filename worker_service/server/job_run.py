"""One RunJob call's life: the job starts (in a thread, or whole in a pool
process), its progress is relayed as it comes, its outcome ends the stream,
and whatever ends the call (success, failure, the caller's cancel, a broken
stream) stops the job's tiles and releases what it held."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path

from worker_service.analysis import tissue_codec
from worker_service.analysis.progress_throttle import ProgressThrottle
from worker_service.analysis.tissue import TissueMask
from worker_service.errors import InternalError, JobCancelled, JobError
from worker_service.pipeline.cancel_board import CancelBoard
from worker_service.pipeline.context import JobContext
from worker_service.pipeline.job import JobOutcome, JobSpec, run_job, run_tissue_job
from worker_service.pipeline.tile_pool import TilePool
from worker_service.storage.slides import SlideCache
from wsi_protocol.job_types import JobType
from wsi_protocol.worker.v1 import worker_pb2 as pb
from wsi_runtime.job_params import InvalidParams

log = logging.getLogger("wsi.worker")
HEARTBEAT_S = 10.0  # with no progress to report, a running job says it is alive this often

# Runs a job to its outcome: (spec, its context, its cancellation token).
RunOne = Callable[[JobSpec, JobContext, int], Awaitable[JobOutcome]]


@dataclass
class JobExecution:
    """Where the worker runs its jobs: a segmentation job in a thread (its
    tiles in the shared process pool), a tissue-mask job whole in the pool
    (all of it is CPU work that would hold the GIL against the event loop)."""

    executor: Executor
    pool: TilePool
    slides: SlideCache
    results_dir: Path

    async def __call__(self, spec: JobSpec, ctx: JobContext, token: int) -> JobOutcome:
        if spec.job_type == JobType.TISSUE_MASK:
            return await self.pool.run(run_tissue_job, spec, self.results_dir, token, ctx.max_tiles)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.executor, run_job, spec, self.results_dir, ctx, self.slides, self.pool
        )


class JobRun:
    """``context``: the worker's settings for the job (limits, default backend,
    models, tile observer); this run adds its cancel check and progress."""

    def __init__(
        self,
        spec: JobSpec,
        run: RunOne,
        context: JobContext,
        board: CancelBoard,
        progress_interval: float,
        discard: Callable[[str], Awaitable[None]],
    ) -> None:
        self.spec = spec
        self._run, self._board, self._discard = run, board, discard
        self._updates: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
        self._stop = threading.Event()
        self._throttle = ProgressThrottle(progress_interval)
        self._context = replace(context, cancelled=self._stop.is_set, report=self._report)
        self._token = board.new_token()
        self._loop = asyncio.get_running_loop()  # made inside the RunJob handler
        self.outcome = "cancelled"  # as the call ended: succeeded, failed or cancelled

    def _report(self, done: int, total: int) -> None:
        """From the job's thread: throttled, then handed to the event loop."""
        if self._throttle.should_emit(time.monotonic(), done, total):
            self._loop.call_soon_threadsafe(self._updates.put_nowait, (done, total))

    async def updates(self) -> AsyncIterator[pb.JobUpdate]:
        future = asyncio.ensure_future(self._outcome())
        future.add_done_callback(lambda _: self._updates.put_nowait(None))
        try:
            while True:
                try:
                    async with asyncio.timeout(HEARTBEAT_S):
                        item = await self._updates.get()
                except TimeoutError:  # a long phase or tile: say the job is alive
                    yield pb.JobUpdate(heartbeat=pb.Heartbeat())
                    continue
                if item is None:
                    break
                done, total = item
                yield pb.JobUpdate(progress=pb.TileProgress(tiles_done=done, tiles_total=total))
            yield await self._final(future)
        finally:
            self._end(future)

    async def _outcome(self) -> JobOutcome:
        """The one place where what stopped a job becomes its outcome. A job's
        own trouble (a bad slide, a full disk, a crashed pool process, a bug in
        the pipeline) fails it, never breaks the stream: only a lost stream
        makes the scheduler retry a job elsewhere."""
        try:
            return await self._run(self.spec, self._context, self._token)
        except (JobError, JobCancelled, asyncio.CancelledError):
            raise
        except InvalidParams as exc:  # a scheduler that did not check them
            raise JobError(str(exc)) from exc
        except OSError as exc:
            log.exception("job %s: cannot write its results", self.spec.job_id)
            reason = exc.strerror or type(exc).__name__  # never the file's path
            raise InternalError(f"cannot write the job's results: {reason}") from exc
        except Exception as exc:
            log.exception("job %s: unexpected error", self.spec.job_id)
            raise InternalError(
                f"internal error in the worker ({type(exc).__name__});"
                " the worker's log has the details"
            ) from exc

    async def _final(self, future: asyncio.Future[JobOutcome]) -> pb.JobUpdate:
        job_id = self.spec.job_id
        try:
            outcome = await future
        except JobError as exc:
            log.info("job %s failed: %s", job_id, exc)
            self.outcome = "failed"
            await self._discard(job_id)
            return pb.JobUpdate(error=pb.JobError(message=str(exc), code=exc.code))
        log.debug("job %s succeeded", job_id)
        self.outcome = "succeeded"
        return pb.JobUpdate(result=job_output(job_id, outcome))

    def _end(self, future: asyncio.Future[JobOutcome]) -> None:
        """Reached on success, on error, and when the caller cancels the call."""
        self._stop.set()
        self._board.cancel(self._token)
        if not future.done():
            log.info("job %s: call ended, stopping its tiles", self.spec.job_id)
            future.cancel()
        elif not future.cancelled():
            future.exception()  # seen: an outcome the ended call never awaited is no error


def job_output(job_id: str, outcome: JobOutcome) -> pb.JobOutput:
    """Paths relative to the results folder: answers say nothing of the worker's disk."""
    files = {name: f"{job_id}/{Path(path).name}" for name, path in outcome.files.items()}
    result = pb.JobOutput(files=files, summary=json.dumps(outcome.summary))
    if outcome.tissue_mask is not None:
        result.tissue_mask.CopyFrom(tissue_message(outcome.tissue_mask, job_id))
    return result


def tissue_message(mask: TissueMask, job_id: str) -> pb.TissueMask:
    return pb.TissueMask(
        mask_png=tissue_codec.encode(mask),
        downsample=mask.downsample,
        threshold=mask.threshold,
        source_job_id=job_id,
    )
