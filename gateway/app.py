"""The HTTP/JSON face of the scheduler: each route is one gRPC call with the
caller's X-User-ID as metadata ``x-user-id``. No scheduling state or rules
live here; errors come back as the scheduler's status, mapped to HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import grpc
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, StrictFloat, StrictInt, StrictStr

from clients.json_format import to_json
from clients.status import retry_after_seconds
from clients.wsi.scheduler.v1 import scheduler_pb2 as pb
from clients.wsi.scheduler.v1 import scheduler_pb2_grpc as pb_grpc
from gateway import sse
from gateway.errors import error_body, http_status
from gateway.metrics import HttpMetrics, MetricsMiddleware
from wsi_runtime.job_params import JOB_TYPES
from wsi_runtime.version import VERSION

M = TypeVar("M")
STATIC = Path(__file__).resolve().parent / "static"
KEEPALIVE_S = 15.0
RESULT_TYPES = {
    ".geojson": "application/geo+json",
    ".json": "application/json",
    ".png": "image/png",
}
UserHeader = Annotated[str | None, Header(alias="X-User-ID", description="the caller's user id")]


class JobIn(BaseModel):
    key: str = ""
    branch: str = ""
    job_type: str = Field(description="TISSUE_MASK or CELL_SEGMENTATION")
    wsi_path: str
    depends_on: list[str] = []
    params: dict[str, StrictStr | StrictInt | StrictFloat] = Field(
        default={},
        description='e.g. {"tile_size": 1024, "target_mpp": 0.5}: numbers or strings',
    )


class WorkflowIn(BaseModel):
    name: str = ""
    jobs: list[JobIn]
    request_id: str = ""


class GrpcFailure(Exception):
    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        self.error = error


def _metadata(user: str | None) -> tuple[tuple[str, str], ...]:
    return (("x-user-id", user),) if user is not None else ()


def _job_spec(job: JobIn) -> pb.JobSpec:
    if job.job_type not in JOB_TYPES:
        names = ", ".join(JOB_TYPES)
        raise ValueError(f"unknown job_type {job.job_type!r}; use one of {names}")
    return pb.JobSpec(
        key=job.key,
        branch=job.branch,
        job_type=pb.JobType.Value(job.job_type),
        wsi_path=job.wsi_path,
        depends_on=job.depends_on,
        params={name: _param_text(value) for name, value in job.params.items()},
    )


def _param_text(value: str | int | float) -> str:
    """The API's params are strings; JSON numbers are taken as written (a float
    keeps its full precision; 1e400 arrives as inf and is refused as such)."""
    return value if isinstance(value, str) else repr(value)


def _result_file(job_dir: Path, path: str) -> Path | None:
    """``path`` if it really is a regular file inside the job's own result folder
    (after resolving links), else None: the gateway never serves anything else."""
    real = Path(os.path.realpath(path))
    return real if job_dir in real.parents and real.is_file() else None


def create_app(
    scheduler_address: str, results_dir: Path, keepalive_s: float = KEEPALIVE_S
) -> FastAPI:
    state: dict[str, Any] = {}
    results_root = results_dir.resolve()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        channel = grpc.aio.insecure_channel(scheduler_address)
        state["stub"] = pb_grpc.SchedulerStub(channel)
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

    def stub() -> pb_grpc.SchedulerAsyncStub:
        return state["stub"]  # type: ignore[no-any-return]

    async def call(awaitable: Awaitable[M]) -> M:
        try:
            return await awaitable
        except grpc.aio.AioRpcError as error:
            raise GrpcFailure(error) from error

    @app.exception_handler(GrpcFailure)
    async def grpc_failure(request: Request, exc: GrpcFailure) -> JSONResponse:
        code = exc.error.code()
        headers = {}
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            headers["Retry-After"] = str(retry_after_seconds(exc.error.trailing_metadata()))
        body = error_body(code, exc.error.details() or code.name)
        return JSONResponse(body, status_code=http_status(code), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return JSONResponse(error_body("INVALID_ARGUMENT", problems), status_code=400)

    @app.exception_handler(ValueError)
    async def invalid(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse(error_body("INVALID_ARGUMENT", str(exc)), status_code=400)

    @app.post("/workflows", status_code=201, summary="Create a workflow")
    async def create_workflow(body: WorkflowIn, user: UserHeader = None) -> Any:
        request = pb.CreateWorkflowRequest(
            name=body.name, jobs=[_job_spec(j) for j in body.jobs], request_id=body.request_id
        )
        return to_json(await call(stub().CreateWorkflow(request, metadata=_metadata(user))))

    @app.get("/workflows", summary="The caller's workflows, newest first")
    async def list_workflows(
        user: UserHeader = None, page_size: int = 0, page_token: str = ""
    ) -> Any:
        request = pb.ListWorkflowsRequest(page_size=page_size, page_token=page_token)
        return to_json(await call(stub().ListWorkflows(request, metadata=_metadata(user))))

    async def workflow_json(workflow_id: str, user: str | None) -> Any:
        request = pb.GetWorkflowRequest(workflow_id=workflow_id)
        return to_json(await call(stub().GetWorkflow(request, metadata=_metadata(user))))

    @app.get("/workflows/{workflow_id}", summary="One workflow with its jobs")
    async def get_workflow(workflow_id: str, user: UserHeader = None) -> Any:
        return await workflow_json(workflow_id, user)

    @app.get("/workflows/{workflow_id}/progress", summary="Progress of a workflow and its jobs")
    async def get_progress(workflow_id: str, user: UserHeader = None) -> Any:
        full = await workflow_json(workflow_id, user)
        job_fields = ("job_id", "key", "branch", "state", "progress", "pending_reason")
        return {
            **{k: full[k] for k in ("workflow_id", "state", "progress")},
            "jobs": [{k: job[k] for k in job_fields} for job in full["jobs"]],
        }

    @app.post("/workflows/{workflow_id}/cancel", summary="Cancel every unfinished job")
    async def cancel_workflow(workflow_id: str, user: UserHeader = None) -> Any:
        request = pb.CancelWorkflowRequest(workflow_id=workflow_id)
        return to_json(await call(stub().CancelWorkflow(request, metadata=_metadata(user))))

    @app.get("/jobs/{job_id}", summary="One job")
    async def get_job(job_id: str, user: UserHeader = None) -> Any:
        return to_json(
            await call(stub().GetJob(pb.GetJobRequest(job_id=job_id), metadata=_metadata(user)))
        )

    @app.post("/jobs/{job_id}/cancel", summary="Cancel a job")
    async def cancel_job(job_id: str, user: UserHeader = None) -> Any:
        request = pb.CancelJobRequest(job_id=job_id)
        return to_json(await call(stub().CancelJob(request, metadata=_metadata(user))))

    @app.get("/jobs/{job_id}/results/{name}", summary="A result file of the caller's own job")
    async def get_result(job_id: str, name: str, user: UserHeader = None) -> Response:
        job = await call(stub().GetJob(pb.GetJobRequest(job_id=job_id), metadata=_metadata(user)))
        path = job.result.files.get(name)
        if not path:
            available = ", ".join(sorted(job.result.files)) or "none yet"
            return JSONResponse(
                error_body("NOT_FOUND", f"job {job_id!r} has no result {name!r} ({available})"),
                status_code=404,
            )
        real = await asyncio.to_thread(_result_file, results_root / job.job_id, path)
        if real is None:
            return JSONResponse(
                error_body("NOT_FOUND", f"result {name!r} is not available from this gateway"),
                status_code=404,
            )
        media = RESULT_TYPES.get(real.suffix) or mimetypes.guess_type(real.name)[0]
        return FileResponse(real, media_type=media or "application/octet-stream", filename=name)

    @app.get("/workflows/{workflow_id}/events", summary="Server-Sent Events of a workflow")
    async def workflow_events(
        workflow_id: str,
        request: Request,
        user: UserHeader = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
        after: Annotated[int | None, Query(description="resume after this sequence")] = None,
    ) -> Response:
        watch = pb.WatchWorkflowRequest(
            workflow_id=workflow_id, after_sequence=sse.resume_after(last_event_id, after)
        )
        stream = stub().WatchWorkflow(watch, metadata=_metadata(user))
        queue: asyncio.Queue[pb.WorkflowEvent | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for message in stream:
                    await queue.put(message)
            finally:
                await queue.put(None)

        reader = asyncio.ensure_future(pump())
        first = await queue.get()
        if first is None:  # ended before any event: an error status (or nothing to send)
            try:
                reader.result()
            except grpc.aio.AioRpcError as error:
                raise GrpcFailure(error) from error

        async def frames() -> AsyncIterator[str]:
            try:
                message = first
                while message is not None:
                    yield sse.event(to_json(message), message.sequence)
                    while True:
                        try:
                            message = await asyncio.wait_for(queue.get(), keepalive_s)
                            break
                        except TimeoutError:
                            yield sse.comment("keep-alive")
            finally:
                stream.cancel()
                reader.cancel()

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)

    @app.get("/stats", summary="Dashboard numbers for the caller")
    async def stats(user: UserHeader = None) -> Any:
        return to_json(await call(stub().GetStats(pb.GetStatsRequest(), metadata=_metadata(user))))

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/metrics", summary="Prometheus metrics of the gateway")
    async def prometheus_metrics() -> Response:
        return metrics.exposition()

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
