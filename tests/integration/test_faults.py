"""Faults with real processes and SIGKILL: the scheduler (and its workers) die
mid-run and come back on the same journal; nothing is lost or duplicated."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tests.harness import Cluster, Service, cluster, start_scheduler, start_worker, user
from tests.integration.support import LONG, create, get, job_transitions, spec, watch
from tests.processes import free_port
from tests.timing import patience
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc


def restart_scheduler(c: Cluster, workdir: Path, workers: list[Service]) -> Service:
    """A new scheduler process on the same journal (and a new port)."""
    scheduler = start_scheduler(workdir, workers)
    c.scheduler = scheduler
    c.channel = grpc.insecure_channel(scheduler.address)
    c.stub = pb_grpc.SchedulerStub(c.channel)
    return scheduler


def wait_until(condition: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    """Scaled (``patience``): how long a restart takes is not what these test."""
    deadline = time.monotonic() + patience(timeout)
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def comparable(wf: pb.Workflow) -> list[tuple[object, ...]]:
    """What must come back unchanged for a job that had finished."""
    return [
        (
            j.job_id,
            j.key,
            j.state,
            j.attempt,
            dict(j.result.files),
            j.result.summary,
            j.error,
            j.start_time.ToNanoseconds(),
            j.end_time.ToNanoseconds(),
        )
        for j in wf.jobs
    ]


def nuclei(job: pb.Job) -> int:
    return int(json.loads(job.result.summary)["nuclei"])


def seg_running(c: Cluster, who: str, wf: pb.Workflow) -> bool:
    job = get(c, who, wf.workflow_id).jobs[1]
    return job.state == pb.JOB_STATE_RUNNING and job.progress.tiles_done > 2


@pytest.mark.parametrize("kill_workers_too", [False, True], ids=["scheduler", "both"])
def test_a_killed_scheduler_comes_back_with_everything(
    workdir: Path, kill_workers_too: bool
) -> None:
    with cluster(workdir, worker_slots=(2,), max_workers=2) as c:
        # A finished workflow, a reference run, and one caught mid-run.
        done = create(c, "alice", [spec("mask"), spec("seg", params=LONG)], name="done")
        watch(c, "alice", done.workflow_id)
        request = pb.CreateWorkflowRequest(
            name="mid",
            request_id="req-1",
            jobs=[spec("mask"), spec("seg", params=LONG), spec("after")],
        )
        retried = c.stub.CreateWorkflow(
            request,
            metadata=user("alice"),
        )
        other = create(c, "bob", [spec("queued", params=LONG, branch="z")], name="bob's")
        wait_until(lambda: seg_running(c, "alice", retried), what="the segmentation to run")
        before = {
            wf.workflow_id: get(c, owner, wf.workflow_id)
            for owner, wf in (("alice", done), ("alice", retried), ("bob", other))
        }
        last_sequence = before[retried.workflow_id].sequence

        c.scheduler.kill(signal.SIGKILL)
        worker = c.workers[0]
        if kill_workers_too:
            worker.kill(signal.SIGKILL)
            worker = start_worker(workdir, "worker-again", 2)
        else:  # the worker notices the broken stream and stops the job's tiles
            wait_until(lambda: "stopping its tiles" in worker.log(), 10, "the worker to stop")
        scheduler = restart_scheduler(c, workdir, [worker])
        try:
            c.wait_workers(1)
            assert "running jobs requeued" in scheduler.log()
            # Every workflow is back; the finished one exactly as it was.
            assert comparable(get(c, "alice", done.workflow_id)) == comparable(
                before[done.workflow_id]
            )
            listed = c.stub.ListWorkflows(pb.ListWorkflowsRequest(), metadata=user("alice"))
            assert [w.workflow_id for w in listed.workflows] == [
                retried.workflow_id,
                done.workflow_id,
            ]
            # The create is still idempotent: no duplicate from a retried request.
            again = c.stub.CreateWorkflow(request, metadata=user("alice"))
            assert again.workflow_id == retried.workflow_id
            # A watcher resumes from what it had seen, without a gap or a repeat.
            events = watch(c, "alice", retried.workflow_id, after=last_sequence)
            assert [e.sequence for e in events] == list(
                range(last_sequence + 1, last_sequence + 1 + len(events))
            )
            transitions = job_transitions(events)
            assert transitions[0] == ("seg", "PENDING")  # requeued by the restart ...
            assert [s for k, s in transitions if k == "seg"] == ["PENDING", "RUNNING", "SUCCEEDED"]
            assert [s for k, s in transitions if k == "after"] == ["RUNNING", "SUCCEEDED"]
            assert not [
                t for t in transitions if t[0] == "mask"
            ]  # ... the finished job was not rerun
            final = get(c, "alice", retried.workflow_id)
            seg = final.jobs[1]
            assert seg.attempt == 2 and final.state == pb.WORKFLOW_STATE_SUCCEEDED
            assert final.progress.tiles_done == final.progress.tiles_total  # not counted twice
            assert nuclei(seg) == nuclei(get(c, "alice", done.workflow_id).jobs[1])
            assert (
                watch(c, "bob", other.workflow_id)[-1].workflow_state == pb.WORKFLOW_STATE_SUCCEEDED
            )
        finally:
            scheduler.stop()
            worker.stop()


def test_a_worker_unreachable_at_start_is_retried_and_reported(workdir: Path) -> None:
    port = free_port()
    absent = Service("absent", None, workdir / "none.log", f"127.0.0.1:{port}")  # type: ignore[arg-type]
    scheduler = start_scheduler(workdir, [absent], operators="patient")
    worker: Service | None = None
    try:
        with grpc.insecure_channel(scheduler.address) as channel:
            stub = pb_grpc.SchedulerStub(channel)
            wf = stub.CreateWorkflow(
                pb.CreateWorkflowRequest(jobs=[spec("waits")]), metadata=user("patient")
            )
            assert wf.jobs[0].pending_reason == "waiting for a worker to connect"

            def stats() -> pb.SchedulerStats:
                return stub.GetStats(pb.GetStatsRequest(), metadata=user("patient"))

            wait_until(lambda: stats().workers[0].failed_probes >= 2, 10, "probes")
            [status] = stats().workers
            assert status.address == absent.address and not status.connected
            assert status.error.startswith("UNAVAILABLE")
            # A plain user sees the counts and the state, not the internals.
            plain = stub.GetStats(pb.GetStatsRequest(), metadata=user("someone")).workers[0]
            assert (plain.address, plain.error) == ("", "")
            assert not plain.connected and plain.failed_probes >= 2 and plain.origin == "static"
            time.sleep(1.0)
            job = stub.GetJob(pb.GetJobRequest(job_id=wf.jobs[0].job_id), metadata=user("patient"))
            assert job.state == pb.JOB_STATE_PENDING  # waits instead of failing

            worker = start_worker(workdir, "late", 1, worker_port=str(port))
            done = list(
                stub.WatchWorkflow(
                    pb.WatchWorkflowRequest(workflow_id=wf.workflow_id, after_sequence=wf.sequence),
                    metadata=user("patient"),
                    timeout=60,
                )
            )
            assert done[-1].workflow_state == pb.WORKFLOW_STATE_SUCCEEDED
            [status] = stats().workers
            assert status.connected and status.slots == 1 and not status.error
    finally:
        scheduler.stop()
        if worker is not None:
            worker.stop()


def test_a_frozen_worker_is_noticed_within_seconds_by_keepalive(workdir: Path) -> None:
    """SIGSTOP keeps the worker's connections open but silent (a hung host, a
    cut cable): only keep-alive pings can tell. The job moves to the other worker."""
    with cluster(workdir, worker_slots=(1, 1), max_workers=2) as c:
        wf = create(c, "frozen", [spec("victim", params=LONG)])
        wait_until(
            lambda: get(c, "frozen", wf.workflow_id).jobs[0].progress.tiles_done > 0, 30, "start"
        )
        address = get(c, "frozen", wf.workflow_id).jobs[0].worker
        victim = next(w for w in c.workers if w.address == address)
        victim.process.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            wait_until(
                lambda: get(c, "frozen", wf.workflow_id).jobs[0].attempt == 2, 30, "the retry"
            )
            noticed_after = time.monotonic() - frozen_at
            follow_up = watch(c, "frozen", wf.workflow_id)
        finally:
            victim.process.send_signal(signal.SIGCONT)
        final = get(c, "frozen", wf.workflow_id).jobs[0]
        assert final.state == pb.JOB_STATE_SUCCEEDED and final.worker != address
        assert noticed_after < 15, f"the frozen worker was noticed after {noticed_after:.1f} s"
        assert follow_up[-1].workflow_state == pb.WORKFLOW_STATE_SUCCEEDED


def test_a_worker_started_before_its_scheduler_joins_within_seconds_of_it(workdir: Path) -> None:
    """A worker host up before the scheduler (a cluster booting): its joins
    fail for 6 s, then it must be in within 5 s of the scheduler listening.
    With gRPC's reconnection backoff growing to 10 s and joins retried on
    their own backoff, it was kept out 9 s."""
    port = free_port()
    worker = start_worker(workdir, "early", 2, scheduler=f"127.0.0.1:{port}")
    try:
        time.sleep(6)
        assert "no scheduler at" in worker.log()  # it has been trying
        scheduler = start_scheduler(workdir, [], scheduler_port=str(port))
        try:
            listening = time.monotonic()
            with grpc.insecure_channel(scheduler.address) as channel:
                stub = pb_grpc.SchedulerStub(channel)
                while stub.GetStats(pb.GetStatsRequest(), metadata=user("x")).workers_connected < 1:
                    assert time.monotonic() - listening < 5, "the worker did not join within 5 s"
                    time.sleep(0.05)
        finally:
            scheduler.stop()
    finally:
        worker.stop()
