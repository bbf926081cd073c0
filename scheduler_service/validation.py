"""Checks a workflow submission before anything is queued. Pure: no file system
(slide paths are resolved by ``slide_paths``), no gRPC."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from wsi_runtime import job_params
from wsi_runtime.job_params import JOB_TYPES

MAX_NAME_LENGTH = 256
MAX_KEY_LENGTH = 128
MAX_PATH_LENGTH = 4096
MAX_PARAMS = 32
MAX_PARAM_LENGTH = 256


class InvalidSpec(ValueError):
    """The submission is malformed; the message says what to fix."""


def _check_param_sizes(params: dict[str, str], where: str) -> None:
    if len(params) > MAX_PARAMS:
        raise InvalidSpec(f"{where}: at most {MAX_PARAMS} params, got {len(params)}")
    for name, value in params.items():
        limit = job_params.MAX_VALUE_LENGTH.get(name, MAX_PARAM_LENGTH)
        if len(name) > MAX_PARAM_LENGTH or len(value) > limit:
            raise InvalidSpec(
                f"{where}: param {name[:40]!r} is too long: names and values of at most"
                f" {MAX_PARAM_LENGTH} characters ({limit:,} for its value)"
            )


class TooManyJobs(ValueError):
    """The workflow holds more jobs than the configured cap (a quota)."""


@dataclass(frozen=True)
class JobInput:
    key: str
    branch: str
    job_type: str
    wsi_path: str
    depends_on: tuple[str, ...] = ()
    params: dict[str, str] = field(default_factory=dict)


def normalise_jobs(
    jobs: Sequence[JobInput], max_jobs: int, min_tile_size: int = 0
) -> list[JobInput]:
    """Fills default keys and branches, and rejects anything malformed:
    empty workflows, unknown job types, parameters outside their schema
    (``job_params``), duplicate or unknown keys, cycles."""
    if not jobs:
        raise InvalidSpec("a workflow needs at least one job")
    if len(jobs) > max_jobs:
        raise TooManyJobs(
            f"a workflow may have at most {max_jobs} jobs, got {len(jobs)}: "
            "split it into several workflows"
        )
    out: list[JobInput] = []
    seen: set[str] = set()
    named: dict[str, str] = {}  # key -> how a message names the job
    for index, job in enumerate(jobs):
        key = job.key or str(index)
        where = named[key] = job_name(job, index)
        if len(key) > MAX_KEY_LENGTH or len(job.branch) > MAX_KEY_LENGTH:
            raise InvalidSpec(f"{where}: key and branch may be at most {MAX_KEY_LENGTH} characters")
        if key in seen:
            raise InvalidSpec(f"{where}: duplicate job key")
        seen.add(key)
        if job.job_type not in JOB_TYPES:
            raise InvalidSpec(
                f"{where}: unknown job type {job.job_type!r}; use one of {', '.join(JOB_TYPES)}"
            )
        if not job.wsi_path:
            raise InvalidSpec(f"{where}: wsi_path is required")
        if len(job.wsi_path) > MAX_PATH_LENGTH:
            raise InvalidSpec(f"{where}: wsi_path is longer than {MAX_PATH_LENGTH} characters")
        _check_param_sizes(job.params, where)
        try:
            job_params.parse(job.job_type, job.params, min_tile_size)
        except job_params.InvalidParams as exc:
            raise InvalidSpec(f"{where}: {exc}") from None
        out.append(
            JobInput(
                key=key,
                branch=job.branch or "default",
                job_type=job.job_type,
                wsi_path=job.wsi_path,
                depends_on=tuple(dict.fromkeys(job.depends_on)),
                params=dict(job.params),
            )
        )
    for job in out:
        for dep in job.depends_on:
            if dep not in seen:
                raise InvalidSpec(f"{named[job.key]} depends on unknown job key {dep!r}")
            if dep == job.key:
                raise InvalidSpec(f"{named[job.key]} depends on itself")
    _reject_cycles(out)
    return out


def check_backends(jobs: Sequence[JobInput], available: frozenset[str] | None) -> None:
    """Refuses a job that names a backend no connected worker can run (it would
    only fail there). ``available``: what the connected workers offer, None
    while not known: the jobs then wait for workers as always."""
    if available is None:
        return
    for index, job in enumerate(jobs):
        backend = job.params.get("backend", "").strip()
        if backend and backend not in available:
            raise InvalidSpec(
                f"{job_name(job, index)}: backend {backend!r} cannot run on any connected"
                f" worker; they offer {', '.join(sorted(available))}"
            )


def job_name(job: JobInput, index: int) -> str:
    """A job as its submitter knows it: by the key they gave, else by its
    place in their list as people count (1, 2, ...) and its branch."""
    if job.key:
        return f"job {job.key!r}"
    return f"job {index + 1} in the list (no key; branch {job.branch or 'default'!r})"


def _reject_cycles(jobs: Sequence[JobInput]) -> None:
    """A job waits for its dependencies and for the jobs before it in its
    branch; a cycle in those edges would wait forever."""
    edges: dict[str, list[str]] = {job.key: list(job.depends_on) for job in jobs}
    last_in_branch: dict[str, str] = {}
    for job in jobs:
        if job.branch in last_in_branch:
            edges[job.key].append(last_in_branch[job.branch])
        last_in_branch[job.branch] = job.key
    indegree = {key: 0 for key in edges}
    dependents: dict[str, list[str]] = {key: [] for key in edges}
    for key, prerequisites in edges.items():
        for pre in prerequisites:
            indegree[key] += 1
            dependents[pre].append(key)
    ready = [key for key, degree in indegree.items() if degree == 0]
    visited = 0
    while ready:
        key = ready.pop()
        visited += 1
        for nxt in dependents[key]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    if visited != len(edges):
        stuck = sorted(key for key, degree in indegree.items() if degree > 0)
        raise InvalidSpec(
            "dependency cycle (counting branch order) among jobs: " + ", ".join(stuck[:10])
        )
