"""``make run``'s launcher as a user meets it: the services die with it however
it ends, a worker that dies is started again and its job retried while the
scheduler and gateway keep running, a port in use is one line and a non-zero
exit, and the seed's caps hold out of the box on a small machine."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from tests.harness import CMU, SLIDES, user
from tests.integration.support import LONG, spec
from tests.processes import alive, free_port, pids_of, started
from tests.timing import wait_for
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc


@dataclass
class Launched:
    process: subprocess.Popen[bytes]
    log: Path
    stub: pb_grpc.SchedulerStub
    env: dict[str, str]

    def services(self) -> dict[str, int]:
        """Service name -> pid, of the launcher's children."""
        found = {}
        for pid in pids_of(self.process.pid)[1:]:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if len(cmdline) > 2 and cmdline[1] == b"-m":
                found[cmdline[2].decode()] = pid
        return found


def launcher_env(workdir: Path) -> dict[str, str]:
    metrics = free_port()
    while metrics + 1 > 65535 or not _free(metrics + 1):
        metrics = free_port()
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "WSI_SCHEDULER_PORT": str(free_port()),
        "WSI_WORKER_PORT": str(free_port()),
        "WSI_GATEWAY_PORT": str(free_port()),
        "WSI_METRICS_PORT": str(metrics),
        "WSI_SLIDE_ROOTS": str(SLIDES),
        "WSI_JOURNAL": str(workdir / "journal.sqlite"),
        "WSI_RESULTS_DIR": str(workdir / "results"),
    }


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextmanager
def launched(workdir: Path, **extra: str) -> Iterator[Launched]:
    env = {**launcher_env(workdir), **extra}
    log = workdir / "launcher.log"
    process = started([sys.executable, "-m", "wsi_runtime.launch"], workdir, env, log)
    try:
        wait_for(
            lambda: "Ctrl-C stops everything" in log.read_text() or process.poll() is not None,
            90,
            "the launcher to start everything",
        )
        assert process.poll() is None, log.read_text()
        with grpc.insecure_channel(f"127.0.0.1:{env['WSI_SCHEDULER_PORT']}") as channel:
            yield Launched(process, log, pb_grpc.SchedulerStub(channel), env)
    finally:
        pids = pids_of(process.pid)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_sigkill_of_the_launcher_leaves_no_service_behind(tmp_path: Path) -> None:
    with launched(tmp_path) as run:
        services = run.services()
        assert set(services) == {"worker_service", "scheduler_service", "wsi_gateway"}
        everything = [p for pid in services.values() for p in pids_of(pid)]  # pools too
        run.process.kill()
        run.process.wait()
        killed_at = time.monotonic()
        wait_for(lambda: not any(alive(pid) for pid in everything), 5, "every service to end")
        assert time.monotonic() - killed_at < 5.0


def run_once(
    workdir: Path, env: dict[str, str], module: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """A program that is expected to end by itself (refusing to start)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_port_in_use_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    env = launcher_env(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["WSI_GATEWAY_PORT"])))
        taken.listen()
        done = run_once(tmp_path, env, "wsi_runtime.launch")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"wsi launcher: error: cannot listen on 127.0.0.1:{env['WSI_GATEWAY_PORT']}"
        " (gateway): Address already in use"
    ]
    # The same for one service on its own: a second scheduler, say.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        alone = run_once(tmp_path, env, "scheduler_service", "--scheduler-port", str(port))
    assert alone.returncode != 0
    assert len(alone.stderr.strip().splitlines()) == 1, alone.stderr
    assert "Address already in use" in alone.stderr


def test_a_missing_slide_root_is_refused(tmp_path: Path) -> None:
    env = {**launcher_env(tmp_path), "WSI_SLIDE_ROOTS": str(tmp_path / "typo")}
    done = run_once(tmp_path, env, "wsi_runtime.launch")
    assert done.returncode == 2 and "is not a folder" in done.stderr
    assert not (tmp_path / "typo").exists()


def job(stub: pb_grpc.SchedulerStub, who: str, job_id: str) -> pb.Job:
    return stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=user(who))


def tiles_segmented(metrics_port: str) -> float:
    """The worker's count of tiles it segmented (since its process started)."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    found = re.search(
        r'^wsi_worker_tiles_processed_total\{job_type="CELL_SEGMENTATION"\} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else 0.0


def nuclei_of(results: Path, job_id: str) -> dict[str, object]:
    with open(results / job_id / "cells.geojson") as handle:
        return {f["id"]: f["geometry"] for f in json.load(handle)["features"]}


def test_a_killed_worker_is_restarted_and_its_job_resumed(tmp_path: Path) -> None:
    """SIGKILL at about 60 % of a segmentation job: the launcher starts the
    worker again, the scheduler retries the job there, and the retry takes
    the tiles the killed run recorded: it segments only the rest, and its
    nuclei are those of a run that was never interrupted."""
    with launched(tmp_path) as run:
        before = run.services()
        wf = run.stub.CreateWorkflow(
            pb.CreateWorkflowRequest(name="w", jobs=[spec("seg", params=LONG)]),
            metadata=user("alice"),
        )
        job_id = wf.jobs[0].job_id
        progress = wait_for(
            lambda: (
                (p := job(run.stub, "alice", job_id).progress).tiles_done
                >= 0.6 * max(1, p.tiles_total)
                and p
            ),
            60,
            "the job to be 60 % done",
        )
        os.kill(before["worker_service"], signal.SIGKILL)
        done = wait_for(
            lambda: (j := job(run.stub, "alice", job_id)).state == pb.JOB_STATE_SUCCEEDED and j,
            120,
            "the job to be retried and succeed",
        )
        assert done.attempt == 2
        summary = json.loads(done.result.summary)
        total, resumed = summary["tiles_processed"], summary["tiles_resumed"]
        # Every tile reported done before the kill had been recorded first.
        assert progress.tiles_done <= resumed < total
        # The retry segmented the rest only: total work is one run's.
        metrics = str(int(run.env["WSI_METRICS_PORT"]) + 1)
        assert tiles_segmented(metrics) == total - resumed
        after = run.services()
        assert after["worker_service"] != before["worker_service"]
        assert after["scheduler_service"] == before["scheduler_service"]
        assert after["wsi_gateway"] == before["wsi_gateway"]
        assert run.process.poll() is None
        assert "launcher: worker exited" in run.log.read_text()
        # The same job never interrupted: the same nuclei, ids and outlines.
        again = (
            run.stub.CreateWorkflow(
                pb.CreateWorkflowRequest(name="w2", jobs=[spec("seg", params=LONG)]),
                metadata=user("alice"),
            )
            .jobs[0]
            .job_id
        )
        wait_for(
            lambda: job(run.stub, "alice", again).state == pb.JOB_STATE_SUCCEEDED,
            120,
            "the uninterrupted job to succeed",
        )
        results = Path(run.env["WSI_RESULTS_DIR"])
        assert nuclei_of(results, job_id) == nuclei_of(results, again)
        assert not (results / job_id / ".tiles-journal").exists()


def test_out_of_the_box_four_jobs_run_and_a_freed_user_slot_starts_the_fourth_user(
    tmp_path: Path,
) -> None:
    if os.cpu_count() and os.cpu_count() > 4:  # type: ignore[operator]
        pytest.skip("this checks the default caps on a small machine")
    with launched(tmp_path) as run:
        stub = run.stub
        # One user, four branches: four jobs at once (slots are not cores).
        wf = stub.CreateWorkflow(
            pb.CreateWorkflowRequest(
                name="four", jobs=[spec(f"j{i}", branch=f"b{i}", params=LONG) for i in range(4)]
            ),
            metadata=user("ann"),
        )
        wait_for(
            lambda: stub.GetStats(pb.GetStatsRequest(), metadata=user("ann")).running_jobs == 4,
            60,
            "four jobs running at once",
        )
        stub.CancelWorkflow(
            pb.CancelWorkflowRequest(workflow_id=wf.workflow_id), metadata=user("ann")
        )
        wait_for(
            lambda: stub.GetStats(pb.GetStatsRequest(), metadata=user("ann")).running_jobs == 0,
            30,
            "the cancelled jobs to stop",
        )
        # Three users hold the active slots, each with a long job; a fourth waits.
        holders = {}
        for who in ("u1", "u2", "u3"):
            holders[who] = stub.CreateWorkflow(
                pb.CreateWorkflowRequest(name=who, jobs=[spec("long", params=LONG, slide=CMU)]),
                metadata=user(who),
            )
        wait_for(
            lambda: stub.GetStats(pb.GetStatsRequest(), metadata=user("u1")).running_jobs == 3,
            60,
            "three holders running",
        )
        fourth = stub.CreateWorkflow(
            pb.CreateWorkflowRequest(name="u4", jobs=[spec("quick")]), metadata=user("u4")
        )
        time.sleep(1.0)
        waiting = job(stub, "u4", fourth.jobs[0].job_id)
        assert waiting.state == pb.JOB_STATE_PENDING
        assert "active-user slot" in waiting.pending_reason
        stub.CancelWorkflow(
            pb.CancelWorkflowRequest(workflow_id=holders["u1"].workflow_id), metadata=user("u1")
        )
        cancelled_at = time.monotonic()
        wait_for(
            lambda: job(stub, "u4", fourth.jobs[0].job_id).state != pb.JOB_STATE_PENDING,
            10,
            "the fourth user's job to start",
        )
        assert time.monotonic() - cancelled_at < 2.0
