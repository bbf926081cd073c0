"""The scheduler's background tasks (probes, job streams, channel closes),
supervised: a task that raised is a bug, never a reason to stop dispatching,
so it is logged with its traceback, counted, and the rest goes on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("wsi.scheduler.dispatch")


class Background:
    def __init__(self, on_error: Callable[[str], None] = lambda kind: None) -> None:
        self.on_error = on_error  # told the kind of task that raised (a metric)
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None], kind: str, subject: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{kind} {subject}")
        self._tasks.add(task)

        def supervise(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            if not done.cancelled() and done.exception() is not None:
                self.report(kind, done.get_name(), done.exception())

        task.add_done_callback(supervise)

    def report(self, kind: str, what: str, exc: BaseException | None) -> None:
        log.error("unexpected error in %s", what, exc_info=exc)
        self.on_error(kind)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
