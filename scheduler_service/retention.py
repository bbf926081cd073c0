"""Pruning of old finished workflows (and their result folders), so a
scheduler that runs for months keeps a bounded memory and journal."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from scheduler_service.journal import JournalError, SqliteJournal
from scheduler_service.store import JobRecord, Store

log = logging.getLogger("wsi.scheduler.retention")


def result_folders(job: JobRecord) -> set[Path]:
    """The job's own result folder(s): named after the job, as workers write them."""
    return {Path(p).parent for p in job.result_files.values() if Path(p).parent.name == job.job_id}


def prune_expired(store: Store, journal: SqliteJournal | None, cutoff: float) -> int:
    """Forgets every workflow that finished before ``cutoff`` and deletes its
    result folders where this host can reach them. Returns how many."""
    pruned = 0
    for wf in store.finished_before(cutoff):
        store.prune(wf.workflow_id)
        if journal is not None:
            try:
                journal.forget_workflow(wf.workflow_id)
            except JournalError:
                log.exception("journal: records of pruned workflow %s kept", wf.workflow_id)
        for job in wf.jobs:
            for folder in result_folders(job):
                shutil.rmtree(folder, ignore_errors=True)
        pruned += 1
        log.info("workflow %s of user %s pruned (retention)", wf.workflow_id, wf.user)
    return pruned
