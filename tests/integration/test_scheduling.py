"""The scheduling contract, observed over real gRPC with real worker processes.
The caps themselves (max_workers, the workers' slots, the fourth user's wait)
are checked in-process, where they are pure logic: tests/unit/test_caps_in_process.py."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import grpc

from tests.harness import Cluster, cluster, user
from tests.integration.support import (
    LONG,
    Watcher,
    create,
    follow,
    get,
    held_still,
    intervals,
    job_transitions,
    rpc_error,
    spec,
    watch,
)
from tests.timing import wait_for
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb


def test_same_branch_jobs_never_overlap_and_keep_fifo_order(shared: Cluster) -> None:
    wf = create(shared, "fifo", [spec(f"j{i}", branch="lane") for i in range(4)])
    transitions = job_transitions(follow(shared, "fifo", wf))
    assert transitions == [
        (key, state) for key in ("j0", "j1", "j2", "j3") for state in ("RUNNING", "SUCCEEDED")
    ]


def test_slot_released_after_last_job_fails(workdir: Path) -> None:
    with cluster(workdir, worker_slots=(2,), max_workers=2, max_active_users=1) as c:
        # The worker held still: the holder's job, which fails at once, has not
        # failed yet when the second user comes.
        with held_still(c.workers[0]):
            first = create(c, "holder", [spec("bad", slide="unreadable.svs")])
            wait_for(
                lambda: get(c, "holder", first.workflow_id).jobs[0].state == pb.JOB_STATE_RUNNING,
                10,
                "the holder's job to be dispatched",
            )
            second = create(c, "next", [spec("good")])
        assert "active-user slot" in second.jobs[0].pending_reason
        events = follow(c, "holder", first)
        assert job_transitions(events)[-1] == ("bad", "FAILED")
        assert "Bogus marker length" in events[-1].job.error
        assert job_transitions(follow(c, "next", second))[-1] == ("good", "SUCCEEDED")


def test_slot_released_after_last_job_is_cancelled(workdir: Path) -> None:
    with cluster(workdir, worker_slots=(2,), max_workers=2, max_active_users=1) as c:
        first = create(c, "holder", [spec("long", params=LONG)])
        second = create(c, "next", [spec("good")])
        job_id = first.jobs[0].job_id
        cancelled: list[bool] = []

        def cancel_when_running(event: pb.WorkflowEvent) -> None:
            running = event.job.state == pb.JOB_STATE_RUNNING
            if running and event.job.progress.tiles_done > 0 and not cancelled:
                cancelled.append(True)
                c.stub.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=user("holder"))

        watcher = Watcher(c, "next", second.workflow_id)
        events = follow(c, "holder", first, on_event=cancel_when_running)
        assert job_transitions(events) == [("long", "RUNNING"), ("long", "CANCELLED")]
        assert job_transitions(watcher.join()) == [("good", "RUNNING"), ("good", "SUCCEEDED")]


def test_two_users_same_branch_name_do_not_serialize(shared: Cluster) -> None:
    a = create(shared, "alice", [spec("x", branch="shared-name", params=LONG)])
    b = create(shared, "bob", [spec("y", branch="shared-name", params=LONG)])
    wa = Watcher(shared, "alice", a.workflow_id)
    follow(shared, "bob", b)
    wa.join()
    (sa, ea), (sb, eb) = (
        intervals(get(shared, "alice", a.workflow_id))["x"],
        intervals(get(shared, "bob", b.workflow_id))["y"],
    )
    assert sb < ea and sa < eb, "the two users' jobs ran one after the other"


def test_dag_order_and_cancel_cascade(shared: Cluster) -> None:
    wf = create(
        shared,
        "dag",
        [
            spec("mask", branch="m"),
            spec("seg", branch="s", deps=["mask"]),
            spec("report", branch="r", deps=["seg", "mask"]),
        ],
    )
    transitions = job_transitions(follow(shared, "dag", wf))
    order = [k for k, s in transitions if s == "RUNNING"]
    assert order == ["mask", "seg", "report"]
    assert transitions.index(("mask", "SUCCEEDED")) < transitions.index(("seg", "RUNNING"))

    failing = create(
        shared,
        "dag",
        [
            spec("mask", branch="m", slide="unreadable.svs"),
            spec("seg", branch="s", deps=["mask"]),
            spec("report", branch="r", deps=["seg"]),
            spec("independent", branch="i"),
        ],
    )
    events = follow(shared, "dag", failing)
    final = {e.job.key: e.job for e in events if e.kind == pb.WorkflowEvent.JOB_STATE}
    assert final["mask"].state == pb.JOB_STATE_FAILED
    assert final["seg"].state == pb.JOB_STATE_CANCELLED and "dependency" in final["seg"].error
    assert final["report"].state == pb.JOB_STATE_CANCELLED
    assert final["independent"].state == pb.JOB_STATE_SUCCEEDED
    assert ("seg", "RUNNING") not in job_transitions(events)
    assert events[-1].workflow_state == pb.WORKFLOW_STATE_FAILED


def test_failed_branch_cancels_its_own_later_jobs_only(shared: Cluster) -> None:
    wf = create(
        shared,
        "branchfail",
        [
            spec("a1", branch="a", slide="unreadable.svs"),
            spec("a2", branch="a"),
            spec("b1", branch="b"),
            spec("b2", branch="b"),
        ],
    )
    final = {e.job.key: e.job for e in follow(shared, "branchfail", wf) if e.job.key}
    assert final["a1"].state == pb.JOB_STATE_FAILED
    assert final["a2"].state == pb.JOB_STATE_CANCELLED and "a1" in final["a2"].error
    assert final["b1"].state == pb.JOB_STATE_SUCCEEDED
    assert final["b2"].state == pb.JOB_STATE_SUCCEEDED


def test_cancel_pending_and_running_jobs(shared: Cluster) -> None:
    wf = create(shared, "canceller", [spec("run", params=LONG), spec("wait"), spec("after")])
    run_id, wait_id = wf.jobs[0].job_id, wf.jobs[1].job_id
    who = user("canceller")
    pending = shared.stub.CancelJob(pb.CancelJobRequest(job_id=wait_id), metadata=who)
    assert pending.state == pb.JOB_STATE_CANCELLED

    replies: list[pb.Job] = []

    def cancel_when_running(event: pb.WorkflowEvent) -> None:
        if not replies and event.job.key == "run" and event.job.progress.tiles_done > 0:
            replies.append(shared.stub.CancelJob(pb.CancelJobRequest(job_id=run_id), metadata=who))

    events = follow(shared, "canceller", wf, on_event=cancel_when_running)
    final = {e.job.key: e.job for e in events if e.kind == pb.WorkflowEvent.JOB_STATE}
    assert replies[0].state == pb.JOB_STATE_RUNNING  # cooperative: it ends a moment later
    assert final["run"].state == pb.JOB_STATE_CANCELLED
    assert 0 < final["run"].progress.tiles_done < final["run"].progress.tiles_total
    assert final["after"].state == pb.JOB_STATE_SUCCEEDED  # a cancel does not stop the branch
    err = rpc_error(lambda: shared.stub.CancelJob(pb.CancelJobRequest(job_id=run_id), metadata=who))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_cancel_workflow(shared: Cluster) -> None:
    wf = create(shared, "wfcancel", [spec("a", params=LONG), spec("b"), spec("c", branch="x")])
    reply = shared.stub.CancelWorkflow(
        pb.CancelWorkflowRequest(workflow_id=wf.workflow_id), metadata=user("wfcancel")
    )
    assert reply.jobs[1].state == pb.JOB_STATE_CANCELLED
    events = follow(shared, "wfcancel", wf)
    assert events[-1].workflow_state == pb.WORKFLOW_STATE_CANCELLED
    final = get(shared, "wfcancel", wf.workflow_id)
    assert {j.state for j in final.jobs} == {pb.JOB_STATE_CANCELLED}


def test_worker_killed_mid_job_is_retried_on_the_other_worker(workdir: Path) -> None:
    with cluster(workdir, worker_slots=(1, 1), max_workers=2) as c:
        wf = create(c, "crash", [spec("victim", params=LONG)])
        killed: list[str] = []

        def kill_its_worker(event: pb.WorkflowEvent) -> None:
            job = event.job
            if not killed and job.progress.tiles_done > 0 and job.state == pb.JOB_STATE_RUNNING:
                victim = next(w for w in c.workers if w.address == job.worker)
                victim.kill(signal.SIGKILL)
                killed.append(victim.address)

        events = follow(c, "crash", wf, on_event=kill_its_worker)
        final = get(c, "crash", wf.workflow_id).jobs[0]
        undisturbed = create(c, "crash", [spec("reference", params=LONG)])
        follow(c, "crash", undisturbed)
        reference = get(c, "crash", undisturbed.workflow_id).jobs[0]
    assert killed, "the job finished before its worker could be killed"
    found = json.loads(final.result.summary)["nuclei"]
    assert found == json.loads(reference.result.summary)["nuclei"] > 1000
    assert final.state == pb.JOB_STATE_SUCCEEDED
    assert final.attempt == 2
    assert final.worker != killed[0]
    # Both workers write to one results folder (as on a shared volume): the
    # retry on the other one took the tiles the killed one had recorded.
    assert json.loads(final.result.summary)["tiles_resumed"] > 0
    states = job_transitions(events)
    assert states == [
        ("victim", "RUNNING"),
        ("victim", "PENDING"),
        ("victim", "RUNNING"),
        ("victim", "SUCCEEDED"),
    ]


def test_worker_lost_for_good_fails_after_max_attempts(workdir: Path) -> None:
    with cluster(workdir, worker_slots=(1,), max_workers=1, max_attempts=1) as c:
        wf = create(c, "doomed", [spec("victim", params=LONG), spec("next")])

        def kill_worker(event: pb.WorkflowEvent) -> None:
            if event.job.progress.tiles_done > 0:
                c.workers[0].kill(signal.SIGKILL)

        events = follow(c, "doomed", wf, on_event=kill_worker)
    final = {e.job.key: e.job for e in events if e.kind == pb.WorkflowEvent.JOB_STATE}
    assert final["victim"].state == pb.JOB_STATE_FAILED
    assert "gave up after 1 attempts" in final["victim"].error
    assert final["next"].state == pb.JOB_STATE_CANCELLED


def test_watch_resume_after_sequence_misses_nothing(shared: Cluster) -> None:
    wf = create(shared, "resumer", [spec("a", params=LONG), spec("b", branch="b")])
    full = follow(shared, "resumer", wf)
    # Replay from every point: what comes back is exactly the tail of the full history.
    history = [e for e in full if e.kind != pb.WorkflowEvent.SNAPSHOT]
    for cut in range(0, len(history), max(1, len(history) // 5)):
        after = history[cut].sequence
        replayed = watch(shared, "resumer", wf.workflow_id, after=after)
        assert [e.sequence for e in replayed] == [e.sequence for e in history[cut + 1 :]]
        assert replayed == history[cut + 1 :]


def test_watch_resumed_mid_run_sees_every_transition_once(shared: Cluster) -> None:
    wf = create(shared, "midrun", [spec(f"j{i}", params=LONG) for i in range(2)])
    first_part: list[pb.WorkflowEvent] = []
    stream = shared.stub.WatchWorkflow(
        pb.WatchWorkflowRequest(workflow_id=wf.workflow_id, after_sequence=wf.sequence),
        metadata=user("midrun"),
    )
    for event in stream:
        first_part.append(event)
        if event.kind == pb.WorkflowEvent.JOB_PROGRESS:
            stream.cancel()  # type: ignore[no-untyped-call]  # drop the connection mid-run
            break
    time.sleep(0.3)  # changes happen while nobody watches
    rest = watch(shared, "midrun", wf.workflow_id, after=first_part[-1].sequence)
    sequences = [e.sequence for e in first_part + rest]
    assert sequences == list(range(wf.sequence + 1, wf.sequence + 1 + len(sequences)))
    transitions = job_transitions(first_part + rest)
    assert transitions == [(k, s) for k in ("j0", "j1") for s in ("RUNNING", "SUCCEEDED")]


def test_watch_of_finished_workflow_sends_snapshot_and_ends(shared: Cluster) -> None:
    wf = create(shared, "done", [spec("a")])
    follow(shared, "done", wf)
    again = watch(shared, "done", wf.workflow_id)
    assert len(again) == 1 and again[0].kind == pb.WorkflowEvent.SNAPSHOT
    assert again[0].workflow.state == pb.WORKFLOW_STATE_SUCCEEDED
    assert again[0].workflow.progress.percent == 100.0


def test_progress_streams_per_tile(shared: Cluster) -> None:
    wf = create(shared, "progress", [spec("a", params=LONG)])
    events = follow(shared, "progress", wf)
    done = [e.job.progress.tiles_done for e in events if e.kind == pb.WorkflowEvent.JOB_PROGRESS]
    assert len(done) >= 3 and done == sorted(done)
    last = events[-1]
    assert last.job.progress.tiles_done == last.job.progress.tiles_total > 50
    assert last.workflow_progress.percent == 100.0
    summary = json.loads(last.job.result.summary)
    assert summary["tiles_processed"] == last.job.progress.tiles_total
    assert summary["nuclei"] > 1000  # CMU-1-Small-Region holds thousands of nuclei


def test_stats(shared: Cluster) -> None:
    wf = create(shared, "stats", [spec("a", params=LONG), spec("b"), spec("c", branch="other")])
    stats = shared.stub.GetStats(pb.GetStatsRequest(), metadata=user("stats"))
    assert stats.worker_slots_total == 4 and stats.workers_connected == 1
    assert stats.max_workers == 4
    mine = {b.branch: (b.pending, b.running) for b in stats.branches}
    assert sum(p + r for p, r in mine.values()) == 3
    follow(shared, "stats", wf)
    after = shared.stub.GetStats(pb.GetStatsRequest(), metadata=user("stats"))
    assert list(after.branches) == [] and after.my_pending_jobs == 0
