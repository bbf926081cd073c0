"""The HTTP routes: each one is one scheduler call with the caller's
X-User-ID as metadata ``x-user-id``, its answer as JSON."""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response, StreamingResponse

from wsi_gateway import deep_zoom, events, sse
from wsi_gateway.bodies import WorkflowIn
from wsi_gateway.dependencies import (
    BadRequest,
    Caller,
    Gateway,
    NotFoundError,
    call,
    opened,
)
from wsi_gateway.sized_body import relayed, sized_body
from wsi_protocol import cohort_table, result_files
from wsi_protocol.json_format import to_json
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_runtime import job_params
from wsi_runtime.boxes import BoxError, parse_box

RESULT_TYPES = {
    ".geojson": "application/geo+json",
    ".json": "application/json",
    ".png": "image/png",
    ".parquet": "application/vnd.apache.parquet",
}
TABLE_FORMATS = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}
router = APIRouter()


@router.post("/workflows", status_code=201, summary="Create a workflow")
async def create_workflow(body: WorkflowIn, gateway: Gateway, caller: Caller) -> Any:
    return to_json(await call(gateway.stub.CreateWorkflow(body.message(), metadata=caller)))


@router.get("/workflows", summary="The caller's workflows, newest first")
async def list_workflows(
    gateway: Gateway, caller: Caller, page_size: int = 0, page_token: str = ""
) -> Any:
    request = pb.ListWorkflowsRequest(page_size=_page_size(page_size), page_token=page_token)
    return to_json(await call(gateway.stub.ListWorkflows(request, metadata=caller)))


def _page_size(asked: int) -> int:
    """Within the field's 32 bits: a page larger than that is the server's
    largest anyway (a negative one stays, for the scheduler to refuse)."""
    return min(asked, 2**31 - 1)


async def _workflow(gateway: Gateway, caller: Caller, workflow_id: str) -> Any:
    request = pb.GetWorkflowRequest(workflow_id=workflow_id)
    return to_json(await call(gateway.stub.GetWorkflow(request, metadata=caller)))


@router.get("/workflows/{workflow_id}", summary="One workflow with its jobs")
async def get_workflow(workflow_id: str, gateway: Gateway, caller: Caller) -> Any:
    return await _workflow(gateway, caller, workflow_id)


@router.get("/workflows/{workflow_id}/progress", summary="Progress of a workflow and its jobs")
async def get_progress(workflow_id: str, gateway: Gateway, caller: Caller) -> Any:
    full = await _workflow(gateway, caller, workflow_id)
    job_fields = ("job_id", "key", "branch", "state", "progress", "pending_reason")
    return {
        **{k: full[k] for k in ("workflow_id", "state", "progress")},
        "jobs": [{k: job[k] for k in job_fields} for job in full["jobs"]],
    }


@router.get(
    "/workflows/{workflow_id}/table",
    summary="The workflow as a table, one row per job: state, error, nuclei, measurements",
    description="`format`: `csv` (the default) or `parquet`.",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}}}},
)
async def workflow_table(
    workflow_id: str, gateway: Gateway, caller: Caller, format: str = "csv"
) -> Response:
    if format not in TABLE_FORMATS:
        raise BadRequest(f"format must be one of {', '.join(TABLE_FORMATS)}, not {format[:20]!r}")
    request = pb.GetWorkflowRequest(workflow_id=workflow_id)
    workflow = await call(gateway.stub.GetWorkflow(request, metadata=caller))
    rows = cohort_table.workflow_rows(workflow)
    name = f"workflow-{workflow.workflow_id[:8]}.{format}"
    if format == "parquet":  # encoded off the event loop: a thousand rows take a moment
        body = await asyncio.to_thread(cohort_table.to_parquet, rows)
    else:
        body = cohort_table.to_csv(rows).encode()
    return Response(
        body,
        media_type=TABLE_FORMATS[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.post("/workflows/{workflow_id}/cancel", summary="Cancel every unfinished job")
async def cancel_workflow(workflow_id: str, gateway: Gateway, caller: Caller) -> Any:
    request = pb.CancelWorkflowRequest(workflow_id=workflow_id)
    return to_json(await call(gateway.stub.CancelWorkflow(request, metadata=caller)))


@router.get("/jobs/{job_id}", summary="One job")
async def get_job(job_id: str, gateway: Gateway, caller: Caller) -> Any:
    request = pb.GetJobRequest(job_id=job_id)
    return to_json(await call(gateway.stub.GetJob(request, metadata=caller)))


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job")
async def cancel_job(job_id: str, gateway: Gateway, caller: Caller) -> Any:
    request = pb.CancelJobRequest(job_id=job_id)
    return to_json(await call(gateway.stub.CancelJob(request, metadata=caller)))


@router.get("/jobs/{job_id}/results/{name}", summary="A result file of the caller's own job")
async def get_result(job_id: str, name: str, gateway: Gateway, caller: Caller) -> Response:
    """Streamed from the worker that wrote it, through the scheduler (which
    checks the owner): no folder is shared between hosts."""
    request = pb.ReadResultRequest(job_id=job_id, name=name)
    what = f"result {name!r} of job {job_id!r}"
    first, rest = await opened(
        gateway.stub.ReadResult(request, metadata=caller), f"{what} came back empty"
    )
    body = sized_body(first.size, first.data, (chunk.data async for chunk in rest), what)
    media = RESULT_TYPES.get(PurePath(name).suffix) or mimetypes.guess_type(name)[0]
    headers = {
        "Content-Length": str(first.size),
        "Content-Disposition": f'attachment; filename="{name}"',
    }
    return StreamingResponse(body, media_type=media or "application/octet-stream", headers=headers)


@router.get("/jobs/{job_id}/deepzoom", summary="The job's slide as Deep Zoom, described as JSON")
async def deep_zoom_info(job_id: str, gateway: Gateway, caller: Caller) -> Any:
    """Size, tile size, overlap and levels (what slide.dzi says, and more):
    ``offset_x``/``offset_y`` place nuclei (slide pixels) on the image."""
    request = pb.GetSlideDeepZoomRequest(job_id=job_id)
    return to_json(await call(gateway.stub.GetSlideDeepZoom(request, metadata=caller)))


@router.get("/jobs/{job_id}/slide.dzi", summary="The job's slide: Deep Zoom descriptor")
async def deep_zoom_descriptor(job_id: str, gateway: Gateway, caller: Caller) -> Response:
    request = pb.GetSlideDeepZoomRequest(job_id=job_id)
    info = await call(gateway.stub.GetSlideDeepZoom(request, metadata=caller))
    return Response(deep_zoom.descriptor(info), media_type="application/xml")


@router.get(
    "/jobs/{job_id}/slide_files/{level}/{tile}",
    summary="The job's slide: one Deep Zoom tile, COL_ROW.jpeg",
)
async def deep_zoom_tile(
    job_id: str, level: int, tile: str, gateway: Gateway, caller: Caller
) -> Response:
    col, row = deep_zoom.tile_address(tile)
    if not 0 <= level <= deep_zoom.MAX_LEVEL:
        raise NotFoundError(f"no level {level}: Deep Zoom levels run from 0 (1 x 1 px) up")
    request = pb.GetSlideTileRequest(job_id=job_id, level=level, col=col, row=row)
    found = await call(gateway.stub.GetSlideTile(request, metadata=caller))
    return Response(found.data, media_type=found.content_type or "image/jpeg")


@router.get(
    "/jobs/{job_id}/cells",
    summary="The job's nuclei whose outlines meet a box: a GeoJSON FeatureCollection",
)
async def cells_in_box(
    job_id: str,
    gateway: Gateway,
    caller: Caller,
    bbox: Annotated[str, Query(description="x0,y0,x1,y1 in level-0 slide pixels")],
) -> Response:
    try:
        x0, y0, x1, y1 = parse_box(bbox)
    except BoxError as exc:
        raise BadRequest(str(exc)) from None
    request = pb.QueryCellsRequest(job_id=job_id, x0=x0, y0=y0, x1=x1, y1=y1)
    # Streamed as it comes, one chunk held at a time: a whole-slide box of
    # 50,000 nuclei is about 40 MB, and twenty of them at once must not be
    # 800 MB here.
    what = f"the nuclei of job {job_id!r} in {bbox!r}"
    first, rest = await opened(
        gateway.stub.QueryCells(request, metadata=caller), f"{what} came back empty"
    )
    body = relayed(first.data, (chunk.data async for chunk in rest), what)
    return StreamingResponse(body, media_type="application/geo+json")


@router.get("/jobs/{job_id}/cells/density", summary="Nuclei per cell of a grid over the slide")
async def cell_density(job_id: str, gateway: Gateway, caller: Caller, cell_px: float = 0) -> Any:
    request = pb.GetCellDensityRequest(job_id=job_id, cell_px=cell_px)
    return to_json(await call(gateway.stub.GetCellDensity(request, metadata=caller)))


@router.get("/workflows/{workflow_id}/events", summary="Server-Sent Events of a workflow")
async def workflow_events(
    workflow_id: str,
    gateway: Gateway,
    caller: Caller,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    after: Annotated[int | None, Query(description="resume after this sequence")] = None,
) -> Response:
    watch = pb.WatchWorkflowRequest(
        workflow_id=workflow_id, after_sequence=sse.resume_after(last_event_id, after)
    )
    return await events.event_stream(gateway.stub, watch, caller, gateway.keepalive_s)


@router.get("/slides", summary="Slides under the slide roots, by the names jobs use, paged")
async def list_slides(
    gateway: Gateway, caller: Caller, page_size: int = 0, page_token: str = ""
) -> Any:
    request = pb.ListSlidesRequest(page_size=_page_size(page_size), page_token=page_token)
    return to_json(await call(gateway.stub.ListSlides(request, metadata=caller)))


@router.get("/stats", summary="Dashboard numbers for the caller")
async def stats(gateway: Gateway, caller: Caller) -> Any:
    return to_json(await call(gateway.stub.GetStats(pb.GetStatsRequest(), metadata=caller)))


@router.get(
    "/job-params",
    summary="The job parameters: kind, bounds, default, choices",
    description="For `backend`, also what each choice is for and costs (`choice_help`) and"
    " what a job that names none gets (`default_help`: learned wherever it can run)."
    " The bounds and choices are this deployment's: its smallest tile size and the"
    " backends its connected workers offer (no identity needed).",
)
async def job_params_schema(gateway: Gateway) -> dict[str, dict[str, object]]:
    here = await call(gateway.stub.GetJobParams(pb.GetJobParamsRequest()))
    return job_params.schema(here.min_tile_size, list(here.backends))


@router.get("/result-files", summary="The names of a job's result files, by role")
async def result_file_names() -> dict[str, str]:
    return dict(result_files.BY_ROLE)


# HEAD too: load balancers and uptime checks often ask liveness that way.
@router.api_route("/healthz", methods=["GET", "HEAD"], summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
