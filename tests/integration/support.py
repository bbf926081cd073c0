"""What integration tests share: job specs, creating and watching workflows
over real gRPC, reading event streams. Fixtures live in conftest.py."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
import httpx
import pytest

from tests.harness import CMU, Cluster, Service, user
from tests.timing import patience
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

# Nucleus segmentation of CMU-1-Small-Region in 256 px tiles: ~100 tissue tiles, a few
# seconds with progress all along, long enough to act mid-job.
LONG = {"tile_size": "256", "overlap": "32"}
SHORT: dict[str, str] = {}

TERMINAL = {pb.WORKFLOW_STATE_SUCCEEDED, pb.WORKFLOW_STATE_FAILED, pb.WORKFLOW_STATE_CANCELLED}


def spec(
    key: str,
    branch: str = "main",
    deps: Sequence[str] = (),
    params: dict[str, str] | None = None,
    slide: str = CMU,
    job_type: int | None = None,
) -> pb.JobSpec:
    """A TISSUE_MASK job (quick), or with ``params=LONG`` a CELL_SEGMENTATION job."""
    if job_type is None:
        job_type = pb.CELL_SEGMENTATION if params is LONG else pb.TISSUE_MASK
    return pb.JobSpec(
        key=key,
        branch=branch,
        job_type=job_type,  # type: ignore[arg-type]
        wsi_path=slide,
        depends_on=deps,
        params=params if params is not None else SHORT,
    )


def create(c: Cluster, who: str, jobs: Sequence[pb.JobSpec], name: str = "wf") -> pb.Workflow:
    return c.stub.CreateWorkflow(pb.CreateWorkflowRequest(name=name, jobs=jobs), metadata=user(who))


def watch(
    c: Cluster,
    who: str,
    workflow_id: str,
    after: int = 0,
    on_event: Callable[[pb.WorkflowEvent], None] | None = None,
    timeout: float = 60,
) -> list[pb.WorkflowEvent]:
    """All events until the stream ends (the workflow reached a final state)."""
    events = []
    stream = c.stub.WatchWorkflow(
        pb.WatchWorkflowRequest(workflow_id=workflow_id, after_sequence=after),
        metadata=user(who),
        timeout=timeout,
    )
    for event in stream:
        events.append(event)
        if on_event is not None:
            on_event(event)
    return events


def follow(c: Cluster, who: str, wf: pb.Workflow, **kw: object) -> list[pb.WorkflowEvent]:
    """Every change of ``wf`` since it was created, until it ends."""
    return watch(c, who, wf.workflow_id, after=wf.sequence, **kw)  # type: ignore[arg-type]


class Watcher:
    """Watches a workflow in a background thread."""

    def __init__(self, c: Cluster, who: str, workflow_id: str, **kw: object) -> None:
        self.events: list[pb.WorkflowEvent] = []
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.events = watch(c, who, workflow_id, **kw)  # type: ignore[arg-type]
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 90) -> list[pb.WorkflowEvent]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "watch did not end"
        if self.error:
            raise self.error
        return self.events


def job_transitions(events: Sequence[pb.WorkflowEvent]) -> list[tuple[str, str]]:
    """(job key, state name) for every JOB_STATE event, in stream order."""
    return [
        (e.job.key, pb.JobState.Name(e.job.state).removeprefix("JOB_STATE_"))
        for e in events
        if e.kind == pb.WorkflowEvent.JOB_STATE
    ]


def intervals(wf: pb.Workflow) -> dict[str, tuple[float, float]]:
    return {
        j.key: (j.start_time.ToNanoseconds() / 1e9, j.end_time.ToNanoseconds() / 1e9)
        for j in wf.jobs
    }


def get(c: Cluster, who: str, workflow_id: str) -> pb.Workflow:
    return c.stub.GetWorkflow(pb.GetWorkflowRequest(workflow_id=workflow_id), metadata=user(who))


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def json_documents(text: str) -> list[dict[str, object]]:
    """The JSON documents of a stream printed one after another (grpcurl's output)."""
    decoder, documents, rest = json.JSONDecoder(), [], text.strip()
    while rest:
        document, end = decoder.raw_decode(rest)
        documents.append(document)
        rest = rest[end:].strip()
    return documents


def succeeded_over_http(
    http: httpx.Client, workflow_id: str, who: dict[str, str], within_s: float = 120
) -> dict[str, Any]:
    """The workflow once it ends, through the gateway; it must have succeeded."""
    deadline = time.monotonic() + patience(within_s)
    while time.monotonic() < deadline:
        wf: dict[str, Any] = http.get(f"/workflows/{workflow_id}", headers=who).json()
        if wf["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            assert wf["state"] == "SUCCEEDED", wf
            return wf
        time.sleep(0.2)
    raise TimeoutError(workflow_id)


@contextmanager
def held_still(worker: Service) -> Iterator[None]:
    """The worker stopped (SIGSTOP) for a moment: a job it was given stays
    RUNNING, and one queued behind it waiting, whatever the machine's speed."""
    worker.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        worker.process.send_signal(signal.SIGCONT)
