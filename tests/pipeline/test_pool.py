"""The tile pool survives a process that dies mid-task."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from worker_service.errors import PoolCrashed
from worker_service.pipeline.tile_pool import TilePool


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def square(x: int) -> int:
    return x * x


def test_a_crashed_process_fails_its_task_and_the_pool_recovers() -> None:
    pool = TilePool(2)
    try:
        assert pool.call(square, 3) == 9
        with pytest.raises(PoolCrashed):
            pool.call(die)
        # Later work runs on a fresh pool.
        assert pool.map_all(square, [1, 2, 3], ()) == [1, 4, 9]
        assert [r for _, r in pool.imap(square, [4, 5], (), lambda: False)] in ([16, 25], [25, 16])
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
