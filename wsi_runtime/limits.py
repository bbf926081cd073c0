"""Per-user request limits, pure: the caller passes the time.

A token bucket per user: ``burst`` requests at once, refilled at ``rate`` per
second. One user running out never touches another user's bucket."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class LimitExceeded(RuntimeError):
    """A per-user limit reached; ``retry_after`` is the hint in whole seconds
    (0: none). The scheduler answers RESOURCE_EXHAUSTED with it."""

    def __init__(self, message: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    rate: float  # tokens per second; 0 disables the limit
    burst: float
    max_tracked: int = 10_000  # buckets kept before idle (full) ones are dropped
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def acquire(self, user: str, now: float) -> float:
        """0 if the request may go ahead (and takes a token), else the seconds
        to wait until a token is there."""
        if self.rate <= 0:
            return 0.0
        bucket = self._buckets.get(user)
        if bucket is None:
            if len(self._buckets) >= self.max_tracked:
                self.forget_idle(now)
            bucket = self._buckets[user] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def blocked(self, key: str, now: float) -> float:
        """The seconds ``acquire`` would make this key wait now, taking nothing."""
        bucket = self._buckets.get(key)
        if self.rate <= 0 or bucket is None:
            return 0.0
        tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def forget_idle(self, now: float) -> None:
        """Drops full buckets (users idle long enough to have refilled), so the
        table does not grow with every user ever seen."""
        full_after = self.burst / self.rate if self.rate > 0 else 0
        for user in [u for u, b in self._buckets.items() if now - b.updated >= full_after]:
            del self._buckets[user]


def retry_after(seconds: float) -> int:
    """Whole seconds for a Retry-After hint, at least 1."""
    return max(1, math.ceil(seconds))
