"""Fan-out of one workflow's numbered events to its watchers.

A watcher never slows the scheduler or other watchers: each has a bounded
queue, and one that falls behind is dropped to a fresh snapshot instead of
blocking the publisher. The last ``RETAINED`` events are kept so a watcher that
reconnects with ``after_sequence`` gets exactly what it missed."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

RETAINED = 1024
QUEUE_SIZE = 512


class Subscription:
    def __init__(self, feed: WorkflowFeed, queue_size: int) -> None:
        self.feed = feed
        self.queue: asyncio.Queue[Any] = asyncio.Queue(queue_size)
        self.overflowed = False

    def push(self, event: Any) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # Too slow: forget the backlog; the reader resynchronises from a snapshot.
            self.overflowed = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)

    async def next(self) -> Any | None:
        """The next event, or None when the watcher must resync from a snapshot."""
        event = await self.queue.get()
        if event is None:
            self.overflowed = False
        return event

    def close(self) -> None:
        self.feed.subscribers.discard(self)


class WorkflowFeed:
    def __init__(self) -> None:
        self.sequence = 1  # the workflow as created
        self.retained: deque[Any] = deque(maxlen=RETAINED)
        self.subscribers: set[Subscription] = set()

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence

    def publish(self, event: Any) -> None:
        self.retained.append(event)
        for sub in self.subscribers:
            sub.push(event)

    def subscribe(self, queue_size: int = QUEUE_SIZE) -> Subscription:
        sub = Subscription(self, queue_size)
        self.subscribers.add(sub)
        return sub

    def replay_after(self, sequence: int) -> list[Any] | None:
        """Retained events after ``sequence``, or None if some were already dropped."""
        if sequence >= self.sequence:
            return []
        if not self.retained or self.retained[0].sequence > sequence + 1:
            return None
        return [e for e in self.retained if e.sequence > sequence]
