"""The learned backend through the real services: the default of a job that
names no backend on a worker with the default settings and no GPU, and it
writes the result files a classical job writes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import cluster
from tests.integration.support import create, follow, get, spec
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb


def test_a_job_that_names_no_backend_runs_learned_on_a_cpu_only_worker(workdir: Path) -> None:
    with cluster(
        workdir, worker_slots=(2,), worker_flags={"default_backend": "auto", "model_device": "cpu"}
    ) as c:
        wf = create(
            c,
            "lee",
            [
                spec("learned", job_type=pb.CELL_SEGMENTATION, params={}),
                spec(
                    "classical", "b", job_type=pb.CELL_SEGMENTATION, params={"backend": "classical"}
                ),
            ],
        )
        follow(c, "lee", wf)
        jobs = {job.key: job for job in get(c, "lee", wf.workflow_id).jobs}
    assert [pb.JobState.Name(j.state) for j in jobs.values()] == ["JOB_STATE_SUCCEEDED"] * 2
    learned, classical = (json.loads(jobs[k].result.summary) for k in ("learned", "classical"))
    assert learned["backend"] == "learned" and learned["backend_from"] == "worker default"
    details = learned["backend_details"]
    assert (details["engine"], details["precision"], details["device"]) == (
        "onnx-int8",
        "int8",
        "cpu",
    )
    assert details["runtime"].startswith("ONNX Runtime ")
    assert classical["backend"] == "classical" and classical["backend_from"] == "job"
    assert set(jobs["learned"].result.files) == set(jobs["classical"].result.files)
    assert learned["nuclei"] > 0.5 * classical["nuclei"] > 0
    cells = workdir / "results" / jobs["learned"].result.files["cells.geojson"]
    features = json.loads(cells.read_text())
    assert len(features["features"]) == learned["nuclei"]
