"""The worker's process pool for tiles, shared by all its jobs.

Processes are spawned (never forked: the gRPC server's threads must not be
copied into children) and started before the server accepts calls. Each job
keeps a bounded number of tiles in flight, its share of twice the pool size,
so concurrent jobs interleave fairly and memory stays flat however many tiles
a slide has."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

from worker_service import tile_tasks

T = TypeVar("T")
R = TypeVar("R")


class Cancelled(Exception):
    pass


class TilePool:
    def __init__(self, processes: int) -> None:
        self.processes = max(1, processes)
        self._executor = ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=tile_tasks.exit_with_parent,
            initargs=(os.getpid(),),
        )
        self._lock = threading.Lock()
        self._jobs = 0

    def warm_up(self) -> None:
        """Starts every process now (and imports the segmentation stack in it)."""
        futures = [self._executor.submit(tile_tasks.warm_up) for _ in range(self.processes)]
        for future in futures:
            future.result()

    def window(self) -> int:
        with self._lock:
            return max(1, (2 * self.processes) // max(1, self._jobs))

    def imap(
        self,
        fn: Callable[..., R],
        items: Iterable[T],
        extra: tuple[Any, ...],
        cancelled: Callable[[], bool],
    ) -> Iterator[tuple[T, R]]:
        """Runs ``fn(item, *extra)`` for every item, yielding (item, result) as they
        complete. Stops submitting once ``cancelled()``; raises Cancelled then."""
        with self._lock:
            self._jobs += 1
        pending: dict[Future[R], T] = {}
        source = iter(items)
        exhausted = False
        try:
            while True:
                if cancelled():
                    raise Cancelled()
                while not exhausted and len(pending) < self.window():
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                        break
                    pending[self._executor.submit(fn, item, *extra)] = item
                if not pending:
                    return
                done, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()
        finally:
            for future in pending:
                future.cancel()
            with self._lock:
                self._jobs -= 1

    def call(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` in a pool process; blocks this thread (not the GIL) meanwhile."""
        return self._executor.submit(fn, *args).result()

    def map_all(self, fn: Callable[..., R], items: Iterable[T], extra: tuple[Any, ...]) -> list[R]:
        """Results in the order of ``items``."""
        listed = list(items)
        columns = [[value] * len(listed) for value in extra]
        return list(self._executor.map(fn, listed, *columns))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
