"""The tile pool survives a process that dies mid-task."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from tests.harness import start_worker
from tests.processes import alive, pids_of
from tests.timing import wait_for
from worker_service.errors import JobCancelled, PoolCrashed
from worker_service.pipeline import pool_process
from worker_service.pipeline.tile_pool import TilePool


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def square(x: int) -> int:
    return x * x


def square_task(x: int, stop_token: int) -> int:
    return x * x


def spin_until_stopped(seconds: float, stop_token: int) -> float:
    """Busy for ``seconds`` unless its imap is stopped first; how long it ran."""
    started = time.monotonic()
    while time.monotonic() - started < seconds and not pool_process.is_cancelled(stop_token):
        time.sleep(0.01)
    return time.monotonic() - started


def test_a_crashed_process_fails_its_task_and_the_pool_recovers() -> None:
    pool = TilePool(2)
    try:
        assert pool.call(square, 3) == 9
        with pytest.raises(PoolCrashed):
            pool.call(die)
        # Later work runs on a fresh pool.
        assert pool.map_all(square, [1, 2, 3], ()) == [1, 4, 9]
        assert [r for _, r in pool.imap(square_task, [4, 5], (), lambda: False)] in (
            [16, 25],
            [25, 16],
        )
    finally:
        pool.close()


def test_awaited_tasks_run_and_a_crash_fails_only_its_own_await() -> None:
    async def scenario(pool: TilePool) -> None:
        assert await asyncio.gather(*(pool.run(square, n) for n in range(5))) == [0, 1, 4, 9, 16]
        with pytest.raises(PoolCrashed):
            await pool.run(die)
        assert await pool.run(square, 7) == 49  # a fresh pool took over

    pool = TilePool(2)
    try:
        asyncio.run(scenario(pool))
    finally:
        pool.close()


def test_a_stopped_imap_ends_the_tasks_it_had_started_or_queued() -> None:
    """A cancelled job must free the pool within a tile, not after every task
    it had handed out: those see their stop token and end."""
    pool = TilePool(2)
    try:
        pool.warm_up()
        cancel_at = time.monotonic() + 0.5
        with pytest.raises(JobCancelled):
            for _ in pool.imap(
                spin_until_stopped, [60.0] * 6, (), lambda: time.monotonic() > cancel_at
            ):
                pass
        started = time.monotonic()
        assert pool.map_all(square, [1, 2, 3], ()) == [1, 4, 9]
        assert time.monotonic() - started < 10  # not the 60 s the stopped tasks asked for
    finally:
        pool.close()


def test_the_pool_ends_with_its_worker_killed_by_sigkill(tmp_path: Path) -> None:
    """Pool processes are forked from the worker's fork server, which lives
    on while any of them does: they must see the worker's end themselves, or
    every killed worker would leave its pool (a model loaded in each) behind."""
    worker = start_worker(tmp_path, processes="2")
    try:
        family = pids_of(worker.process.pid)
        assert len(family) >= 4  # the worker, its fork server, two pool processes
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait(5)
        wait_for(lambda: not any(alive(pid) for pid in family), 5, "the pool to end")
    finally:
        worker.kill()
