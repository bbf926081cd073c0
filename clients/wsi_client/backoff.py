"""Retry delays, pure: exponential growth with a cap and jitter. The caller
supplies the randomness, so the schedule is testable."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """``attempts`` tries in all, so at most ``attempts - 1`` waits."""

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    attempts: int = 6

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.multiplier < 1:
            raise ValueError("need 0 < initial <= maximum and multiplier >= 1")
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    def delays(self, fraction: Callable[[], float] = random.random) -> Iterator[float]:
        """The waits between tries. Each is drawn from [d/2, d] ("equal jitter")
        so that many clients retrying together spread out."""
        delay = self.initial
        for _ in range(self.attempts - 1):
            yield delay / 2 + delay / 2 * fraction()
            delay = min(self.maximum, delay * self.multiplier)
