"""``python -m wsi_gateway``: the HTTP gateway (uvicorn)."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from wsi_gateway.app import create_app
from wsi_protocol import addresses
from wsi_runtime import lifetime, logs, serving, settings


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="wsi-gateway", description="HTTP gateway to the scheduler"
    )
    settings.add(parser, "--host", "127.0.0.1", "address to bind")
    settings.add(parser, "--gateway-port", addresses.GATEWAY_PORT, "HTTP port (0: a free one)")
    settings.add(parser, "--scheduler-address", addresses.SCHEDULER, "the scheduler's address")
    settings.add(
        parser, "--results-dir", Path("results"), "the workers' results folder, to serve files"
    )
    settings.add(
        parser, "--sse-keepalive", 15.0, "seconds between keep-alive comments on idle streams"
    )
    settings.add_logging(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    lifetime.follow_launcher()
    args = parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    # Bind first, so port 0 works and the address printed is the real one.
    try:
        serving.check_port_free(args.host, args.gateway_port, "gateway")
    except serving.StartupError as exc:
        sys.exit(f"wsi-gateway: error: {exc}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.gateway_port))
    except OSError as exc:
        sys.exit(
            f"wsi-gateway: error: cannot listen on {args.host}:{args.gateway_port}:"
            f" {exc.strerror or exc}"
        )
    host, port = sock.getsockname()[:2]
    app = create_app(args.scheduler_address, args.results_dir, args.sse_keepalive)
    config = uvicorn.Config(app, log_level=args.log_level.lower(), timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    serving.announce(
        "gateway listening on %s:%d (http://%s:%d/, scheduler %s)",
        host,
        port,
        host,
        port,
        args.scheduler_address,
    )
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
