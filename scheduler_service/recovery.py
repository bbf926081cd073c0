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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduler_service.journal import DamagedRecord, Journal, Record, RecordKind
from scheduler_service.policy import PolicyError
from scheduler_service.store import AlreadyFinished, Clock, NotFound, Store, TransitionSink
from scheduler_service.validation import JobInput

log = logging.getLogger("wsi.scheduler.recovery")

RESTART_REASON = "the scheduler restarted while the job ran"

Shape = Mapping[str, type]
_SHAPES: dict[RecordKind, Shape] = {
    RecordKind.CREATE: {"user": str, "name": str, "request_id": str, "jobs": list},
    RecordKind.DISPATCH: {"job_id": str, "worker": str},
    RecordKind.PROGRESS: {"job_id": str, "done": int, "total": int},
    RecordKind.SUCCEED: {"job_id": str, "files": dict, "summary": str, "tiles_total": int},
    RecordKind.FAIL: {"job_id": str, "error": str},
    RecordKind.FINISH_CANCELLED: {"job_id": str},
    RecordKind.LOSE: {"job_id": str, "reason": str},
    RecordKind.CANCEL_JOB: {"user": str, "job_id": str},
    RecordKind.CANCEL_WORKFLOW: {"user": str, "workflow_id": str},
    RecordKind.PRUNE: {"workflow_id": str},
}
_JOB_SHAPE: Shape = {
    "job_id": str,
    "key": str,
    "branch": str,
    "job_type": str,
    "wsi_path": str,
    "slide_file": str,
    "depends_on": list,
    "params": dict,
}
# Records that no longer fit the rebuilt state (a cancel of a job a later
# record had already ended, say): skipped with a warning, as they change nothing.
_STALE = (NotFound, AlreadyFinished, PolicyError)


@dataclass
class Recovered:
    records: int = 0
    skipped: int = 0
    workflows: int = 0
    requeued: int = 0
    quarantined: list[DamagedRecord] = field(default_factory=list)


class Damaged(ValueError):
    """A record whose payload does not have the shape its kind needs."""


StoreFactory = Callable[[Clock], Store]
"""Makes an empty store on the given clock, with no journal and no observers."""


def rebuild(
    records: Iterable[Record | DamagedRecord], make_store: StoreFactory, quarantine: bool = False
) -> tuple[Store, Recovered]:
    """A store of its own, made by ``make_store`` on a clock that reads each
    record's time, with ``records`` applied in order. Stale records are skipped
    with a warning; a damaged one raises ``DamagedInReplay`` unless
    ``quarantine`` (then it is left out and listed in the outcome)."""
    now = [0.0]
    store = make_store(lambda: now[0])
    outcome = Recovered()
    kinds: Counter[str] = Counter()
    for entry in records:
        outcome.records += 1
        damaged = entry if isinstance(entry, DamagedRecord) else None
        if isinstance(entry, Record):
            now[0] = entry.time
            try:
                kind = check_shape(entry)
                _APPLY[kind](store, entry)
                kinds[kind] += 1
            except Damaged as exc:
                damaged = DamagedRecord(entry.rowid, entry.kind, entry.workflow_id, str(exc))
            except _STALE as exc:
                outcome.skipped += 1
                log.warning(
                    "journal record %s of %s skipped: %r", entry.kind, entry.workflow_id, exc
                )
            except Exception as exc:  # a shape check missed it: damaged all the same
                damaged = DamagedRecord(
                    entry.rowid, entry.kind, entry.workflow_id, f"{type(exc).__name__}: {exc}"
                )
        if damaged is not None:
            if not quarantine:
                raise DamagedInReplay(damaged)
            log.warning("journal %s quarantined: %s", damaged.describe(), damaged.problem)
            outcome.quarantined.append(damaged)
    outcome.workflows = kinds[RecordKind.CREATE] - kinds[RecordKind.PRUNE]
    return store, outcome


def recover(
    records: Iterable[Record | DamagedRecord],
    make_store: StoreFactory,
    clock: Clock,
    journal: Journal,
    on_transition: TransitionSink = lambda transition: None,
    quarantine: bool = False,
) -> tuple[Store, Recovered]:
    """What a starting scheduler serves: the store rebuilt from ``records``,
    switched live (``clock``, ``journal``, ``on_transition``: replayed history
    is neither journaled nor counted again), with the jobs that were running
    sent back to their branch as a new attempt."""
    store, outcome = rebuild(records, make_store, quarantine)
    store.go_live(clock, journal, on_transition)
    for job in store.running_jobs():
        store.lose(job.job_id, RESTART_REASON)
        outcome.requeued += 1
    return store, outcome


class DamagedInReplay(Exception):
    def __init__(self, damaged: DamagedRecord) -> None:
        super().__init__(damaged.describe())
        self.damaged = damaged


def check_shape(record: Record) -> RecordKind:
    """The record's kind, once its payload has every field that kind needs,
    each of the right JSON type; ``Damaged`` otherwise."""
    try:
        kind = RecordKind(record.kind)
    except ValueError:
        raise Damaged(f"unknown record kind {record.kind!r}") from None
    _check_fields(record.payload, _SHAPES[kind], "payload")
    if kind is RecordKind.CREATE:
        for index, job in enumerate(record.payload["jobs"]):
            where = f"jobs[{index}]"
            if not isinstance(job, dict):
                raise Damaged(f"{where} is not an object")
            _check_fields(job, _JOB_SHAPE, where)
            if not all(isinstance(d, str) for d in job["depends_on"]):
                raise Damaged(f"{where}.depends_on holds a non-string")
            if not all(isinstance(v, str) for v in job["params"].values()):
                raise Damaged(f"{where}.params holds a non-string value")
    if kind is RecordKind.SUCCEED and not all(
        isinstance(v, str) for v in record.payload["files"].values()
    ):
        raise Damaged("payload.files holds a non-string path")
    return kind


def _check_fields(payload: Mapping[str, Any], shape: Shape, where: str) -> None:
    for name, kind in shape.items():
        if name not in payload:
            raise Damaged(f"{where} has no {name!r}")
        value = payload[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise Damaged(f"{where}.{name} is not {kind.__name__}")


def _create(store: Store, record: Record) -> None:
    payload = record.payload
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


def _command(apply: Callable[[Store, dict[str, Any]], object]) -> Callable[[Store, Record], None]:
    """A record of a change to an existing workflow: its events are numbered
    from the recorded sequence on, then the change is applied."""

    def replay_one(store: Store, record: Record) -> None:
        store.advance_sequence(record.workflow_id, record.sequence)
        apply(store, record.payload)

    return replay_one


def _dispatch(store: Store, p: dict[str, Any]) -> None:
    if not store.replay_dispatch(p["job_id"], p["worker"]):
        raise PolicyError(f"job {p['job_id']} cannot start now")


_APPLY: dict[RecordKind, Callable[[Store, Record], None]] = {
    RecordKind.CREATE: _create,
    RecordKind.DISPATCH: _command(_dispatch),
    RecordKind.PROGRESS: _command(lambda s, p: s.progress(p["job_id"], p["done"], p["total"])),
    RecordKind.SUCCEED: _command(
        lambda s, p: s.succeed(p["job_id"], p["files"], p["summary"], p["tiles_total"])
    ),
    RecordKind.FAIL: _command(
        lambda s, p: s.fail(p["job_id"], p["error"], str(p.get("code", "")), p.get("tiles"))
    ),
    RecordKind.FINISH_CANCELLED: _command(
        lambda s, p: s.finish_cancelled(p["job_id"], p.get("tiles"))
    ),
    RecordKind.LOSE: _command(lambda s, p: s.lose(p["job_id"], p["reason"], p.get("tiles"))),
    RecordKind.CANCEL_JOB: _command(lambda s, p: s.cancel_job(p["user"], p["job_id"])),
    RecordKind.CANCEL_WORKFLOW: _command(
        lambda s, p: s.cancel_workflow(p["user"], p["workflow_id"])
    ),
    RecordKind.PRUNE: _command(lambda s, p: s.prune(p["workflow_id"])),
}
