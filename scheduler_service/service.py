"""The public gRPC API: a thin shell that authenticates, validates, calls the
store and translates its answers and errors to protobuf and status codes."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from scheduler_service import convert, slide_catalog
from scheduler_service.authentication import Authenticator
from scheduler_service.dispatcher import Dispatcher
from scheduler_service.journal import JournalError
from scheduler_service.policy import State
from scheduler_service.slide_catalog import InvalidSlideToken
from scheduler_service.store import (
    AlreadyFinished,
    InvalidPageToken,
    JobRecord,
    NotFound,
    RequestIdReused,
    Store,
    WorkflowRecord,
)
from scheduler_service.validation import (
    MAX_NAME_LENGTH,
    InvalidSpec,
    JobInput,
    TooManyJobs,
    check_backends,
    job_name,
    normalise_jobs,
)
from scheduler_service.viewer_gate import ViewerGate
from scheduler_service.worker_proxy import WorkerRefusal, WorkerUnavailable
from wsi_protocol import result_files
from wsi_protocol.job_types import JobType
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from wsi_protocol.status import RETRY_AFTER_METADATA, SERVER_ANSWER_METADATA
from wsi_runtime import job_params
from wsi_runtime.boxes import BoxError, check_box
from wsi_runtime.clipped import clipped
from wsi_runtime.limits import LimitExceeded, RateLimiter, retry_after
from wsi_runtime.slide_paths import SlidePathError, check_slide_format, resolve_slide

if TYPE_CHECKING:
    from wsi_runtime.serving import Context

log = logging.getLogger("wsi.scheduler")
DEFAULT_PAGE_SIZE = 50
DEFAULT_SLIDE_PAGE = 100
MAX_PAGE_SIZE = 1000
MAX_ID_LENGTH = 128
MAX_MESSAGE_CHARS = 1000  # an error's message, echoed input included
IDENTITY_RECHECK_S = 5.0  # an open watch re-checks its caller's token this often


class MalformedRequest(ValueError):
    """A malformed request the store never sees."""


def status_for(exc: Exception) -> grpc.StatusCode | None:
    """The status code of a domain error; None for anything unexpected."""
    if isinstance(exc, WorkerRefusal):
        return exc.code  # the worker's answer, relayed as it came
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, AlreadyFinished):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, RequestIdReused):
        return grpc.StatusCode.ALREADY_EXISTS
    if isinstance(exc, SlidePathError):
        return (
            grpc.StatusCode.PERMISSION_DENIED
            if exc.permission
            else grpc.StatusCode.INVALID_ARGUMENT
        )
    if isinstance(
        exc,
        InvalidSpec | InvalidPageToken | MalformedRequest | InvalidSlideToken,
    ):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, LimitExceeded | TooManyJobs):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, JournalError | WorkerUnavailable):
        return grpc.StatusCode.UNAVAILABLE  # nothing was changed; the caller may retry
    return None


def _job_type_name(number: int) -> str:
    """A job spec's type as validation reads it: the name, or the unknown number."""
    job_type = JobType.from_number(number)
    return job_type.value if job_type is not None else str(number)


@asynccontextmanager
async def domain_errors(context: Context) -> AsyncIterator[None]:
    """Ends the call with the status code that fits a domain error."""
    try:
        yield
    except Exception as exc:
        code = status_for(exc)
        if code is None:
            raise
        trailing: tuple[tuple[str, str], ...] = ((SERVER_ANSWER_METADATA, "1"),)
        if isinstance(exc, LimitExceeded) and exc.retry_after:
            trailing += ((RETRY_AFTER_METADATA, str(exc.retry_after)),)
        # Bounded whatever input it echoes (non-ASCII is sent as up to 12
        # characters each).
        message = clipped(str(exc), MAX_MESSAGE_CHARS)
        if isinstance(exc, JournalError):  # names the journal's file: for the log only
            log.error("journal failure answered UNAVAILABLE: %s", exc)
            message = "the scheduler cannot record changes just now; nothing was changed, retry"
        await context.abort(code, message, trailing_metadata=trailing)


class SchedulerServicer(pb_grpc.SchedulerServicer):
    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        slide_roots: Sequence[Path],
        max_jobs_per_workflow: int,
        clock: Callable[[], float] = time.time,
        limiter: RateLimiter | None = None,
        max_pending_per_user: int = 0,
        min_tile_size: int = 0,
        authenticate: Authenticator | None = None,
        operators: frozenset[str] = frozenset(),
        viewer_gate: ViewerGate | None = None,
    ) -> None:
        self.authenticate = authenticate or Authenticator(tokens=None)
        # Who sees workers' addresses and transport errors (internal details).
        self.operators = operators
        self.min_tile_size = min_tile_size
        self.store = store
        self.dispatcher = dispatcher
        self.slide_roots = list(slide_roots)
        self.max_jobs_per_workflow = max_jobs_per_workflow
        self.clock = clock
        self.watch_streams = 0
        self.limiter = limiter or RateLimiter(rate=0, burst=0)
        self.max_pending_per_user = max_pending_per_user
        self.viewer_gate = viewer_gate or ViewerGate()

    def _check_rate(self, user: str) -> None:
        """Mutating calls only: reads and watches are never limited."""
        wait = self.limiter.acquire(user, time.monotonic())
        if wait:
            raise LimitExceeded(
                f"rate limit of {self.limiter.rate:g} requests/s per user reached;"
                f" retry after {retry_after(wait)} s",
                retry_after(wait),
            )

    def _check_pending(self, user: str, adding: int) -> None:
        if not self.max_pending_per_user:
            return
        pending = self.store.policy.pending_of(user)
        if pending + adding > self.max_pending_per_user:
            raise LimitExceeded(
                f"{pending} jobs pending, and at most {self.max_pending_per_user} may be;"
                " wait for some to finish or cancel them"
            )

    def _resolve_slides(self, jobs: Sequence[JobInput], names: Sequence[str]) -> list[str]:
        """``names``: how messages name each job (``validation.job_name``)."""
        resolved: dict[str, str] = {}
        for job, name in zip(jobs, names, strict=True):
            if job.wsi_path not in resolved:
                try:
                    real = resolve_slide(job.wsi_path, self.slide_roots)
                    check_slide_format(real, job.wsi_path)
                    resolved[job.wsi_path] = str(real)
                except SlidePathError as exc:
                    raise SlidePathError(
                        f"{name}: {exc}{self._nearest_slides(job.wsi_path, exc)}",
                        permission=exc.permission,
                    ) from exc
        return [resolved[job.wsi_path] for job in jobs]

    def _nearest_slides(self, wanted: str, error: SlidePathError) -> str:
        """For a slide not found: where slides are looked for, and the names
        most like the one asked for (the roots' paths stay in the log)."""
        if not error.missing:
            return ""
        names = [name for name, _ in slide_catalog.slide_names(self.slide_roots)]
        close = slide_catalog.nearest_names(wanted, names)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        return (
            f"{hint} (names are relative to the scheduler's --slide-roots;"
            " GET /slides or ListSlides lists them)"
        )

    def _stop(self, running_job_ids: Sequence[str]) -> None:
        for job_id in running_job_ids:
            self.dispatcher.runner.stop_job(job_id)
        self.dispatcher.runner.kick()

    # ---- RPCs ------------------------------------------------------------------

    async def CreateWorkflow(
        self, request: pb.CreateWorkflowRequest, context: Context
    ) -> pb.Workflow:
        user = await self.authenticate(context)
        async with domain_errors(context):
            self._check_rate(user)
            if len(request.name) > MAX_NAME_LENGTH or len(request.request_id) > MAX_ID_LENGTH:
                raise MalformedRequest(
                    f"name may be at most {MAX_NAME_LENGTH} and request_id "
                    f"{MAX_ID_LENGTH} characters"
                )
            submitted = [
                JobInput(
                    key=spec.key,
                    branch=spec.branch,
                    job_type=_job_type_name(spec.job_type),
                    wsi_path=spec.wsi_path,
                    depends_on=tuple(spec.depends_on),
                    params=dict(spec.params),
                )
                for spec in request.jobs
            ]
            jobs = normalise_jobs(submitted, self.max_jobs_per_workflow, self.min_tile_size)
            check_backends(submitted, self.dispatcher.links.backends_offered())
            # Path lookups and the format check read the disk (perhaps a network
            # share): not on the event loop, which serves every other call.
            names = [job_name(job, index) for index, job in enumerate(submitted)]
            slide_files = await asyncio.to_thread(self._resolve_slides, jobs, names)
            self._check_pending(user, len(jobs))
            wf, _ = self.store.create_workflow(
                user, request.name or "workflow", jobs, slide_files, request.request_id
            )
        self.dispatcher.runner.kick()
        return convert.workflow_message(self.store, wf)

    async def GetWorkflow(self, request: pb.GetWorkflowRequest, context: Context) -> pb.Workflow:
        user = await self.authenticate(context)
        async with domain_errors(context):
            wf = self.store.workflow(user, request.workflow_id[:MAX_ID_LENGTH])
        return convert.workflow_message(self.store, wf)

    async def ListWorkflows(
        self, request: pb.ListWorkflowsRequest, context: Context
    ) -> pb.ListWorkflowsResponse:
        user = await self.authenticate(context)
        async with domain_errors(context):
            if request.page_size < 0:
                raise MalformedRequest("page_size must not be negative")
            size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
            page, token = self.store.list_workflows(user, size, request.page_token)
        return pb.ListWorkflowsResponse(
            workflows=[convert.workflow_message(self.store, wf) for wf in page],
            next_page_token=token,
        )

    async def CancelWorkflow(
        self, request: pb.CancelWorkflowRequest, context: Context
    ) -> pb.Workflow:
        user = await self.authenticate(context)
        async with domain_errors(context):
            self._check_rate(user)
            wf, to_stop = self.store.cancel_workflow(user, request.workflow_id[:MAX_ID_LENGTH])
        self._stop(to_stop)
        return convert.workflow_message(self.store, wf)

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        user = await self.authenticate(context)
        async with domain_errors(context):
            job = self.store.job(user, request.job_id[:MAX_ID_LENGTH])
        return convert.job_message(self.store, job)

    async def CancelJob(self, request: pb.CancelJobRequest, context: Context) -> pb.Job:
        user = await self.authenticate(context)
        async with domain_errors(context):
            self._check_rate(user)
            job, running = self.store.cancel_job(user, request.job_id[:MAX_ID_LENGTH])
        self._stop([job.job_id] if running else [])
        return convert.job_message(self.store, job)

    async def WatchWorkflow(
        self, request: pb.WatchWorkflowRequest, context: Context
    ) -> AsyncIterator[pb.WorkflowEvent]:
        user = await self.authenticate(context)
        async with domain_errors(context):
            wf = self.store.workflow(user, request.workflow_id[:MAX_ID_LENGTH])
        subscription = wf.feed.subscribe()
        self.watch_streams += 1
        try:
            replay = None
            if request.after_sequence:
                replay = wf.feed.replay_after(request.after_sequence)
                if request.after_sequence > wf.feed.sequence:
                    replay = None
            first = replay if replay is not None else [self._snapshot(wf)]
            last = request.after_sequence if replay is not None else first[0].sequence
            for event in first:
                yield event
                last = event.sequence
            # Changes made while those were sent wait in the subscription: end only
            # when the client already has the terminal state.
            if wf.terminal and last >= wf.feed.sequence:
                return
            # Identity is read when a call starts; a watch may stay open for days,
            # so its credential is checked again every IDENTITY_RECHECK_S.
            recheck_at = time.monotonic() + IDENTITY_RECHECK_S
            while True:
                quiet = False
                try:
                    async with asyncio.timeout(max(0.0, recheck_at - time.monotonic())):
                        event = await subscription.next()
                except TimeoutError:
                    quiet = True
                if time.monotonic() >= recheck_at:
                    await self.authenticate.confirm(context, user)
                    recheck_at = time.monotonic() + IDENTITY_RECHECK_S
                if quiet:
                    continue
                if event is None:  # fell behind: resynchronise
                    event = self._snapshot(wf)
                elif event.sequence <= last:
                    continue
                yield event
                last = event.sequence
                if event.workflow_state in convert.TERMINAL_WORKFLOW_STATES:
                    return
        finally:
            subscription.close()
            self.watch_streams -= 1

    def _snapshot(self, wf: WorkflowRecord) -> pb.WorkflowEvent:
        return convert.snapshot_event(self.store, wf, self.clock())

    async def ReadResult(
        self, request: pb.ReadResultRequest, context: Context
    ) -> AsyncIterator[pb.ResultChunk]:
        user = await self.authenticate(context)
        async with domain_errors(context):
            job = self.store.job(user, request.job_id[:MAX_ID_LENGTH])
            files = job.result_files if job.state is State.SUCCEEDED else {}
            if request.name not in files:
                have = ", ".join(sorted(files)) or "none yet"
                raise NotFound(f"job {job.job_id!r} has no result {request.name!r} ({have})")
        async with domain_errors(context):
            async for data, size in self.dispatcher.proxy.read_result(
                job.worker, job.job_id, request.name
            ):
                yield pb.ResultChunk(data=data, size=size)

    async def GetSlideDeepZoom(
        self, request: pb.GetSlideDeepZoomRequest, context: Context
    ) -> pb.DeepZoomInfo:
        user = await self.authenticate(context)
        async with domain_errors(context), self.viewer_gate.turn(user):
            job = self.store.job(user, request.job_id[:MAX_ID_LENGTH])
            return await self.dispatcher.proxy.deep_zoom(job)
        raise AssertionError("unreachable")

    async def GetSlideTile(
        self, request: pb.GetSlideTileRequest, context: Context
    ) -> pb.DeepZoomTile:
        user = await self.authenticate(context)
        async with domain_errors(context), self.viewer_gate.turn(user):
            job = self.store.job(user, request.job_id[:MAX_ID_LENGTH])
            if min(request.level, request.col, request.row) < 0:
                raise NotFound(f"no tile {request.level}/{request.col}_{request.row}")
            return await self.dispatcher.proxy.slide_tile(
                job, request.level, request.col, request.row
            )
        raise AssertionError("unreachable")

    def _segmented_job(self, user: str, job_id: str) -> JobRecord:
        """The caller's job whose nuclei a viewer may ask for."""
        job = self.store.job(user, job_id[:MAX_ID_LENGTH])
        if job.job_type is not JobType.CELL_SEGMENTATION:
            raise MalformedRequest(f"job {job.job_id!r} is a {job.job_type} job: it has no nuclei")
        if job.state is not State.SUCCEEDED or result_files.CELLS not in job.result_files:
            raise NotFound(f"job {job.job_id!r} has no nuclei yet (it is {job.state.name})")
        return job

    async def QueryCells(
        self, request: pb.QueryCellsRequest, context: Context
    ) -> AsyncIterator[pb.ResultChunk]:
        user = await self.authenticate(context)
        async with domain_errors(context):
            job = self._segmented_job(user, request.job_id)
            try:
                box = check_box((request.x0, request.y0, request.x1, request.y1))
            except BoxError as exc:
                raise MalformedRequest(str(exc)) from None
        async with domain_errors(context), self.viewer_gate.turn(user):
            async for data in self.dispatcher.proxy.query_cells(job.worker, job.job_id, box):
                yield pb.ResultChunk(data=data)

    async def GetCellDensity(
        self, request: pb.GetCellDensityRequest, context: Context
    ) -> pb.CellDensity:
        user = await self.authenticate(context)
        async with domain_errors(context), self.viewer_gate.turn(user):
            job = self._segmented_job(user, request.job_id)
            if not (math.isfinite(request.cell_px) and request.cell_px >= 0):
                raise MalformedRequest("cell_px must be a finite number, 0 or more")
            return await self.dispatcher.proxy.cell_density(job.worker, job.job_id, request.cell_px)
        raise AssertionError("unreachable")

    async def ListSlides(
        self, request: pb.ListSlidesRequest, context: Context
    ) -> pb.ListSlidesResponse:
        await self.authenticate(context)
        async with domain_errors(context):
            if request.page_size < 0:
                raise MalformedRequest("page_size must not be negative")
            size = min(request.page_size or DEFAULT_SLIDE_PAGE, MAX_PAGE_SIZE)
            # Walking the roots and opening slides reads the disk: not on the loop.
            listed, token = await asyncio.to_thread(
                self._slides_page, size, request.page_token[:MAX_ID_LENGTH]
            )
        return pb.ListSlidesResponse(
            slides=[pb.Slide(**dataclasses.asdict(info)) for info in listed],
            next_page_token=token,
        )

    def _slides_page(self, size: int, token: str) -> tuple[list[slide_catalog.SlideInfo], str]:
        chosen, token = slide_catalog.page(slide_catalog.slide_names(self.slide_roots), size, token)
        return [slide_catalog.describe(name, path) for name, path in chosen], token

    async def GetJobParams(
        self, request: pb.GetJobParamsRequest, context: Context
    ) -> pb.JobParamsInfo:
        """Asks for no identity: the deployment's facts are the same for every
        caller (as health and reflection are), and a form needs them before
        anyone has signed in."""
        offered = self.dispatcher.links.backends_offered()
        return pb.JobParamsInfo(
            min_tile_size=max(self.min_tile_size, job_params.TILE_SIZE_RANGE[0]),
            backends=sorted(offered or ()),
            max_jobs_per_workflow=self.max_jobs_per_workflow,
        )

    async def GetStats(self, request: pb.GetStatsRequest, context: Context) -> pb.SchedulerStats:
        user = await self.authenticate(context)
        policy = self.store.policy
        depths = policy.lane_depths(user)
        return pb.SchedulerStats(
            branches=[
                pb.BranchDepth(workflow_id=wid, branch=branch, pending=p, running=r)
                for (_, wid, branch), (p, r) in depths.items()
            ],
            running_jobs=policy.running_count,
            pending_jobs=policy.pending_count,
            active_users=len(policy.active_users),
            waiting_users=policy.users_waiting_for_a_slot,
            worker_slots_busy=self.dispatcher.links.slots_busy,
            worker_slots_total=self.dispatcher.links.slots_total,
            workers_connected=self.dispatcher.links.workers_connected,
            my_running_jobs=sum(r for _, r in depths.values()),
            my_pending_jobs=sum(p for p, _ in depths.values()),
            max_workers=policy.max_workers,
            max_active_users=policy.max_active_users,
            watch_streams=self.watch_streams,
            workers=[
                pb.WorkerStatus(
                    address=link.address if user in self.operators else "",
                    connected=link.connected,
                    slots=link.slots,
                    busy=link.busy,
                    error=link.error if user in self.operators else "",
                    failed_probes=link.failed_probes,
                    origin=link.origin,
                    state=link.state,
                    backends=link.backends,
                )
                for link in self.dispatcher.links.links
            ],
        )
