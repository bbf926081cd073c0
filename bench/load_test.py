"""Load: many clients of many users mixing create, get, list, watch and cancel
against the real services for a fixed time, on loopback.

    python -m bench.load_test [--seconds 60] [--clients 50] [--users 10]

Checks while it runs: no error other than RESOURCE_EXHAUSTED (a cancel that
races the job's end and gets FAILED_PRECONDITION is counted apart); the
scheduling invariants hold at every instant, rebuilt from every workflow's
event stream (one job at a time per branch, at most MAX_WORKERS running, at
most MAX_ACTIVE_USERS users running); the scheduler's memory stays flat over
the second half (retention prunes finished workflows, as a long-running
deployment would). ``tests/integration/test_load.py`` runs it and asserts
those; this module prints the figures for docs/benchmarks.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tests.harness import Service, start_scheduler, start_worker
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc

MAX_WORKERS = 4
MAX_ACTIVE_USERS = 3
RETENTION_HOURS = 0.005  # 18 s: finished workflows are pruned during the run
RECENT_S = 6.0
WATCH_FOR_S = 5.0  # clients touch only workflows this young (never a pruned one)
OPS = ("create", "get", "list", "watch", "cancel")
WEIGHTS = (4, 8, 4, 4, 1)
THINK_S = (0.1, 0.4)  # a client's pause between calls: a sustainable load, not a flood
RESULTS_PARENT = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


@dataclass
class Report:
    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # "op:CODE"
    cancelled: int = 0
    cancel_races: int = 0
    workflows: int = 0
    jobs: int = 0
    audited_events: int = 0
    violations: list[str] = field(default_factory=list)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MB)
    pending: list[int] = field(default_factory=list)  # all users' PENDING jobs, each second

    def unexpected_errors(self) -> dict[str, int]:
        return {k: v for k, v in self.errors.items() if not k.endswith("RESOURCE_EXHAUSTED")}

    def rss_growth_second_half(self) -> float:
        """RSS at the end over RSS at the middle (medians of 5 samples each)."""
        samples = [mb for _, mb in self.rss_mb]
        middle = len(samples) // 2
        start = statistics.median(samples[max(0, middle - 2) : middle + 3])
        end = statistics.median(samples[-5:])
        return end / start - 1.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def workflow_request(rng: random.Random) -> pb.CreateWorkflowRequest:
    """1 to 3 quick jobs in 1 or 2 branches; now and then a real scan."""
    jobs = []
    for i in range(rng.randint(1, 3)):
        slide = "CMU-1-Small-Region.svs" if rng.random() < 0.02 else "small.svs"
        jobs.append(
            pb.JobSpec(
                key=f"j{i}", branch=f"b{rng.randint(0, 1)}", job_type=pb.TISSUE_MASK, wsi_path=slide
            )
        )
    return pb.CreateWorkflowRequest(name="load", jobs=jobs)


def change_of_mind() -> pb.CreateWorkflowRequest:
    """Two jobs in one branch: the second is still queued when the cancel follows."""
    return pb.CreateWorkflowRequest(
        name="cancelled",
        jobs=[
            pb.JobSpec(key="first", branch="b", job_type=pb.TISSUE_MASK, wsi_path="small.svs"),
            pb.JobSpec(key="second", branch="b", job_type=pb.TISSUE_MASK, wsi_path="small.svs"),
        ],
    )


class Auditor:
    """Follows every created workflow to its end and keeps each job's RUNNING
    intervals, to check the invariants over all of them afterwards."""

    def __init__(self, stub: pb_grpc.SchedulerAsyncStub, report: Report) -> None:
        self.stub = stub
        self.report = report
        self.tasks: set[asyncio.Task[None]] = set()
        # job_id -> (user, lane, [(start, end)])
        self.runs: dict[str, tuple[str, tuple[str, str, str], list[list[float]]]] = {}

    def follow(self, user: str, workflow: pb.Workflow) -> None:
        task = asyncio.ensure_future(self._follow(user, workflow))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _follow(self, user: str, workflow: pb.Workflow) -> None:
        try:
            await self._record(user, workflow)
        except grpc.aio.AioRpcError as exc:
            self.report.errors[f"audit:{exc.code().name}"] += 1

    async def _record(self, user: str, workflow: pb.Workflow) -> None:
        request = pb.WatchWorkflowRequest(
            workflow_id=workflow.workflow_id, after_sequence=workflow.sequence
        )
        async for event in self.stub.WatchWorkflow(request, metadata=(("x-user-id", user),)):
            self.report.audited_events += 1
            if event.kind != pb.WorkflowEvent.JOB_STATE:
                continue
            job, at = event.job, event.time.ToNanoseconds() / 1e9
            lane = (user, job.workflow_id, job.branch)
            _, _, runs = self.runs.setdefault(job.job_id, (user, lane, []))
            if job.state == pb.JOB_STATE_RUNNING:
                runs.append([at, float("inf")])
            elif runs and runs[-1][1] == float("inf"):
                runs[-1][1] = at

    def check(self) -> list[str]:
        """Sweeps all RUNNING intervals in time order (an end before a start
        at the same instant) and reports every broken invariant."""
        points = []
        for job_id, (user, lane, runs) in self.runs.items():
            for start, end in runs:
                points.append((start, 1, job_id, user, lane))
                points.append((end, 0, job_id, user, lane))
        points.sort(key=lambda p: (p[0], p[1]))
        running: dict[str, tuple[str, tuple[str, str, str]]] = {}
        violations: list[str] = []
        for at, starts, job_id, user, lane in points:
            if not starts:
                running.pop(job_id, None)
                continue
            if any(other_lane == lane for _, other_lane in running.values()):
                violations.append(f"{at:.6f}: two jobs of branch {lane} running")
            running[job_id] = (user, lane)
            if len(running) > MAX_WORKERS:
                violations.append(f"{at:.6f}: {len(running)} jobs running > {MAX_WORKERS}")
            users = {u for u, _ in running.values()}
            if len(users) > MAX_ACTIVE_USERS:
                violations.append(f"{at:.6f}: {len(users)} users running > {MAX_ACTIVE_USERS}")
        return violations


async def drain(call: object) -> None:
    async for _ in call:  # type: ignore[attr-defined]
        pass


async def client(
    address: str, user: str, seed: int, deadline: float, report: Report, auditor: Auditor
) -> None:
    rng = random.Random(seed)
    metadata = (("x-user-id", user),)
    recent: list[tuple[float, pb.Workflow]] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub: pb_grpc.SchedulerAsyncStub = pb_grpc.SchedulerStub(channel)
        while time.monotonic() < deadline:
            now = time.monotonic()
            recent = [(t, wf) for t, wf in recent if now - t < RECENT_S]
            op = rng.choices(OPS, WEIGHTS)[0]
            if op != "create" and op != "list" and not recent:
                op = "create"
            report.ops[op] += 1
            try:
                if op == "create":
                    wf = await stub.CreateWorkflow(workflow_request(rng), metadata=metadata)
                    recent.append((now, wf))
                    report.workflows += 1
                    report.jobs += len(wf.jobs)
                    auditor.follow(user, wf)
                elif op == "get":
                    wf = rng.choice(recent)[1]
                    await stub.GetWorkflow(
                        pb.GetWorkflowRequest(workflow_id=wf.workflow_id), metadata=metadata
                    )
                elif op == "list":
                    await stub.ListWorkflows(
                        pb.ListWorkflowsRequest(page_size=20), metadata=metadata
                    )
                elif op == "watch":  # for a while, or to its end
                    wf = rng.choice(recent)[1]
                    request = pb.WatchWorkflowRequest(workflow_id=wf.workflow_id)
                    call = stub.WatchWorkflow(request, metadata=metadata)
                    try:
                        await asyncio.wait_for(drain(call), WATCH_FOR_S)
                    except TimeoutError:
                        call.cancel()
                elif op == "cancel":  # a change of mind: submit, then cancel its queued job
                    wf = await stub.CreateWorkflow(change_of_mind(), metadata=metadata)
                    report.workflows += 1
                    report.jobs += len(wf.jobs)
                    auditor.follow(user, wf)
                    cancel = pb.CancelJobRequest(job_id=wf.jobs[-1].job_id)
                    try:
                        await stub.CancelJob(cancel, metadata=metadata)
                        report.cancelled += 1
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                            raise
                        report.cancel_races += 1  # it ended before the cancel arrived
            except grpc.aio.AioRpcError as exc:
                report.errors[f"{op}:{exc.code().name}"] += 1
            await asyncio.sleep(rng.uniform(*THINK_S))


async def drive(
    address: str, seconds: float, clients: int, users: int, scheduler_pid: int
) -> Report:
    report = Report()
    deadline = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(address) as channel:
        auditor = Auditor(pb_grpc.SchedulerStub(channel), report)

        async def sample_rss() -> None:
            started = time.monotonic()
            while time.monotonic() < deadline:
                report.rss_mb.append((time.monotonic() - started, rss_mb(scheduler_pid)))
                stats = await auditor.stub.GetStats(
                    pb.GetStatsRequest(), metadata=(("x-user-id", "observer"),)
                )
                report.pending.append(stats.pending_jobs)
                await asyncio.sleep(1.0)

        await asyncio.gather(
            sample_rss(),
            *(
                client(address, f"user{i % users}", i, deadline, report, auditor)
                for i in range(clients)
            ),
        )
        if auditor.tasks:  # let the last workflows finish (with the clients gone)
            await asyncio.wait(auditor.tasks, timeout=60)
        report.violations = auditor.check()
    return report


def run(
    seconds: float,
    clients: int,
    users: int,
    workdir: Path,
    retention_hours: float = RETENTION_HOURS,
    **scheduler_settings: str,
) -> Report:
    with ExitStack() as stack:
        worker: Service = start_worker(workdir, slots=MAX_WORKERS, log_level="WARNING")
        stack.callback(worker.stop)
        scheduler = start_scheduler(
            workdir,
            [worker],
            max_workers=MAX_WORKERS,
            max_active_users=MAX_ACTIVE_USERS,
            retention_hours=str(retention_hours),
            log_level="WARNING",
            **scheduler_settings,
        )
        stack.callback(scheduler.stop)
        time.sleep(1.0)
        return asyncio.run(drive(scheduler.address, seconds, clients, users, scheduler.process.pid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument(
        "--journal", default="", help="scheduler journal (default: in the run's folder)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=RESULTS_PARENT) as tmp:
        extra = {"journal": args.journal} if args.journal else {}
        report = run(args.seconds, args.clients, args.users, Path(tmp), **extra)
    print(
        json.dumps(
            {
                "settings": vars(args),
                "ops": dict(report.ops),
                "ops_per_s": round(sum(report.ops.values()) / args.seconds, 1),
                "errors": dict(report.errors),
                "unexpected_errors": report.unexpected_errors(),
                "cancelled": report.cancelled,
                "cancel_races": report.cancel_races,
                "workflows": report.workflows,
                "jobs": report.jobs,
                "audited_events": report.audited_events,
                "violations": report.violations[:20],
                "rss_mb_first_mid_last": [
                    round(report.rss_mb[i][1], 1) for i in (0, len(report.rss_mb) // 2, -1)
                ],
                "rss_growth_second_half": round(report.rss_growth_second_half(), 4),
                "rss_mb_every_10s": [round(mb, 1) for _, mb in report.rss_mb[::10]],
                "pending_jobs_every_10s": report.pending[::10],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
