"""What the worker gives a running job: how to see a cancel, where to report
progress and tile timings, its limits and the worker's model settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from worker_service.backends.base import ModelSettings
from worker_service.errors import JobCancelled

DEFAULT_MAX_TILES = 100_000  # tiles one job may cover (worker setting --max-tiles-per-job)


@dataclass(frozen=True)
class JobContext:
    cancelled: Callable[[], bool] = lambda: False
    report: Callable[[int, int], None] = lambda done, total: None
    on_tile: Callable[[float], None] = lambda seconds: None
    max_tiles: int = DEFAULT_MAX_TILES
    default_backend: str = "classical"  # for a job that names none (worker setting)
    models: ModelSettings = field(default_factory=ModelSettings)

    def check(self) -> None:
        """Between phases: stop here if the job was cancelled."""
        if self.cancelled():
            raise JobCancelled()
