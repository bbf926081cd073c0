"""Workflows as large as the caps accept (1,000 jobs: long chains, wide fans,
diamonds) under random cancels, failures, losses and restarts: every cascade
completes whatever its depth, every user slot is given back once the work is
done, and a store rebuilt from the journal is the live store."""

from __future__ import annotations

import itertools
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler_service.journal import SqliteJournal
from scheduler_service.policy import State
from scheduler_service.recovery import recover
from scheduler_service.store import Store
from scheduler_service.validation import JobInput, normalise_jobs
from tests.unit.test_journal_replay import cancel_some, fingerprint, maker, replayed
from tests.unit.test_journal_replay import new_store as store_with

MAX_JOBS = 1000
_ticks = itertools.count(1000)
_ids = itertools.count()


def _clock() -> float:
    return float(next(_ticks))


def new_store(journal: SqliteJournal | None, max_workers: int = 4, users: int = 3) -> Store:
    """Ids and times go on across restarts, as uuids and the clock do."""
    return store_with(journal, max_workers, users, _ticks, _ids)


def shaped_jobs(shape: str, size: int) -> list[JobInput]:
    """``chain``: each job depends on the one before; ``fan``: one head, every
    other job depends on it, in its own branch; ``diamond``: layers of four
    jobs, each depending on every job of the layer before; ``lane``: one branch
    of ``size`` jobs and no dependencies."""
    jobs: list[JobInput] = []
    for i in range(size):
        key = f"k{i}"
        if shape == "chain":
            deps: tuple[str, ...] = (f"k{i - 1}",) if i else ()
            branch = f"b{i % 3}"
        elif shape == "fan":
            deps = ("k0",) if i else ()
            branch = f"b{i}"
        elif shape == "diamond":
            layer = i // 4
            deps = tuple(f"k{j}" for j in range((layer - 1) * 4, layer * 4)) if layer else ()
            branch = f"b{i % 4}"
        else:
            deps, branch = (), "lane"
        jobs.append(JobInput(key, branch, "TISSUE_MASK", "s.svs", deps))
    return normalise_jobs(jobs, MAX_JOBS)  # the scheduler's own checks accept them


def create(store: Store, user: str, shape: str, size: int) -> None:
    jobs = shaped_jobs(shape, size)
    store.create_workflow(user, shape, jobs, ["/s.svs"] * len(jobs))


Step = tuple[str, int]
steps = st.lists(
    st.tuples(
        st.sampled_from(
            ["dispatch", "succeed", "fail", "lose", "cancel", "cancel_wf", "restart", "create"]
        ),
        st.integers(0, 10**6),
    ),
    min_size=5,
    max_size=40,
)


def step(store: Store, journal: SqliteJournal, op: str, pick: int) -> Store:
    """Applies one command; returns the store to go on with (a new one after a
    restart, rebuilt from the journal the way the scheduler does it)."""
    user = f"u{pick % 4}"
    running = store.running_jobs()
    if op == "restart":
        rebuilt, _ = recover(journal.records(), maker(4, 3), _clock, journal)
        return rebuilt
    if op == "create":
        create(store, user, ("chain", "fan", "diamond", "lane")[pick % 4], 1 + pick % MAX_JOBS)
    elif op == "dispatch":
        store.take_dispatches(1 + pick % 4, lambda job: "w")
    elif running and op in ("succeed", "fail", "lose"):
        job = running[pick % len(running)]
        if op == "succeed":
            store.succeed(job.job_id, {}, "{}", 1)
        elif op == "fail":
            store.fail(job.job_id, "boom")
        else:
            store.lose(job.job_id, "worker lost")
    elif op in ("cancel", "cancel_wf"):
        cancel_some(store, user, whole=op == "cancel_wf", pick=pick)
    return store


def assert_replay_matches(store: Store, journal: SqliteJournal) -> None:
    rebuilt = replayed(journal.records(), 4, 3)
    rebuilt.free_slots = store.free_slots  # the dispatcher's, not journaled state
    assert fingerprint(rebuilt) == fingerprint(store)


def drain(store: Store) -> None:
    """Runs everything left to its end: each running job succeeds."""
    while True:
        store.take_dispatches(4, lambda job: "w")
        running = store.running_jobs()
        if not running:
            return
        for job in running:
            store.succeed(job.job_id, {}, "{}", 1)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=st.lists(
        st.tuples(st.sampled_from(["chain", "fan", "diamond", "lane"]), st.integers(0, 3)),
        min_size=1,
        max_size=3,
    ),
    script=steps,
)
def test_cascades_complete_slots_free_and_replay_matches_at_the_caps(
    first: list[tuple[str, int]], script: list[Step]
) -> None:
    journal = SqliteJournal(":memory:")
    store = new_store(journal)
    for shape, who in first:
        create(store, f"u{who}", shape, MAX_JOBS)
    for index, (op, pick) in enumerate(script):
        store = step(store, journal, op, pick)
        policy = store.policy
        assert policy.running_count <= policy.max_workers
        assert len(policy.active_users) <= policy.max_active_users
        if index % 8 == 7 or index == len(script) - 1:
            assert_replay_matches(store, journal)
    drain(store)
    assert_replay_matches(store, journal)
    policy = store.policy
    assert policy.pending_count == 0 and policy.running_count == 0
    assert policy.active_users == [] and policy.waiting_users == []
    for user in ("u0", "u1", "u2", "u3"):
        for wf in store.list_workflows(user, 1000, "")[0]:
            assert all(job.state.terminal for job in wf.jobs), wf.name


def test_cancelling_the_head_of_a_chain_far_deeper_than_the_stack_cancels_it_all() -> None:
    depth = sys.getrecursionlimit() * 5  # beyond the caps too: depth costs no stack
    store = new_store(SqliteJournal(":memory:"))
    jobs = [
        JobInput(f"k{i}", "b", "TISSUE_MASK", "s.svs", (f"k{i - 1}",) if i else ())
        for i in range(depth)
    ]
    wf, _ = store.create_workflow("u0", "deep", jobs, ["/s.svs"] * depth)
    [head] = store.take_dispatches(1, lambda job: "w")
    store.fail(head.job_id, "boom")
    assert wf.jobs[-1].state is State.CANCELLED
    assert wf.state_counts[State.FAILED] == 1
    assert wf.state_counts[State.CANCELLED] == depth - 1
    assert store.policy.active_users == [] and store.policy.pending_count == 0


def test_cancelling_the_middle_of_a_chain_cancels_its_tail_and_frees_the_user() -> None:
    journal = SqliteJournal(":memory:")
    store = new_store(journal, max_workers=4, users=1)
    jobs = shaped_jobs("chain", MAX_JOBS)
    wf, _ = store.create_workflow("u0", "chain", jobs, ["/s.svs"] * MAX_JOBS)
    [head] = store.take_dispatches(4, lambda job: "w")
    store.succeed(head.job_id, {}, "{}", 1)
    store.cancel_job("u0", wf.jobs[500].job_id)
    assert all(j.state is State.CANCELLED for j in wf.jobs[500:])
    other = shaped_jobs("lane", 1)
    store.create_workflow("u1", "next", other, ["/s.svs"])
    [second] = store.take_dispatches(4, lambda job: "w")
    assert second.key == "k1"  # u0 holds the only user slot: u1 waits
    # Cancel the rest of u0's work (the running job stops cooperatively): u1 starts.
    _, to_stop = store.cancel_workflow("u0", wf.workflow_id)
    assert to_stop == [second.job_id]
    store.finish_cancelled(second.job_id)
    [started] = store.take_dispatches(4, lambda job: "w")
    assert started.user == "u1"
    rebuilt = replayed(journal.records(), 4, 1)
    rebuilt.free_slots = store.free_slots
    assert fingerprint(rebuilt) == fingerprint(store)
