"""The worker's Prometheus metrics: jobs by outcome, tiles processed and
their processing time, and how busy its slots are."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from wsi_protocol.job_types import JobType

OUTCOMES = ("succeeded", "failed", "cancelled")


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.jobs = Counter(
            "wsi_worker_jobs_total",
            "Jobs this worker ran to an end, by job type and outcome.",
            ["job_type", "outcome"],
            registry=registry,
        )
        self.tiles = Counter(
            "wsi_worker_tiles_processed_total",
            "Tiles read and segmented, by job type.",
            ["job_type"],
            registry=registry,
        )
        self.tile_seconds = Histogram(
            "wsi_worker_tile_processing_seconds",
            "Time to read and segment one tile in a pool process, by job type.",
            ["job_type"],
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        for job_type in JobType:
            self.tiles.labels(job_type)
            for outcome in OUTCOMES:
                self.jobs.labels(job_type, outcome)

    def tile_observer(self, job_type: str) -> Callable[[float], None]:
        tiles, seconds = self.tiles.labels(job_type), self.tile_seconds.labels(job_type)

        def observe(elapsed: float) -> None:
            tiles.inc()
            seconds.observe(elapsed)

        return observe

    def job_ended(self, job_type: str, outcome: str) -> None:
        self.jobs.labels(job_type, outcome).inc()

    def watch_slots(self, slots: int, running: Callable[[], int]) -> None:
        Gauge("wsi_worker_slots", "Jobs this worker runs at once.", registry=self.registry).set(
            slots
        )
        Gauge(
            "wsi_worker_jobs_running", "Jobs running on this worker now.", registry=self.registry
        ).set_function(running)
