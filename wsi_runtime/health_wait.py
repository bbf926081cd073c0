"""Waiting for a gRPC server to report SERVING."""

from __future__ import annotations

import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def wait_serving(address: str, timeout: float = 20, alive: object = None) -> None:
    """Polls ``grpc.health.v1.Health/Check`` until SERVING or ``timeout``.
    ``alive``, if given, is a callable that returns False once the server's
    process has died, so a crash fails fast instead of waiting out the timeout."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if callable(alive) and not alive():
                raise RuntimeError(f"the server for {address} exited before it was serving")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} was not SERVING within {timeout:.0f}s")
            time.sleep(0.05)


def wait_http(address: str, timeout: float = 20, alive: object = None) -> None:
    """Polls ``http://address/healthz`` until it answers 200 or ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{address}/healthz", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if callable(alive) and not alive():
            raise RuntimeError(f"the server for {address} exited before it was serving")
        if time.monotonic() > deadline:
            raise TimeoutError(f"http://{address}/healthz did not answer within {timeout:.0f}s")
        time.sleep(0.05)
