"""Pruning of old finished workflows (and their result folders), so a
scheduler that runs for months keeps a bounded memory and journal."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from scheduler_service.journal import JournalError, SqliteJournal
from scheduler_service.store import JobRecord, Store

log = logging.getLogger("wsi.scheduler.retention")


def held_results(job: JobRecord) -> list[tuple[str, str]]:
    """(worker address, job id) of a job whose results a worker holds."""
    return [(job.worker, job.job_id)] if job.result_files and job.worker else []


def prune_expired(
    store: Store, journal: SqliteJournal | None, cutoff: float
) -> list[tuple[str, str]]:
    """Forgets every workflow that finished before ``cutoff``; returns the
    (worker, job id) pairs whose result folders the workers are to delete."""
    deletions: list[tuple[str, str]] = []
    for wf in store.finished_before(cutoff):
        store.prune(wf.workflow_id)
        if journal is not None:
            try:
                journal.forget_workflow(wf.workflow_id)
            except JournalError:
                log.exception("journal: records of pruned workflow %s kept", wf.workflow_id)
        deletions.extend(pair for job in wf.jobs for pair in held_results(job))
        log.info("workflow %s of user %s pruned (retention)", wf.workflow_id, wf.user)
    return deletions


class Deleter:
    """Asks each job's worker to delete its results; what cannot be deleted
    now (its worker is away) is asked again every round while this scheduler
    runs (a restart forgets them: the folders then stay until deleted by hand)."""

    def __init__(self, delete: Callable[[str, str], Awaitable[bool]]) -> None:
        self.delete = delete
        self.waiting: list[tuple[str, str]] = []

    async def run(self, deletions: list[tuple[str, str]]) -> None:
        self.waiting.extend(deletions)
        still = []
        for worker, job_id in self.waiting:
            if not await self.delete(worker, job_id):
                still.append((worker, job_id))
        if still:
            log.info("results of %d pruned jobs wait for their workers to be back", len(still))
        self.waiting = still
