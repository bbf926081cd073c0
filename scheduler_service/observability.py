"""What the scheduler tells operators: Prometheus metrics, and one JSON line
per job transition. Both hang off the store's transition hook and read the
live state at scrape time; nothing here changes scheduling."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scheduler_service.policy import State
from scheduler_service.store import JobTransition, Store
from wsi_runtime.job_params import JOB_TYPES

TRANSITIONS_LOGGER = "wsi.scheduler.transitions"
FINAL_STATES = tuple(state.value for state in State if state.terminal)
# Seconds: tiny test jobs up to multi-hour gigapixel segmentations.
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


class TransitionLog:
    """One JSON object per line and transition: job, workflow, user, branch,
    from, to, attempt, reason, and the seconds spent in the state it leaves."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(TRANSITIONS_LOGGER)

    def __call__(self, t: JobTransition) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        job = t.job
        self.logger.info(
            json.dumps(
                {
                    "event": "job_transition",
                    "time": round(t.time, 6),
                    "job": job.job_id,
                    "workflow": job.workflow_id,
                    "key": job.key,
                    "user": job.user,
                    "branch": job.branch,
                    "job_type": job.job_type,
                    "from": t.from_state,
                    "to": t.to_state,
                    "attempt": job.attempt,
                    "reason": t.reason,
                    "duration_s": round(t.seconds, 6),
                    "worker": job.worker,
                },
                separators=(",", ":"),
            )
        )


class SchedulerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.submitted = Counter(
            "wsi_scheduler_jobs_submitted_total",
            "Jobs accepted, by job type.",
            ["job_type"],
            registry=registry,
        )
        self.finished = Counter(
            "wsi_scheduler_jobs_finished_total",
            "Jobs that reached a final state, by job type and state.",
            ["job_type", "state"],
            registry=registry,
        )
        self.retries = Counter(
            "wsi_scheduler_job_retries_total",
            "Running jobs sent back to their branch because their worker was lost.",
            ["job_type"],
            registry=registry,
        )
        self.queue_wait = Histogram(
            "wsi_scheduler_job_queue_wait_seconds",
            "Time a job waited PENDING before it started (each attempt), by job type.",
            ["job_type"],
            registry=registry,
            buckets=JOB_BUCKETS,
        )
        self.run_time = Histogram(
            "wsi_scheduler_job_run_seconds",
            "Time a job ran (each attempt), by job type.",
            ["job_type"],
            registry=registry,
            buckets=JOB_BUCKETS,
        )
        self.background_errors = Counter(
            "wsi_scheduler_background_errors_total",
            "Unexpected exceptions in background work (dispatch, job streams, worker"
            " probes, retention), logged with their traceback; the work goes on.",
            ["task"],
            registry=registry,
        )
        for task in ("dispatch", "job", "probe", "retention"):
            self.background_errors.labels(task)
        for job_type in JOB_TYPES:  # every series exists from the start
            self.submitted.labels(job_type)
            self.retries.labels(job_type)
            for state in FINAL_STATES:
                self.finished.labels(job_type, state)

    def observe(self, t: JobTransition) -> None:
        job_type = t.job.job_type
        if t.from_state == "":
            self.submitted.labels(job_type).inc()
        elif t.from_state == "PENDING" and t.to_state == "RUNNING":
            self.queue_wait.labels(job_type).observe(t.seconds)
        elif t.from_state == "RUNNING":
            self.run_time.labels(job_type).observe(t.seconds)
            if t.to_state == "PENDING":
                self.retries.labels(job_type).inc()
        if t.to_state in FINAL_STATES:
            self.finished.labels(job_type, t.to_state).inc()

    def watch_state(
        self,
        store: Store,
        slots: Callable[[], tuple[int, int, int]],
        watch_streams: Callable[[], int],
    ) -> None:
        """Gauges read at scrape time. ``slots`` gives (busy, total, workers connected)."""
        policy = store.policy

        def gauge(name: str, doc: str, read: Callable[[], float]) -> None:
            Gauge(name, doc, registry=self.registry).set_function(read)

        gauge("wsi_scheduler_queue_depth", "PENDING jobs.", lambda: policy.pending_count)
        gauge("wsi_scheduler_running_jobs", "RUNNING jobs.", lambda: policy.running_count)
        gauge(
            "wsi_scheduler_active_users",
            "Users holding an active slot.",
            lambda: len(policy.active_users),
        )
        gauge(
            "wsi_scheduler_waiting_users",
            "Users waiting for an active slot.",
            lambda: len(policy.waiting_users),
        )
        gauge("wsi_scheduler_worker_slots_busy", "Worker slots running a job.", lambda: slots()[0])
        gauge("wsi_scheduler_worker_slots", "Slots of connected workers.", lambda: slots()[1])
        gauge("wsi_scheduler_workers_connected", "Workers reachable now.", lambda: slots()[2])
        gauge("wsi_scheduler_max_workers", "The cap on running jobs.", lambda: policy.max_workers)
        gauge(
            "wsi_scheduler_watch_streams",
            "WatchWorkflow streams open (stream subscribers).",
            watch_streams,
        )
