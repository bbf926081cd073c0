"""Pruning of old finished workflows (and their result folders), so a
scheduler that runs for months keeps a bounded memory and journal."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from scheduler_service.journal import JournalError, SqliteJournal
from scheduler_service.store import JobRecord, Store

log = logging.getLogger("wsi.scheduler.retention")


def result_folders(job: JobRecord, results_dir: Path) -> set[Path]:
    """The job's own result folder: named after the job, as workers write it;
    results are named relative to the results folder (JOB_ID/NAME), or were
    absolute paths in journals of older versions."""
    folders = set()
    for path in map(Path, job.result_files.values()):
        if path.parent.name == job.job_id:
            folders.add(path.parent if path.is_absolute() else results_dir / path.parent)
    return folders


def prune_expired(
    store: Store, journal: SqliteJournal | None, cutoff: float, results_dir: Path = Path("results")
) -> list[Path]:
    """Forgets every workflow that finished before ``cutoff``; returns their
    result folders, for ``delete_folders`` to remove off the event loop."""
    folders: list[Path] = []
    for wf in store.finished_before(cutoff):
        store.prune(wf.workflow_id)
        if journal is not None:
            try:
                journal.forget_workflow(wf.workflow_id)
            except JournalError:
                log.exception("journal: records of pruned workflow %s kept", wf.workflow_id)
        folders.extend(folder for job in wf.jobs for folder in result_folders(job, results_dir))
        log.info("workflow %s of user %s pruned (retention)", wf.workflow_id, wf.user)
    return folders


def delete_folders(folders: list[Path]) -> None:
    """Where this host can reach them (a same-host deployment); blocking I/O."""
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
