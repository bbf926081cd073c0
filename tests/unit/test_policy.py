"""Every rule of the scheduling contract, on the pure policy."""

from __future__ import annotations

import pytest

from scheduler_service.policy import (
    NewJob,
    PolicyError,
    SchedulingPolicy,
    State,
    WaitKind,
)


def job(job_id: str, user: str = "u1", wf: str = "w1", branch: str = "b", deps=()) -> NewJob:
    return NewJob(job_id, user, wf, branch, tuple(deps))


def test_branch_runs_one_job_at_a_time_in_fifo_order() -> None:
    p = SchedulingPolicy(max_workers=4)
    p.submit([job("a"), job("b"), job("c")])
    assert p.next_dispatches(4) == ["a"]
    assert p.next_dispatches(4) == []
    p.finish("a", State.SUCCEEDED)
    assert p.next_dispatches(4) == ["b"]
    p.finish("b", State.SUCCEEDED)
    assert p.next_dispatches(4) == ["c"]


def test_branches_run_in_parallel_up_to_the_global_cap() -> None:
    p = SchedulingPolicy(max_workers=2)
    p.submit([job("a", branch="x"), job("b", branch="y"), job("c", branch="z")])
    assert p.next_dispatches(8) == ["a", "b"]
    p.finish("a", State.SUCCEEDED)
    assert p.next_dispatches(8) == ["c"]


def test_free_worker_slots_limit_dispatch() -> None:
    p = SchedulingPolicy(max_workers=4)
    p.submit([job(str(i), branch=str(i)) for i in range(4)])
    assert p.next_dispatches(1) == ["0"]
    assert p.next_dispatches(0) == []


def test_same_branch_name_in_two_workflows_or_users_does_not_serialize() -> None:
    p = SchedulingPolicy(max_workers=4)
    p.submit([job("a", wf="w1")])
    p.submit([job("b", wf="w2")])
    p.submit([job("c", user="u2", wf="w3")])
    assert sorted(p.next_dispatches(4)) == ["a", "b", "c"]


def test_fourth_user_waits_until_a_user_has_nothing_left() -> None:
    p = SchedulingPolicy(max_workers=8, max_active_users=3)
    for u in ("u1", "u2", "u3", "u4"):
        p.submit([job(f"{u}-1", user=u, wf=u), job(f"{u}-2", user=u, wf=u)])
    started = p.next_dispatches(8)
    assert started == ["u1-1", "u2-1", "u3-1"]
    reason = p.wait_reason("u4-1")
    assert reason is not None and reason.kind is WaitKind.USER_SLOT and reason.position == 1
    p.finish("u1-1", State.SUCCEEDED)
    # u1 still has a pending job: it keeps its slot.
    assert p.next_dispatches(8) == ["u1-2"]
    p.finish("u1-2", State.SUCCEEDED)
    assert p.next_dispatches(8) == ["u4-1"]
    assert p.active_users == ["u2", "u3", "u4"]


@pytest.mark.parametrize("ending", [State.FAILED, State.CANCELLED])
def test_slot_is_released_when_last_job_fails_or_is_cancelled(ending: State) -> None:
    p = SchedulingPolicy(max_workers=8, max_active_users=1)
    p.submit([job("a", user="u1", wf="w1")])
    p.submit([job("b", user="u2", wf="w2")])
    assert p.next_dispatches(8) == ["a"]
    if ending is State.CANCELLED:
        assert p.cancel("a") == []  # running: cooperative
        assert p.cancel_requested("a")
    p.finish("a", ending, "boom")
    assert p.next_dispatches(8) == ["b"]


def test_pending_cancel_of_last_job_releases_slot() -> None:
    p = SchedulingPolicy(max_workers=8, max_active_users=1)
    p.submit([job("a", user="u1", wf="w1"), job("a2", user="u1", wf="w1")])
    p.submit([job("b", user="u2", wf="w2")])
    assert p.next_dispatches(8) == ["a"]
    p.finish("a", State.SUCCEEDED)
    assert [t.job_id for t in p.cancel("a2")] == ["a2"]
    assert p.next_dispatches(8) == ["b"]


def test_round_robin_across_users_fifo_within_user() -> None:
    p = SchedulingPolicy(max_workers=4, max_active_users=3)
    p.submit([job(f"u1-{i}", user="u1", wf="w1", branch=str(i)) for i in range(4)])
    p.submit([job(f"u2-{i}", user="u2", wf="w2", branch=str(i)) for i in range(4)])
    assert p.next_dispatches(1) == ["u1-0"]
    # u2 is admitted next; then slots alternate instead of u1 taking all.
    assert p.next_dispatches(3) == ["u2-0", "u1-1", "u2-1"]


def test_many_branches_cannot_take_every_slot() -> None:
    p = SchedulingPolicy(max_workers=4, max_active_users=3)
    p.submit([job(f"u1-{i}", user="u1", wf="w1", branch=str(i)) for i in range(10)])
    assert p.next_dispatches(2) == ["u1-0", "u1-1"]
    p.submit([job("u2-0", user="u2", wf="w2")])
    assert p.next_dispatches(1) == ["u2-0"]


def test_dependency_waits_for_success_then_runs() -> None:
    p = SchedulingPolicy()
    p.submit([job("mask", branch="x"), job("seg", branch="y", deps=["mask"])])
    assert p.next_dispatches(4) == ["mask"]
    reason = p.wait_reason("seg")
    assert reason is not None and reason.kind is WaitKind.DEPENDENCY and reason.job_id == "mask"
    p.finish("mask", State.SUCCEEDED)
    assert p.next_dispatches(4) == ["seg"]


@pytest.mark.parametrize("ending", [State.FAILED, State.CANCELLED])
def test_dependents_of_a_failed_or_cancelled_job_are_cancelled(ending: State) -> None:
    p = SchedulingPolicy()
    p.submit(
        [
            job("mask", branch="x"),
            job("seg", branch="y", deps=["mask"]),
            job("report", branch="z", deps=["seg"]),
            job("other", branch="w"),
        ]
    )
    assert p.next_dispatches(1) == ["mask"]
    out = p.finish("mask", ending, "bad slide")
    assert [(t.job_id, t.state) for t in out] == [
        ("mask", ending),
        ("seg", State.CANCELLED),
        ("report", State.CANCELLED),
    ]
    assert out[1].cause == "mask" and out[2].cause == "seg"
    assert p.next_dispatches(4) == ["other"]


def test_failure_cancels_later_jobs_of_its_branch_only() -> None:
    p = SchedulingPolicy()
    p.submit([job("a1", branch="a"), job("a2", branch="a"), job("b1", branch="other")])
    assert p.next_dispatches(4) == ["a1", "b1"]
    out = p.finish("a1", State.FAILED, "boom")
    assert [(t.job_id, t.state) for t in out] == [("a1", State.FAILED), ("a2", State.CANCELLED)]
    assert out[1].cause == "a1" and "failed" in out[1].reason
    assert p.state("b1") is State.RUNNING


def test_cancelled_running_job_does_not_stop_its_branch() -> None:
    p = SchedulingPolicy()
    p.submit([job("a1"), job("a2")])
    assert p.next_dispatches(4) == ["a1"]
    p.cancel("a1")
    p.finish("a1", State.CANCELLED)
    assert p.next_dispatches(4) == ["a2"]


def test_cancel_pending_job_in_the_middle_of_a_branch() -> None:
    p = SchedulingPolicy()
    p.submit([job("a1"), job("a2"), job("a3")])
    assert p.next_dispatches(4) == ["a1"]
    assert [t.state for t in p.cancel("a2")] == [State.CANCELLED]
    p.finish("a1", State.SUCCEEDED)
    assert p.next_dispatches(4) == ["a3"]


def test_cancel_of_finished_job_changes_nothing() -> None:
    p = SchedulingPolicy()
    p.submit([job("a")])
    p.next_dispatches(1)
    p.finish("a", State.SUCCEEDED)
    assert p.cancel("a") == []
    assert p.state("a") is State.SUCCEEDED


def test_lost_job_returns_to_head_of_branch_and_is_retried() -> None:
    p = SchedulingPolicy(max_attempts=2)
    p.submit([job("a1"), job("a2")])
    assert p.next_dispatches(4) == ["a1"]
    assert p.lose("a1", "worker lost") == [_t("a1", State.PENDING)]
    assert p.next_dispatches(4) == ["a1"]
    assert p.attempt("a1") == 2
    out = p.lose("a1", "worker lost")
    assert out[0].state is State.FAILED and "2 attempts" in out[0].reason
    assert out[1].job_id == "a2" and out[1].state is State.CANCELLED


def _t(job_id: str, state: State):
    from scheduler_service.policy import Transition

    return Transition(job_id, state, "worker lost")


def test_lost_job_that_was_being_cancelled_ends_cancelled() -> None:
    p = SchedulingPolicy()
    p.submit([job("a")])
    p.next_dispatches(1)
    p.cancel("a")
    assert p.lose("a", "stream broke")[0].state is State.CANCELLED


def test_wait_reasons() -> None:
    p = SchedulingPolicy(max_workers=1)
    p.submit([job("a1"), job("a2"), job("b1", branch="other")])
    assert p.next_dispatches(1) == ["a1"]
    r = p.wait_reason("a2")
    assert r is not None and r.kind is WaitKind.BRANCH and r.job_id == "a1"
    r = p.wait_reason("b1")
    assert r is not None and r.kind is WaitKind.WORKER_SLOT
    assert p.wait_reason("a1") is None


def test_bad_events_raise() -> None:
    p = SchedulingPolicy()
    p.submit([job("a")])
    with pytest.raises(PolicyError):
        p.finish("a", State.SUCCEEDED)  # not running
    with pytest.raises(PolicyError):
        p.submit([job("a")])  # duplicate
    with pytest.raises(PolicyError):
        p.submit([job("z", deps=["nope"])])
    with pytest.raises(PolicyError):
        p.state("missing")
    with pytest.raises(ValueError):
        SchedulingPolicy(max_workers=0)


def test_lane_depths_per_user() -> None:
    p = SchedulingPolicy()
    p.submit([job("a1"), job("a2"), job("b1", branch="other")])
    p.submit([job("x", user="u2", wf="w2")])
    p.next_dispatches(1)
    assert p.lane_depths("u1") == {("u1", "w1", "b"): (1, 1), ("u1", "w1", "other"): (1, 0)}
    p.next_dispatches(4)
    assert p.lane_depths("nobody") == {}
