"""Runs the policy's picks on workers over gRPC.

Each worker address gets a channel; its slot count comes from ``GetInfo``. A
job runs as one ``RunJob`` stream, which is its lease: if the stream breaks,
the worker is marked lost (and probed again with backoff) and the job goes back
to the head of its branch. Cancelling a running job cancels its stream."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from scheduler_service.policy import State
from scheduler_service.store import JobRecord, NotFound, Store
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


def worker_slide_path(job: JobRecord) -> str:
    """The slide as the worker is to find it: the user's root-relative name, so
    each host may mount the slide roots where it likes (the worker checks it
    against its own roots); an absolute name as the scheduler resolved it."""
    return job.slide_file if os.path.isabs(job.wsi_path) else job.wsi_path


class WorkerUnavailable(RuntimeError):
    """The worker holding what was asked for is not connected (UNAVAILABLE)."""


class BadViewerRequest(ValueError):
    """A worker refused a viewer's question as malformed (INVALID_ARGUMENT)."""


T = TypeVar("T")
VIEWER_TIMEOUT_S = 30.0  # a tile or a box of nuclei; a viewer asks again


def _results_away(job_id: str) -> str:
    return (
        f"the worker holding the results of job {job_id!r} is not connected now;"
        " try again when it is back"
    )


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
    origin: str = "static"  # or "joined": registered itself (WorkerRegistry)
    last_seen: float = 0.0  # of a joined worker: its last join or heartbeat (monotonic)
    removed: bool = False  # forgotten (left, or silent): no more jobs, no more probes
    backends: tuple[str, ...] = ()

    @property
    def free(self) -> int:
        return max(0, self.slots - self.busy) if self.connected else 0

    @property
    def state(self) -> str:
        """A forgotten worker is no longer listed at all."""
        return "connected" if self.connected else "lost"


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
        self._credentials = credentials
        self.links = [self._link(address) for address in worker_addresses]
        self._started = False
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._calls: dict[str, grpc.aio.UnaryStreamCall[wpb.RunJobRequest, wpb.JobUpdate]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._kick_pending = False
        self._closing = False
        # Masks of finished TISSUE_MASK jobs, handed to dependent jobs on the same slide.
        self.tissue_masks: RecentMasks[wpb.TissueMask] = RecentMasks()

    def _link(self, address: str, origin: str = "static") -> WorkerLink:
        channel = tls.aio_channel(address, self._credentials, CHANNEL_OPTIONS)
        return WorkerLink(address, channel, wpb_grpc.WorkerStub(channel), origin=origin)

    # ---- membership (workers that join by themselves) ---------------------------

    def join(self, address: str, now: float) -> None:
        """A worker registered: probed and used like a static one from now on.
        One already listed (static, or joined and lost) keeps its link, whose
        probes reconnect it; one that was forgotten gets a new link."""
        for link in self.links:
            if link.address == address and not link.removed:
                link.last_seen = now
                return
        link = self._link(address, origin="joined")
        link.last_seen = now
        self.links.append(link)
        log.info("worker %s joined", address)
        if self._started:
            self._spawn(self._keep_connected(link), "probe", address)

    def heartbeat(self, address: str, now: float) -> bool:
        """False if no such joined worker is known (it must join again)."""
        for link in self.links:
            if link.address == address and link.origin == "joined" and not link.removed:
                link.last_seen = now
                return True
        return False

    def leave(self, address: str, why: str) -> None:
        """Forgets a joined worker: its running jobs are retried elsewhere as for
        any lost worker (their streams end), and nothing new goes to it."""
        for link in [w for w in self.links if w.address == address and w.origin == "joined"]:
            log.info("worker %s forgotten: %s", address, why)
            link.removed = True
            self._mark_lost(link, why)
            self.links.remove(link)
            # Its job streams end with the channel: their jobs are retried elsewhere.
            self._spawn(link.channel.close(grace=None), "close", address)

    def forget_silent(self, now: float, silence_s: float) -> None:
        for link in list(self.links):
            if link.origin == "joined" and now - link.last_seen > silence_s:
                self.leave(link.address, f"no heartbeat for {silence_s:.0f} s")

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
        self._started = True
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
        while not self._closing and not link.removed:
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
            if link.removed:
                return
            link.slots, link.connected = max(0, info.slots), True
            link.backends = tuple(info.backends)
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

    def _connected(self, address: str) -> WorkerLink | None:
        return next((w for w in self.links if w.address == address and w.connected), None)

    def _results_link(self, address: str, job_id: str) -> WorkerLink:
        """The worker holding a job's results, connected; else UNAVAILABLE."""
        link = self._connected(address)
        if link is None:
            raise WorkerUnavailable(_results_away(job_id))
        return link

    async def read_result(
        self, address: str, job_id: str, name: str
    ) -> AsyncIterator[tuple[bytes, int]]:
        """A result file from the worker that wrote it: (data, size on the first chunk)."""
        link = self._results_link(address, job_id)
        gone = _results_away(job_id)
        request = wpb.ReadResultRequest(job_id=job_id, name=name)
        try:
            async for chunk in link.stub.ReadResult(request, metadata=self._call_metadata):
                yield chunk.data, chunk.size
        except grpc.aio.AioRpcError as exc:
            log.warning("result %s of job %s from %s: %s", name, job_id, address, exc.details())
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                raise NotFound(
                    f"result {name!r} of job {job_id!r} is gone from its worker"
                ) from None
            raise WorkerUnavailable(gone) from None

    def _viewer_link(self, preferred: str) -> WorkerLink:
        """The worker that ran the job if it is connected, else any connected
        one: every worker reads the slide roots."""
        link = self._connected(preferred) or next(
            (w for w in self.links if w.connected and not w.removed), None
        )
        if link is None:
            raise WorkerUnavailable("no worker is connected to read the slide; try again shortly")
        return link

    def _viewer_error(self, exc: grpc.aio.AioRpcError, what: str, address: str) -> Exception:
        """A worker's answer to a viewer call as the scheduler's own error."""
        code = exc.code()
        log.warning("%s on %s: %s %s", what, address, code.name, exc.details())
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            return BadViewerRequest(exc.details() or what)
        if code is grpc.StatusCode.OUT_OF_RANGE:
            return NotFound(exc.details() or what)
        if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
            return NotFound(f"{what}: not readable on its worker now")
        if code is grpc.StatusCode.FAILED_PRECONDITION:
            return NotFound(f"{what}: {exc.details()}")
        return WorkerUnavailable(f"{what}: its worker did not answer; try again shortly")

    async def _ask(
        self, link: WorkerLink, ask: Callable[[wpb_grpc.WorkerAsyncStub], Awaitable[T]], what: str
    ) -> T:
        try:
            return await ask(link.stub)
        except grpc.aio.AioRpcError as exc:
            raise self._viewer_error(exc, what, link.address) from None

    async def deep_zoom(self, job: JobRecord) -> spb.DeepZoomInfo:
        link = self._viewer_link(job.worker)
        request = wpb.DeepZoomRequest(wsi_path=worker_slide_path(job))
        return await self._ask(
            link,
            lambda stub: stub.DescribeDeepZoom(
                request, metadata=self._call_metadata, timeout=VIEWER_TIMEOUT_S
            ),
            f"the slide of job {job.job_id!r}",
        )

    async def slide_tile(self, job: JobRecord, level: int, col: int, row: int) -> spb.DeepZoomTile:
        link = self._viewer_link(job.worker)
        request = wpb.DeepZoomTileRequest(
            wsi_path=worker_slide_path(job), level=level, col=col, row=row
        )
        return await self._ask(
            link,
            lambda stub: stub.ReadDeepZoomTile(
                request, metadata=self._call_metadata, timeout=VIEWER_TIMEOUT_S
            ),
            f"tile {level}/{col}_{row} of job {job.job_id!r}",
        )

    async def query_cells(
        self, address: str, job_id: str, box: tuple[float, float, float, float]
    ) -> AsyncIterator[bytes]:
        """The nuclei in ``box`` from the worker holding the job's results."""
        link = self._results_link(address, job_id)
        x0, y0, x1, y1 = box
        request = wpb.QueryCellsRequest(job_id=job_id, x0=x0, y0=y0, x1=x1, y1=y1)
        try:
            async for chunk in link.stub.QueryCells(
                request, metadata=self._call_metadata, timeout=VIEWER_TIMEOUT_S
            ):
                yield chunk.data
        except grpc.aio.AioRpcError as exc:
            raise self._viewer_error(exc, f"the nuclei of job {job_id!r}", address) from None

    async def cell_density(self, address: str, job_id: str, cell_px: float) -> spb.CellDensity:
        link = self._results_link(address, job_id)
        request = wpb.CellDensityRequest(job_id=job_id, cell_px=cell_px)
        return await self._ask(
            link,
            lambda stub: stub.CellDensity(
                request, metadata=self._call_metadata, timeout=VIEWER_TIMEOUT_S
            ),
            f"the nuclei of job {job_id!r}",
        )

    async def delete_results(self, address: str, job_id: str) -> bool:
        """Asks the job's worker to delete its results; False if it cannot now."""
        link = self._connected(address)
        if link is None:
            return False
        request = wpb.DeleteResultsRequest(job_id=job_id)
        try:
            await link.stub.DeleteResults(request, metadata=self._call_metadata, timeout=30)
        except grpc.aio.AioRpcError as exc:
            log.warning("results of job %s on %s not deleted: %s", job_id, address, exc.details())
            return False
        return True

    async def _fetch_mask(self, source: JobRecord) -> wpb.TissueMask | None:
        """A finished TISSUE_MASK job's mask, read back from the worker that
        holds its results (the same path as any result download); None when
        that cannot be done now: the job then finds its tissue itself."""
        try:
            scale = json.loads(source.result_summary)["tissue_mask"]
            downsample, threshold = float(scale["downsample"]), float(scale["threshold"])
            png = b"".join(
                [
                    data
                    async for data, _ in self.read_result(
                        source.worker, source.job_id, "tissue_mask.png"
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

    def stop_job(self, job_id: str) -> None:
        call = self._calls.get(job_id)
        if call is not None:
            call.cancel()

    async def _run(self, job: JobRecord, link: WorkerLink) -> None:
        job_id = job.job_id
        request = wpb.RunJobRequest(
            job_id=job_id,
            job_type=spb.JobType.Value(job.job_type),
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
