"""Workflow documents (JSON or YAML, already parsed) to job specs, pure.

Two shapes are accepted. The flat one is the HTTP gateway's body:

    {"name": "run-1", "jobs": [{"key": "mask", "branch": "a", "job_type": "TISSUE_MASK",
                                "wsi_path": "slide.svs"}, ...]}

The branch one groups jobs under their branch, in FIFO order:

    name: run-1
    defaults: {wsi_path: slide.svs}
    branches:
      a:
        - {key: mask, job_type: TISSUE_MASK}
        - {key: cells, job_type: CELL_SEGMENTATION, depends_on: [mask]}

``defaults`` fills ``wsi_path``, ``job_type`` and ``params`` where a job leaves
them out. Errors name the job and the field, so a user can fix the file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from wsi_client.client import job
from wsi_protocol.param_text import param_text
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

JOB_FIELDS = frozenset({"key", "branch", "job_type", "wsi_path", "depends_on", "params"})
DEFAULT_FIELDS = frozenset({"wsi_path", "job_type", "params"})
TOP_FIELDS = frozenset({"name", "jobs", "branches", "defaults", "request_id"})


class WorkflowFileError(ValueError):
    pass


@dataclass(frozen=True)
class WorkflowDocument:
    name: str
    jobs: list[pb.JobSpec]
    request_id: str = ""


def parse_workflow(document: object) -> WorkflowDocument:
    if not isinstance(document, Mapping):
        raise WorkflowFileError("a workflow file holds a mapping with 'jobs' or 'branches'")
    _no_unknown(document, TOP_FIELDS, "the workflow")
    defaults = document.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise WorkflowFileError("'defaults' must be a mapping")
    _no_unknown(defaults, DEFAULT_FIELDS, "'defaults'")
    entries: list[tuple[str, Mapping[str, Any]]] = []  # (where, job)
    jobs, branches = document.get("jobs"), document.get("branches")
    if (jobs is None) == (branches is None):
        raise WorkflowFileError("give either 'jobs' (a list) or 'branches' (a mapping), not both")
    if jobs is not None:
        if not isinstance(jobs, Sequence) or isinstance(jobs, str):
            raise WorkflowFileError("'jobs' must be a list")
        entries = [(f"jobs[{i}]", _mapping(entry, f"jobs[{i}]")) for i, entry in enumerate(jobs)]
    else:
        if not isinstance(branches, Mapping):
            raise WorkflowFileError("'branches' must map branch names to lists of jobs")
        for branch, members in branches.items():
            if not isinstance(members, Sequence) or isinstance(members, str):
                raise WorkflowFileError(f"branch {branch!r} must hold a list of jobs")
            for i, entry in enumerate(members):
                where = f"branch {branch!r} job {i}"
                fields = _mapping(entry, where)
                if "branch" in fields and str(fields["branch"]) != str(branch):
                    raise WorkflowFileError(f"{where}: 'branch' differs from its branch {branch!r}")
                entries.append((where, {**fields, "branch": str(branch)}))
    if not entries:
        raise WorkflowFileError("the workflow has no jobs")
    specs = [_job(where, {**defaults, **fields}) for where, fields in entries]
    return WorkflowDocument(
        name=str(document.get("name") or ""),
        jobs=specs,
        request_id=str(document.get("request_id") or ""),
    )


def jobs_from_flags(
    slides: Sequence[str],
    job_types: Sequence[str],
    branch: str = "",
    params: Mapping[str, str] | None = None,
) -> list[pb.JobSpec]:
    """``job_types`` in order on every slide. Each slide gets its own branch
    (named after the file) unless ``branch`` puts them all in one."""
    if not slides:
        raise WorkflowFileError("name at least one slide, or a workflow file with --file")
    specs: list[pb.JobSpec] = []
    used: set[str] = set()
    for slide in slides:
        lane = branch or _unique(PurePath(slide).name or slide, used)
        for job_type in job_types:
            specs.append(
                _job(
                    f"slide {slide}",
                    {
                        "branch": lane,
                        "job_type": job_type,
                        "wsi_path": slide,
                        "params": params or {},
                    },
                )
            )
    return specs


def parse_params(pairs: Sequence[str]) -> dict[str, str]:
    """``["tile_size=512", ...]`` to a dict."""
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise WorkflowFileError(f"param {pair!r} is not NAME=VALUE")
        params[name] = value
    return params


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}-{n}"
    used.add(candidate)
    return candidate


def _mapping(entry: object, where: str) -> Mapping[str, Any]:
    if not isinstance(entry, Mapping):
        raise WorkflowFileError(f"{where}: a job must be a mapping of fields")
    return entry


def _no_unknown(fields: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(map(str, fields)) - allowed)
    if unknown:
        raise WorkflowFileError(
            f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _job(where: str, fields: Mapping[str, Any]) -> pb.JobSpec:
    _no_unknown(fields, JOB_FIELDS, where)
    for required in ("job_type", "wsi_path"):
        if not fields.get(required):
            raise WorkflowFileError(f"{where}: '{required}' is required")
    depends_on = fields.get("depends_on") or []
    if isinstance(depends_on, str) or not isinstance(depends_on, Sequence):
        raise WorkflowFileError(f"{where}: 'depends_on' must be a list of job keys")
    params = fields.get("params") or {}
    if not isinstance(params, Mapping):
        raise WorkflowFileError(f"{where}: 'params' must be a mapping")
    try:
        return job(
            str(fields.get("branch") or ""),
            str(fields["job_type"]),
            str(fields["wsi_path"]),
            key=str(fields.get("key") or ""),
            depends_on=[str(d) for d in depends_on],
            params={str(k): param_text(v) for k, v in params.items()},
        )
    except ValueError as exc:
        raise WorkflowFileError(f"{where}: {exc}") from None
