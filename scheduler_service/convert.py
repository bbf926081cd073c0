"""Store records to protobuf messages, with the API's wording of what the
store keeps as facts (why a job waits)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath

from google.protobuf.timestamp_pb2 import Timestamp

from scheduler_service import progress
from scheduler_service.policy import State, WaitKind
from scheduler_service.store import JobRecord, Store, Waiting, WorkflowRecord
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

JOB_STATE = {
    State.PENDING: pb.JOB_STATE_PENDING,
    State.RUNNING: pb.JOB_STATE_RUNNING,
    State.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    State.FAILED: pb.JOB_STATE_FAILED,
    State.CANCELLED: pb.JOB_STATE_CANCELLED,
}
WORKFLOW_STATE = {
    progress.WorkflowState.PENDING: pb.WORKFLOW_STATE_PENDING,
    progress.WorkflowState.RUNNING: pb.WORKFLOW_STATE_RUNNING,
    progress.WorkflowState.SUCCEEDED: pb.WORKFLOW_STATE_SUCCEEDED,
    progress.WorkflowState.FAILED: pb.WORKFLOW_STATE_FAILED,
    progress.WorkflowState.CANCELLED: pb.WORKFLOW_STATE_CANCELLED,
}
TERMINAL_WORKFLOW_STATES = frozenset(WORKFLOW_STATE[s] for s in progress.WorkflowState.TERMINAL)


def timestamp(seconds: float) -> Timestamp | None:
    if not seconds:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def pending_reason(waiting: Waiting | None) -> str:
    """Why a PENDING job waits, in the words users read in the API and UI."""
    if waiting is None:
        return ""
    if waiting.kind is WaitKind.DEPENDENCY:
        return f"waiting for dependency {waiting.on_key!r} ({waiting.on_state})"
    if waiting.kind is WaitKind.BRANCH:
        verb = "running" if waiting.on_state == State.RUNNING.value else "queued"
        return f"branch {waiting.branch!r} busy: job {waiting.on_key!r} is {verb} ahead of it"
    if waiting.kind is WaitKind.USER_SLOT:
        return (
            f"waiting for an active-user slot ({waiting.limit} users "
            f"active; you are number {waiting.position} in line)"
        )
    if waiting.limit:
        return f"waiting for a free worker slot (all {waiting.limit} busy)"
    if waiting.no_worker:
        return "waiting for a worker to connect"
    return "waiting for a free worker slot"


def job_message(store: Store, job: JobRecord) -> pb.Job:
    msg = pb.Job(
        job_id=job.job_id,
        workflow_id=job.workflow_id,
        key=job.key,
        branch=job.branch,
        job_type=job.job_type.number,
        wsi_path=job.wsi_path,
        depends_on=job.depends_on,
        state=JOB_STATE[job.state],
        pending_reason=pending_reason(store.waiting(job)),
        progress=pb.Progress(
            tiles_done=job.tiles_done,
            tiles_total=job.tiles_total,
            percent=progress.job_percent(job.state, job.tiles_done, job.tiles_total),
        ),
        attempt=job.attempt,
        error=job.error,
        error_code=job.error_code,
        attempt_workers=job.attempt_workers,
        cancelling=job.state is State.RUNNING and store.policy.cancel_requested(job.job_id),
        params=job.params,
        worker=job.worker,
        create_time=timestamp(job.create_time),
        start_time=timestamp(job.start_time),
        end_time=timestamp(job.end_time),
    )
    if job.state is State.SUCCEEDED:
        msg.result.files.update(public_files(job.job_id, job.result_files))
        msg.result.summary = job.result_summary
        if job.result_object is not None:
            msg.result.structured_summary.update(job.result_object)
    return msg


def public_files(job_id: str, files: Mapping[str, str]) -> dict[str, str]:
    """Paths relative to the results folder (JOB_ID/NAME), also for results that
    older workers reported as absolute paths: answers show no server path."""
    return {name: f"{job_id}/{PurePath(path).name}" for name, path in files.items()}


def workflow_progress(wf: WorkflowRecord) -> pb.Progress:
    return pb.Progress(tiles_done=wf.tiles_done, tiles_total=wf.tiles_total, percent=wf.percent)


def workflow_message(store: Store, wf: WorkflowRecord) -> pb.Workflow:
    return pb.Workflow(
        workflow_id=wf.workflow_id,
        name=wf.name,
        state=WORKFLOW_STATE[wf.state],
        progress=workflow_progress(wf),
        jobs=[job_message(store, job) for job in wf.jobs],
        create_time=timestamp(wf.create_time),
        sequence=wf.feed.sequence,
    )


def snapshot_event(store: Store, wf: WorkflowRecord, now: float) -> pb.WorkflowEvent:
    return pb.WorkflowEvent(
        sequence=wf.feed.sequence,
        kind=pb.WorkflowEvent.SNAPSHOT,
        workflow=workflow_message(store, wf),
        workflow_state=WORKFLOW_STATE[wf.state],
        workflow_progress=workflow_progress(wf),
        time=timestamp(now),
    )


def change_event(
    store: Store, wf: WorkflowRecord, kind: str, job: JobRecord, now: float
) -> pb.WorkflowEvent:
    return pb.WorkflowEvent(
        sequence=wf.feed.next_sequence(),
        kind=pb.WorkflowEvent.JOB_PROGRESS if kind == "progress" else pb.WorkflowEvent.JOB_STATE,
        job=job_message(store, job),
        workflow_state=WORKFLOW_STATE[wf.state],
        workflow_progress=workflow_progress(wf),
        time=timestamp(now),
    )
