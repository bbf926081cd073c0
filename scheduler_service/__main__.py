"""``python -m scheduler_service``: run the scheduler."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from scheduler_service import convert, recovery, retention, token_admin
from scheduler_service import registry as registry_service
from scheduler_service.authentication import Authenticator
from scheduler_service.dispatcher import Dispatcher
from scheduler_service.job_runner import JOB_SILENCE_S
from scheduler_service.journal import MEMORY, JournalDamaged, JournalError, SqliteJournal
from scheduler_service.observability import SchedulerMetrics, TransitionLog
from scheduler_service.policy import SchedulingPolicy
from scheduler_service.service import SchedulerServicer
from scheduler_service.store import JobRecord, JobTransition, Store, WorkflowRecord
from scheduler_service.worker_links import grpc_connect
from wsi_protocol import addresses
from wsi_protocol.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from wsi_protocol.worker.v1 import worker_pb2_grpc
from wsi_runtime import lifetime, serving, settings, tls, worker_secret
from wsi_runtime.limits import RateLimiter
from wsi_runtime.metrics import RpcMetrics
from wsi_runtime.token_file import TokenFile, TokenFileError

log = logging.getLogger("wsi.scheduler")
RETENTION_CHECK_S = 60.0
SERVICE_NAME = scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wsi-scheduler", description="WSI workflow scheduler")
    settings.add(parser, "--scheduler-port", addresses.SCHEDULER_PORT, "gRPC port (0: a free one)")
    settings.add(
        parser,
        "--worker-addresses",
        addresses.WORKER,
        "comma-separated worker addresses (host:port); workers started with --scheduler"
        " join by themselves",
    )
    settings.add(
        parser,
        "--heartbeat-interval",
        2.0,
        "seconds between a joined worker's heartbeats; three missed: it is forgotten",
    )
    _add_limits(parser)
    _add_persistence(parser)
    _add_access(parser)
    tls.add_settings(parser)
    settings.add_metrics(parser, addresses.SCHEDULER_METRICS_PORT)
    settings.add_common(parser, grace=2.0)
    return parser.parse_args(argv)


def _add_limits(parser: argparse.ArgumentParser) -> None:
    """The scheduling caps and the per-user limits."""
    settings.add(parser, "--max-workers", 4, "jobs running at once, all users")
    settings.add(parser, "--max-active-users", 3, "users holding an active slot at once")
    settings.add(parser, "--max-attempts", 3, "runs of a job before a lost worker fails it")
    settings.add(
        parser,
        "--job-silence-s",
        JOB_SILENCE_S,
        "a running job whose worker sends nothing, not even a heartbeat, this long is"
        " taken back and retried",
    )
    settings.add(parser, "--max-jobs-per-workflow", 1000, "jobs one workflow may hold")
    settings.add(
        parser, "--min-tile-size", 128, "smallest tile_size a job may ask for, px (submit check)"
    )
    settings.add(parser, "--rate-limit", 20.0, "mutating calls per second per user (0: off)")
    settings.add(parser, "--rate-burst", 40.0, "mutating calls a user may make at once")
    settings.add(parser, "--max-pending-per-user", 10000, "PENDING jobs one user may have (0: off)")


def _add_persistence(parser: argparse.ArgumentParser) -> None:
    """Where the state survives restarts, and how long finished work is kept."""
    settings.add(
        parser,
        "--journal",
        "state/scheduler-journal.sqlite",
        f"SQLite journal the state survives restarts in ({MEMORY}: none)",
    )
    settings.add_switch(
        parser,
        "--journal-quarantine",
        "set damaged journal records aside (into the journal's quarantine table) and start"
        " without them, instead of refusing to start",
    )
    settings.add(
        parser,
        "--retention-hours",
        0.0,
        "prune finished workflows and their results this long after they end (0: keep)",
    )


def _add_access(parser: argparse.ArgumentParser) -> None:
    """Who may call: tokens, operators, the workers' secret."""
    settings.add(
        parser,
        "--auth-tokens",
        "",
        "API token file (lines 'USER_ID SHA256_HEX_OF_TOKEN'): set, callers need a token",
    )
    settings.add(
        parser,
        "--operators",
        "",
        "comma-separated user ids that GetStats shows each worker's address and last"
        " error (everyone else sees counts, slots and states)",
    )
    worker_secret.add_setting(parser)


def build(
    args: argparse.Namespace,
    registry: CollectorRegistry,
    secret: str,
    tls_files: tls.TlsFiles,
) -> tuple[Store, Dispatcher, SchedulerServicer, SqliteJournal, SchedulerMetrics]:
    policy = SchedulingPolicy(args.max_workers, args.max_active_users, args.max_attempts)
    metrics = SchedulerMetrics(registry)
    transition_log = TransitionLog()

    def on_transition(transition: JobTransition) -> None:
        transition_log(transition)
        metrics.observe(transition)

    def publish(store: Store, wf: WorkflowRecord, kind: str, job: JobRecord) -> None:
        wf.feed.publish(convert.change_event(store, wf, kind, job, store.now()))

    journal = SqliteJournal(args.journal)
    store = restore(args, journal, lambda clock: Store(policy, clock, publish), on_transition)
    workers = [a.strip() for a in args.worker_addresses.split(",") if a.strip()]
    dispatcher = Dispatcher(
        store,
        workers,
        grpc_connect(tls.channel_credentials(tls_files)),
        worker_secret=secret,
        on_error=lambda task: metrics.background_errors.labels(task).inc(),
        job_silence_s=args.job_silence_s,
    )
    servicer = SchedulerServicer(
        store,
        dispatcher,
        args.slide_roots,
        args.max_jobs_per_workflow,
        limiter=RateLimiter(args.rate_limit, max(1.0, args.rate_burst)),
        max_pending_per_user=args.max_pending_per_user,
        min_tile_size=args.min_tile_size,
        authenticate=authenticator(args.auth_tokens, args.host),
        operators=frozenset(u.strip() for u in args.operators.split(",") if u.strip()),
    )
    links = dispatcher.links
    metrics.watch_state(
        store,
        lambda: (links.slots_busy, links.slots_total, links.workers_connected),
        lambda: servicer.watch_streams,
    )
    return store, dispatcher, servicer, journal, metrics


def restore(
    args: argparse.Namespace,
    journal: SqliteJournal,
    new_store: Callable[[Callable[[], float]], Store],
    on_transition: Callable[[JobTransition], None],
) -> Store:
    """The store as the journal left it (damaged records quarantined when
    asked to), live from here on."""
    started = time.perf_counter()
    try:
        store, recovered = recovery.recover(
            journal.entries(), new_store, time.time, journal, on_transition, args.journal_quarantine
        )
    except recovery.DamagedInReplay as exc:
        journal.close()
        raise JournalDamaged(args.journal, exc.damaged) from None
    if recovered.quarantined:
        journal.quarantine(recovered.quarantined, time.time())
        log.warning(
            "journal %s: %d damaged records moved to its quarantine table: %s",
            args.journal,
            len(recovered.quarantined),
            "; ".join(f"{d.describe()}: {d.problem}" for d in recovered.quarantined[:5]),
        )
    if recovered.records:
        log.info(
            "journal %s: %d records replayed in %.2fs, %d workflows, %d running jobs requeued%s",
            args.journal,
            recovered.records,
            time.perf_counter() - started,
            recovered.workflows,
            recovered.requeued,
            f", {recovered.skipped} records skipped" if recovered.skipped else "",
        )
    return store


def authenticator(token_file: str, host: str) -> Authenticator:
    if token_file:
        try:
            return Authenticator(TokenFile(Path(token_file)).user_of)
        except TokenFileError as exc:
            raise serving.StartupError(str(exc)) from None
    serving.warn_trusted_headers(host, "scheduler")
    return Authenticator(tokens=None)


async def prune_periodically(
    store: Store,
    journal: SqliteJournal,
    dispatcher: Dispatcher,
    hours: float,
    metrics: SchedulerMetrics,
) -> None:
    interval = min(RETENTION_CHECK_S, hours * 3600 / 10)
    deleter = retention.Deleter(dispatcher.proxy.delete_results)
    while True:
        try:
            await deleter.run(retention.prune_expired(store, journal, time.time() - hours * 3600))
        except Exception:
            log.exception("unexpected error in retention; trying again next round")
            metrics.background_errors.labels("retention").inc()
        await asyncio.sleep(interval)


async def serve(args: argparse.Namespace) -> None:
    serving.check_slide_roots(args.slide_roots)
    registry = CollectorRegistry()
    secret = worker_secret.load(args.worker_secret_file)
    server = serving.new_server(
        [
            RpcMetrics("wsi_scheduler", registry),
            # Only workers (holding the shared secret) may join.
            worker_secret.RequireSecret(secret, registry_service.SERVICE_NAME),
        ],
        args.max_request_mb,
    )
    files = tls.from_args(args)
    address = serving.bind(server, args.host, args.scheduler_port, tls.server_credentials(files))
    stop_metrics = serving.serve_metrics("scheduler", registry, args.host, args.metrics_port)
    store, dispatcher, servicer, journal, metrics = build(args, registry, secret, files)
    tasks = []
    if args.retention_hours > 0:
        tasks.append(
            asyncio.create_task(
                prune_periodically(store, journal, dispatcher, args.retention_hours, metrics)
            )
        )

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        await dispatcher.close()

    scheduler_pb2_grpc.add_SchedulerServicer_to_server(servicer, server)
    worker_registry = registry_service.WorkerRegistry(dispatcher.links, args.heartbeat_interval)
    worker_pb2_grpc.add_WorkerRegistryServicer_to_server(worker_registry, server)
    tasks.append(asyncio.create_task(worker_registry.forget_silent_workers()))
    health = await serving.start(server, SERVICE_NAME, [registry_service.SERVICE_NAME])
    dispatcher.start()
    serving.announce(
        "scheduler listening on %s (workers %s, max %d jobs, %d active users)",
        address,
        args.worker_addresses,
        args.max_workers,
        args.max_active_users,
    )
    await serving.run_until_signalled(server, health, args.grace, stop)
    stop_metrics()
    journal.close()


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in token_admin.COMMANDS:
        sys.exit(token_admin.main(arguments))
    lifetime.follow_launcher()
    serving.run_main("wsi-scheduler", serve, parse_args(arguments), (JournalError,))


if __name__ == "__main__":
    main()
