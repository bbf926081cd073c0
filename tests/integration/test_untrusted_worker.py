"""A worker that joins with the secret is still not believed blindly: one
that accepts a job and then says nothing loses it to a real worker, one that
names a result file that is not a plain file name fails that job cleanly,
one whose result bytes do not make up the size it announced ends the
download instead of the gateway, and one reached under two spellings of its
address counts once. The fake
worker here is a real gRPC server in the test process, joined as any worker
joins (WorkerRegistry.Join with the secret, heartbeats)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import pytest

from tests.harness import WORKER_SECRET, Cluster, cluster_with_gateway, user
from tests.integration.support import create, get, spec
from tests.timing import patience
from wsi_protocol import metadata
from wsi_protocol.job_types import JobType
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.worker.v1 import worker_pb2 as wpb
from wsi_protocol.worker.v1 import worker_pb2_grpc as wpb_grpc

SILENCE_S = 3  # the scheduler's --job-silence-s here
SECRET = ((metadata.WORKER_SECRET, WORKER_SECRET),)
OPERATOR = "ops"


class MisbehavingWorker(wpb_grpc.WorkerServicer):
    """Offers many slots (so it is picked first); each job it is given meets
    the next behaviour in line: "silent" accepts and never answers, "bad name"
    succeeds with a result file name that is no plain file name, "wrong size"
    succeeds and then serves its summary.json as 10^12 bytes and sends 140."""

    def __init__(self, behaviours: list[str]) -> None:
        self.behaviours = behaviours
        self.given: list[str] = []  # job ids, in the order they came
        self.stop = threading.Event()

    def GetInfo(self, request: wpb.GetInfoRequest, context: grpc.ServicerContext) -> wpb.WorkerInfo:
        return wpb.WorkerInfo(
            slots=8,
            job_types=[t.number for t in JobType],
            backends=["classical"],
            backend_mpp={"classical": 0.0},
            worker_id="misbehaving",
        )

    def ReadResult(
        self, request: wpb.ReadResultRequest, context: grpc.ServicerContext
    ) -> Iterator[wpb.FileChunk]:
        yield wpb.FileChunk(data=b"x" * 140, size=10**12)

    def RunJob(
        self, request: wpb.RunJobRequest, context: grpc.ServicerContext
    ) -> Iterator[wpb.JobUpdate]:
        self.given.append(request.job_id)
        behaviour = self.behaviours.pop(0) if self.behaviours else "silent"
        if behaviour in ("bad name", "wrong size"):
            name = "evil\r\nSet-Cookie: x" if behaviour == "bad name" else "summary.json"
            files = {name: f"{request.job_id}/{name}"}
            yield wpb.JobUpdate(result=wpb.JobOutput(files=files, summary="{}"))
            return
        while not self.stop.is_set() and context.is_active():  # accepted, then silence
            time.sleep(0.05)


@contextmanager
def joined(c: Cluster, worker: MisbehavingWorker) -> Iterator[str]:
    """The fake worker served on loopback and joined to the scheduler, with heartbeats."""
    server = grpc.server(futures.ThreadPoolExecutor(8))
    wpb_grpc.add_WorkerServicer_to_server(worker, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    registry = wpb_grpc.WorkerRegistryStub(c.channel)
    registry.Join(wpb.JoinRequest(address=address), metadata=SECRET, timeout=5)

    def beat() -> None:
        """As a worker beats: on through a failed beat, joining again if forgotten."""
        while not worker.stop.wait(0.5):
            try:
                registry.Heartbeat(
                    wpb.HeartbeatRequest(address=address), metadata=SECRET, timeout=5
                )
            except grpc.RpcError as exc:
                if exc.code() is grpc.StatusCode.NOT_FOUND:
                    with contextlib.suppress(grpc.RpcError):
                        registry.Join(wpb.JoinRequest(address=address), metadata=SECRET, timeout=5)

    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    try:
        yield address
    finally:
        worker.stop.set()
        beating.join(timeout=5)
        server.stop(grace=None)


def stats(c: Cluster) -> pb.SchedulerStats:
    return c.stub.GetStats(pb.GetStatsRequest(), metadata=user(OPERATOR))


def wait_for(check: Callable[[], bool], what: str, within_s: float = 20) -> None:
    deadline = time.monotonic() + patience(within_s)
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def one_job(
    c: Cluster,
    fake: MisbehavingWorker,
    branch: str,
    ends: pb.WorkflowState.ValueType,
    within_s: float = 20,
) -> pb.Job:
    """A one-job workflow, which goes to the fake worker first (it offers the
    most free slots), once the workflow has ended in ``ends``."""
    given = len(fake.given) + 1  # counted before: the job may reach it before create returns
    wf = create(c, "alice", [spec("mask", branch)])
    wait_for(lambda: len(fake.given) == given, f"the job of branch {branch} at the fake worker")
    wait_for(
        lambda: get(c, "alice", wf.workflow_id).state == ends,
        f"the workflow of branch {branch} to end {pb.WorkflowState.Name(ends)}",
        within_s,
    )
    (job,) = get(c, "alice", wf.workflow_id).jobs
    return job


@pytest.mark.integration
def test_a_joined_worker_is_checked_not_believed(workdir: Path) -> None:
    # The generated servicer declares every call abstract; unlisted ones answer UNIMPLEMENTED.
    fake = MisbehavingWorker(["silent", "bad name", "wrong size"])  # type: ignore[abstract]
    with (
        cluster_with_gateway(
            workdir,
            worker_slots=(1,),
            job_silence_s=str(SILENCE_S),
            operators=OPERATOR,
        ) as (c, gateway),
        joined(c, fake) as fake_address,
        httpx.Client(base_url=gateway.address, timeout=30) as http,
    ):
        real = c.workers[0].address
        wait_for(lambda: stats(c).worker_slots_total == 9, "the fake worker's 8 slots")
        # The real worker joined again under another spelling of its address: once.
        port = real.rsplit(":", 1)[1]
        wpb_grpc.WorkerRegistryStub(c.channel).Join(
            wpb.JoinRequest(address=f"localhost:{port}"), metadata=SECRET, timeout=5
        )
        wait_for(
            lambda: any("same worker" in w.error for w in stats(c).workers), "the second spelling"
        )
        assert (stats(c).worker_slots_total, stats(c).workers_connected) == (9, 2)

        # Silent after accepting: taken back after SILENCE_S, retried on the real worker.
        job = one_job(c, fake, "a", pb.WORKFLOW_STATE_SUCCEEDED, within_s=SILENCE_S + 30)
        assert list(job.attempt_workers) == [fake_address, real], job

        # A result name that is no plain file name: the job fails, with a message.
        job = one_job(c, fake, "b", pb.WORKFLOW_STATE_FAILED)
        assert "result" in job.error and "\r" not in job.error, job.error

        # A result whose announced size its bytes do not make up: the download
        # ends without its body (no 500, no hang), and the gateway goes on.
        job = one_job(c, fake, "c", pb.WORKFLOW_STATE_SUCCEEDED)
        with pytest.raises(httpx.RemoteProtocolError):
            http.get(f"/jobs/{job.job_id}/results/summary.json", headers={"X-User-ID": "alice"})
        assert http.get("/healthz").status_code == 200
