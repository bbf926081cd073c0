"""Cohorts, pure: slide patterns and folders expanded against the names the
scheduler lists, a cohort split to fit the jobs one workflow may hold, and
the jobs of a finished workflow that did not succeed, to run again."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

PATTERN_CHARACTERS = frozenset("*?[")


class CohortError(ValueError):
    """A pattern that matches nothing, or a cohort that cannot be cut to fit."""


def is_pattern(argument: str) -> bool:
    """A glob (``cohort/*.svs``) or a folder (``cohort/``), not one slide's name."""
    return argument.endswith("/") or not PATTERN_CHARACTERS.isdisjoint(argument)


def expand(arguments: Sequence[str], names: Iterable[str]) -> list[str]:
    """Each argument as itself, or a pattern as the listed ``names`` it matches
    (sorted; a folder: everything under it; ``*`` crosses folders), each slide
    once, in the order given."""
    listed = sorted(set(names))
    out: dict[str, None] = {}
    for argument in arguments:
        if not is_pattern(argument):
            out[argument] = None
            continue
        if argument.endswith("/"):
            matched = [n for n in listed if n.startswith(argument.lstrip("/"))]
        else:
            matched = [n for n in listed if fnmatchcase(n, argument.lstrip("/"))]
        if not matched:
            raise CohortError(
                f"no slide under the scheduler's slide roots matches {argument!r}"
                " (patterns are relative to the slide roots; `wsi slides` lists them)"
            )
        out.update(dict.fromkeys(matched))
    return list(out)


def split(slides: Sequence[str], jobs_per_slide: int, max_jobs: int) -> list[list[str]]:
    """The slides in runs that each fit one workflow (a slide's jobs together);
    ``max_jobs`` 0: no limit known, one run."""
    if max_jobs <= 0 or len(slides) * jobs_per_slide <= max_jobs:
        return [list(slides)]
    per_workflow = max_jobs // jobs_per_slide
    if per_workflow == 0:
        raise CohortError(
            f"one slide's {jobs_per_slide} jobs are more than a workflow may hold ({max_jobs})"
        )
    return [list(slides[i : i + per_workflow]) for i in range(0, len(slides), per_workflow)]


def unfinished_business(workflow: pb.Workflow) -> list[pb.JobSpec]:
    """The jobs that did not succeed (failed, cancelled, or cancelled because
    one they depend on failed), as they were submitted; a dependency on a job
    that succeeded is dropped (its result stays where it is)."""
    again = [job for job in workflow.jobs if job.state != pb.JOB_STATE_SUCCEEDED]
    keys = {job.key for job in again}
    return [
        pb.JobSpec(
            key=job.key,
            branch=job.branch,
            job_type=job.job_type,
            wsi_path=job.wsi_path,
            depends_on=[key for key in job.depends_on if key in keys],
            params=dict(job.params),
        )
        for job in again
    ]
