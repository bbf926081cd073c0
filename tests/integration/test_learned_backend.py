"""A job with backend=learned through the real services: it succeeds and
writes the result files a classical job writes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import cluster
from tests.integration.support import create, follow, get, spec
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb


def test_a_learned_job_runs_through_the_services(workdir: Path) -> None:
    with cluster(workdir, worker_slots=(2,)) as c:
        wf = create(
            c,
            "lee",
            [
                spec("learned", job_type=pb.CELL_SEGMENTATION, params={"backend": "learned"}),
                spec("classical", "b", job_type=pb.CELL_SEGMENTATION, params={}),
            ],
        )
        follow(c, "lee", wf)
        jobs = {job.key: job for job in get(c, "lee", wf.workflow_id).jobs}
    assert [pb.JobState.Name(j.state) for j in jobs.values()] == ["JOB_STATE_SUCCEEDED"] * 2
    learned, classical = (json.loads(jobs[k].result.summary) for k in ("learned", "classical"))
    assert learned["backend"] == "learned" and learned["backend_details"]["engine"] == "auto"
    # A job that names no backend gets the worker's default: classical without a GPU.
    assert classical["backend"] == "classical"
    assert set(jobs["learned"].result.files) == set(jobs["classical"].result.files)
    assert learned["nuclei"] > 0.5 * classical["nuclei"] > 0
    cells = workdir / "results" / jobs["learned"].result.files["cells.geojson"]
    features = json.loads(cells.read_text())
    assert len(features["features"]) == learned["nuclei"]
