"""The gateway's own Prometheus metrics: requests by route template, method
and status, and the time to the response's headers. Route templates, never raw
paths or user ids, so the label sets stay small.

A pure ASGI middleware: it only watches ``http.response.start`` go by, so a
long Server-Sent Events response streams (and is cancelled when the client
leaves) exactly as without it."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HttpMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "wsi_gateway_http_requests_total",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "wsi_gateway_http_request_duration_seconds",
            "Time to the response's headers, by route template.",
            ["route", "method"],
            registry=self.registry,
        )

    def record(self, scope: Scope, status: int, seconds: float) -> None:
        template = getattr(scope.get("route"), "path", "unmatched")
        self.requests.labels(template, scope["method"], str(status)).inc()
        self.latency.labels(template, scope["method"]).observe(seconds)

    def exposition(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def watch(message: Message) -> Any:
            if message["type"] == "http.response.start":
                self.metrics.record(scope, message["status"], time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, watch)
