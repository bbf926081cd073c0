"""Cohorts without a server: patterns expanded against the listed slides, a
cohort cut to the jobs a workflow may hold, the jobs to run again, and the
table of a workflow's jobs."""

from __future__ import annotations

import csv
import io
import json

import pytest

from wsi_client.cohort import CohortError, expand, is_pattern, split, unfinished_business
from wsi_protocol import cohort_table, measures
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

LISTED = ["a/1.svs", "a/2.svs", "a/deep/3.svs", "b/1.svs", "b/x.tiff", "top.svs"]


def test_patterns_and_folders_take_what_the_scheduler_lists() -> None:
    assert is_pattern("a/*.svs") and is_pattern("a/") and is_pattern("x?.svs")
    assert not is_pattern("a/1.svs")
    assert expand(["a/"], LISTED) == ["a/1.svs", "a/2.svs", "a/deep/3.svs"]
    assert expand(["*/1.svs"], LISTED) == ["a/1.svs", "b/1.svs"]
    assert expand(["b/*.tiff", "top.svs", "a/1.svs", "*/1.svs"], LISTED) == [
        "b/x.tiff", "top.svs", "a/1.svs", "b/1.svs"
    ]  # fmt: skip
    assert expand(["unlisted.svs"], LISTED) == ["unlisted.svs"]  # the scheduler judges it
    with pytest.raises(CohortError, match="matches 'c/'"):
        expand(["c/"], LISTED)


def test_a_cohort_is_cut_to_fit_keeping_each_slide_s_jobs_together() -> None:
    slides = [f"s{i}" for i in range(7)]
    assert split(slides, 2, 0) == [slides]
    assert split(slides, 2, 14) == [slides]
    assert split(slides, 2, 5) == [["s0", "s1"], ["s2", "s3"], ["s4", "s5"], ["s6"]]
    with pytest.raises(CohortError, match="more than a workflow may hold"):
        split(slides, 3, 2)


def job(key: str, state: int, deps: tuple[str, ...] = (), summary: object = None) -> pb.Job:
    made = pb.Job(
        job_id=f"id-{key}",
        key=key,
        branch=f"b-{key}",
        job_type=pb.CELL_SEGMENTATION,
        wsi_path=f"{key}.svs",
        depends_on=deps,
        state=state,  # type: ignore[arg-type]
        params={"tile_size": "512"},
    )
    if summary is not None:
        made.result.summary = json.dumps(summary)
    return made


def test_what_did_not_succeed_runs_again_without_its_succeeded_dependencies() -> None:
    workflow = pb.Workflow(
        jobs=[
            job("mask", pb.JOB_STATE_SUCCEEDED),
            job("cells", pb.JOB_STATE_FAILED, ("mask",)),
            job("late", pb.JOB_STATE_CANCELLED, ("cells",)),
            job("other", pb.JOB_STATE_SUCCEEDED),
        ]
    )
    again = unfinished_business(workflow)
    assert [(j.key, list(j.depends_on)) for j in again] == [("cells", []), ("late", ["cells"])]
    assert again[0].params == {"tile_size": "512"} and again[0].wsi_path == "cells.svs"


def test_the_table_has_a_row_per_job_with_density_and_statistics() -> None:
    stats = {m: {s: 1.5 for s in measures.STATISTICS} for m in measures.MEASURES}
    done = job(
        "ok",
        pb.JOB_STATE_SUCCEEDED,
        summary={"nuclei": 300, "tissue_area_mm2": 1.5, "backend": "learned",
                 "measurements": stats},
    )  # fmt: skip
    done.start_time.FromSeconds(100)
    done.end_time.FromNanoseconds(112_500_000_000)
    failed = job("bad", pb.JOB_STATE_FAILED)
    failed.error = 'cannot open "bad.svs", a comma'
    workflow = pb.Workflow(workflow_id="wf", jobs=[done, failed, job("odd", 2, summary=[1])])
    rows = list(
        csv.DictReader(io.StringIO(cohort_table.to_csv(cohort_table.workflow_rows(workflow))))
    )
    assert [r["key"] for r in rows] == ["ok", "bad", "odd"]
    assert tuple(rows[0]) == cohort_table.COLUMNS
    ok, bad, odd = rows
    assert (ok["state"], ok["job_type"], ok["backend"]) == (
        "SUCCEEDED",
        "CELL_SEGMENTATION",
        "learned",
    )
    assert (ok["nuclei"], ok["tissue_area_mm2"], ok["nuclei_per_mm2"]) == ("300", "1.5", "200.0")
    assert ok["seconds"] == "12.5" and ok["area_um2_p50"] == "1.5" and ok["solidity_mean"] == "1.5"
    assert (bad["state"], bad["error"], bad["nuclei"]) == ("FAILED", failed.error, "")
    assert odd["state"] == "RUNNING" and odd["nuclei_per_mm2"] == ""
