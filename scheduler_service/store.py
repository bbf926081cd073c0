"""The scheduler's state machine: workflows and jobs of every user, around the
pure policy. It stamps times, keeps progress and results, numbers every change
of a workflow and hands the change to its watchers. Single-threaded: it runs on
the scheduler's event loop and never blocks."""

from __future__ import annotations

import bisect
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scheduler_service import page_tokens, progress
from scheduler_service.events import WorkflowFeed
from scheduler_service.journal import Journal, JournalError, NullJournal, Record, RecordKind
from scheduler_service.policy import (
    NewJob,
    PolicyError,
    SchedulingPolicy,
    State,
    Transition,
    WaitKind,
)
from scheduler_service.summaries import take_summary
from scheduler_service.validation import JobInput
from wsi_protocol.job_types import JobType

log = logging.getLogger("wsi.scheduler.store")

Clock = Callable[[], float]
USER_COMMANDS = frozenset({RecordKind.CANCEL_JOB, RecordKind.CANCEL_WORKFLOW})


class NotFound(LookupError):
    """Unknown id, or an id owned by another user (never say which)."""


class AlreadyFinished(RuntimeError):
    """A cancel of a job or workflow that has already ended."""


class InvalidPageToken(ValueError):
    pass


class RequestIdReused(ValueError):
    """A create's request_id already names a workflow made from other jobs:
    returning that one would lose the new request without a word."""


@dataclass(slots=True)
class JobRecord:
    job_id: str
    workflow_id: str
    user: str
    key: str
    branch: str
    job_type: JobType
    wsi_path: str
    slide_file: str
    depends_on: tuple[str, ...]
    depends_on_ids: tuple[str, ...]
    params: dict[str, str]
    create_time: float
    state: State = State.PENDING
    tiles_done: int = 0
    tiles_total: int = 0
    attempt: int = 0
    error: str = ""
    error_code: str = ""  # the worker's kind of failure (a gRPC status name)
    result_files: dict[str, str] = field(default_factory=dict)
    result_summary: str = ""  # public: the slide as a name
    result_object: dict[str, Any] | None = None  # the same, parsed once
    start_time: float = 0.0
    end_time: float = 0.0
    worker: str = ""
    attempt_workers: list[str] = field(default_factory=list)  # the worker of each attempt
    state_since: float = 0.0  # when it entered its current state

    @property
    def fraction(self) -> float:
        return progress.job_fraction(self.state, self.tiles_done, self.tiles_total)


@dataclass(slots=True)
class WorkflowRecord:
    workflow_id: str
    user: str
    name: str
    create_time: float
    order: int
    jobs: list[JobRecord]
    state_counts: dict[State, int]
    fraction_sum: float = 0.0
    tiles_done: int = 0
    tiles_total: int = 0
    state: str = progress.WorkflowState.PENDING
    request_id: str = ""  # the create's idempotency key, if it had one
    feed: WorkflowFeed = field(default_factory=WorkflowFeed)

    @property
    def terminal(self) -> bool:
        return self.state in progress.WorkflowState.TERMINAL

    @property
    def percent(self) -> float:
        return progress.workflow_percent(self.fraction_sum, len(self.jobs))


@dataclass(slots=True)
class _UserIndex:
    workflow_orders: list[int] = field(default_factory=list)
    workflow_ids: list[str] = field(default_factory=list)
    requests: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobTransition:
    """One job changed state (``from_state`` is "" when it was just created);
    ``seconds`` is how long it spent in ``from_state``."""

    job: JobRecord
    from_state: str
    to_state: str
    reason: str
    seconds: float
    time: float


TransitionSink = Callable[[JobTransition], None]
EventSink = Callable[["Store", WorkflowRecord, str, JobRecord], None]
"""Called on every change: (store, workflow, kind, job). The service turns it
into a numbered event; kept abstract so the store does not import protobuf."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """Why a PENDING job waits, as facts; the API's wording of it is made where
    records become messages (``convert.pending_reason``)."""

    kind: WaitKind
    branch: str = ""
    on_key: str = ""  # the job waited on: a dependency, or the one ahead in the branch
    on_state: str = ""
    position: int = 0  # in the line of users waiting for an active slot
    limit: int = 0  # the cap that is full (active users or running jobs)
    no_worker: bool = False  # no worker is connected at all


class Store:
    def __init__(
        self,
        policy: SchedulingPolicy,
        clock: Clock,
        on_event: EventSink,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        journal: Journal | None = None,
        on_transition: TransitionSink | None = None,
    ) -> None:
        self.policy = policy
        self._on_transition: TransitionSink = on_transition or (lambda transition: None)
        self._clock = clock
        self._on_event = on_event
        self._new_id = new_id
        self._journal: Journal = journal or NullJournal()
        self._live = journal is not None
        self._now = 0.0  # the time of the command being applied
        self._jobs: dict[str, JobRecord] = {}
        self._workflows: dict[str, WorkflowRecord] = {}
        self._users: dict[str, _UserIndex] = {}
        self._order = 0
        self.free_slots = 0

    # ---- reads ----------------------------------------------------------------

    def workflow(self, user: str, workflow_id: str) -> WorkflowRecord:
        wf = self._workflows.get(workflow_id)
        if wf is None or wf.user != user:
            raise NotFound(f"workflow {workflow_id!r} not found")
        return wf

    def job(self, user: str, job_id: str) -> JobRecord:
        record = self._jobs.get(job_id)
        if record is None or record.user != user:
            raise NotFound(f"job {job_id!r} not found")
        return record

    def dependencies(self, job: JobRecord) -> list[JobRecord]:
        """The jobs ``job`` waits for (same workflow, so same user)."""
        return [self._jobs[d] for d in job.depends_on_ids if d in self._jobs]

    def list_workflows(
        self, user: str, page_size: int, page_token: str
    ) -> tuple[list[WorkflowRecord], str]:
        """Newest first. The token is the creation order of the last workflow
        returned, so pages stay stable while new workflows arrive."""
        index = self._users.get(user) or _UserIndex()
        end = len(index.workflow_orders)
        if page_token:
            before = _decode_token(page_token)
            end = bisect.bisect_left(index.workflow_orders, before)
        start = max(0, end - page_size)
        ids = index.workflow_ids[start:end]
        page = [self._workflows[i] for i in reversed(ids)]
        token = _encode_token(page[-1].order) if start > 0 and page else ""
        return page, token

    def waiting(self, job: JobRecord) -> Waiting | None:
        """Why the job waits; None if it is not PENDING."""
        reason = self.policy.wait_reason(job.job_id)
        if reason is None:
            return None
        if reason.kind in (WaitKind.DEPENDENCY, WaitKind.BRANCH):
            on = self._jobs[reason.job_id]
            return Waiting(reason.kind, job.branch, on.key, on.state.value)
        if reason.kind is WaitKind.USER_SLOT:
            return Waiting(
                reason.kind, position=reason.position, limit=self.policy.max_active_users
            )
        full = self.policy.running_count >= self.policy.max_workers
        return Waiting(
            reason.kind,
            limit=self.policy.max_workers if full else 0,
            no_worker=self.free_slots <= 0 and self.policy.running_count == 0,
        )

    # ---- commands ---------------------------------------------------------------

    def create_workflow(
        self,
        user: str,
        name: str,
        jobs: Sequence[JobInput],
        slide_files: Sequence[str],
        request_id: str = "",
        ids: tuple[str, Sequence[str]] | None = None,
    ) -> tuple[WorkflowRecord, bool]:
        """Returns the workflow and whether it is new (False on a repeated
        request_id). ``ids`` (workflow id, job ids) are given when replaying."""
        first = self._made_by(user, request_id, name, jobs)
        if first is not None:
            return first, False
        now = self._stamp()
        if ids is None:
            workflow_id, job_ids = self._new_id(), [self._new_id() for _ in jobs]
        else:
            workflow_id, job_ids = ids[0], list(ids[1])
        payload = {
            "user": user,
            "name": name,
            "request_id": request_id,
            "jobs": [
                {**_job_payload(job), "job_id": job_id, "slide_file": slide_file}
                for job, job_id, slide_file in zip(jobs, job_ids, slide_files, strict=True)
            ],
        }
        self._journal.append(Record(RecordKind.CREATE, workflow_id, 1, now, payload))
        index = self._users.setdefault(user, _UserIndex())
        self._order += 1
        records = _job_records(user, workflow_id, jobs, job_ids, slide_files, now)
        wf = WorkflowRecord(
            workflow_id=workflow_id,
            user=user,
            name=name,
            create_time=now,
            order=self._order,
            jobs=records,
            state_counts={State.PENDING: len(records)},
            request_id=request_id,
        )
        self.policy.submit(
            [NewJob(r.job_id, user, workflow_id, r.branch, r.depends_on_ids) for r in records]
        )
        self._workflows[workflow_id] = wf
        for record in records:
            self._jobs[record.job_id] = record
        index.workflow_orders.append(wf.order)
        index.workflow_ids.append(workflow_id)
        if request_id:
            index.requests[request_id] = workflow_id
        for record in records:
            record.state_since = now
            self._on_transition(JobTransition(record, "", State.PENDING.value, "", 0.0, now))
        return wf, True

    def _made_by(
        self, user: str, request_id: str, name: str, jobs: Sequence[JobInput]
    ) -> WorkflowRecord | None:
        """The workflow ``request_id`` already made, if this create repeats it;
        RequestIdReused if the id made one from other jobs."""
        index = self._users.get(user)
        if not request_id or index is None or request_id not in index.requests:
            return None
        first = self._workflows[index.requests[request_id]]
        if not _same_request(first, name, jobs):
            raise RequestIdReused(
                f"request_id {request_id!r} already made workflow {first.workflow_id}"
                f" ({first.name!r}) from other jobs; a new workflow needs a new request_id"
            )
        return first

    def take_dispatches(
        self, free_slots: int, place: Callable[[JobRecord], str]
    ) -> list[JobRecord]:
        """Marks the jobs the policy picks as RUNNING on the worker ``place``
        chooses for each, and returns them."""
        self.free_slots = free_slots
        started = []
        for job_id in self.policy.next_dispatches(free_slots):
            job = self._jobs[job_id]
            worker = place(job)
            self._record(RecordKind.DISPATCH, job.workflow_id, {"job_id": job_id, "worker": worker})
            self._mark_running(job, worker, self._now)
            started.append(job)
        self.free_slots = max(0, free_slots - len(started))
        return started

    def replay_dispatch(self, job_id: str, worker: str) -> bool:
        """Starts the job a journal says was dispatched; False if it cannot run
        now (the journal and the rebuilt state disagree: it stays PENDING)."""
        if not self.policy.dispatch(job_id):
            return False
        self._mark_running(self._jobs[job_id], worker, self._stamp())
        return True

    def _mark_running(self, job: JobRecord, worker: str, now: float) -> None:
        job.attempt = self.policy.attempt(job.job_id)
        job.start_time = now
        job.end_time = 0.0
        job.error = ""
        job.worker = worker
        job.attempt_workers.append(worker)
        self._set_tiles(job, 0, job.tiles_total)
        self._set_state(job, State.RUNNING, "")

    def progress(self, job_id: str, tiles_done: int, tiles_total: int) -> None:
        job = self._jobs.get(job_id)
        if job is None or job.state is not State.RUNNING:
            return
        self._record(
            RecordKind.PROGRESS,
            job.workflow_id,
            {"job_id": job_id, "done": tiles_done, "total": tiles_total},
        )
        self._set_tiles(job, tiles_done, tiles_total)
        self._on_event(self, self._workflows[job.workflow_id], "progress", job)

    def succeed(
        self, job_id: str, files: dict[str, str], summary: str, tiles_total: int | None = None
    ) -> None:
        job = self._running(job_id)
        total = job.tiles_total if tiles_total is None else tiles_total
        self._record(
            RecordKind.SUCCEED,
            job.workflow_id,
            {"job_id": job_id, "files": files, "summary": summary, "tiles_total": total},
        )
        job.result_files = dict(files)
        job.result_summary, job.result_object = take_summary(summary)
        self._set_tiles(job, total, total)
        self._apply(self.policy.finish(job_id, State.SUCCEEDED))

    def fail(self, job_id: str, error: str, code: str = "", tiles: object = None) -> None:
        """``tiles``: [done, total] from the journal (replay); live, the job's own."""
        job = self._running(job_id)
        self._restore_tiles(job, tiles)
        payload = {"job_id": job_id, "error": error, "tiles": [job.tiles_done, job.tiles_total]}
        self._record(
            RecordKind.FAIL, job.workflow_id, {**payload, **({"code": code} if code else {})}
        )
        job.error_code = code
        self._apply(self.policy.finish(job_id, State.FAILED, error))

    def finish_cancelled(self, job_id: str, tiles: object = None) -> None:
        job = self._running(job_id)
        self._restore_tiles(job, tiles)
        payload = {"job_id": job_id, "tiles": [job.tiles_done, job.tiles_total]}
        self._record(RecordKind.FINISH_CANCELLED, job.workflow_id, payload)
        self._apply(self.policy.finish(job_id, State.CANCELLED, "cancelled by user"))

    def _restore_tiles(self, job: JobRecord, tiles: object) -> None:
        """What a FAILED or CANCELLED job got through, as its final record kept it
        (its progress records are dropped when it ends): it shows on replay."""
        if isinstance(tiles, list) and len(tiles) == 2 and all(type(t) is int for t in tiles):
            done, total = tiles
            if 0 <= done <= total:
                self._set_tiles(job, done, total)

    def lose(self, job_id: str, reason: str, tiles: object = None) -> None:
        """The job's worker stream broke: retry it, or fail it after max attempts.
        ``tiles`` as for ``fail``: a last attempt's progress shows on replay too."""
        job = self._running(job_id)
        self._restore_tiles(job, tiles)
        payload = {"job_id": job_id, "reason": reason, "tiles": [job.tiles_done, job.tiles_total]}
        self._record(RecordKind.LOSE, job.workflow_id, payload)
        self._apply(self.policy.lose(job_id, reason))

    def _running(self, job_id: str) -> JobRecord:
        """A worker's outcome must name a RUNNING job. Checked before anything is
        journaled: a command applies whole or not at all."""
        job = self._jobs.get(job_id)
        if job is None or job.state is not State.RUNNING:
            raise PolicyError(f"job {job_id} is not running")
        return job

    def advance_sequence(self, workflow_id: str, sequence: int) -> None:
        """Replay: the next event of the workflow gets ``sequence``. The numbers
        of progress events whose records were dropped (their job has ended) are
        skipped, never reused."""
        wf = self._workflows.get(workflow_id)
        if wf is None:
            raise NotFound(f"workflow {workflow_id!r} not found")
        feed = wf.feed
        feed.sequence = max(feed.sequence, sequence - 1)

    def running_jobs(self) -> list[JobRecord]:
        return [self._jobs[job_id] for job_id in self.policy.running_jobs()]

    def finished_before(self, cutoff: float) -> list[WorkflowRecord]:
        """Finished workflows whose last job ended before ``cutoff``, oldest first."""
        return [
            wf
            for wf in self._workflows.values()
            if wf.terminal and max((j.end_time for j in wf.jobs), default=0.0) < cutoff
        ]

    def prune(self, workflow_id: str) -> WorkflowRecord:
        """Forgets a finished workflow (retention). Its ids answer NOT_FOUND after."""
        wf = self._workflows[workflow_id]
        if not wf.terminal:
            raise AlreadyFinished(f"workflow {workflow_id!r} has not finished")
        self._record(RecordKind.PRUNE, workflow_id, {"workflow_id": workflow_id})
        self.policy.forget([job.job_id for job in wf.jobs])
        del self._workflows[workflow_id]
        for job in wf.jobs:
            del self._jobs[job.job_id]
        index = self._users[wf.user]
        at = bisect.bisect_left(index.workflow_orders, wf.order)
        del index.workflow_orders[at], index.workflow_ids[at]
        index.requests.pop(wf.request_id, None)
        return wf

    def now(self) -> float:
        """The time of the change being applied: one command, one time, so a
        replay (which runs at the recorded times) stamps exactly the same."""
        return self._now

    def _stamp(self) -> float:
        self._now = self._clock()
        return self._now

    def _record(self, kind: RecordKind, workflow_id: str, payload: Mapping[str, object]) -> None:
        """Journals a command of a workflow before it is applied, at a fresh
        command time.

        A user's cancel is refused when the journal cannot take it (nothing
        changes). What already happened on a worker is applied anyway: memory
        runs ahead of the journal, and a restart would re-run that job."""
        wf = self._workflows[workflow_id]
        record = Record(kind, workflow_id, wf.feed.sequence + 1, self._stamp(), dict(payload))
        try:
            self._journal.append(record)
        except JournalError:
            if kind in USER_COMMANDS:
                raise
            log.exception(
                "journal write failed: %s of workflow %s kept in memory only", kind, workflow_id
            )

    def go_live(self, clock: Clock, journal: Journal, on_transition: TransitionSink) -> None:
        """The one switch from being rebuilt (a replay clock, no journal, no
        observers: history is neither journaled nor counted again) to serving."""
        if self._live:
            raise RuntimeError("the store is already live")
        self._clock, self._journal, self._on_transition = clock, journal, on_transition
        self._live = True

    def cancel_job(self, user: str, job_id: str) -> tuple[JobRecord, bool]:
        """Returns the job and whether its running stream must be stopped."""
        job = self.job(user, job_id)
        if job.state.terminal:
            raise AlreadyFinished(f"job {job.key!r} has already ended {job.state.value}")
        running = job.state is State.RUNNING
        self._record(RecordKind.CANCEL_JOB, job.workflow_id, {"user": user, "job_id": job_id})
        self._apply(self.policy.cancel(job_id))
        return job, running

    def cancel_workflow(self, user: str, workflow_id: str) -> tuple[WorkflowRecord, list[str]]:
        """Cancels every unfinished job; returns the running ones to stop."""
        wf = self.workflow(user, workflow_id)
        if wf.terminal:
            raise AlreadyFinished(f"workflow {wf.workflow_id!r} has already ended {wf.state}")
        self._record(
            RecordKind.CANCEL_WORKFLOW, workflow_id, {"user": user, "workflow_id": workflow_id}
        )
        to_stop = []
        for job in wf.jobs:
            if job.state is State.RUNNING:
                to_stop.append(job.job_id)
            if not job.state.terminal:
                self._apply(self.policy.cancel(job.job_id))
        return wf, to_stop

    # ---- internals -------------------------------------------------------------

    def _set_tiles(self, job: JobRecord, done: int, total: int) -> None:
        wf = self._workflows[job.workflow_id]
        before = job.fraction
        wf.tiles_done += done - job.tiles_done
        wf.tiles_total += total - job.tiles_total
        job.tiles_done, job.tiles_total = done, total
        wf.fraction_sum += job.fraction - before

    def _apply(self, transitions: Iterable[Transition]) -> None:
        for transition in transitions:
            reason = transition.reason
            if transition.cause:
                reason = f"{reason}: {self._jobs[transition.cause].key!r}"
            self._set_state(self._jobs[transition.job_id], transition.state, reason)

    def _set_state(self, job: JobRecord, state: State, reason: str) -> None:
        wf = self._workflows[job.workflow_id]
        if state is State.PENDING and (job.tiles_done or job.tiles_total):
            # Requeued: the lost attempt's progress is gone, its total with it (the
            # next attempt reports its own), so a job cancelled while it waits
            # shows nothing done, live and after a restart alike.
            self._set_tiles(job, 0, 0)
        before_state, before_fraction = job.state, job.fraction
        job.state = state
        if state.terminal:
            try:
                self._journal.forget_progress(job.job_id)  # its final record supersedes them
            except JournalError:
                log.exception("journal: progress records of job %s not dropped", job.job_id)
            job.end_time = self._now
            if state is not State.SUCCEEDED:
                job.error = reason
        elif state is State.PENDING:
            job.error = reason  # why it is being retried
        wf.state_counts[before_state] -= 1
        wf.state_counts[state] = wf.state_counts.get(state, 0) + 1
        wf.fraction_sum += job.fraction - before_fraction
        wf.state = progress.workflow_state(wf.state_counts)
        seconds = max(0.0, self._now - job.state_since)
        job.state_since = self._now
        self._on_transition(
            JobTransition(job, before_state.value, state.value, reason, seconds, self._now)
        )
        self._on_event(self, wf, "state", job)


def _encode_token(order: int) -> str:
    return page_tokens.encode("v1", order)


def _decode_token(token: str) -> int:
    try:
        return page_tokens.decode("v1", token)
    except ValueError as exc:
        raise InvalidPageToken(str(exc)) from None


__all__ = [
    "AlreadyFinished",
    "InvalidPageToken",
    "JobRecord",
    "NotFound",
    "Store",
    "WorkflowRecord",
]


def _same_request(wf: WorkflowRecord, name: str, jobs: Sequence[JobInput]) -> bool:
    """Whether ``wf`` is what a create of ``name`` and ``jobs`` would make (a
    retry of the same request), compared as the scheduler normalised both."""
    asked = [(j.key, j.branch, j.job_type, j.wsi_path, tuple(j.depends_on), j.params) for j in jobs]
    made = [
        (r.key, r.branch, r.job_type.value, r.wsi_path, tuple(r.depends_on), r.params)
        for r in wf.jobs
    ]
    return wf.name == name and asked == made


def _job_payload(job: JobInput) -> dict[str, object]:
    """A job as its CREATE record holds it (``dataclasses.asdict``'s keys,
    without its deep copy: 1,000 jobs a workflow)."""
    return {
        "key": job.key,
        "branch": job.branch,
        "job_type": job.job_type,
        "wsi_path": job.wsi_path,
        "depends_on": job.depends_on,
        "params": dict(job.params),
    }


def _job_records(
    user: str,
    workflow_id: str,
    jobs: Sequence[JobInput],
    job_ids: Sequence[str],
    slide_files: Sequence[str],
    now: float,
) -> list[JobRecord]:
    """A new workflow's jobs, PENDING, their dependencies as job ids."""
    ids_by_key = dict(zip((job.key for job in jobs), job_ids, strict=True))
    return [
        JobRecord(
            job_id=ids_by_key[job.key],
            workflow_id=workflow_id,
            user=user,
            key=job.key,
            branch=job.branch,
            job_type=JobType(job.job_type),
            wsi_path=job.wsi_path,
            slide_file=slide_file,
            depends_on=job.depends_on,
            depends_on_ids=tuple(ids_by_key[d] for d in job.depends_on),
            params=job.params,
            create_time=now,
        )
        for job, slide_file in zip(jobs, slide_files, strict=True)
    ]
