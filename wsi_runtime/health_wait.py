"""Waiting for a server to be ready: gRPC health SERVING, or HTTP /healthz 200."""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

Alive = Callable[[], bool] | None


def _poll(ready: Callable[[], bool], what: str, timeout: float, alive: Alive) -> None:
    """Calls ``ready`` until it is true or ``timeout``. ``alive``, if given, is a
    callable that returns False once the server's process has died, so a crash
    fails fast instead of waiting out the timeout."""
    deadline = time.monotonic() + timeout
    while not ready():
        if alive is not None and not alive():
            raise RuntimeError(f"the server for {what} exited before it was serving")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} was not ready within {timeout:.0f}s")
        time.sleep(0.05)


def wait_serving(
    address: str,
    timeout: float = 20,
    alive: Alive = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Until ``grpc.health.v1.Health/Check`` answers SERVING (over TLS with ``credentials``)."""
    opened = (
        grpc.insecure_channel(address)
        if credentials is None
        else grpc.secure_channel(address, credentials)
    )
    with opened as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        _poll(serving, address, timeout, alive)


def wait_http(
    address: str, timeout: float = 20, alive: Alive = None, tls: ssl.SSLContext | None = None
) -> None:
    """Until ``http://address/healthz`` (https with ``tls``) answers 200."""
    url = f"{'https' if tls else 'http'}://{address}/healthz"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2, context=tls) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    _poll(healthy, url, timeout, alive)
