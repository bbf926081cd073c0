"""The state machine around the policy: reasons, progress, paging, cancels."""

from __future__ import annotations

import itertools

import pytest

from scheduler_service import convert
from scheduler_service.policy import SchedulingPolicy, State
from scheduler_service.store import (
    AlreadyFinished,
    InvalidPageToken,
    JobRecord,
    NotFound,
    Store,
    WorkflowRecord,
)
from scheduler_service.validation import JobInput


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def __call__(self, store: Store, wf: WorkflowRecord, kind: str, job: JobRecord) -> None:
        self.events.append((kind, job.key, job.state.value))


def make_store(max_workers: int = 2, max_active_users: int = 3) -> tuple[Store, Recorder]:
    ticks = itertools.count(1000)
    ids = (f"id{n}" for n in itertools.count())
    recorder = Recorder()
    store = Store(
        SchedulingPolicy(max_workers, max_active_users),
        clock=lambda: float(next(ticks)),
        on_event=recorder,
        new_id=lambda: next(ids),
    )
    return store, recorder


def jobs(*specs: tuple[str, str, tuple[str, ...]]) -> list[JobInput]:
    return [JobInput(key, branch, "TISSUE_MASK", "s.svs", deps) for key, branch, deps in specs]


def submit(store: Store, user: str, *specs: tuple[str, str, tuple[str, ...]]) -> WorkflowRecord:
    items = jobs(*specs)
    wf, _ = store.create_workflow(user, "wf", items, ["/s.svs"] * len(items))
    return wf


def reason(store: Store, job: JobRecord) -> str:
    return convert.pending_reason(store.waiting(job))


def test_pending_reasons_name_what_a_job_waits_for() -> None:
    store, _ = make_store(max_workers=1, max_active_users=1)
    wf = submit(store, "u1", ("a", "x", ()), ("b", "x", ()), ("c", "y", ("a",)), ("d", "z", ()))
    other = submit(store, "u2", ("e", "x", ()))
    assert reason(store, wf.jobs[0]) == "waiting for a worker to connect"
    store.take_dispatches(1, lambda job: "w1")
    a, b, c, d = wf.jobs
    assert a.state is State.RUNNING and a.worker == "w1"
    assert reason(store, b) == "branch 'x' busy: job 'a' is running ahead of it"
    assert reason(store, c) == "waiting for dependency 'a' (RUNNING)"
    assert reason(store, d) == "waiting for a free worker slot (all 1 busy)"
    assert "active-user slot" in reason(store, other.jobs[0])
    assert "number 1 in line" in reason(store, other.jobs[0])


def test_progress_and_workflow_state_follow_the_jobs() -> None:
    store, recorder = make_store()
    wf = submit(store, "u1", ("a", "x", ()), ("b", "y", ()))
    store.take_dispatches(2, lambda job: "w")
    store.progress(wf.jobs[0].job_id, 5, 10)
    assert (wf.tiles_done, wf.tiles_total, wf.percent) == (5, 10, 25.0)
    store.progress(wf.jobs[1].job_id, 3, 10)
    store.succeed(wf.jobs[0].job_id, {"summary.json": "/r"}, "{}")
    store.fail(wf.jobs[1].job_id, "bad slide")
    # A failed job counts for the tiles it did: the workflow is not at 100 %.
    assert wf.state == "FAILED" and wf.percent == 65.0
    assert wf.jobs[1].error == "bad slide"
    assert recorder.events[-1] == ("state", "b", "FAILED")
    with pytest.raises(AlreadyFinished):
        store.cancel_job("u1", wf.jobs[1].job_id)
    with pytest.raises(AlreadyFinished):
        store.cancel_workflow("u1", wf.workflow_id)


def test_cascade_reasons_use_job_keys() -> None:
    store, _ = make_store()
    wf = submit(store, "u1", ("a", "x", ()), ("b", "x", ()), ("c", "y", ("a",)))
    store.take_dispatches(2, lambda job: "w")
    store.fail(wf.jobs[0].job_id, "boom")
    assert wf.jobs[1].error == "branch stopped after a failed job: 'a'"
    assert wf.jobs[2].error == "dependency ended FAILED: 'a'"


def test_lost_job_is_retried_with_its_reason() -> None:
    store, _ = make_store()
    wf = submit(store, "u1", ("a", "x", ()))
    store.take_dispatches(1, lambda job: "w1")
    store.progress(wf.jobs[0].job_id, 7, 10)
    store.lose(wf.jobs[0].job_id, "worker w1 lost")
    assert wf.jobs[0].state is State.PENDING and wf.jobs[0].error == "worker w1 lost"
    # The lost attempt's tiles are gone: the new one starts from 0.
    assert (wf.jobs[0].tiles_done, wf.percent) == (0, 0.0)
    store.take_dispatches(1, lambda job: "w2")
    assert wf.jobs[0].attempt == 2 and wf.jobs[0].worker == "w2" and wf.jobs[0].error == ""
    assert wf.jobs[0].attempt_workers == ["w1", "w2"]


def test_a_cancelled_running_job_says_it_will_end_cancelled() -> None:
    store, _ = make_store()
    wf = submit(store, "u1", ("a", "x", ()))
    store.take_dispatches(1, lambda job: "w1")
    job, running = store.cancel_job("u1", wf.jobs[0].job_id)
    message = convert.job_message(store, job)
    assert running and message.state == convert.JOB_STATE[State.RUNNING] and message.cancelling
    store.finish_cancelled(job.job_id)
    assert not convert.job_message(store, job).cancelling


def test_only_users_kept_out_by_the_cap_count_as_waiting() -> None:
    store, _ = make_store(max_workers=1, max_active_users=2)
    submit(store, "u1", ("a", "x", ()))
    submit(store, "u2", ("a", "x", ()))
    store.take_dispatches(1, lambda job: "w")  # one worker slot: u1 runs, u2 waits for it
    assert store.policy.waiting_users == ["u2"]
    assert store.policy.users_waiting_for_a_slot == 0  # a slot is free: u2 waits for a worker
    store, _ = make_store(max_workers=2, max_active_users=1)
    submit(store, "u1", ("a", "x", ()))
    submit(store, "u2", ("a", "x", ()))
    store.take_dispatches(2, lambda job: "w")
    assert store.policy.users_waiting_for_a_slot == 1  # the cap keeps u2 out


def test_tenancy_paging_and_idempotency() -> None:
    store, _ = make_store()
    made = [submit(store, "u1", ("a", "x", ())) for _ in range(5)]
    with pytest.raises(NotFound):
        store.workflow("u2", made[0].workflow_id)
    with pytest.raises(NotFound):
        store.job("u2", made[0].jobs[0].job_id)
    page, token = store.list_workflows("u1", 3, "")
    rest, end = store.list_workflows("u1", 3, token)
    assert [w.workflow_id for w in page + rest] == [w.workflow_id for w in reversed(made)]
    assert end == ""
    with pytest.raises(InvalidPageToken):
        store.list_workflows("u1", 3, "not-a-token")
    items = jobs(("a", "x", ()))
    first, new = store.create_workflow("u1", "wf", items, ["/s"], request_id="r1")
    again, new_again = store.create_workflow("u1", "wf", items, ["/s"], request_id="r1")
    assert new and not new_again and first is again


def test_cancel_workflow_cancels_pending_and_reports_running() -> None:
    store, _ = make_store()
    wf = submit(store, "u1", ("a", "x", ()), ("b", "x", ()))
    store.take_dispatches(1, lambda job: "w")
    _, to_stop = store.cancel_workflow("u1", wf.workflow_id)
    assert to_stop == [wf.jobs[0].job_id]
    assert wf.jobs[1].state is State.CANCELLED
    store.finish_cancelled(wf.jobs[0].job_id)
    assert wf.state == "CANCELLED"
