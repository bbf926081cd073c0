"""Rebuilding the store from its journal after a restart.

Each record is applied through the same store methods that made it, at the
time it was made, so workflows, jobs, results, request ids, active users and
their admission order come back as they were; each workflow's event sequence
is set to the recorded one first, so watchers resume where they were. Jobs
that were RUNNING when the scheduler stopped go back to the head of their
branch as a new attempt (their worker stream died with the scheduler)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from scheduler_service.journal import Journal, Record
from scheduler_service.policy import PolicyError
from scheduler_service.store import AlreadyFinished, NotFound, Store, TransitionSink
from scheduler_service.validation import JobInput

log = logging.getLogger("wsi.scheduler.recovery")

RESTART_REASON = "the scheduler restarted while the job ran"


@dataclass
class Recovered:
    records: int = 0
    skipped: int = 0
    workflows: int = 0
    requeued: int = 0


def recover(
    store: Store,
    records: Iterable[Record],
    journal: Journal,
    on_transition: TransitionSink | None = None,
) -> Recovered:
    """Replays ``records`` into an empty ``store``, then makes ``journal`` its
    journal (and ``on_transition`` its observer: replayed history is neither
    logged nor counted again) and requeues the jobs that were running."""
    outcome = replay(store, records)
    store.journal = journal
    if on_transition is not None:
        store.on_transition = on_transition
    for job in store.running_jobs():
        store.lose(job.job_id, RESTART_REASON)
        outcome.requeued += 1
    return outcome


def replay(store: Store, records: Iterable[Record]) -> Recovered:
    """Applies ``records`` to an empty ``store`` that journals nothing meanwhile.
    Records that no longer fit are skipped with a warning."""
    outcome = Recovered()
    kinds: Counter[str] = Counter()
    live_clock: Callable[[], float] = store.clock
    now = [0.0]
    store.clock = lambda: now[0]
    try:
        for record in records:
            now[0] = record.time
            outcome.records += 1
            try:
                _apply(store, record)
                kinds[record.kind] += 1
            except (KeyError, NotFound, AlreadyFinished, PolicyError, ValueError) as exc:
                outcome.skipped += 1
                log.warning(
                    "journal record %s of %s skipped: %r", record.kind, record.workflow_id, exc
                )
    finally:
        store.clock = live_clock
    outcome.workflows = kinds["create"] - kinds["prune"]
    return outcome


def _apply(store: Store, record: Record) -> None:
    payload = record.payload
    if record.kind == "create":
        jobs = payload["jobs"]
        store.create_workflow(
            payload["user"],
            payload["name"],
            [
                JobInput(
                    key=j["key"],
                    branch=j["branch"],
                    job_type=j["job_type"],
                    wsi_path=j["wsi_path"],
                    depends_on=tuple(j["depends_on"]),
                    params=dict(j["params"]),
                )
                for j in jobs
            ],
            [j["slide_file"] for j in jobs],
            payload["request_id"],
            ids=(record.workflow_id, [j["job_id"] for j in jobs]),
        )
        return
    store.advance_sequence(record.workflow_id, record.sequence)
    if record.kind == "dispatch":
        if not store.replay_dispatch(payload["job_id"], payload["worker"]):
            raise PolicyError(f"job {payload['job_id']} cannot start now")
    elif record.kind == "succeed":
        store.succeed(
            payload["job_id"], payload["files"], payload["summary"], payload["tiles_total"]
        )
    elif record.kind == "progress":
        store.progress(payload["job_id"], payload["done"], payload["total"])
    elif record.kind == "fail":
        store.fail(payload["job_id"], payload["error"])
    elif record.kind == "finish_cancelled":
        store.finish_cancelled(payload["job_id"])
    elif record.kind == "lose":
        store.lose(payload["job_id"], payload["reason"])
    elif record.kind == "cancel_job":
        store.cancel_job(payload["user"], payload["job_id"])
    elif record.kind == "cancel_workflow":
        store.cancel_workflow(payload["user"], payload["workflow_id"])
    elif record.kind == "prune":
        store.prune(payload["workflow_id"])
    else:
        raise ValueError(f"unknown record kind {record.kind!r}")
