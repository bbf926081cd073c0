"""What a person compares between workflows and jobs, pure: the slides, the
backend that ran, the nuclei found, how long it took and how long ago it was
made, with durations written as people read them ("5.7 s", "3 min 12 s")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from wsi_protocol.cohort_table import job_seconds, summary_of
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb


def human_duration(seconds: float) -> str:
    """0.5 s, 5.7 s, 42 s, 3 min 12 s, 2 h 05 min: as precise as a person reads."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{round(seconds)} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class JobFacts:
    backend: str  # the backend that segmented ("" for none)
    nuclei: int | None  # None: not a finished segmentation
    seconds: float | None  # from its start to its end, once it ended
    # Why the pixel size used is not the one asked for, or what a slide
    # without one was taken as (the summary's mpp_note; "" for none).
    note: str = ""


def job_facts(job: pb.Job) -> JobFacts:
    """What a job's summary and times say (the summary's JSON read once)."""
    summary = summary_of(job)
    backend, nuclei, note = summary.get("backend"), summary.get("nuclei"), summary.get("mpp_note")
    return JobFacts(
        backend=backend if isinstance(backend, str) else "",
        nuclei=nuclei if isinstance(nuclei, int) else None,
        seconds=job_seconds(job),
        note=note if isinstance(note, str) else "",
    )


@dataclass(frozen=True)
class WorkflowDigest:
    slides: str  # the slides' file names, comma-separated
    backends: str  # the backends that segmented, comma-separated ("" for none yet)
    nuclei: int | None  # found by its finished segmentation jobs; None: none finished
    seconds: float | None  # from its first job's start to its last job's end, once it ended
    age_s: float  # since it was made


def digest(workflow: pb.Workflow, now_s: float) -> WorkflowDigest:
    """``now_s``: the time now, in seconds since the epoch (the caller's clock)."""
    jobs = list(workflow.jobs)
    facts = [job_facts(j) for j in jobs]
    slides = dict.fromkeys(PurePosixPath(j.wsi_path).name for j in jobs)
    backends = dict.fromkeys(f.backend for f in facts if f.backend)
    counts = [f.nuclei for f in facts if f.nuclei is not None]
    starts = [j.start_time.ToNanoseconds() for j in jobs if j.start_time.seconds]
    ends = [j.end_time.ToNanoseconds() for j in jobs if j.end_time.seconds]
    ended = bool(jobs) and len(ends) == len(jobs)
    seconds = (max(ends) - min(starts)) / 1e9 if ended and starts else None
    created = workflow.create_time.ToNanoseconds() / 1e9 if workflow.create_time.seconds else now_s
    return WorkflowDigest(
        slides=", ".join(slides),
        backends=", ".join(backends),
        nuclei=sum(counts) if counts else None,
        seconds=seconds,
        age_s=max(0.0, now_s - created),
    )


def human_age(seconds: float) -> str:
    """How long ago: "just now", "40 s ago", "3 min ago", "2 h ago", "5 d ago"."""
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{round(seconds)} s ago"
    if seconds < 3600:
        return f"{round(seconds / 60)} min ago"
    if seconds < 86400:
        return f"{round(seconds / 3600)} h ago"
    return f"{round(seconds / 86400)} d ago"
