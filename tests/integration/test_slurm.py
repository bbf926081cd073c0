"""The Slurm recipe (deploy/slurm/wsi-worker.sbatch) run directly, as the
batch step runs it on a node: with the allocation's variables set, it starts
a worker that joins a running scheduler by itself (secret from a file),
takes a job, keeps its results in node-local scratch, and leaves the
scheduler when Slurm's SIGTERM comes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc

from tests.harness import CMU, ROOT, SLIDES, WORKER_SECRET, start_scheduler, user
from tests.integration.support import spec
from tests.processes import free_port, started
from tests.timing import wait_for
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc

SCRIPT = ROOT / "deploy" / "slurm" / "wsi-worker.sbatch"
LAB = user("lab")


def test_the_batch_script_starts_a_worker_that_joins_runs_a_job_and_leaves(
    tmp_path: Path,
) -> None:
    scheduler = start_scheduler(tmp_path, [], heartbeat_interval="0.5", operators="lab")
    secret = tmp_path / "worker-secret"
    secret.write_text(WORKER_SECRET)
    secret.chmod(0o600)
    port = free_port()
    env = {
        **os.environ,
        "WSI_SCHEDULER": scheduler.address,
        "WSI_WORKER_SECRET_FILE": str(secret),
        "WSI_SLIDE_ROOTS": str(SLIDES),
        "WSI_PYTHON": sys.executable,
        "WSI_HOST": "127.0.0.1",
        "WSI_WORKER_PORT": str(port),
        "WSI_ADVERTISE_HOST": "127.0.0.1",
        "SLURM_CPUS_PER_TASK": "2",
        "SLURM_JOB_ID": "4242",
        "TMPDIR": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("WSI_WORKER_SECRET", None)  # the file only, as on a cluster
    log = tmp_path / "slurm-4242.out"
    batch = started(["bash", str(SCRIPT)], tmp_path, env, log)
    try:
        with grpc.insecure_channel(scheduler.address) as channel:
            stub = pb_grpc.SchedulerStub(channel)

            def joined() -> list[pb.WorkerStatus]:
                stats = stub.GetStats(pb.GetStatsRequest(), metadata=LAB)
                return [w for w in stats.workers if w.address == f"127.0.0.1:{port}"]

            wait_for(lambda: any(w.connected for w in joined()), 60, "the worker to join")
            (worker,) = joined()
            assert worker.slots == 2  # from the allocation: 2 CPUs, at least 2 slots
            wf = stub.CreateWorkflow(
                pb.CreateWorkflowRequest(name="hpc", jobs=[spec("mask", slide=CMU)]),
                metadata=LAB,
            )
            job = wait_for(
                lambda: (
                    (
                        j := stub.GetJob(pb.GetJobRequest(job_id=wf.jobs[0].job_id), metadata=LAB)
                    ).state
                    == pb.JOB_STATE_SUCCEEDED
                    and j
                ),
                60,
                "the job to succeed on the batch worker",
            )
            scratch = tmp_path / "wsi-results-4242" / job.job_id
            assert (scratch / "summary.json").is_file()  # node-local scratch
            batch.send_signal(signal.SIGTERM)  # what scancel or the time limit sends
            assert batch.wait(30) == 0, log.read_text()
            wait_for(lambda: not any(w.connected for w in joined()), 15, "the worker to leave")
        text = log.read_text()
        assert f"2 CPUs, 2 slots, joining {scheduler.address}" in text
        assert WORKER_SECRET not in text
    finally:
        if batch.poll() is None:
            os.killpg(batch.pid, signal.SIGKILL)
            batch.wait()
        scheduler.stop()


def test_the_batch_script_says_what_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSI_")}
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "set WSI_SCHEDULER" in done.stderr
    env["WSI_SCHEDULER"] = "127.0.0.1:1"
    env["WSI_WORKER_SECRET_FILE"] = str(tmp_path / "absent")
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "cannot read WSI_WORKER_SECRET_FILE" in done.stderr
