"""The scheduler's write-ahead journal: every change to workflows and jobs is
appended to an embedded SQLite database before it is applied, so a restarted
scheduler can rebuild exactly what it had.

WAL mode with ``synchronous=NORMAL``: a committed record survives a crash of
the process (the OS flushes it), and a write torn by a power cut is discarded
by SQLite's WAL checksums, so the journal always ends at its last complete
record. ``:memory:`` gives a journal that lives as long as the process (tests)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

SCHEMA_VERSION = 1
MEMORY = ":memory:"


class JournalError(RuntimeError):
    """The journal cannot be read or written; the message says which file and why."""


@dataclass(frozen=True)
class Record:
    kind: str
    workflow_id: str
    sequence: int  # the workflow's event sequence number the change starts at
    time: float
    payload: dict[str, Any]


class Journal(Protocol):
    def append(self, record: Record) -> None: ...

    def forget_progress(self, job_id: str) -> None:
        """The job has ended: its progress records are no longer needed (its
        final record carries a later sequence number and the final tiles)."""


class NullJournal:
    """Keeps nothing: used while replaying (the records are already there)."""

    def append(self, record: Record) -> None:
        return None

    def forget_progress(self, job_id: str) -> None:
        return None


class SqliteJournal:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._progress_jobs: set[str] = set()  # jobs that have progress records here
        try:
            if self.path != MEMORY:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS records ("
                " id INTEGER PRIMARY KEY,"
                " kind TEXT NOT NULL,"
                " workflow_id TEXT NOT NULL,"
                " job_id TEXT,"
                " sequence INTEGER NOT NULL,"
                " time REAL NOT NULL,"
                " payload TEXT NOT NULL)"
            )
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS records_by_workflow ON records (workflow_id)"
            )
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS progress_by_job ON records (job_id)"
                " WHERE kind = 'progress'"
            )
            self._check_version()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from exc

    def _check_version(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
        elif int(row[0]) != SCHEMA_VERSION:
            raise JournalError(
                f"the journal {self.path} has schema {row[0]}; "
                f"this scheduler reads schema {SCHEMA_VERSION}"
            )

    def append(self, record: Record) -> None:
        if record.kind == "progress":
            self._progress_jobs.add(record.payload["job_id"])
        try:
            self._db.execute(
                "INSERT INTO records (kind, workflow_id, job_id, sequence, time, payload)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.kind,
                    record.workflow_id,
                    record.payload.get("job_id"),
                    record.sequence,
                    record.time,
                    json.dumps(record.payload, separators=(",", ":")),
                ),
            )
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write the journal {self.path}: {exc}") from exc

    def records(self) -> Iterator[Record]:
        """Every record, oldest first."""
        try:
            rows = self._db.execute(
                "SELECT kind, workflow_id, sequence, time, payload FROM records ORDER BY id"
            )
            for kind, workflow_id, sequence, time, payload in rows:
                record = Record(kind, workflow_id, sequence, time, json.loads(payload))
                if kind == "progress":
                    self._progress_jobs.add(record.payload["job_id"])
                yield record
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the journal {self.path}: {exc}") from exc

    def forget_progress(self, job_id: str) -> None:
        """A no-op for a job with no progress records (tissue masks and jobs
        cancelled before they started report none): every job end calls this."""
        if job_id not in self._progress_jobs:
            return
        try:
            self._db.execute(
                "DELETE FROM records WHERE kind = 'progress' AND job_id = ?", (job_id,)
            )
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write the journal {self.path}: {exc}") from exc
        self._progress_jobs.discard(job_id)

    def forget_workflow(self, workflow_id: str) -> None:
        """Drops a pruned workflow's records, so the journal does not grow forever."""
        try:
            self._db.execute("DELETE FROM records WHERE workflow_id = ?", (workflow_id,))
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write the journal {self.path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()
