"""Prometheus for the gRPC servers: an HTTP endpoint of its own, and RPCs
counted and timed by method and status code. Labels are only ever drawn from
small fixed sets (method names, status codes, job types, states), never from
user ids, branch names or paths."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from wsgiref import simple_server

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app

Behaviour = Callable[..., Any]


STOP_POLL_S = 0.05  # how often the endpoint's loop looks for its stop


class _MetricsServer(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True


class _MetricsServer6(_MetricsServer):
    address_family = socket.AF_INET6


class _QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged: one every few seconds would drown the log."""


def serve(registry: CollectorRegistry, host: str, port: int) -> tuple[str, Callable[[], None]]:
    """Serves ``/metrics`` from a daemon thread; returns its URL and a stopper.
    Port 0 picks a free port. Its own loop rather than the library's
    ``start_http_server``, which looks for a stop every 0.5 s: every service's
    stop waited up to that long for it."""
    bare = host.strip("[]")
    server_class = _MetricsServer6 if ":" in bare else _MetricsServer
    server: simple_server.WSGIServer = simple_server.make_server(
        bare, port, make_wsgi_app(registry), server_class, _QuietHandler
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": STOP_POLL_S}, daemon=True
    )
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return f"http://{host}:{server.server_port}/metrics", stop


class RpcMetrics(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts and times every call of the server it is installed on."""

    def __init__(self, prefix: str, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            f"{prefix}_rpcs_total",
            "gRPC calls handled, by method and status code.",
            ["method", "code"],
            registry=registry,
        )
        self.seconds = Histogram(
            f"{prefix}_rpc_duration_seconds",
            "Time from a call's start to its end (a stream: its whole life), by method.",
            ["method"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 120, 600),
        )

    def record(self, method: str, code: str, started: float) -> None:
        self.calls.labels(method, code).inc()
        self.seconds.labels(method).observe(time.perf_counter() - started)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = "/".join(handler_call_details.method.rsplit("/", 2)[-2:])  # Service/Method
        method = method.rsplit(".", 1)[-1]  # drop the package: Scheduler/CreateWorkflow
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._unary(method, handler.unary_unary))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._stream(method, handler.unary_stream))
        if handler.stream_stream is not None:
            return handler._replace(stream_stream=self._stream(method, handler.stream_stream))
        return handler

    @contextlib.contextmanager
    def _recorded(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> Iterator[None]:
        started, code = time.perf_counter(), "OK"
        try:
            yield
        except BaseException as exc:
            code = _code(context, exc)
            raise
        finally:
            self.record(method, code, started)

    def _unary(self, method: str, behaviour: Behaviour) -> Behaviour:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with self._recorded(method, context):
                return await behaviour(request, context)

        return wrapped

    def _stream(self, method: str, behaviour: Behaviour) -> Behaviour:
        async def wrapped(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            with self._recorded(method, context):
                async for response in behaviour(request, context):
                    yield response

        return wrapped


def _code(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> str:
    """The status the call ended with: the one ``context.abort`` set, else
    CANCELLED for a call the client gave up, else UNKNOWN (an unhandled error)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode) and code is not grpc.StatusCode.OK:
        return code.name
    if isinstance(exc, GeneratorExit | asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"
