"""The scheduler's write-ahead journal: every change to workflows and jobs is
appended to an embedded SQLite database before it is applied, so a restarted
scheduler can rebuild exactly what it had.

WAL mode with ``synchronous=NORMAL``: a committed record survives a crash of
the process (the OS flushes it), and a write torn by a power cut is discarded
by SQLite's WAL checksums, so the journal always ends at its last complete
record. ``:memory:`` gives a journal that lives as long as the process (tests)."""

from __future__ import annotations

import enum
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

SCHEMA_VERSION = 1
_RECORD_COLUMNS = (
    "id INTEGER PRIMARY KEY, kind TEXT NOT NULL, workflow_id TEXT NOT NULL, job_id TEXT,"
    " sequence INTEGER NOT NULL, time REAL NOT NULL, payload TEXT NOT NULL"
)
MEMORY = ":memory:"


class JournalError(RuntimeError):
    """The journal cannot be read or written; the message says which file and why."""


class RecordKind(enum.StrEnum):
    """What a record says happened; stored as its value."""

    CREATE = "create"
    DISPATCH = "dispatch"
    PROGRESS = "progress"
    SUCCEED = "succeed"
    FAIL = "fail"
    FINISH_CANCELLED = "finish_cancelled"
    LOSE = "lose"
    CANCEL_JOB = "cancel_job"
    CANCEL_WORKFLOW = "cancel_workflow"
    PRUNE = "prune"


@dataclass(frozen=True)
class DamagedRecord:
    """A stored record that cannot be replayed: not JSON, an unknown kind, a
    payload of the wrong shape. ``rowid`` names it in the journal file."""

    rowid: int
    kind: str
    workflow_id: str
    problem: str

    def describe(self) -> str:
        return f"record {self.rowid} ({self.kind!r} of workflow {self.workflow_id!r})"


class JournalDamaged(JournalError):
    """Replay met a damaged record; the message names it and the way out."""

    def __init__(self, path: str, damaged: DamagedRecord) -> None:
        super().__init__(
            f"the journal {path} has a damaged {damaged.describe()}: {damaged.problem}; "
            "start with --journal-quarantine (WSI_JOURNAL_QUARANTINE=1) to set damaged "
            "records aside (kept in the journal's quarantine table) and start without them"
        )
        self.damaged = damaged


@dataclass(frozen=True)
class Record:
    kind: str
    workflow_id: str
    sequence: int  # the workflow's event sequence number the change starts at
    time: float
    payload: dict[str, Any]
    rowid: int = 0  # where it is stored (0: not stored yet)


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
            self._db.execute(f"CREATE TABLE IF NOT EXISTS records ({_RECORD_COLUMNS})")
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS quarantine ({_RECORD_COLUMNS},"
                " problem TEXT NOT NULL, quarantined REAL NOT NULL)"
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
        if record.kind == RecordKind.PROGRESS:
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

    def entries(self) -> Iterator[Record | DamagedRecord]:
        """Every stored record, oldest first; one that cannot be parsed comes as
        a DamagedRecord, so the reader decides what to do with it."""
        try:
            rows = self._db.execute(
                "SELECT id, kind, workflow_id, sequence, time, payload FROM records ORDER BY id"
            )
            for rowid, kind, workflow_id, sequence, time, text in rows:
                try:
                    payload = json.loads(text)
                except (ValueError, TypeError) as exc:
                    yield DamagedRecord(rowid, kind, workflow_id, f"payload is not JSON ({exc})")
                    continue
                if not isinstance(payload, dict):
                    yield DamagedRecord(rowid, kind, workflow_id, "payload is not a JSON object")
                    continue
                if kind == RecordKind.PROGRESS and isinstance(payload.get("job_id"), str):
                    self._progress_jobs.add(payload["job_id"])
                yield Record(kind, workflow_id, sequence, time, payload, rowid)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the journal {self.path}: {exc}") from exc

    def records(self) -> Iterator[Record]:
        """Every record, oldest first; JournalDamaged at the first damaged one."""
        for entry in self.entries():
            if isinstance(entry, DamagedRecord):
                raise JournalDamaged(self.path, entry)
            yield entry

    def quarantine(self, damaged: Sequence[DamagedRecord], now: float) -> None:
        """Moves damaged records out of the replayed table, keeping them (and why)
        for a person to look at: nothing is deleted."""
        try:
            with self._db:
                self._db.execute("BEGIN")
                for entry in damaged:
                    self._db.execute(
                        "INSERT INTO quarantine (kind, workflow_id, job_id, sequence, time,"
                        " payload, problem, quarantined) SELECT kind, workflow_id, job_id,"
                        " sequence, time, payload, ?, ? FROM records WHERE id = ?",
                        (entry.problem, now, entry.rowid),
                    )
                    self._db.execute("DELETE FROM records WHERE id = ?", (entry.rowid,))
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write the journal {self.path}: {exc}") from exc

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
