"""A workflow as a watcher sees it, rebuilt from its event stream, pure: the
latest state of every job, in submission order, and what the watch's exit
status should be once it ends."""

from __future__ import annotations

from dataclasses import dataclass, field

from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

# Exit statuses of `wsi watch` (and of `wsi submit --watch`).
EXIT_SUCCEEDED = 0
EXIT_FAILED = 1  # some job FAILED (or a call failed)
EXIT_CANCELLED = 3  # nothing failed, something was cancelled


@dataclass
class WorkflowView:
    workflow_id: str = ""
    name: str = ""
    state: int = pb.WORKFLOW_STATE_UNSPECIFIED
    progress: pb.Progress = field(default_factory=pb.Progress)
    jobs: dict[str, pb.Job] = field(default_factory=dict)  # job_id -> latest, insertion order

    def apply(self, event: pb.WorkflowEvent) -> pb.Job | None:
        """Folds one event in; returns the job it changed (None for a snapshot)."""
        self.state = event.workflow_state
        self.progress.CopyFrom(event.workflow_progress)
        if event.kind == pb.WorkflowEvent.SNAPSHOT:
            workflow = event.workflow
            self.workflow_id, self.name = workflow.workflow_id, workflow.name
            self.jobs = {j.job_id: j for j in workflow.jobs}
            return None
        self.jobs[event.job.job_id] = event.job
        return event.job

    def exit_status(self) -> int:
        states = {j.state for j in self.jobs.values()}
        if pb.JOB_STATE_FAILED in states or self.state == pb.WORKFLOW_STATE_FAILED:
            return EXIT_FAILED
        if pb.JOB_STATE_CANCELLED in states or self.state == pb.WORKFLOW_STATE_CANCELLED:
            return EXIT_CANCELLED
        return EXIT_SUCCEEDED


def job_state_name(state: int) -> str:
    return pb.JobState.Name(pb.JobState.ValueType(state)).removeprefix("JOB_STATE_")


def workflow_state_name(state: int) -> str:
    return pb.WorkflowState.Name(pb.WorkflowState.ValueType(state)).removeprefix("WORKFLOW_STATE_")


def job_type_name(job_type: int) -> str:
    return pb.JobType.Name(pb.JobType.ValueType(job_type))
