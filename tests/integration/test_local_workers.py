"""``WSI_LOCAL_WORKERS=2 make run``: two workers on consecutive ports, each
with its own results folder, both joined to the scheduler by themselves;
jobs spread over both, and the results of both download through the
scheduler (``wsi results -d``) and the gateway."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.harness import CMU, user
from tests.integration.support import spec
from tests.integration.test_launcher import _free, launched
from tests.processes import free_port
from tests.timing import wait_for
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb

WSI = Path(sys.executable).parent / "wsi"


def free_run(length: int) -> int:
    """A port such that it and the next ``length - 1`` are free."""
    while True:
        first = free_port()
        if first + length < 65535 and all(_free(first + i) for i in range(length)):
            return first


def test_two_local_workers_share_the_jobs_and_serve_their_results(tmp_path: Path) -> None:
    ports = {"WSI_WORKER_PORT": str(free_run(2)), "WSI_METRICS_PORT": str(free_run(3))}
    with launched(tmp_path, WSI_LOCAL_WORKERS="2", **ports) as run:
        stats = wait_for(
            lambda: (
                (s := run.stub.GetStats(pb.GetStatsRequest(), metadata=user("u"))).workers_connected
                == 2
                and s
            ),
            60,
            "both workers to join",
        )
        assert {w.origin for w in stats.workers} == {"joined"}
        shown = subprocess.run(
            [str(WSI), "--address", f"127.0.0.1:{run.env['WSI_SCHEDULER_PORT']}", "--user", "u",
             "--json", "stats"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert shown.returncode == 0 and shown.stdout.count('"origin": "joined"') == 2
        jobs = [spec(f"j{i}", branch=f"b{i}", slide=CMU) for i in range(8)]
        made = run.stub.CreateWorkflow(pb.CreateWorkflowRequest(jobs=jobs), metadata=user("u"))
        request = pb.GetWorkflowRequest(workflow_id=made.workflow_id)
        done = wait_for(
            lambda: (
                (w := run.stub.GetWorkflow(request, metadata=user("u"))).state
                == pb.WORKFLOW_STATE_SUCCEEDED
                and w
            ),
            120,
            "the 8 jobs",
        )
        by_worker: dict[str, list[pb.Job]] = {}
        for job in done.jobs:
            by_worker.setdefault(job.attempt_workers[-1], []).append(job)
        assert len(by_worker) == 2, {w: len(j) for w, j in by_worker.items()}
        results = tmp_path / "results"
        for index, (worker, held) in enumerate(sorted(by_worker.items())):
            job = held[0]
            folder = results / f"worker-{sorted(by_worker).index(worker)}"
            on_disk = folder / job.result.files["summary.json"]
            assert on_disk.is_file(), (worker, sorted(os.listdir(folder)))
            target = tmp_path / f"download-{index}"
            got = subprocess.run(
                [str(WSI), "--address", f"127.0.0.1:{run.env['WSI_SCHEDULER_PORT']}",
                 "--user", "u", "results", job.job_id, "-d", str(target)],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert got.returncode == 0, got.stderr
            assert (target / "summary.json").read_bytes() == on_disk.read_bytes()
            gateway = f"http://127.0.0.1:{run.env['WSI_GATEWAY_PORT']}"
            reply = httpx.get(
                f"{gateway}/jobs/{job.job_id}/results/tissue_mask.png",
                headers={"X-User-ID": "u"},
                timeout=30,
            )
            assert reply.status_code == 200
            assert reply.content == (on_disk.parent / "tissue_mask.png").read_bytes()
