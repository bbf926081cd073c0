"""A typed asyncio client for the scheduler.

    async with SchedulerClient("127.0.0.1:50051", user="alice") as wsi:
        workflow = await wsi.create_workflow([job("a", "TISSUE_MASK", "slide.svs")])
        async for event in wsi.watch(workflow.workflow_id):
            ...

The address and identity are given once: ``user=`` where the scheduler trusts
the x-user-id header, ``token=`` (an API token) where it runs in token mode;
with neither, the environment's ``WSI_TOKEN`` or ``WSI_USER`` (as for ``wsi``).
``tls_ca=`` (PEM bytes or a file path) for a scheduler that serves TLS.
Unary calls carry a deadline. Calls that are safe to repeat (reads, and
creates, which always carry a ``request_id``) are retried on UNAVAILABLE with
backoff; nothing else is. ``watch`` resumes after a dropped connection from the
last sequence it delivered. Failures raise ``SchedulerError`` with the gRPC
status and the server's message."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import grpc

from wsi_client.backoff import Backoff
from wsi_client.watch_cursor import WatchCursor
from wsi_protocol import addresses, metadata
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from wsi_protocol.status import retry_after_seconds

DEFAULT_ADDRESS = addresses.SCHEDULER
DEFAULT_TIMEOUT_S = 10.0
# Reconnect quickly after a dropped connection instead of gRPC's default 1 s + backoff.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.ping_timeout_ms", 10_000),
)
# A stream that broke for one of these is worth reopening.
_RESUMABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
)

R = TypeVar("R")


class SchedulerError(Exception):
    """A call failed: ``code`` is the gRPC status, ``message`` the server's words,
    ``retry_after`` the suggested wait in seconds for RESOURCE_EXHAUSTED."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: int | None = None):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @classmethod
    def from_rpc(cls, error: grpc.aio.AioRpcError) -> SchedulerError:
        code = error.code()
        retry_after = None
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            retry_after = retry_after_seconds(error.trailing_metadata())
        return cls(code, error.details() or code.name.lower(), retry_after)


def job(
    branch: str,
    job_type: str,
    wsi_path: str,
    *,
    key: str = "",
    depends_on: Iterable[str] = (),
    params: Mapping[str, str] | None = None,
) -> pb.JobSpec:
    """One job of a workflow; ``job_type`` is ``TISSUE_MASK`` or ``CELL_SEGMENTATION``."""
    try:
        type_number = pb.JobType.Value(job_type)
    except ValueError:
        names = ", ".join(n for n, v in pb.JobType.items() if v)
        raise ValueError(f"unknown job type {job_type!r}; use one of {names}") from None
    return pb.JobSpec(
        key=key,
        branch=branch,
        job_type=type_number,
        wsi_path=wsi_path,
        depends_on=list(depends_on),
        params=dict(params or {}),
    )


def identity_metadata(user: str, token: str) -> tuple[tuple[str, str], ...]:
    found: tuple[tuple[str, str], ...] = ((metadata.USER_ID, user),) if user else ()
    if token:
        found += ((metadata.AUTHORIZATION, f"Bearer {token}"),)
    return found


def _tls(ca: bytes | str) -> grpc.ChannelCredentials:
    pem = ca if isinstance(ca, bytes) else Path(ca).read_bytes()
    return grpc.ssl_channel_credentials(root_certificates=pem)


class SchedulerClient:
    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        user: str = "",
        token: str = "",
        tls_ca: bytes | str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        backoff: Backoff | None = None,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        if not user and not token:
            token, user = os.environ.get("WSI_TOKEN", ""), os.environ.get("WSI_USER", "")
        if not user and not token:
            raise ValueError(
                "a user id (user=, WSI_USER) or an API token (token=, WSI_TOKEN) is required"
            )
        self.address = address
        self.user = user
        self.token = token
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self._owns_channel = channel is None
        if channel is None:
            channel = (
                grpc.aio.secure_channel(address, _tls(tls_ca), options=CHANNEL_OPTIONS)
                if tls_ca
                else grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            )
        self._channel = channel
        self._stub = pb_grpc.SchedulerStub(self._channel)
        self._metadata = identity_metadata(user, token)

    async def __aenter__(self) -> SchedulerClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel if this client opened it."""
        if self._owns_channel:
            await self._channel.close(grace=None)

    # ---- calls -----------------------------------------------------------------

    async def create_workflow(
        self, jobs: Sequence[pb.JobSpec], *, name: str = "", request_id: str | None = None
    ) -> pb.Workflow:
        """Creates the workflow once, even if a retry follows a lost reply: the
        ``request_id`` (generated unless given) makes the server return the first."""
        request = pb.CreateWorkflowRequest(
            name=name, jobs=list(jobs), request_id=request_id or str(uuid.uuid4())
        )
        return await self._retrying(
            lambda: self._stub.CreateWorkflow(
                request, metadata=self._metadata, timeout=self.timeout
            )
        )

    async def get_workflow(self, workflow_id: str) -> pb.Workflow:
        request = pb.GetWorkflowRequest(workflow_id=workflow_id)
        return await self._retrying(
            lambda: self._stub.GetWorkflow(request, metadata=self._metadata, timeout=self.timeout)
        )

    async def list_workflows(
        self, page_size: int = 0, page_token: str = ""
    ) -> pb.ListWorkflowsResponse:
        """One page, newest first; pass ``next_page_token`` on for the next."""
        request = pb.ListWorkflowsRequest(page_size=page_size, page_token=page_token)
        return await self._retrying(
            lambda: self._stub.ListWorkflows(request, metadata=self._metadata, timeout=self.timeout)
        )

    async def iter_workflows(self, page_size: int = 100) -> AsyncIterator[pb.Workflow]:
        """Every workflow of the user, newest first, page by page."""
        token = ""
        while True:
            page = await self.list_workflows(page_size, token)
            for workflow in page.workflows:
                yield workflow
            token = page.next_page_token
            if not token:
                return

    async def get_job(self, job_id: str) -> pb.Job:
        request = pb.GetJobRequest(job_id=job_id)
        return await self._retrying(
            lambda: self._stub.GetJob(request, metadata=self._metadata, timeout=self.timeout)
        )

    async def stats(self) -> pb.SchedulerStats:
        request = pb.GetStatsRequest()
        return await self._retrying(
            lambda: self._stub.GetStats(request, metadata=self._metadata, timeout=self.timeout)
        )

    async def job_params(self) -> pb.JobParamsInfo:
        """This deployment's bounds: smallest tile, backends offered, jobs per workflow."""
        request = pb.GetJobParamsRequest()
        return await self._retrying(
            lambda: self._stub.GetJobParams(request, metadata=self._metadata, timeout=self.timeout)
        )

    async def iter_slides(self, page_size: int = 1000) -> AsyncIterator[pb.Slide]:
        """Every slide under the scheduler's slide roots, by the name jobs use."""
        token = ""
        while True:
            request = pb.ListSlidesRequest(page_size=page_size, page_token=token)
            page = await self._retrying(
                lambda: self._stub.ListSlides(
                    request,  # noqa: B023 (awaited before the loop goes on)
                    metadata=self._metadata,
                    timeout=self.timeout,
                )
            )
            for slide in page.slides:
                yield slide
            token = page.next_page_token
            if not token:
                return

    async def read_result(self, job_id: str, name: str) -> AsyncIterator[bytes]:
        """A result file of one of the caller's jobs, in chunks, from the worker
        that holds it (through the scheduler). UNAVAILABLE: that worker is not
        connected now."""
        request = pb.ReadResultRequest(job_id=job_id, name=name)
        try:
            async for chunk in self._stub.ReadResult(request, metadata=self._metadata):
                yield chunk.data
        except grpc.aio.AioRpcError as error:
            raise SchedulerError.from_rpc(error) from None

    async def download_result(self, job_id: str, name: str, target: Path) -> Path:
        """Saves a result file at ``target``: it appears whole or not at all."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                async for data in self.read_result(job_id, name):
                    out.write(data)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return target

    async def cancel_job(self, job_id: str) -> pb.Job:
        """Not retried: a repeated cancel of a job that the first one ended would
        report FAILED_PRECONDITION instead of the outcome."""
        request = pb.CancelJobRequest(job_id=job_id)
        return await self._once(
            self._stub.CancelJob(request, metadata=self._metadata, timeout=self.timeout)
        )

    async def cancel_workflow(self, workflow_id: str) -> pb.Workflow:
        request = pb.CancelWorkflowRequest(workflow_id=workflow_id)
        return await self._once(
            self._stub.CancelWorkflow(request, metadata=self._metadata, timeout=self.timeout)
        )

    async def watch(
        self, workflow_id: str, after_sequence: int = 0
    ) -> AsyncGenerator[pb.WorkflowEvent, None]:
        """The workflow's events until it ends: a snapshot first (unless
        resuming from ``after_sequence``), then every change once, in order.
        A dropped connection is reopened from the last delivered sequence; the
        backoff's attempts bound consecutive failures without any event."""
        cursor = WatchCursor(after=after_sequence)
        delays = self.backoff.delays()
        while True:
            request = pb.WatchWorkflowRequest(workflow_id=workflow_id, after_sequence=cursor.after)
            call = self._stub.WatchWorkflow(request, metadata=self._metadata)
            try:
                async for event in call:
                    if cursor.accept(event):
                        delays = self.backoff.delays()
                        yield event
                return  # the server ends the stream after the terminal event
            except grpc.aio.AioRpcError as error:
                if error.code() not in _RESUMABLE or cursor.finished:
                    raise SchedulerError.from_rpc(error) from None
                delay = next(delays, None)
                if delay is None:
                    raise SchedulerError.from_rpc(error) from None
                await asyncio.sleep(delay)
            finally:
                call.cancel()

    # ---- plumbing --------------------------------------------------------------

    async def _once(self, call: Awaitable[R]) -> R:
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            raise SchedulerError.from_rpc(error) from None

    async def _retrying(self, make_call: Callable[[], Awaitable[R]]) -> R:
        delays = self.backoff.delays()
        while True:
            try:
                return await make_call()
            except grpc.aio.AioRpcError as error:
                delay = next(delays, None)
                if error.code() is not grpc.StatusCode.UNAVAILABLE or delay is None:
                    raise SchedulerError.from_rpc(error) from None
                await asyncio.sleep(delay)
