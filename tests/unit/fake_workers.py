"""Workers as the scheduler's links see them, in-process: fake stubs answering
GetInfo, RunJob and the relayed calls, driven by the test (no sockets)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from wsi_protocol.scheduler.v1 import scheduler_pb2 as spb
from wsi_protocol.worker.v1 import worker_pb2 as wpb


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)


class FakeJobCall:
    """A RunJob stream the test feeds: updates, an error, or its end."""

    def __init__(self, request: wpb.RunJobRequest) -> None:
        self.request = request
        self.cancelled = False
        self._items: asyncio.Queue[wpb.JobUpdate | grpc.aio.AioRpcError | None] = asyncio.Queue()

    def send(self, update: wpb.JobUpdate) -> None:
        self._items.put_nowait(update)

    def progress(self, done: int, total: int) -> None:
        self.send(wpb.JobUpdate(progress=wpb.TileProgress(tiles_done=done, tiles_total=total)))

    def succeed(self, summary: str = '{"nuclei": 3}', files: dict[str, str] | None = None) -> None:
        files = files or {"summary.json": f"{self.request.job_id}/summary.json"}
        self.send(wpb.JobUpdate(result=wpb.JobOutput(files=files, summary=summary)))

    def break_with(self, code: grpc.StatusCode, details: str = "") -> None:
        self._items.put_nowait(rpc_error(code, details))

    def end(self) -> None:
        self._items.put_nowait(None)

    def cancel(self) -> bool:
        self.cancelled = True
        self._items.put_nowait(None)
        return True

    def __aiter__(self) -> AsyncIterator[wpb.JobUpdate]:
        return self._updates()

    async def _updates(self) -> AsyncIterator[wpb.JobUpdate]:
        while True:
            item = await self._items.get()
            if self.cancelled:
                raise asyncio.CancelledError()
            if item is None:
                return
            if isinstance(item, grpc.aio.AioRpcError):
                raise item
            yield item


@dataclass
class FakeWorker:
    slots: int = 2
    up: bool = True
    probes: int = 0
    calls: list[FakeJobCall] = field(default_factory=list)
    results: dict[str, bytes] = field(default_factory=dict)  # "job/name" -> content
    answer: grpc.StatusCode | None = None  # every relayed call fails with this, when set
    seen_metadata: list[tuple[tuple[str, str], ...]] = field(default_factory=list)
    closed: bool = False
    worker_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    backends: tuple[str, ...] = ("classical",)

    def _check(self) -> None:
        if self.answer is not None:
            raise rpc_error(self.answer, f"worker says {self.answer.name}")

    async def GetInfo(
        self, request: object, metadata: tuple[tuple[str, str], ...], **options: object
    ) -> wpb.WorkerInfo:
        self.probes += 1
        self.seen_metadata.append(metadata)
        if not self.up:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused")
        return wpb.WorkerInfo(
            slots=self.slots, backends=list(self.backends), worker_id=self.worker_id
        )

    def RunJob(self, request: wpb.RunJobRequest, metadata: object) -> FakeJobCall:
        call = FakeJobCall(request)
        self.calls.append(call)
        return call

    async def ReadResult(
        self, request: wpb.ReadResultRequest, metadata: object
    ) -> AsyncIterator[wpb.FileChunk]:
        self._check()
        data = self.results.get(f"{request.job_id}/{request.name}")
        if data is None:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, "no such result")
        for start in range(0, len(data), 4):
            yield wpb.FileChunk(data=data[start : start + 4], size=len(data) if not start else 0)

    async def DescribeDeepZoom(
        self, request: wpb.DeepZoomRequest, metadata: object, **options: object
    ) -> spb.DeepZoomInfo:
        self._check()
        return spb.DeepZoomInfo(width=100, height=50, tile_size=254)

    async def ReadDeepZoomTile(
        self, request: wpb.DeepZoomTileRequest, metadata: object, **options: object
    ) -> spb.DeepZoomTile:
        self._check()
        return spb.DeepZoomTile(data=b"jpeg", content_type="image/jpeg")

    async def CellDensity(
        self, request: wpb.CellDensityRequest, metadata: object, **options: object
    ) -> spb.CellDensity:
        self._check()
        return spb.CellDensity(cell_px=request.cell_px, nuclei=7)

    async def DeleteResults(
        self, request: wpb.DeleteResultsRequest, metadata: object, **options: object
    ) -> wpb.DeleteResultsResponse:
        self._check()
        return wpb.DeleteResultsResponse()


@dataclass
class FakeConnection:
    worker: FakeWorker

    @property
    def stub(self) -> FakeWorker:
        return self.worker

    async def close(self) -> None:
        self.worker.closed = True


class FakeNetwork:
    """The connection factory: one fake worker per address, made on first dial."""

    def __init__(self) -> None:
        self.workers: dict[str, FakeWorker] = {}

    def __call__(self, address: str) -> FakeConnection:
        return FakeConnection(self.workers.setdefault(address, FakeWorker()))
