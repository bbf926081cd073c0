"""Store records to protobuf messages."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from scheduler_service import progress
from scheduler_service.policy import State
from scheduler_service.store import JobRecord, Store, WorkflowRecord
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


def job_message(store: Store, job: JobRecord) -> pb.Job:
    msg = pb.Job(
        job_id=job.job_id,
        workflow_id=job.workflow_id,
        key=job.key,
        branch=job.branch,
        job_type=pb.JobType.Value(job.job_type),
        wsi_path=job.wsi_path,
        depends_on=job.depends_on,
        state=JOB_STATE[job.state],
        pending_reason=store.pending_reason(job) if job.state is State.PENDING else "",
        progress=pb.Progress(
            tiles_done=job.tiles_done,
            tiles_total=job.tiles_total,
            percent=progress.job_percent(job.state, job.tiles_done, job.tiles_total),
        ),
        attempt=job.attempt,
        error=job.error,
        params=job.params,
        worker=job.worker,
        create_time=timestamp(job.create_time),
        start_time=timestamp(job.start_time),
        end_time=timestamp(job.end_time),
    )
    if job.state is State.SUCCEEDED:
        msg.result.files.update(job.result_files)
        msg.result.summary = job.result_summary
    return msg


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
