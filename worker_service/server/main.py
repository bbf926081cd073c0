"""The worker process: its settings, and serving until signalled (`python -m worker_service`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from worker_service.backends import registry as backend_registry
from worker_service.backends.base import ENGINES, ModelSettings
from worker_service.pipeline.context import DEFAULT_MAX_TILES
from worker_service.pipeline.tile_pool import TilePool
from worker_service.server.membership import Membership
from worker_service.server.metrics import WorkerMetrics
from worker_service.server.servicer import WorkerServicer
from wsi_protocol import addresses
from wsi_protocol.worker.v1 import worker_pb2, worker_pb2_grpc
from wsi_runtime import lifetime, serving, settings, tls, worker_secret
from wsi_runtime.cpus import available_cpus
from wsi_runtime.job_params import BACKENDS
from wsi_runtime.metrics import RpcMetrics

log = logging.getLogger("wsi.worker")
DEFAULT_SLOTS = 4  # the scheduler's default cap: out of the box, 4 jobs run on any machine
SERVICE_NAME = worker_pb2.DESCRIPTOR.services_by_name["Worker"].full_name


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wsi-worker", description="WSI analysis worker")
    settings.add(parser, "--worker-port", addresses.WORKER_PORT, "gRPC port (0: a free one)")
    settings.add(
        parser,
        "--slots",
        DEFAULT_SLOTS,
        "jobs run at once (they share the tile pool: slots are about concurrency, not cores)",
    )
    settings.add(
        parser,
        "--processes",
        available_cpus(),
        "tile-processing processes (default: the CPUs this worker may use: its affinity"
        " and CPU quota, a container's limit)",
    )
    settings.add(
        parser, "--max-tiles-per-job", DEFAULT_MAX_TILES, "tiles one job may cover; more: FAILED"
    )
    settings.add(parser, "--results-dir", Path("results"), "where job results are written")
    settings.add(parser, "--progress-interval", 0.2, "seconds between progress reports")
    settings.add(
        parser,
        "--default-backend",
        "auto",
        "backend of a job that names none (auto: learned wherever its weights and ONNX Runtime"
        " or a GPU are there, else classical)",
        choices=("auto", *BACKENDS),
    )
    _add_model_settings(parser)
    settings.add(
        parser,
        "--scheduler",
        "",
        "join this scheduler (host:port) by itself, with heartbeats (else: be listed in"
        " the scheduler's --worker-addresses)",
    )
    settings.add(
        parser,
        "--advertise-address",
        "",
        "host:port the scheduler dials to reach this worker (default: --host and the bound"
        " port; bound to every interface, this host's address on its route to --scheduler)",
    )
    worker_secret.add_setting(parser)
    tls.add_settings(parser)
    settings.add_metrics(parser, addresses.WORKER_METRICS_PORT)
    settings.add_common(parser, grace=5.0)
    return parser.parse_args(argv)


def _add_model_settings(parser: argparse.ArgumentParser) -> None:
    defaults = ModelSettings()
    settings.add(
        parser,
        "--model-device",
        defaults.device,
        "where the model backends run: auto (cuda when PyTorch sees one), cpu, cuda, cuda:N",
        type=_device,
    )
    settings.add(
        parser,
        "--model-batch",
        "auto",
        "tiles per forward pass of a model backend: 1 to 256, or auto (1 on a CPU, 8 on a GPU)",
        type=_batch,
    )
    settings.add(
        parser,
        "--learned-engine",
        defaults.learned_engine,
        "the learned backend's runtime: auto (8-bit ONNX Runtime on a CPU, PyTorch on a GPU),"
        " onnx-int8, onnx (float32) or torch",
        choices=ENGINES,
    )
    settings.add(
        parser,
        "--instanseg-model",
        defaults.instanseg_model,
        "the InstanSeg brightfield_nuclei TorchScript file",
    )


def _checked_by_model_settings(field: str, kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type whose value ``ModelSettings`` itself checks (one set of
    rules for flags and for settings made in code)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
            ModelSettings(**{field: value})
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    return parse


_device = _checked_by_model_settings("device", lambda text: text.strip().lower())
_batch = _checked_by_model_settings(
    "batch_size", lambda text: None if text.strip().lower() == "auto" else int(text)
)


def model_settings(args: argparse.Namespace) -> ModelSettings:
    return ModelSettings(
        device=args.model_device,
        batch_size=args.model_batch,
        learned_engine=args.learned_engine,
        instanseg_model=Path(args.instanseg_model).expanduser().resolve(),
    )


async def serve(args: argparse.Namespace) -> None:
    serving.check_slide_roots(args.slide_roots)
    secret = worker_secret.load(args.worker_secret_file)
    registry = CollectorRegistry()
    server = serving.new_server(
        [RpcMetrics("wsi_worker", registry), worker_secret.RequireSecret(secret, SERVICE_NAME)],
        args.max_request_mb,
    )
    files = tls.from_args(args)
    credentials = tls.server_credentials(files)
    address = serving.bind(server, args.host, args.worker_port, credentials)
    advertised = args.advertise_address or address
    if args.scheduler and not args.advertise_address and args.host in serving.WILDCARD_HOSTS:
        # Bound to every interface: the address the scheduler can dial is this
        # host's on the route to it (a pod's IP, a node's).
        advertised = serving.route_address(args.scheduler, int(address.rpartition(":")[2]))
    stop_metrics = serving.serve_metrics("worker", registry, args.host, args.metrics_port)
    models = model_settings(args)
    pool = TilePool(args.processes, args.slide_roots)
    await asyncio.get_running_loop().run_in_executor(None, pool.warm_up)
    servicer = WorkerServicer(
        slots=max(1, args.slots),
        results_dir=args.results_dir.resolve(),
        slide_roots=args.slide_roots,
        pool=pool,
        progress_interval=args.progress_interval,
        metrics=WorkerMetrics(registry),
        max_tiles=args.max_tiles_per_job,
        default_backend=backend_registry.default_backend(args.default_backend, models),
        models=models,
    )
    worker_pb2_grpc.add_WorkerServicer_to_server(servicer, server)
    health = await serving.start(server, SERVICE_NAME)
    serving.announce(
        "worker listening on %s%s (%d slots, results in %s, default backend %s)",
        address,
        " (TLS)" if credentials else "",
        servicer.slots,
        servicer.results_dir,
        servicer.default_backend,
    )
    membership = None
    if args.scheduler:
        membership = Membership(
            args.scheduler, advertised, servicer.info, secret, tls.channel_credentials(files)
        )
        joining = asyncio.create_task(membership.run())

    async def stop() -> None:
        if membership is not None:
            joining.cancel()
            await membership.leave()

    await serving.run_until_signalled(server, health, args.grace, stop)
    stop_metrics()
    servicer.close()
    pool.close()


def main(argv: Sequence[str] | None = None) -> None:
    lifetime.follow_launcher()
    serving.run_main("wsi-worker", serve, parse_args(argv))
