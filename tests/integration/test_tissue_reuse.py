"""A segmentation job after a tissue-mask job of the same slide takes that
job's mask through the scheduler instead of finding the tissue again."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import cluster
from tests.integration.support import create, follow, get, spec
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb


def test_the_mask_of_a_finished_dependency_travels_to_the_segmentation_job(
    workdir: Path,
) -> None:
    with cluster(workdir, worker_slots=(1, 1)) as c:
        wf = create(
            c,
            "ann",
            [
                spec("mask"),
                spec("cells", deps=["mask"], job_type=pb.CELL_SEGMENTATION),
                spec("alone", branch="other", job_type=pb.CELL_SEGMENTATION),
            ],
        )
        follow(c, "ann", wf)
        jobs = {job.key: job for job in get(c, "ann", wf.workflow_id).jobs}
    assert {key: pb.JobState.Name(job.state) for key, job in jobs.items()} == dict.fromkeys(
        jobs, "JOB_STATE_SUCCEEDED"
    )
    summaries = {key: json.loads(job.result.summary) for key, job in jobs.items()}
    # The dependent job took the mask (whichever worker ran it); the other found its own.
    assert summaries["cells"]["tissue_mask_from"] == jobs["mask"].job_id
    assert summaries["alone"]["tissue_mask_from"] is None
    files = {key: dict(job.result.files) for key, job in jobs.items()}
    for name in ("tissue.geojson", "tissue_mask.png"):
        reused = c.result_file(files["cells"][name]).read_bytes()
        assert reused == c.result_file(files["mask"][name]).read_bytes()
        assert reused == c.result_file(files["alone"][name]).read_bytes()  # the same tissue
    assert summaries["cells"]["nuclei"] == summaries["alone"]["nuclei"] > 0
