"""The worker's process pool for tiles, shared by all its jobs.

Processes are forked from a fork server (never from the worker itself: the
gRPC server's threads must not be copied into children): a process of its
own, started once, that imports the segmentation stack before it forks, so
each pool process starts in milliseconds instead of importing it again (a
second of CPU each: on a 16-core worker, 16 s at every start and after a
crash). They are started before the server accepts calls. Each job
keeps a bounded number of tiles in flight, its share of twice the pool size,
so concurrent jobs interleave fairly and memory stays flat however many tiles
a slide has."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from worker_service.errors import JobCancelled, PoolCrashed
from worker_service.pipeline import pool_process
from worker_service.pipeline.cancel_board import CancelBoard
from worker_service.pipeline.fork_server import PRELOADED

T = TypeVar("T")
R = TypeVar("R")


class TilePool:
    def __init__(self, processes: int, slide_roots: Sequence[Path] = ()) -> None:
        self.processes = max(1, processes)
        self.slide_roots = [Path(root) for root in slide_roots]
        self._lock = threading.Lock()
        self._jobs = 0
        self.cancel_board = CancelBoard()
        # Its write end lives in this process only: the pool processes see
        # its end when the worker dies, however it dies.
        self._worker_alive, self._alive_writer = multiprocessing.get_context("forkserver").Pipe(
            duplex=False
        )
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOADED)
        return ProcessPoolExecutor(
            self.processes,
            mp_context=context,
            initializer=pool_process.start_process,
            initargs=(self.cancel_board.array, self.slide_roots, self._worker_alive),
        )

    def _replace_broken(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is broken:
                self._executor = self._new_executor()
        broken.shutdown(wait=False, cancel_futures=True)

    def _submit(self, fn: Callable[..., R], *args: Any) -> Future[R]:
        executor = self._executor
        try:
            return executor.submit(fn, *args)
        except BrokenProcessPool:
            self._replace_broken(executor)
            return self._executor.submit(fn, *args)

    def _result(self, future: Future[R]) -> R:
        try:
            return future.result()
        except BrokenProcessPool as exc:
            raise self._crashed(exc) from exc

    def _crashed(self, exc: BrokenProcessPool) -> PoolCrashed:
        self._replace_broken(self._executor)
        return PoolCrashed(f"a tile-processing process died: {exc}")

    def warm_up(self) -> None:
        """Starts every process now (and imports the segmentation stack in it)."""
        futures = [self._submit(pool_process.warm_up) for _ in range(self.processes)]
        for future in futures:
            self._result(future)

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
        """Runs ``fn(item, *extra, stop_token)`` for every item, yielding (item,
        result) as they complete. Stops submitting once ``cancelled()``; raises
        JobCancelled then. However the caller stops (a cancel, an error, closing
        the iterator), ``stop_token`` is marked on the cancel board, so that tasks
        already started or queued can end at their next
        ``pool_process.is_cancelled(stop_token)`` instead of running on."""
        with self._lock:
            self._jobs += 1
        stop_token = self.cancel_board.new_token()
        pending: dict[Future[R], T] = {}
        source = iter(items)
        exhausted = False
        try:
            while True:
                if cancelled():
                    raise JobCancelled()
                while not exhausted and len(pending) < self.window():
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                        break
                    pending[self._submit(fn, item, *extra, stop_token)] = item
                if not pending:
                    return
                done, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), self._result(future)
        finally:
            if pending:
                self.cancel_board.cancel(stop_token)
            for future in pending:
                future.cancel()
            with self._lock:
                self._jobs -= 1

    def call(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` in a pool process; blocks this thread (not the GIL) meanwhile."""
        return self._result(self._submit(fn, *args))

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` in a pool process, awaited on the event loop: no thread
        waits for it. Cancelling the await drops the task if it has not started."""
        try:
            return await asyncio.wrap_future(self._submit(fn, *args))
        except BrokenProcessPool as exc:
            raise self._crashed(exc) from exc

    def map_all(self, fn: Callable[..., R], items: Iterable[T], extra: tuple[Any, ...]) -> list[R]:
        """Results in the order of ``items``."""
        futures = [self._submit(fn, item, *extra) for item in items]
        return [self._result(future) for future in futures]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
