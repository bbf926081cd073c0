"""Which calls the client retries, against an in-process gRPC server that
fails on purpose (the scheduler's real failures are in tests/integration)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from wsi_client.backoff import Backoff
from wsi_client.client import SchedulerClient, SchedulerError, job
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc


class Flaky(pb_grpc.SchedulerServicer):
    """Answers UNAVAILABLE for the first ``failures`` calls of each method."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: Counter[str] = Counter()
        self.request_ids: list[str] = []
        self.users: set[str] = set()

    async def _gate(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.calls[method] += 1
        self.users.update(
            str(v) for k, v in context.invocation_metadata() or () if k == "x-user-id"
        )
        if self.calls[method] <= self.failures:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")

    async def GetWorkflow(self, request, context):
        await self._gate("GetWorkflow", context)
        return pb.Workflow(workflow_id=request.workflow_id)

    async def CreateWorkflow(self, request, context):
        self.request_ids.append(request.request_id)
        await self._gate("CreateWorkflow", context)
        return pb.Workflow(workflow_id="w1", name=request.name)

    async def CancelJob(self, request, context):
        await self._gate("CancelJob", context)
        return pb.Job(job_id=request.job_id)

    async def _unused(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")

    CancelWorkflow = GetJob = ListWorkflows = WatchWorkflow = _unused  # type: ignore[assignment]
    ReadResult = ListSlides = GetSlideDeepZoom = GetSlideTile = _unused  # type: ignore[assignment]
    QueryCells = GetCellDensity = GetJobParams = _unused  # type: ignore[assignment]

    async def GetStats(self, request, context):
        self.calls["GetStats"] += 1
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "slow down",
            trailing_metadata=(("retry-after-seconds", "4"),),
        )


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[Flaky, SchedulerClient]]:
    servicer = Flaky(failures=2)
    server = grpc.aio.server()
    pb_grpc.add_SchedulerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = SchedulerClient(
        f"127.0.0.1:{port}", user="alice", backoff=Backoff(initial=0.01, attempts=4)
    )
    try:
        yield servicer, client
    finally:
        await client.close()
        await server.stop(None)


async def test_reads_are_retried_on_unavailable(flaky: tuple[Flaky, SchedulerClient]) -> None:
    servicer, client = flaky
    workflow = await client.get_workflow("w9")
    assert workflow.workflow_id == "w9"
    assert servicer.calls["GetWorkflow"] == 3
    assert servicer.users == {"alice"}


async def test_a_create_is_retried_with_one_request_id(
    flaky: tuple[Flaky, SchedulerClient],
) -> None:
    servicer, client = flaky
    await client.create_workflow([job("a", "TISSUE_MASK", "s.svs")], name="n")
    assert len(servicer.request_ids) == 3
    assert len(set(servicer.request_ids)) == 1 and servicer.request_ids[0]


async def test_a_cancel_is_not_retried(flaky: tuple[Flaky, SchedulerClient]) -> None:
    servicer, client = flaky
    with pytest.raises(SchedulerError) as caught:
        await client.cancel_job("j1")
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert caught.value.message == "restarting"
    assert servicer.calls["CancelJob"] == 1


async def test_retries_stop_after_the_backoff_attempts() -> None:
    servicer = Flaky(failures=10)
    server = grpc.aio.server()
    pb_grpc.add_SchedulerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with SchedulerClient(
            f"127.0.0.1:{port}", user="alice", backoff=Backoff(initial=0.01, attempts=3)
        ) as client:
            with pytest.raises(SchedulerError, match="UNAVAILABLE"):
                await client.get_workflow("w")
        assert servicer.calls["GetWorkflow"] == 3
    finally:
        await server.stop(None)


async def test_resource_exhausted_carries_the_retry_delay(
    flaky: tuple[Flaky, SchedulerClient],
) -> None:
    servicer, client = flaky
    with pytest.raises(SchedulerError) as caught:
        await client.stats()
    assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.retry_after == 4
    assert servicer.calls["GetStats"] == 1


def test_the_job_helper_names_the_valid_types() -> None:
    with pytest.raises(ValueError, match="TISSUE_MASK, CELL_SEGMENTATION"):
        job("a", "SEGMENT", "s.svs")
    with pytest.raises(ValueError, match="user id"):
        SchedulerClient("127.0.0.1:1", user="")
