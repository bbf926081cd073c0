"""What every gRPC server of the project does the same way: health checking,
server reflection, and a graceful stop on SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from wsi_runtime import logs, memory, metrics, settings

log = logging.getLogger("wsi.serving")

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]


# Both ends of a long stream ping: the server notices a vanished client (a
# killed scheduler) within seconds and tolerates the clients' frequent pings.
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 3_000),
    ("grpc.http2.ping_timeout_ms", 3_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 1_000),
    ("grpc.http2.max_ping_strikes", 0),
]
# Every channel of one service to another (scheduler to worker, worker to
# scheduler, gateway to scheduler): a peer that goes silent without closing
# the connection (power, network, a pod whose address vanished, a frozen
# host) is noticed within about keepalive_time + keepalive_timeout; its calls
# end UNAVAILABLE and the channel connects again, resolving the name anew.
# Without these, TCP takes minutes to give up and every call waits meanwhile.
# (gRPC also sends pings of its own for flow control; ping_timeout bounds how
# long any of them may go unanswered, and pings may go out without data.)
KEEPALIVE_CHANNEL = [
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 3_000),
    ("grpc.http2.ping_timeout_ms", 3_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # A peer back at another address (a replaced pod reached by its name, a
    # moved host) is found in seconds: the name is resolved again at most
    # every 2 s while connecting fails (gRPC's default: 30 s), and a failed
    # connection is tried again within 2 s at most (default: up to 120 s), so
    # a peer that starts late is reached within about 2 s of listening.
    ("grpc.dns_min_time_between_resolutions_ms", 2_000),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]
DEFAULT_MAX_REQUEST_MB = 4.0


class StartupError(RuntimeError):
    """A server cannot start (a port in use, a bad setting); the message is
    one line a person can act on, printed instead of a traceback."""


def new_server(
    interceptors: Sequence[Any] = (), max_request_mb: float = DEFAULT_MAX_REQUEST_MB
) -> grpc.aio.Server:
    """Requests larger than ``max_request_mb`` end RESOURCE_EXHAUSTED unread."""
    options = [
        *SERVER_OPTIONS,
        ("grpc.max_receive_message_length", int(max_request_mb * 2**20)),
        # gRPC's default lets a second server bind a port in use and share its
        # calls: a second scheduler must fail instead.
        ("grpc.so_reuseport", 0),
    ]
    return grpc.aio.server(options=options, interceptors=list(interceptors))


def add_health_and_reflection(
    server: grpc.aio.Server, service_names: Sequence[str]
) -> health_aio.HealthServicer:
    servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return servicer


def check_port_free(host: str, port: int, what: str) -> None:
    """StartupError, with one line to show, if ``host:port`` cannot be bound
    (port 0 always can). Checked before gRPC tries, which would also log a
    multi-line error of its own."""
    if port == 0:
        return
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # As the servers bind: a port held only by closing connections is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port} ({what}): {exc.strerror}") from None


def check_slide_roots(roots: Sequence[Path]) -> None:
    """A slide root named in the settings must be a folder (a typo would
    otherwise refuse every job later); the default ``./slides`` may be missing."""
    for root in roots:
        if root.is_dir():
            continue
        if root == settings.DEFAULT_SLIDE_ROOT:
            log.warning("slide root %s does not exist (yet): no slide can be found", root)
            continue
        raise StartupError(
            f"slide root {str(root)!r} (--slide-roots, WSI_SLIDE_ROOTS) is not a folder"
        )


def bind(
    server: grpc.aio.Server,
    host: str,
    port: int,
    credentials: grpc.ServerCredentials | None = None,
) -> str:
    """Binds the port now, before any state is loaded: a second server on a
    port in use stops here, having touched nothing. Port 0 picks a free port;
    returns the bound address. With ``credentials``, the port speaks TLS only."""
    check_port_free(host, port, "gRPC")
    try:
        if credentials is None:
            bound = server.add_insecure_port(f"{host}:{port}")
        else:
            bound = server.add_secure_port(f"{host}:{port}", credentials)
    except RuntimeError:
        bound = 0
    if not bound:
        raise StartupError(f"cannot listen on {host}:{port}: the address is in use or not local")
    return f"{host}:{bound}"


WILDCARD_HOSTS = ("0.0.0.0", "[::]", "::")


def route_address(target: str, port: int) -> str:
    """``host:port`` with the host this machine's address on its route to
    ``target`` (host:port): what a peer there dials to reach a server bound
    to every interface (a pod's IP under Kubernetes, a node's under Slurm).
    No packet is sent: a UDP socket is only connected. StartupError if the
    target's name does not resolve or no route leads there."""
    host, _, target_port = target.rpartition(":")
    host = host.strip("[]")
    try:
        family, kind, proto, _, peer = socket.getaddrinfo(
            host, int(target_port or 0), type=socket.SOCK_DGRAM
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.connect(peer)
            local = probe.getsockname()[0]
    except (OSError, ValueError) as exc:
        raise StartupError(
            f"cannot find this host's address towards {target}: {exc};"
            " give --advertise-address (the host:port the scheduler dials)"
        ) from None
    return f"[{local}]:{port}" if ":" in local else f"{local}:{port}"


async def start(
    server: grpc.aio.Server, service_name: str, also_reflected: Sequence[str] = ()
) -> health_aio.HealthServicer:
    """Adds health and reflection, starts, reports SERVING."""
    health_servicer = add_health_and_reflection(server, [service_name, *also_reflected])
    await server.start()
    for name in ("", service_name):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return health_servicer


async def run_until_signalled(
    server: grpc.aio.Server,
    health_servicer: health_aio.HealthServicer,
    grace: float,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Waits for SIGTERM/SIGINT, then reports NOT_SERVING, lets ``on_stop`` wind
    down background work and gives in-flight calls ``grace`` seconds."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    trimming = asyncio.ensure_future(_trim_memory_periodically())
    await stop.wait()
    trimming.cancel()
    log.info("shutting down (grace %.1fs)", grace)
    await health_servicer.enter_graceful_shutdown()
    if on_stop is not None:
        await on_stop()
    await server.stop(grace)
    log.info("stopped")


async def _trim_memory_periodically() -> None:
    while True:
        await asyncio.sleep(memory.TRIM_INTERVAL_S)
        await asyncio.to_thread(memory.trim)  # walks the whole heap: not on the loop


def run_main(
    prog: str,
    serve: Callable[[argparse.Namespace], Coroutine[Any, Any, None]],
    args: argparse.Namespace,
    startup_errors: tuple[type[Exception], ...] = (),
) -> None:
    """What every server's main does once its flags are parsed: logging, the
    malloc arena cap, the event loop. An error that stops the start (a port in
    use, a damaged journal) is one line and exit status 1, not a traceback."""
    logs.configure(args.log_level, args.log_format)
    memory.limit_malloc_arenas()
    fatal: tuple[type[Exception], ...] = (StartupError, *startup_errors)
    try:
        asyncio.run(serve(args))
    except fatal as exc:
        sys.exit(f"{prog}: error: {exc}")


def serve_metrics(
    name: str, registry: CollectorRegistry, host: str, port: int
) -> Callable[[], None]:
    """Starts the Prometheus endpoint unless ``port`` is negative; returns its stopper."""
    if port < 0:
        return lambda: None
    try:
        url, stop = metrics.serve(registry, host, port)
    except OSError as exc:
        raise StartupError(
            f"cannot serve {name} metrics on {host}:{port}: {exc.strerror or exc}"
            " (--metrics-port: another port, 0 for a free one, -1 for none)"
        ) from None
    announce("%s metrics on %s", name, url)
    return stop


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def warn_trusted_headers(host: str, what: str) -> None:
    """Trusted-header mode on an address others can reach lets anyone act as anyone."""
    if not is_loopback(host):
        log.warning(
            "%s listens on %s in trusted-header mode: whoever reaches it can act as any user"
            " by naming them in x-user-id / X-User-ID. Use it behind a proxy that"
            " authenticates and sets that header, or set WSI_AUTH_TOKENS for API tokens.",
            what,
            host,
        )


def announce(message: str, *args: object) -> None:
    """The start-up line (address and settings) goes to stdout whatever the log
    level, so launchers and tests can always find where a server listens."""
    print(message % args, flush=True)
