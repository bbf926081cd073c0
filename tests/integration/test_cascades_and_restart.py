"""Workflows at the caps against real services: a 1,000-job chain cancelled in
the middle, one whose head fails, both ending within seconds; the user's
active slot given back; the system killed and restarted on that journal
serving the same states; and a damaged journal refused with one line."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import grpc

from tests.harness import ROOT, cluster, start_scheduler, user
from tests.integration.support import create, get, spec
from tests.timing import wait_for
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc

CHAIN = 1000
FINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}


def chain(head_slide: str = "CMU-1-Small-Region.svs") -> list[pb.JobSpec]:
    jobs = [spec("k0", branch="b0", slide=head_slide)]
    jobs += [spec(f"k{i}", branch=f"b{i % 4}", deps=[f"k{i - 1}"]) for i in range(1, CHAIN)]
    return jobs


def states(wf: pb.Workflow) -> list[int]:
    return [job.state for job in wf.jobs]


def test_long_chains_cancel_and_fail_within_seconds_and_survive_a_kill(tmp_path: Path) -> None:
    # One active user at a time: a slot kept by a stuck cascade would stop 'bob'.
    with cluster(tmp_path, worker_slots=(4,), max_active_users=1) as c:
        cancelled = create(c, "alice", chain(), name="cancelled")
        failed = create(c, "alice", chain(head_slide="unreadable.svs"), name="failed")
        waiting = create(c, "bob", [spec("only")], name="waiting")

        reply = c.stub.CancelJob(
            pb.CancelJobRequest(job_id=cancelled.jobs[CHAIN // 2].job_id), metadata=user("alice")
        )
        assert reply.state == pb.JOB_STATE_CANCELLED
        tail = states(get(c, "alice", cancelled.workflow_id))[CHAIN // 2 :]
        assert set(tail) == {pb.JOB_STATE_CANCELLED}  # the whole tail, in that one call

        # The failing head ends its whole chain.
        started = time.monotonic()
        wf = wait_for(
            lambda: (
                (w := get(c, "alice", failed.workflow_id)).state == pb.WORKFLOW_STATE_FAILED and w
            ),
            60,
            "the failed chain to end",
        )
        assert wf.jobs[0].state == pb.JOB_STATE_FAILED
        assert set(states(wf)[1:]) == {pb.JOB_STATE_CANCELLED}

        # The rest of the first chain: cancelled as a whole, the slot goes to bob.
        c.stub.CancelWorkflow(
            pb.CancelWorkflowRequest(workflow_id=cancelled.workflow_id), metadata=user("alice")
        )
        wait_for(
            lambda: get(c, "bob", waiting.workflow_id).state == pb.WORKFLOW_STATE_SUCCEEDED,
            60,
            "bob's job to run once alice's slot is free",
        )
        assert time.monotonic() - started < 60
        stats = c.stub.GetStats(pb.GetStatsRequest(), metadata=user("alice"))
        assert stats.pending_jobs == 0 and stats.running_jobs == 0 and stats.active_users == 0
        before = {
            w.workflow_id: (w.state, states(w))
            for w in (get(c, "alice", cancelled.workflow_id), get(c, "alice", failed.workflow_id))
        }
        assert all(set(s) <= FINAL for _, s in before.values())

        # Killed outright, then started again on the same journal.
        c.scheduler.kill()
        again = start_scheduler(tmp_path, c.workers)
        try:
            with grpc.insecure_channel(again.address) as channel:
                stub = pb_grpc.SchedulerStub(channel)
                for workflow_id, (state, job_states) in before.items():
                    wf = stub.GetWorkflow(
                        pb.GetWorkflowRequest(workflow_id=workflow_id), metadata=user("alice")
                    )
                    assert (wf.state, states(wf)) == (state, job_states)
                fresh = stub.CreateWorkflow(
                    pb.CreateWorkflowRequest(name="after", jobs=[spec("x")]),
                    metadata=user("carol"),
                )

                def done() -> bool:
                    wf = stub.GetWorkflow(
                        pb.GetWorkflowRequest(workflow_id=fresh.workflow_id),
                        metadata=user("carol"),
                    )
                    return wf.state == pb.WORKFLOW_STATE_SUCCEEDED

                wait_for(done, 60, "a new job to run after the restart")
        finally:
            again.stop()


def run_scheduler(journal: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """A scheduler stopped (SIGTERM) as soon as it says it listens, or as it
    exits by itself: its output, whichever way its start went."""
    command = [
        sys.executable,
        "-m",
        "scheduler_service",
        "--journal",
        str(journal),
        "--scheduler-port",
        "0",
        "--metrics-port",
        "-1",
        "--worker-addresses",
        "127.0.0.1:9",
        "--slide-roots",
        str(journal.parent),
        *flags,
    ]
    stdout, stderr = journal.with_suffix(".out"), journal.with_suffix(".err")
    with stdout.open("w") as out, stderr.open("w") as err:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err, text=True)
        try:
            wait_for(
                lambda: process.poll() is not None or "listening on" in stdout.read_text(),
                30,
                "the scheduler to start or to give up",
            )
        finally:
            if process.poll() is None:
                process.terminate()
            process.wait(timeout=30)
    return subprocess.CompletedProcess(
        command, process.returncode, stdout.read_text(), stderr.read_text()
    )


def test_a_damaged_journal_record_stops_the_start_with_one_line_until_quarantined(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal.sqlite"
    with cluster(tmp_path, worker_slots=(2,), journal=str(journal)) as c:
        wf = create(c, "alice", [spec("a"), spec("b", deps=["a"])])
        wait_for(
            lambda: get(c, "alice", wf.workflow_id).state == pb.WORKFLOW_STATE_SUCCEEDED,
            60,
            "the workflow to finish",
        )
    with sqlite3.connect(journal) as db:
        rows = db.execute("SELECT id, kind FROM records ORDER BY id").fetchall()
        damaged = {
            rows[1][0]: "{not json",  # a dispatch record with a torn payload
        }
        for rowid, payload in damaged.items():
            db.execute("UPDATE records SET payload = ? WHERE id = ?", (payload, rowid))
        db.execute("UPDATE records SET kind = 'teleport' WHERE id = ?", (rows[-1][0],))
        db.execute("UPDATE records SET payload = '{\"job_id\": 7}' WHERE id = ?", (rows[-2][0],))

    refused = run_scheduler(journal)
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert f"record {rows[1][0]}" in lines[0] and "--journal-quarantine" in lines[0]
    assert "Traceback" not in refused.stderr

    started = run_scheduler(journal, "--journal-quarantine")
    assert "scheduler listening on" in started.stdout, started.stdout + started.stderr
    assert "3 damaged records moved to its quarantine table" in started.stderr
    with sqlite3.connect(journal) as db:
        kept = db.execute("SELECT kind, problem FROM quarantine ORDER BY id").fetchall()
    assert [kind for kind, _ in kept] == [rows[1][1], rows[-2][1], "teleport"]
    assert "not JSON" in kept[0][1] and "job_id is not str" in kept[1][1]
    assert "unknown record kind" in kept[2][1]
    # Set aside once: the next start needs no flag.
    assert "scheduler listening on" in run_scheduler(journal).stdout
