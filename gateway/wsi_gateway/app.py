"""The HTTP/JSON face of the scheduler: the routes (``routes.py``), a typed
state made once by the lifespan (``dependencies.py``), and the one place where a
scheduler status or a refused request becomes an HTTP answer. No scheduling
state or rules live here."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import BaseRoute, Match, Mount

from wsi_gateway.auth import AuthFailure, GatewayAuth
from wsi_gateway.dependencies import BadRequest, GatewayState, GrpcFailure, NotFoundError
from wsi_gateway.guards import DEFAULT_MAX_BODY_BYTES, BodyLimit, HostAllowList, SecurityHeaders
from wsi_gateway.http_errors import body_problems, error_body, http_status
from wsi_gateway.metrics import HttpMetrics, MetricsMiddleware
from wsi_gateway.routes import router
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from wsi_protocol.status import is_server_answer, retry_after_seconds
from wsi_runtime import serving, tls
from wsi_runtime.identity import TokenLookup
from wsi_runtime.version import VERSION

log = logging.getLogger("wsi.gateway")
STATIC = Path(__file__).resolve().parent / "static"
# Swagger UI's files, from the npm registry (gateway/web/package.json, `make web`).
WEB_MODULES = Path(__file__).resolve().parents[1] / "web" / "node_modules"
DOCS_ASSETS = WEB_MODULES / "swagger-ui-dist"
# OpenSeadragon's build (script and button images), for the slide viewer.
VIEWER_ASSETS = WEB_MODULES / "openseadragon" / "build" / "openseadragon"
KEEPALIVE_S = 15.0


# Statuses the transport makes (an unreachable scheduler, a timeout) carry its
# internal address and errno text: users get a plain sentence, the log the rest.
TRANSPORT_MESSAGES = {
    grpc.StatusCode.UNAVAILABLE: "the scheduler is unavailable; try again shortly",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the scheduler did not answer in time; try again",
    grpc.StatusCode.UNKNOWN: "internal error; the gateway's log has the details",
    grpc.StatusCode.INTERNAL: "internal error; the gateway's log has the details",
}


def public_message(code: grpc.StatusCode, details: str) -> str:
    generic = TRANSPORT_MESSAGES.get(code)
    if generic is None:
        return details
    log.warning("scheduler call failed: %s: %s", code.name, details)
    return generic


@dataclass(frozen=True)
class GatewaySettings:
    scheduler_address: str
    keepalive_s: float = KEEPALIVE_S
    tokens: TokenLookup | None = None  # token mode when set
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
    scheduler_credentials: grpc.ChannelCredentials | None = None  # TLS to the scheduler
    # A unary call's longest wait for the scheduler (streams have none): one
    # alive but stuck answers 504 instead of holding the request for ever.
    call_timeout_s: float = 60.0


# Each stream's receive window stays at gRPC's 64 KB instead of growing by
# bandwidth probes to megabytes: a streamed answer (a whole-slide box of
# nuclei, a result file) then waits in the scheduler, not here, while the
# HTTP client reads it; twenty at once cost this process tens of MB, not
# hundreds. Loopback or a LAN fills 64 KB windows fast enough.
# Keep-alive pings notice a scheduler gone silent (see KEEPALIVE_CHANNEL):
# its calls answer 503 in seconds, not after minutes.
SCHEDULER_CHANNEL = [("grpc.http2.bdp_probe", 0), *serving.KEEPALIVE_CHANNEL]
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class DefaultDeadline(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Gives every unary call that sets no timeout this one: a scheduler that
    is alive but stuck (its keep-alive pings still answered) would otherwise
    hold the HTTP request, and its connection, as long as it takes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        if client_call_details.timeout is None:
            client_call_details = client_call_details._replace(timeout=self.seconds)
        return await continuation(client_call_details, request)


def create_app(settings: GatewaySettings) -> FastAPI:
    auth = GatewayAuth(settings.tokens)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        channel = tls.aio_channel(
            settings.scheduler_address,
            settings.scheduler_credentials,
            SCHEDULER_CHANNEL,
            [DefaultDeadline(settings.call_timeout_s)],
        )
        app.state.gateway = GatewayState(pb_grpc.SchedulerStub(channel), settings.keepalive_s, auth)
        yield
        await channel.close(grace=None)

    identity = (
        "Every call needs `Authorization: Bearer TOKEN` (this gateway is in token mode)."
        if auth.mode == "token"
        else "Every call needs the X-User-ID header (trusted-header mode: for loopback, or"
        " behind a proxy that authenticates)."
    )
    app = FastAPI(
        title="WSI workflow scheduler",
        description=f"HTTP/JSON gateway to the scheduler. {identity}",
        version=VERSION,
        lifespan=lifespan,
        docs_url=None,  # served below from local files: no CDN, no inline script
        redoc_url=None,
    )
    metrics = HttpMetrics()
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _map_errors(app, auth)
    app.include_router(router)
    _serve_pages(app, metrics, auth)
    _guard(app, settings)
    return app


def _map_errors(app: FastAPI, auth: GatewayAuth) -> None:
    """The one place where errors become HTTP answers."""

    @app.exception_handler(GrpcFailure)
    async def grpc_failure(request: Request, exc: GrpcFailure) -> JSONResponse:
        code = exc.error.code()
        headers = {}
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            headers["Retry-After"] = str(retry_after_seconds(exc.error.trailing_metadata()))
        details = exc.error.details() or code.name
        if not is_server_answer(exc.error.trailing_metadata()):
            details = public_message(code, details)
        body = error_body(code, details)
        return JSONResponse(body, status_code=http_status(code), headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """FastAPI's own errors in the API's {code, message}: a body it cannot
        parse (nested past Python's recursion limit, say), a path no route
        has, a method the path does not take; others as they are."""
        route = f"{request.method} {request.url.path}"
        if exc.status_code == 400:
            message = f"body: {exc.detail} (not JSON, or nested too deeply)"
            return JSONResponse(error_body("INVALID_ARGUMENT", message), status_code=400)
        if exc.status_code == 404:
            message = f"nothing at {route}: the API's routes are listed at /docs"
            return JSONResponse(error_body("NOT_FOUND", message), status_code=404)
        if exc.status_code == 405:  # Starlette's Allow names the first route's methods only
            allowed = ", ".join(_methods_at(app, request))
            message = f"{route} is not allowed; {request.url.path} takes {allowed}"
            body = error_body("UNIMPLEMENTED", message)
            return JSONResponse(body, status_code=405, headers={"Allow": allowed})
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = body_problems(exc.errors(), request.headers.get("content-type", ""))
        return JSONResponse(error_body("INVALID_ARGUMENT", problems), status_code=400)

    @app.exception_handler(AuthFailure)
    async def auth_failure(request: Request, exc: AuthFailure) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer" if auth.mode == "token" else "X-User-ID"
        return JSONResponse(error_body(exc.code, str(exc)), exc.status, headers=headers)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse(error_body("INVALID_ARGUMENT", str(exc)), status_code=400)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse(error_body("NOT_FOUND", str(exc)), status_code=404)


def _methods_at(app: FastAPI, request: Request) -> list[str]:
    """Every method some route takes at the request's path, each one asked of
    the app's routes as a fresh request would be (included routers answer for
    their routes only as a whole; a mount has rewritten the scope's path).
    Mounts take any method by matching: here they are static files, GET/HEAD."""

    def scope(method: str) -> dict[str, str]:
        return {"type": "http", "path": request.url.path, "root_path": "", "method": method}

    routes = [r for r in app.router.routes if isinstance(r, BaseRoute)]
    mounted = [r for r in routes if isinstance(r, Mount)]
    if any(r.matches(scope("GET"))[0] is Match.FULL for r in mounted):
        return ["GET", "HEAD"]
    return [
        method
        for method in HTTP_METHODS
        if any(
            r.matches(scope(method))[0] is Match.FULL for r in routes if not isinstance(r, Mount)
        )
    ]


def _serve_pages(app: FastAPI, metrics: HttpMetrics, auth: GatewayAuth) -> None:
    """The web UI, its assets, the docs and the gateway's own metrics."""

    @app.get("/metrics", summary="Prometheus metrics of the gateway")
    async def prometheus_metrics() -> Response:
        return metrics.exposition()

    @app.get("/auth", summary="How callers identify themselves here: token or header")
    async def auth_mode() -> dict[str, str]:
        return {"mode": auth.mode}

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        if not DOCS_ASSETS.is_dir():
            message = "Swagger UI is not installed here (`make web`); /openapi.json is"
            return JSONResponse(error_body("UNAVAILABLE", message), status_code=503)
        return FileResponse(STATIC / "docs.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if DOCS_ASSETS.is_dir():
        app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    if VIEWER_ASSETS.is_dir():  # without it the UI shows the static preview only
        app.mount("/viewer-assets", StaticFiles(directory=VIEWER_ASSETS), name="viewer-assets")


def _guard(app: FastAPI, settings: GatewaySettings) -> None:
    # GeoJSON and JSON shrink several times; images and event streams are left
    # alone (Starlette's defaults), large bodies compress off the event loop.
    # Level 1: a viewer's box of 1,000 nuclei compressed in ~6 ms instead of
    # ~34 ms at level 6 (measured), for a tenth more bytes.
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=1)
    # The last added runs first: the safety headers go on every answer, and a
    # foreign Host or an oversized body never reaches a route.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(HostAllowList, allowed=settings.allowed_hosts)
    app.add_middleware(SecurityHeaders)
