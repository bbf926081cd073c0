"""The HTTP/JSON face of the scheduler: the routes (``routes.py``), a typed
state made once by the lifespan (``backend.py``), and the one place where a
scheduler status or a refused request becomes an HTTP answer. No scheduling
state or rules live here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from wsi_gateway.backend import BadRequest, GatewayState, GrpcFailure
from wsi_gateway.errors import error_body, http_status
from wsi_gateway.metrics import HttpMetrics, MetricsMiddleware
from wsi_gateway.routes import router
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from wsi_protocol.status import retry_after_seconds
from wsi_runtime.version import VERSION

STATIC = Path(__file__).resolve().parent / "static"
KEEPALIVE_S = 15.0


def create_app(
    scheduler_address: str, results_dir: Path, keepalive_s: float = KEEPALIVE_S
) -> FastAPI:
    results_root = results_dir.resolve()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        channel = grpc.aio.insecure_channel(scheduler_address)
        app.state.gateway = GatewayState(pb_grpc.SchedulerStub(channel), results_root, keepalive_s)
        yield
        await channel.close(grace=None)

    app = FastAPI(
        title="WSI workflow scheduler",
        description="HTTP/JSON gateway to the scheduler. Every call needs the X-User-ID header.",
        version=VERSION,
        lifespan=lifespan,
    )
    metrics = HttpMetrics()
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(GrpcFailure)
    async def grpc_failure(request: Request, exc: GrpcFailure) -> JSONResponse:
        code = exc.error.code()
        headers = {}
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            headers["Retry-After"] = str(retry_after_seconds(exc.error.trailing_metadata()))
        body = error_body(code, exc.error.details() or code.name)
        return JSONResponse(body, status_code=http_status(code), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return JSONResponse(error_body("INVALID_ARGUMENT", problems), status_code=400)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse(error_body("INVALID_ARGUMENT", str(exc)), status_code=400)

    app.include_router(router)

    @app.get("/metrics", summary="Prometheus metrics of the gateway")
    async def prometheus_metrics() -> Response:
        return metrics.exposition()

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
