"""Runs the policy's picks on workers. A job runs as one ``RunJob`` stream,
which is its lease: if the stream breaks, the worker is marked lost (and
probed again with backoff) and the job goes back to the head of its branch.
Cancelling a running job cancels its stream."""

from __future__ import annotations

import asyncio
import logging

import grpc

from scheduler_service.background import Background
from scheduler_service.policy import State
from scheduler_service.store import JobRecord, NotFound, Store
from scheduler_service.tissue_reuse import RecentMasks, mask_source
from scheduler_service.worker_links import WorkerLink, WorkerLinks
from scheduler_service.worker_proxy import WorkerProxy, WorkerUnavailable, worker_slide_path
from wsi_protocol import result_files
from wsi_protocol.worker.v1 import worker_pb2 as wpb

log = logging.getLogger("wsi.scheduler.dispatch")

# Statuses that mean "the lease broke" (the stream or the worker is gone: retry
# elsewhere). Any other status is the worker's answer about this job (UNKNOWN:
# its handler raised), so the job fails once and the worker stays connected.
LEASE_BROKEN = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
    }
)

JobCall = grpc.aio.UnaryStreamCall[wpb.RunJobRequest, wpb.JobUpdate]


JOB_SILENCE_S = 60.0  # a worker sends at least a heartbeat every 10 s while it runs a job


class JobRunner:
    def __init__(
        self,
        store: Store,
        links: WorkerLinks,
        proxy: WorkerProxy,
        background: Background,
        job_silence_s: float = JOB_SILENCE_S,
    ) -> None:
        self.store, self.links, self.proxy = store, links, proxy
        self.job_silence_s = job_silence_s
        self._background = background
        self._calls: dict[str, JobCall] = {}
        self._kick_pending = False
        self._closing = False
        # Masks of finished TISSUE_MASK jobs, handed to dependent jobs on the same slide.
        self.tissue_masks: RecentMasks[wpb.TissueMask] = RecentMasks()
        links.on_change = self.kick

    def kick(self) -> None:
        """Asks for a dispatch pass soon; many kicks in one loop turn make one pass."""
        if not self._kick_pending and not self._closing:
            self._kick_pending = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._kick_pending = False
        if self._closing:
            return
        try:
            self._dispatch_now()
        except Exception as exc:
            self._background.report("dispatch", "the dispatch pass", exc)

    def _dispatch_now(self) -> None:
        placed: dict[str, WorkerLink] = {}

        def place(job: JobRecord) -> str:
            link = self.links.freest(tried=job.attempt_workers)
            link.busy += 1
            placed[job.job_id] = link
            return link.address

        for job in self.store.take_dispatches(self.links.free_slots(), place):
            self._background.spawn(self._run(job, placed[job.job_id]), "job", job.job_id)

    def stop_job(self, job_id: str) -> None:
        call = self._calls.get(job_id)
        if call is not None:
            call.cancel()

    def close(self) -> None:
        self._closing = True
        for call in list(self._calls.values()):
            call.cancel()

    async def _request(self, job: JobRecord) -> wpb.RunJobRequest:
        request = wpb.RunJobRequest(
            job_id=job.job_id,
            job_type=job.job_type.number,
            wsi_path=worker_slide_path(job),
            params=job.params,
            attempt=job.attempt,
        )
        dependencies = self.store.dependencies(job)
        source = mask_source(job, dependencies, State.SUCCEEDED)
        mask = self.tissue_masks.get(source) if source else None
        if mask is None and source:  # not in memory (a restart since): from its worker
            mask = await self._fetch_mask(next(d for d in dependencies if d.job_id == source))
        if mask is not None:
            request.tissue_mask.CopyFrom(mask)
        return request

    async def _fetch_mask(self, source: JobRecord) -> wpb.TissueMask | None:
        """A finished TISSUE_MASK job's mask, read back from the worker that
        holds its results (the same path as any result download); None when
        that cannot be done now: the job then finds its tissue itself."""
        try:
            scale = (source.result_object or {})["tissue_mask"]
            downsample, threshold = float(scale["downsample"]), float(scale["threshold"])
            png = b"".join(
                [
                    data
                    async for data, _ in self.proxy.read_result(
                        source.worker, source.job_id, result_files.TISSUE_MASK
                    )
                ]
            )
        except (ValueError, KeyError, TypeError, NotFound, WorkerUnavailable) as exc:
            log.info("mask of job %s not reused: %s", source.job_id, exc)
            return None
        mask = wpb.TissueMask(
            mask_png=png, downsample=downsample, threshold=threshold, source_job_id=source.job_id
        )
        self.tissue_masks.put(source.job_id, mask)
        return mask

    async def _run(self, job: JobRecord, link: WorkerLink) -> None:
        job_id = job.job_id
        try:
            call = link.stub.RunJob(await self._request(job), metadata=self.links.metadata)
            self._calls[job_id] = call
            await self._follow(job_id, link, call)
        finally:
            self._calls.pop(job_id, None)
            link.busy -= 1
            self.kick()

    async def _follow(self, job_id: str, link: WorkerLink, call: JobCall) -> None:
        """Relays the stream's updates to the store until the job ends; a
        stream that ends without an outcome, or whose worker says nothing
        (not even a heartbeat) for ``job_silence_s``, loses the job (it is
        retried): a worker that accepts a job and goes quiet cannot hold it."""
        finished = False
        updates = call.__aiter__()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.job_silence_s):
                        update = await anext(updates)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    call.cancel()
                    self._end_unfinished(
                        job_id,
                        f"worker {link.address} said nothing for {self.job_silence_s:g} s",
                    )
                    return
                finished = self._apply(job_id, update) or finished
            if not finished:
                self._end_unfinished(job_id, "worker ended the job without a result")
        except asyncio.CancelledError:
            if self._closing:
                raise
            self._end_unfinished(job_id, "job stream cancelled")
        except grpc.aio.AioRpcError as exc:
            if finished:
                return
            if exc.code() in LEASE_BROKEN:
                if exc.code() is not grpc.StatusCode.CANCELLED:
                    self.links.mark_lost(link, f"{exc.code().name}: {exc.details()}")
                self._end_unfinished(job_id, f"worker {link.address} lost: {exc.details()}")
            else:
                self.store.fail(job_id, f"worker error ({exc.code().name}): {exc.details()}")

    def _apply(self, job_id: str, update: wpb.JobUpdate) -> bool:
        """One update into the store; True once it is the job's outcome."""
        which = update.WhichOneof("update")
        if which == "progress":
            self.store.progress(job_id, update.progress.tiles_done, update.progress.tiles_total)
            return False
        if which == "result":
            files = dict(update.result.files)
            unsafe = result_files.unsafe_result_file(job_id, files)
            if unsafe:
                self.store.fail(job_id, f"the worker's answer was refused: {unsafe}")
                return True
            self.store.succeed(job_id, files, update.result.summary)
            if update.result.HasField("tissue_mask"):
                self.tissue_masks.put(job_id, update.result.tissue_mask)
            return True
        if which == "error":
            self.store.fail(job_id, update.error.message, update.error.code)
            return True
        return False

    def _end_unfinished(self, job_id: str, reason: str) -> None:
        if self.store.policy.cancel_requested(job_id):
            self.store.finish_cancelled(job_id)
        else:
            log.warning("job %s: %s", job_id, reason)
            self.store.lose(job_id, reason)
