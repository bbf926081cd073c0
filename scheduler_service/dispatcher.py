"""Runs the policy's picks on workers over gRPC.

Each worker address gets a channel; its slot count comes from ``GetInfo``. A
job runs as one ``RunJob`` stream, which is its lease: if the stream breaks,
the worker is marked lost (and probed again with backoff) and the job goes back
to the head of its branch. Cancelling a running job cancels its stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from scheduler_service.policy import State
from scheduler_service.store import JobRecord, Store
from scheduler_service.tissue_reuse import RecentMasks, mask_source
from wsi_protocol import metadata
from wsi_protocol.scheduler.v1 import scheduler_pb2 as spb
from wsi_protocol.worker.v1 import worker_pb2 as wpb
from wsi_protocol.worker.v1 import worker_pb2_grpc as wpb_grpc
from wsi_runtime import tls

log = logging.getLogger("wsi.scheduler.dispatch")

# Statuses that mean "the lease broke" (the stream or the worker is gone: retry
# elsewhere). Any other status is the worker's answer about this job (UNKNOWN:
# its handler raised), so the job fails once and the worker stays connected.
_LOST = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
    }
)
# A worker that dies without closing its connection (power, network) is noticed
# within about keepalive_time + keepalive_timeout on a running job's stream.
# (gRPC also sends pings of its own for flow control; ping_timeout bounds how
# long any of them may go unanswered, else a frozen peer is never noticed.)
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 3_000),
    ("grpc.http2.ping_timeout_ms", 3_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass
class WorkerLink:
    address: str
    channel: grpc.aio.Channel
    stub: wpb_grpc.WorkerAsyncStub
    slots: int = 0
    busy: int = 0
    connected: bool = False
    error: str = ""
    failed_probes: int = 0
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def free(self) -> int:
        return max(0, self.slots - self.busy) if self.connected else 0


class Dispatcher:
    def __init__(
        self,
        store: Store,
        worker_addresses: Sequence[str],
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
        on_error: Callable[[str], None] = lambda task: None,
        worker_secret: str = "",
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.store = store
        self.on_error = on_error
        # Every call shows the workers the shared secret (they serve their scheduler only).
        self._call_metadata = ((metadata.WORKER_SECRET, worker_secret),) if worker_secret else ()
        self.links = [
            WorkerLink(
                a, ch := tls.aio_channel(a, credentials, CHANNEL_OPTIONS), wpb_grpc.WorkerStub(ch)
            )
            for a in worker_addresses
        ]
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._calls: dict[str, grpc.aio.UnaryStreamCall[wpb.RunJobRequest, wpb.JobUpdate]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._kick_pending = False
        self._closing = False
        # Masks of finished TISSUE_MASK jobs, handed to dependent jobs on the same slide.
        self.tissue_masks: RecentMasks[wpb.TissueMask] = RecentMasks()

    # ---- capacity --------------------------------------------------------------

    @property
    def slots_total(self) -> int:
        return sum(link.slots for link in self.links if link.connected)

    @property
    def slots_busy(self) -> int:
        return sum(link.busy for link in self.links if link.connected)

    @property
    def workers_connected(self) -> int:
        return sum(1 for link in self.links if link.connected)

    def free_slots(self) -> int:
        return sum(link.free for link in self.links)

    # ---- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        for link in self.links:
            self._spawn(self._keep_connected(link), "probe", link.address)

    async def close(self) -> None:
        self._closing = True
        for call in list(self._calls.values()):
            call.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for link in self.links:
            await link.channel.close(grace=None)

    def _spawn(self, coro: Coroutine[Any, Any, None], kind: str, subject: str) -> None:
        """Runs ``coro`` supervised: a background task that raised is a bug,
        never a reason to stop dispatching, so it is logged with its traceback,
        counted under ``kind``, and the rest goes on."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{kind} {subject}")
        self._tasks.add(task)

        def supervise(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            if not done.cancelled() and done.exception() is not None:
                self._report_error(kind, done.get_name(), done.exception())

        task.add_done_callback(supervise)

    def _report_error(self, kind: str, what: str, exc: BaseException | None) -> None:
        log.error("unexpected error in %s", what, exc_info=exc)
        self.on_error(kind)

    async def _keep_connected(self, link: WorkerLink) -> None:
        """Learns the worker's slots; after a loss, probes it again with backoff."""
        delay = self.retry_initial
        while not self._closing:
            try:
                info = await link.stub.GetInfo(
                    wpb.GetInfoRequest(), timeout=2.0, metadata=self._call_metadata
                )
            except grpc.aio.AioRpcError as exc:
                link.failed_probes += 1
                link.error = f"{exc.code().name}: {exc.details()}"
                log.warning(
                    "worker %s unreachable (%s); retry in %.1fs",
                    link.address,
                    exc.code().name,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            delay = self.retry_initial
            link.error, link.failed_probes = "", 0
            link.slots, link.connected = max(0, info.slots), True
            link.lost.clear()
            log.info("worker %s connected: %d slots", link.address, link.slots)
            self.kick()
            await link.lost.wait()

    def _mark_lost(self, link: WorkerLink, error: str = "") -> None:
        if link.connected:
            log.warning("worker %s lost", link.address)
            link.connected = False
            link.error = error
            link.lost.set()
            self.kick()  # pending reasons and capacity change

    # ---- dispatch --------------------------------------------------------------

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
            self._report_error("dispatch", "the dispatch pass", exc)

    def _dispatch_now(self) -> None:
        placed: dict[str, WorkerLink] = {}

        def place(job: JobRecord) -> str:
            link = max(self.links, key=lambda candidate: candidate.free)
            link.busy += 1
            placed[job.job_id] = link
            return link.address

        for job in self.store.take_dispatches(self.free_slots(), place):
            self._spawn(self._run(job, placed[job.job_id]), "job", job.job_id)

    def stop_job(self, job_id: str) -> None:
        call = self._calls.get(job_id)
        if call is not None:
            call.cancel()

    async def _run(self, job: JobRecord, link: WorkerLink) -> None:
        job_id = job.job_id
        request = wpb.RunJobRequest(
            job_id=job_id,
            job_type=spb.JobType.Value(job.job_type),
            wsi_path=job.slide_file,
            params=job.params,
            attempt=job.attempt,
        )
        source = mask_source(job, self.store.dependencies(job), State.SUCCEEDED)
        mask = self.tissue_masks.get(source) if source else None
        if mask is not None:
            request.tissue_mask.CopyFrom(mask)
        call = link.stub.RunJob(request, metadata=self._call_metadata)
        self._calls[job_id] = call
        finished = False
        try:
            async for update in call:
                which = update.WhichOneof("update")
                if which == "progress":
                    self.store.progress(
                        job_id, update.progress.tiles_done, update.progress.tiles_total
                    )
                elif which == "result":
                    self.store.succeed(job_id, dict(update.result.files), update.result.summary)
                    if update.result.HasField("tissue_mask"):
                        self.tissue_masks.put(job_id, update.result.tissue_mask)
                    finished = True
                elif which == "error":
                    self.store.fail(job_id, update.error.message, update.error.code)
                    finished = True
            if not finished:
                self._end_unfinished(job_id, link, "worker ended the job without a result")
        except asyncio.CancelledError:
            if self._closing:
                raise
            self._end_unfinished(job_id, link, "job stream cancelled")
        except grpc.aio.AioRpcError as exc:
            if finished:
                return
            if exc.code() in _LOST:
                if exc.code() is not grpc.StatusCode.CANCELLED:
                    self._mark_lost(link, f"{exc.code().name}: {exc.details()}")
                self._end_unfinished(job_id, link, f"worker {link.address} lost: {exc.details()}")
            else:
                self.store.fail(job_id, f"worker error ({exc.code().name}): {exc.details()}")
        finally:
            self._calls.pop(job_id, None)
            link.busy -= 1
            self.kick()

    def _end_unfinished(self, job_id: str, link: WorkerLink, reason: str) -> None:
        if self.store.policy.cancel_requested(job_id):
            self.store.finish_cancelled(job_id)
        else:
            log.warning("job %s: %s", job_id, reason)
            self.store.lose(job_id, reason)
