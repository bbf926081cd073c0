"""A per-user limit on viewer calls (a slide's Deep Zoom tiles, nuclei by box,
nuclei density): at most ``running`` of one user's calls at the workers at
once, up to ``waiting`` more in line behind them, any more refused at once
with a hint to retry. A burst of one user (a viewer panning fast, a script
asking for twenty whole-slide boxes) then waits behind its own calls, not
everyone's, and holds a bounded share of the workers' viewer threads and of
the memory that answers take on their way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from wsi_runtime.limits import LimitExceeded

# A browser opens about 6 connections per host: a viewer's own tiles never wait.
RUNNING_PER_USER = 6
WAITING_PER_USER = 64


class ViewerBusy(LimitExceeded):
    """This user already has ``running`` viewer calls at the workers and
    ``waiting`` more in line: retry in a second."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=1)


@dataclass
class _Lane:
    turns: asyncio.Semaphore
    holders: int = 0  # calls running or waiting


class ViewerGate:
    def __init__(self, running: int = RUNNING_PER_USER, waiting: int = WAITING_PER_USER) -> None:
        if running < 1 or waiting < 0:
            raise ValueError("need running >= 1 and waiting >= 0")
        self.running, self.waiting = running, waiting
        self._lanes: dict[str, _Lane] = {}

    def holding(self, user: str) -> int:
        """The user's calls running or waiting now."""
        lane = self._lanes.get(user)
        return lane.holders if lane else 0

    @asynccontextmanager
    async def turn(self, user: str) -> AsyncIterator[None]:
        """Held for the whole call (a streamed answer included)."""
        lane = self._lanes.get(user)
        if lane is None:
            lane = self._lanes[user] = _Lane(asyncio.Semaphore(self.running))
        if lane.holders >= self.running + self.waiting:
            raise ViewerBusy(
                f"{self.running} viewer calls of yours are running and {self.waiting} more"
                " are waiting: retry when some have finished"
            )
        lane.holders += 1
        try:
            async with lane.turns:
                yield
        finally:
            lane.holders -= 1
            if not lane.holders:
                del self._lanes[user]
