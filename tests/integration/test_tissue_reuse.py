"""A segmentation job after a tissue-mask job of the same slide takes that
job's mask through the scheduler instead of finding the tissue again."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from tests.harness import cluster, start_scheduler, user
from tests.integration.support import LONG, create, follow, get, spec
from tests.timing import wait_for
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc


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


def test_after_a_restart_the_mask_is_read_back_from_its_worker(workdir: Path) -> None:
    """The scheduler keeps masks in memory only: restarted while the dependent
    job waits, it reads the mask back from the worker that holds it."""
    with cluster(workdir, worker_slots=(2,), max_workers=2) as c:
        wf = create(
            c,
            "ann",
            [
                spec("mask"),
                spec("slow", branch="slow", params=LONG),
                spec("cells", branch="c", deps=["mask", "slow"], job_type=pb.CELL_SEGMENTATION),
            ],
        )
        jobs = {job.key: job.job_id for job in wf.jobs}
        wait_for(
            lambda: get(c, "ann", wf.workflow_id).jobs[0].state == pb.JOB_STATE_SUCCEEDED,
            60,
            "the mask job",
        )
        c.scheduler.stop()
        again = start_scheduler(workdir, c.workers, max_workers=2)
        try:
            with grpc.insecure_channel(again.address) as channel:
                stub = pb_grpc.SchedulerStub(channel)
                request = pb.GetWorkflowRequest(workflow_id=wf.workflow_id)
                done = wait_for(
                    lambda: (
                        (w := stub.GetWorkflow(request, metadata=user("ann"))).state
                        == pb.WORKFLOW_STATE_SUCCEEDED
                        and w
                    ),
                    180,
                    "the workflow after the restart",
                )
        finally:
            again.stop()
    by_key = {job.key: job for job in done.jobs}
    assert by_key["slow"].attempt == 2  # it ran through the restart: cells ran after it
    assert json.loads(by_key["cells"].result.summary)["tissue_mask_from"] == jobs["mask"]
