"""What the scheduler relays from its workers to users: result files, the
viewer's slide tiles, nuclei and density, and retention's deletions.

A worker refuses a viewer's or a result's call in the API's own terms
(INVALID_ARGUMENT or NOT_FOUND, with a message for the user), so its answer
is relayed as it came, with what was asked put in front; any other status
means the worker could not answer (UNAVAILABLE: try again)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from scheduler_service.store import JobRecord
from scheduler_service.worker_links import WorkerLink, WorkerLinks
from wsi_protocol.scheduler.v1 import scheduler_pb2 as spb
from wsi_protocol.worker.v1 import worker_pb2 as wpb
from wsi_protocol.worker.v1 import worker_pb2_grpc as wpb_grpc

log = logging.getLogger("wsi.scheduler.dispatch")
T = TypeVar("T")
VIEWER_TIMEOUT_S = 30.0  # a tile or a box of nuclei; a viewer asks again
DELETE_TIMEOUT_S = 30.0


class WorkerUnavailable(RuntimeError):
    """The worker holding what was asked for is not connected (UNAVAILABLE)."""


class WorkerRefusal(Exception):
    """A worker's refusal, relayed with the code the worker chose."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


RELAYED_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND})


def worker_slide_path(job: JobRecord) -> str:
    """The slide as the worker is to find it: the user's root-relative name, so
    each host may mount the slide roots where it likes (the worker checks it
    against its own roots); an absolute name as the scheduler resolved it."""
    return job.slide_file if os.path.isabs(job.wsi_path) else job.wsi_path


def _results_away(job_id: str) -> str:
    return (
        f"the worker holding the results of job {job_id!r} is not connected now;"
        " try again when it is back"
    )


def refusal(code: grpc.StatusCode, details: str, what: str) -> WorkerRefusal | None:
    """A worker's answer to relay to the user; None where it answered nothing
    a user can act on (down, too slow, a bug)."""
    if code in RELAYED_CODES:
        return WorkerRefusal(code, f"{what}: {details}" if details else what)
    return None


def _viewer_failure(exc: grpc.aio.AioRpcError, what: str, address: str) -> Exception:
    log.warning("%s on %s: %s %s", what, address, exc.code().name, exc.details())
    relayed = refusal(exc.code(), exc.details() or "", what)
    if relayed is not None:
        return relayed
    return WorkerUnavailable(f"{what}: its worker did not answer; try again shortly")


class WorkerProxy:
    def __init__(self, links: WorkerLinks) -> None:
        self.links = links

    def _results_link(self, address: str, job_id: str) -> WorkerLink:
        """The worker holding a job's results, connected; else UNAVAILABLE."""
        link = self.links.connected(address)
        if link is None:
            raise WorkerUnavailable(_results_away(job_id))
        return link

    def _viewer_link(self, preferred: str) -> WorkerLink:
        """The worker that ran the job if it is connected, else any connected
        one: every worker reads the slide roots."""
        link = self.links.connected_preferring(preferred)
        if link is None:
            raise WorkerUnavailable("no worker is connected to read the slide; try again shortly")
        return link

    async def read_result(
        self, address: str, job_id: str, name: str
    ) -> AsyncIterator[tuple[bytes, int]]:
        """A result file from the worker that wrote it: (data, size on the first chunk)."""
        link = self._results_link(address, job_id)
        request = wpb.ReadResultRequest(job_id=job_id, name=name)
        try:
            async for chunk in link.stub.ReadResult(request, metadata=self.links.metadata):
                yield chunk.data, chunk.size
        except grpc.aio.AioRpcError as exc:
            log.warning("result %s of job %s from %s: %s", name, job_id, address, exc.details())
            what = f"result {name!r} of job {job_id!r}"
            raise refusal(exc.code(), exc.details() or "", what) or WorkerUnavailable(
                _results_away(job_id)
            ) from None

    async def _ask(
        self, link: WorkerLink, ask: Callable[[wpb_grpc.WorkerAsyncStub], Awaitable[T]], what: str
    ) -> T:
        try:
            return await ask(link.stub)
        except grpc.aio.AioRpcError as exc:
            raise _viewer_failure(exc, what, link.address) from None

    async def deep_zoom(self, job: JobRecord) -> spb.DeepZoomInfo:
        request = wpb.DeepZoomRequest(wsi_path=worker_slide_path(job))
        return await self._ask(
            self._viewer_link(job.worker),
            lambda stub: stub.DescribeDeepZoom(
                request, metadata=self.links.metadata, timeout=VIEWER_TIMEOUT_S
            ),
            f"the slide of job {job.job_id!r}",
        )

    async def slide_tile(self, job: JobRecord, level: int, col: int, row: int) -> spb.DeepZoomTile:
        request = wpb.DeepZoomTileRequest(
            wsi_path=worker_slide_path(job), level=level, col=col, row=row
        )
        return await self._ask(
            self._viewer_link(job.worker),
            lambda stub: stub.ReadDeepZoomTile(
                request, metadata=self.links.metadata, timeout=VIEWER_TIMEOUT_S
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
        what = f"the nuclei of job {job_id!r}"
        try:
            async for chunk in link.stub.QueryCells(
                request, metadata=self.links.metadata, timeout=VIEWER_TIMEOUT_S
            ):
                yield chunk.data
        except grpc.aio.AioRpcError as exc:
            raise _viewer_failure(exc, what, address) from None

    async def cell_density(self, address: str, job_id: str, cell_px: float) -> spb.CellDensity:
        request = wpb.CellDensityRequest(job_id=job_id, cell_px=cell_px)
        return await self._ask(
            self._results_link(address, job_id),
            lambda stub: stub.CellDensity(
                request, metadata=self.links.metadata, timeout=VIEWER_TIMEOUT_S
            ),
            f"the nuclei of job {job_id!r}",
        )

    async def delete_results(self, address: str, job_id: str) -> bool:
        """Asks the job's worker to delete its results; False if it cannot now."""
        link = self.links.connected(address)
        if link is None:
            return False
        request = wpb.DeleteResultsRequest(job_id=job_id)
        try:
            await link.stub.DeleteResults(
                request, metadata=self.links.metadata, timeout=DELETE_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("results of job %s on %s not deleted: %s", job_id, address, exc.details())
            return False
        return True
