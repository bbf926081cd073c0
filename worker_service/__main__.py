"""``python -m worker_service``: run a worker."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from clients.wsi.worker.v1 import worker_pb2, worker_pb2_grpc
from worker_service.observability import WorkerMetrics
from worker_service.service import WorkerServicer
from worker_service.tile_pool import TilePool
from wsi_runtime import logs, memory, serving, settings
from wsi_runtime.metrics import RpcMetrics

log = logging.getLogger("wsi.worker")
SERVICE_NAME = worker_pb2.DESCRIPTOR.services_by_name["Worker"].full_name


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wsi-worker", description="WSI analysis worker")
    settings.add(parser, "--worker-port", 50052, "gRPC port (0 picks a free one)")
    settings.add(parser, "--slots", os.cpu_count() or 1, "jobs run at once")
    settings.add(parser, "--processes", os.cpu_count() or 1, "tile-processing processes")
    settings.add(parser, "--results-dir", Path("results"), "where job results are written")
    settings.add(parser, "--progress-interval", 0.2, "seconds between progress reports")
    settings.add_metrics(parser, 9102)
    settings.add_common(parser, grace=5.0)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    registry = CollectorRegistry()
    pool = TilePool(args.processes)
    await asyncio.get_running_loop().run_in_executor(None, pool.warm_up)
    servicer = WorkerServicer(
        slots=max(1, args.slots),
        results_dir=args.results_dir.resolve(),
        slide_roots=args.slide_roots,
        pool=pool,
        progress_interval=args.progress_interval,
        metrics=WorkerMetrics(registry),
    )
    server = serving.new_server([RpcMetrics("wsi_worker", registry)], args.max_request_mb)
    worker_pb2_grpc.add_WorkerServicer_to_server(servicer, server)
    health, address = await serving.start(server, SERVICE_NAME, args.host, args.worker_port)
    stop_metrics = serving.serve_metrics("worker", registry, args.host, args.metrics_port)
    serving.announce(
        "worker listening on %s (%d slots, results in %s)",
        address,
        servicer.slots,
        servicer.results_dir,
    )
    await serving.run_until_signalled(server, health, args.grace)
    stop_metrics()
    servicer.close()
    pool.close()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    memory.limit_malloc_arenas()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
