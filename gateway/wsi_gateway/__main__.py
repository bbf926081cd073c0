"""``python -m wsi_gateway``: the HTTP gateway (uvicorn)."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from wsi_gateway.app import GatewaySettings, create_app
from wsi_gateway.connections import HEADER_TIMEOUT_S, with_header_timeout
from wsi_protocol import addresses
from wsi_runtime import lifetime, logs, serving, settings, tls
from wsi_runtime.token_file import TokenFile, TokenFileError

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="wsi-gateway", description="HTTP gateway to the scheduler"
    )
    settings.add(parser, "--host", "127.0.0.1", "address to bind")
    settings.add(parser, "--gateway-port", addresses.GATEWAY_PORT, "HTTP port (0: a free one)")
    settings.add(parser, "--scheduler-address", addresses.SCHEDULER, "the scheduler's address")
    settings.add(
        parser, "--sse-keepalive", 15.0, "seconds between keep-alive comments on idle streams"
    )
    settings.add(
        parser,
        "--auth-tokens",
        "",
        "API token file (lines 'USER_ID SHA256_HEX_OF_TOKEN'): set, callers need a token",
    )
    settings.add(parser, "--max-body-mb", 4.0, "largest request body accepted, MB (else 413)")
    settings.add(
        parser,
        "--allowed-hosts",
        "",
        "comma-separated extra Host names the gateway answers to (besides the bind"
        " address, localhost and 127.0.0.1)",
    )
    settings.add(
        parser, "--header-timeout", HEADER_TIMEOUT_S, "seconds a client has to send its headers"
    )
    settings.add(
        parser,
        "--call-timeout",
        60.0,
        "seconds a request waits for the scheduler's answer (else 504; event streams and"
        " downloads have no limit)",
    )
    settings.add(parser, "--keep-alive-timeout", 5.0, "seconds an idle connection stays open")
    settings.add(parser, "--max-connections", 512, "open connections at once; more get 503")
    settings.add(
        parser,
        "--trusted-proxies",
        "",
        "comma-separated addresses or networks (10.0.0.0/8) of reverse proxies whose"
        " X-Forwarded-For and X-Forwarded-Proto are believed (default: none; the peer's"
        " own address counts)",
    )
    tls.add_settings(parser)
    settings.add_logging(parser)
    return parser.parse_args(argv)


def gateway_settings(args: argparse.Namespace) -> GatewaySettings:
    files = tls.from_args(args)
    tokens = None
    if args.auth_tokens:
        try:
            tokens = TokenFile(Path(args.auth_tokens)).user_of
        except TokenFileError as exc:
            raise serving.StartupError(str(exc)) from None
    else:
        serving.warn_trusted_headers(args.host, "the gateway")
    extra = tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip())
    return GatewaySettings(
        scheduler_address=args.scheduler_address,
        keepalive_s=args.sse_keepalive,
        tokens=tokens,
        max_body_bytes=int(args.max_body_mb * 2**20),
        allowed_hosts=(*LOCAL_NAMES, args.host, *extra),
        scheduler_credentials=tls.channel_credentials(tls.TlsFiles(ca=files.ca, cert="", key="")),
        call_timeout_s=args.call_timeout,
    )


def _proxies(args: argparse.Namespace) -> list[str]:
    return [p.strip() for p in args.trusted_proxies.split(",") if p.strip()]


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound, not yet listening (uvicorn listens). Made as a TCP socket by name
    (IPPROTO_TCP, not 0): asyncio turns Nagle off only on accepted sockets that
    say so, and with it on, an answer's body, written after its head, waited
    for the client's delayed ACK: 40 ms more on every keep-alive request."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def main(argv: Sequence[str] | None = None) -> None:
    lifetime.follow_launcher()
    args = parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    # Bind first, so port 0 works and the address printed is the real one.
    try:
        serving.check_port_free(args.host, args.gateway_port, "gateway")
        app_settings = gateway_settings(args)
    except serving.StartupError as exc:
        sys.exit(f"wsi-gateway: error: {exc}")
    try:
        sock = listening_socket(args.host, args.gateway_port)
    except OSError as exc:
        sys.exit(
            f"wsi-gateway: error: cannot listen on {args.host}:{args.gateway_port}:"
            f" {exc.strerror or exc}"
        )
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        create_app(app_settings),
        log_level=args.log_level.lower(),
        timeout_graceful_shutdown=5,
        http=with_header_timeout(args.header_timeout),
        timeout_keep_alive=int(max(1, args.keep_alive_timeout)),
        limit_concurrency=args.max_connections,
        # Forwarded headers only from the proxies named: from anyone else a
        # forged X-Forwarded-For would pick the address the failure limit
        # and the access log see.
        proxy_headers=bool(_proxies(args)),
        forwarded_allow_ips=_proxies(args) or None,
        ssl_certfile=args.tls_cert or None,
        ssl_keyfile=args.tls_key or None,
        ssl_ca_certs=args.tls_client_ca or None,
        ssl_cert_reqs=2 if args.tls_client_ca else 0,  # ssl.CERT_REQUIRED / CERT_NONE
    )
    server = uvicorn.Server(config)
    scheme = "https" if args.tls_cert else "http"
    serving.announce(
        "gateway listening on %s:%d (%s://%s:%d/, scheduler %s)",
        host,
        port,
        scheme,
        host,
        port,
        args.scheduler_address,
    )
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
