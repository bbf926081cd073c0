"""The Python client against the real services: calls, errors, idempotent
creates, and a watch that survives dropped connections."""

from __future__ import annotations

import itertools

import grpc
import pytest

from tests.harness import CMU, Cluster
from tests.integration.support import LONG, Watcher, job_transitions
from tests.tcp_proxy import TcpProxy
from wsi_client.client import SchedulerClient, SchedulerError, job
from wsi_client.sync_client import SyncSchedulerClient
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb


def long_job(key: str, branch: str = "main") -> pb.JobSpec:
    return job(branch, "CELL_SEGMENTATION", CMU, key=key, params=LONG)


async def test_create_get_list_and_cancel(shared: Cluster) -> None:
    async with SchedulerClient(shared.scheduler.address, user="client-crud") as wsi:
        first = await wsi.create_workflow([job("a", "TISSUE_MASK", CMU, key="m")], name="first")
        second = await wsi.create_workflow(
            [long_job("slow"), job("main", "TISSUE_MASK", CMU, key="after")], name="second"
        )
        assert (await wsi.get_workflow(first.workflow_id)).name == "first"
        fetched = await wsi.get_job(second.jobs[1].job_id)
        assert fetched.key == "after" and fetched.state == pb.JOB_STATE_PENDING

        page = await wsi.list_workflows(page_size=1)
        assert [w.workflow_id for w in page.workflows] == [second.workflow_id]  # newest first
        everything = [w.workflow_id async for w in wsi.iter_workflows(page_size=1)]
        assert everything == [second.workflow_id, first.workflow_id]

        cancelled = await wsi.cancel_job(second.jobs[1].job_id)
        assert cancelled.state == pb.JOB_STATE_CANCELLED
        ended = await wsi.cancel_workflow(second.workflow_id)
        async for _ in wsi.watch(ended.workflow_id):
            pass
        final = await wsi.get_workflow(second.workflow_id)
        assert final.state == pb.WORKFLOW_STATE_CANCELLED
        assert {j.state for j in final.jobs} == {pb.JOB_STATE_CANCELLED}

        with pytest.raises(SchedulerError) as again:
            await wsi.cancel_job(second.jobs[1].job_id)
        assert again.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert "already ended" in again.value.message

    async with SchedulerClient(shared.scheduler.address, user="someone-else") as other:
        with pytest.raises(SchedulerError) as hidden:
            await other.get_workflow(first.workflow_id)
        assert hidden.value.code is grpc.StatusCode.NOT_FOUND


async def test_a_create_with_the_same_request_id_returns_the_first(shared: Cluster) -> None:
    async with SchedulerClient(shared.scheduler.address, user="client-idem") as wsi:
        jobs = [job("a", "TISSUE_MASK", CMU)]
        one = await wsi.create_workflow(jobs, request_id="batch-7")
        two = await wsi.create_workflow(jobs, request_id="batch-7")
        three = await wsi.create_workflow(jobs)  # a fresh id each time when none is given
        four = await wsi.create_workflow(jobs)
        assert one.workflow_id == two.workflow_id
        assert len({one.workflow_id, three.workflow_id, four.workflow_id}) == 3
        # The same id for other jobs: refused, not the first workflow in their place.
        with pytest.raises(SchedulerError) as reused:
            await wsi.create_workflow([job("b", "TISSUE_MASK", CMU)], request_id="batch-7")
        assert reused.value.code is grpc.StatusCode.ALREADY_EXISTS
        assert f"already made workflow {one.workflow_id}" in reused.value.message


async def test_bad_input_raises_with_the_servers_status(shared: Cluster) -> None:
    async with SchedulerClient(shared.scheduler.address, user="client-bad") as wsi:
        with pytest.raises(SchedulerError) as outside:
            await wsi.create_workflow([job("a", "TISSUE_MASK", "/etc/passwd")])
        assert outside.value.code is grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(SchedulerError) as cycle:
            await wsi.create_workflow(
                [
                    job("a", "TISSUE_MASK", CMU, key="x", depends_on=["y"]),
                    job("b", "TISSUE_MASK", CMU, key="y", depends_on=["x"]),
                ]
            )
        assert cycle.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "cycle" in cycle.value.message
    async with SchedulerClient(shared.scheduler.address, user="bad user!") as anonymous:
        with pytest.raises(SchedulerError) as unauthenticated:
            await anonymous.stats()
        assert unauthenticated.value.code is grpc.StatusCode.UNAUTHENTICATED


async def test_watch_across_dropped_connections_delivers_every_change_once(
    shared: Cluster,
) -> None:
    """The client's connection goes through a proxy that resets it twice
    mid-stream; a direct watcher on the same workflow is the reference."""
    who = "client-watch"
    with TcpProxy(shared.scheduler.address) as proxy:
        async with SchedulerClient(proxy.address, user=who) as wsi:
            created = await wsi.create_workflow(
                [long_job("seg"), job("main", "TISSUE_MASK", CMU, key="mask"), long_job("b", "b")]
            )
            reference = Watcher(shared, who, created.workflow_id, after=created.sequence)
            received: list[pb.WorkflowEvent] = []
            cut_at: list[int] = []
            async for event in wsi.watch(created.workflow_id):
                received.append(event)
                progress = event.kind == pb.WorkflowEvent.JOB_PROGRESS
                if (
                    progress
                    and len(cut_at) < 2
                    and event.job.progress.tiles_done >= 3 * (len(cut_at) + 1)
                ):
                    cut_at.append(event.sequence)
                    proxy.cut()
    expected = reference.join()
    assert proxy.cuts >= 2 and len(cut_at) == 2, "the stream was not cut twice mid-way"
    assert proxy.connections >= 3, "the client did not reconnect after each cut"
    assert received[-1].sequence > cut_at[-1], "events went on after the last cut"

    snapshot, changes = received[0], received[1:]
    assert snapshot.kind == pb.WorkflowEvent.SNAPSHOT
    sequences = [e.sequence for e in changes]
    assert sequences == list(range(snapshot.sequence + 1, snapshot.sequence + 1 + len(changes)))
    later = [e for e in expected if e.sequence > snapshot.sequence]
    assert [e.SerializeToString() for e in changes] == [e.SerializeToString() for e in later]
    transitions = job_transitions(expected)
    for key in ("seg", "mask", "b"):
        assert [s for k, s in transitions if k == key] == ["RUNNING", "SUCCEEDED"]
    assert changes[-1].workflow_state == pb.WORKFLOW_STATE_SUCCEEDED
    assert all(b.sequence > a.sequence for a, b in itertools.pairwise(received))


def test_the_sync_client_does_the_same_without_asyncio(shared: Cluster) -> None:
    with SyncSchedulerClient(shared.scheduler.address, user="client-sync") as wsi:
        created = wsi.create_workflow([job("a", "TISSUE_MASK", CMU, key="m")], name="sync")
        states = [
            pb.JobState.Name(e.job.state)
            for e in wsi.watch(created.workflow_id, created.sequence)
            if e.kind == pb.WorkflowEvent.JOB_STATE
        ]
        assert states == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
        assert wsi.get_workflow(created.workflow_id).state == pb.WORKFLOW_STATE_SUCCEEDED
        assert wsi.list_workflows().workflows[0].name == "sync"
        with pytest.raises(SchedulerError) as finished:
            wsi.cancel_job(created.jobs[0].job_id)
        assert finished.value.code is grpc.StatusCode.FAILED_PRECONDITION
        # Leaving a watch early closes its stream.
        second = wsi.create_workflow([job("a", "TISSUE_MASK", CMU)])
        for _ in wsi.watch(second.workflow_id):
            break
        assert wsi.stats().max_workers == 4
