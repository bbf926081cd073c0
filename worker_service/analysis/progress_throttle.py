"""Throttling of progress reports, pure: the caller passes the time."""

from __future__ import annotations


class ProgressThrottle:
    """Lets through the first and the last update and at most one per
    ``interval`` seconds in between, so a fast tile loop does not flood the
    scheduler and its watchers."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: float | None = None

    def should_emit(self, now: float, done: int, total: int) -> bool:
        if self._last is None or done >= total or now - self._last >= self.interval:
            self._last = now
            return True
        return False
