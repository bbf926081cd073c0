"""The caps as the dispatcher applies them, in-process against fake workers:
branches run together up to ``max_workers`` and never beyond, never beyond
the connected workers' slots either, and a fourth user waits for an
active-user slot, then starts. These ran as real processes before
(tests/integration/test_scheduling.py); what they check is the store's and
the dispatcher's logic, which runs here whole, in milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial

from scheduler_service.convert import pending_reason
from scheduler_service.policy import State
from scheduler_service.store import JobRecord, Store
from scheduler_service.validation import JobInput
from tests.unit.fake_workers import FakeNetwork, FakeWorker
from tests.unit.test_dispatch_in_process import W1, new_store, running_call, started, until


def is_running(job: JobRecord) -> bool:
    return job.state is State.RUNNING


def running(jobs: Sequence[JobRecord]) -> list[JobRecord]:
    return [job for job in jobs if is_running(job)]


async def finish_all(network: FakeNetwork, jobs: Sequence[JobRecord], cap: int) -> int:
    """Succeeds the running jobs one at a time until all have run, checking
    the cap at every turn of the loop; the most that ran at once."""
    most = 0
    while not all(job.state is State.SUCCEEDED for job in jobs):
        now = running(jobs)
        most = max(most, len(now))
        assert len(now) <= cap, [job.key for job in now]
        if now:
            call = await running_call(network.workers[W1], now[0])
            call.succeed()
            call.end()
        await asyncio.sleep(0)
    return most


def submit_as(store: Store, user: str, *keys: str, branch: str = "") -> list[JobRecord]:
    """One workflow of ``user``: each job in its own branch, or all in ``branch``."""
    items = [JobInput(key, branch or key, "TISSUE_MASK", "s.svs", ()) for key in keys]
    wf, _ = store.create_workflow(user, "wf", items, ["/slides/s.svs"] * len(items))
    return list(wf.jobs)


async def test_branches_run_together_up_to_the_cap_and_never_beyond() -> None:
    network = FakeNetwork()
    network.workers[W1] = FakeWorker(slots=4)
    store = new_store(max_workers=2)
    jobs = submit_as(store, "alice", "b0", "b1", "b2", "b3")
    async with started(store, network):
        await until(lambda: len(running(jobs)) == 2, "two branches running")
        for _ in range(20):  # a third never starts while two run
            await asyncio.sleep(0)
        assert len(running(jobs)) == 2 and len(network.workers[W1].calls) == 2
        assert await finish_all(network, jobs, cap=2) == 2


async def test_the_cap_never_exceeds_the_connected_workers_slots() -> None:
    network = FakeNetwork()
    network.workers[W1] = FakeWorker(slots=1)
    store = new_store(max_workers=4)
    jobs = submit_as(store, "alice", "b0", "b1", "b2")
    async with started(store, network):
        await until(lambda: len(running(jobs)) == 1, "one running")
        assert await finish_all(network, jobs, cap=1) == 1


async def test_a_fourth_user_waits_for_a_slot_then_starts() -> None:
    network = FakeNetwork()
    network.workers[W1] = FakeWorker(slots=4)
    store = new_store(max_workers=4)  # three active users, as by default
    holders = {who: submit_as(store, who, "first", "second", branch="main") for who in "abc"}
    (fourth,) = submit_as(store, "d", "waiting")
    async with started(store, network):
        await until(lambda: all(jobs[0].state is State.RUNNING for jobs in holders.values()), "3")
        for _ in range(20):
            await asyncio.sleep(0)
        assert fourth.state is State.PENDING  # a free worker slot is not enough
        assert "active-user slot (3 users active" in pending_reason(store.waiting(fourth))
        first, second = holders["a"]
        for job in (first, second):  # a holder frees its slot with no job left
            await until(partial(is_running, job), job.key)
            assert fourth.state is State.PENDING
            call = await running_call(network.workers[W1], job)
            call.succeed()
            call.end()
        await until(lambda: fourth.state is State.RUNNING, "the fourth user's job")
        assert second.state is State.SUCCEEDED
