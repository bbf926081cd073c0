"""Request bodies of the HTTP API and their translation to protobuf."""

from __future__ import annotations

from pydantic import BaseModel, Field, StrictFloat, StrictInt, StrictStr

from wsi_gateway.dependencies import BadRequest
from wsi_protocol.job_types import JobType
from wsi_protocol.param_text import param_text
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_runtime.job_params import JOB_TYPES


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

    def message(self) -> pb.CreateWorkflowRequest:
        _utf8("name", self.name)
        _utf8("request_id", self.request_id)
        return pb.CreateWorkflowRequest(
            name=self.name, jobs=[job_spec(j) for j in self.jobs], request_id=self.request_id
        )


def _utf8(field: str, text: str) -> None:
    """JSON may carry text no gRPC string can (a lone surrogate such as
    ``\\udcff``, what Python makes of a file name that is not UTF-8): a 400
    saying so, not a failure to encode the request."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(
            f"{field} {text.encode('utf-8', 'backslashreplace').decode()!r} is not valid"
            " UTF-8 text (it holds a lone surrogate); name slides as GET /slides lists them"
        ) from None


def job_spec(job: JobIn) -> pb.JobSpec:
    for field, text in (("key", job.key), ("branch", job.branch), ("wsi_path", job.wsi_path)):
        _utf8(field, text)
    for text in [*job.depends_on, *job.params, *map(str, job.params.values())]:
        _utf8("depends_on or params", text)
    job_type = JobType.from_name(job.job_type)
    if job_type is None:
        names = ", ".join(JOB_TYPES)
        raise BadRequest(f"unknown job_type {job.job_type!r}; use one of {names}")
    return pb.JobSpec(
        key=job.key,
        branch=job.branch,
        job_type=job_type.number,
        wsi_path=job.wsi_path,
        depends_on=job.depends_on,
        params={name: param_text(value) for name, value in job.params.items()},
    )
