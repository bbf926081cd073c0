"""A workflow as a table for analysis, one row per job: slide, state, error,
tissue area, nuclei, density and the slide's measurement statistics, from
the jobs' summaries. Pure; the gateway serves it as CSV or Parquet,
``wsi table`` prints or saves it."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from wsi_protocol import measures
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

Cell = str | int | float | None

COLUMNS = (
    "workflow_id",
    "job_id",
    "key",
    "branch",
    "slide",
    "job_type",
    "state",
    "error",
    "backend",
    "seconds",
    "tissue_area_mm2",
    "nuclei",
    "nuclei_per_mm2",
    *(f"{m}_{s}" for m in measures.MEASURES for s in measures.STATISTICS),
)


def summary_of(job: pb.Job) -> dict[str, Any]:
    """The job's summary as a dict ({} before it has one, or if it is not JSON)."""
    if not job.result.summary:
        return {}
    try:
        summary = json.loads(job.result.summary)
    except ValueError:
        return {}
    return summary if isinstance(summary, dict) else {}


def job_seconds(job: pb.Job) -> float | None:
    """From its start to its end, once it ended."""
    if not (job.start_time.seconds and job.end_time.seconds):
        return None
    return (job.end_time.ToNanoseconds() - job.start_time.ToNanoseconds()) / 1e9


def _number(value: object) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def job_row(workflow_id: str, job: pb.Job) -> dict[str, Cell]:
    summary = summary_of(job)
    area, nuclei = _number(summary.get("tissue_area_mm2")), _number(summary.get("nuclei"))
    seconds = job_seconds(job)
    row: dict[str, Cell] = {
        "workflow_id": workflow_id,
        "job_id": job.job_id,
        "key": job.key,
        "branch": job.branch,
        "slide": job.wsi_path,
        "job_type": pb.JobType.Name(job.job_type).removeprefix("JOB_TYPE_"),
        "state": pb.JobState.Name(job.state).removeprefix("JOB_STATE_"),
        "error": job.error,
        "backend": summary.get("backend") if isinstance(summary.get("backend"), str) else "",
        "seconds": round(seconds, 3) if seconds is not None else None,
        "tissue_area_mm2": area,
        "nuclei": nuclei,
        "nuclei_per_mm2": round(nuclei / area, 2) if nuclei is not None and area else None,
    }
    stats = summary.get("measurements")
    stats = stats if isinstance(stats, dict) else {}
    for measure in measures.MEASURES:
        values = stats.get(measure)
        values = values if isinstance(values, dict) else {}
        for statistic in measures.STATISTICS:
            row[f"{measure}_{statistic}"] = _number(values.get(statistic))
    return row


def workflow_rows(workflow: pb.Workflow) -> list[dict[str, Cell]]:
    return [job_row(workflow.workflow_id, job) for job in workflow.jobs]


TEXT_COLUMNS = frozenset(
    {"workflow_id", "job_id", "key", "branch", "slide", "job_type", "state", "error", "backend"}
)


def to_parquet(rows: Iterable[dict[str, Cell]]) -> bytes:
    """The same table as Parquet: text columns as strings, ``nuclei`` as
    int64, the rest as float64, a value not known as null. (pyarrow is
    imported here only: 60 MB that a process not asked for Parquet never holds.)"""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def kind(name: str) -> Any:
        if name in TEXT_COLUMNS:
            return pa.string()
        return pa.int64() if name == "nuclei" else pa.float64()

    schema = pa.schema([(name, kind(name)) for name in COLUMNS])
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def to_csv(rows: Iterable[dict[str, Cell]]) -> str:
    """RFC 4180 CSV with a header row; an empty cell for a value not known."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()
