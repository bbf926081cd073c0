"""End-to-end job throughput: submit -> SUCCEEDED through the real scheduler and
worker processes, on tiny slides, beside a bare grpc.aio echo baseline.

    python -m bench.e2e_throughput [--jobs 3000] [--jobs-per-workflow 50] [--slots 32]
        [--results-parent DIR] [--processes N] [--journal FILE]

Besides jobs/s it prints the CPU milliseconds one job costs in each process
(scheduler, worker main, worker pool, this client), read from /proc: on two
cores that split says where a faster rate has to come from.

Every job writes four result files, so the results folder's file-creation cost
is part of the number: the run measures it (``file_create_us``) and prints it
beside the throughput. The default folder is tmpfs (/dev/shm) because on this
VM's ext4 disk that cost swings between 0.02 and 0.7 ms within one session;
pass ``--results-parent`` to measure on a disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import grpc

from bench.process_cpu import session_cpu_seconds
from tests.harness import Service, start_scheduler, start_worker
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc

DEFAULT_RESULTS_PARENT = (
    Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
)
TERMINAL = {pb.WORKFLOW_STATE_SUCCEEDED, pb.WORKFLOW_STATE_FAILED, pb.WORKFLOW_STATE_CANCELLED}


async def run_workflows(
    address: str, jobs: int, per_workflow: int, concurrency: int
) -> dict[str, float]:
    """Submits ``jobs`` jobs in workflows of ``per_workflow`` (one branch each)
    and waits, through WatchWorkflow, until every one has SUCCEEDED."""
    metadata = (("x-user-id", "bench"),)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.SchedulerStub(channel)
        semaphore = asyncio.Semaphore(concurrency)
        succeeded = 0

        async def one_workflow(index: int, size: int) -> None:
            nonlocal succeeded
            async with semaphore:
                request = pb.CreateWorkflowRequest(
                    name=f"bench-{index}",
                    jobs=[
                        pb.JobSpec(
                            key=str(i),
                            branch=f"b{i}",
                            job_type=pb.TISSUE_MASK,
                            wsi_path="small.svs",
                        )
                        for i in range(size)
                    ],
                )
                wf = await stub.CreateWorkflow(request, metadata=metadata)
                stream = stub.WatchWorkflow(
                    pb.WatchWorkflowRequest(workflow_id=wf.workflow_id, after_sequence=wf.sequence),
                    metadata=metadata,
                )
                async for event in stream:
                    if (
                        event.kind == pb.WorkflowEvent.JOB_STATE
                        and event.job.state == pb.JOB_STATE_SUCCEEDED
                    ):
                        succeeded += 1
                    if event.workflow_state in TERMINAL:
                        if event.workflow_state != pb.WORKFLOW_STATE_SUCCEEDED:
                            raise RuntimeError(f"workflow ended {event.workflow_state}")
                        break

        sizes = [per_workflow] * (jobs // per_workflow)
        started = time.perf_counter()
        await asyncio.gather(*(one_workflow(i, n) for i, n in enumerate(sizes)))
        elapsed = time.perf_counter() - started
    return {"jobs": succeeded, "seconds": elapsed, "jobs_per_s": succeeded / elapsed}


def cpu_snapshot(scheduler: Service, worker: Service) -> dict[str, float]:
    """CPU seconds so far of each process that takes part in a job."""
    worker_cpu = session_cpu_seconds(worker.process.pid)
    return {
        "scheduler": session_cpu_seconds(scheduler.process.pid)["main"],
        "worker_main": worker_cpu["main"],
        "worker_pool": worker_cpu["children"],
        "bench_client": time.process_time(),
    }


def cpu_ms_per_job(
    before: dict[str, float], after: dict[str, float], jobs: float
) -> dict[str, float]:
    return {name: round((after[name] - before[name]) * 1000 / jobs, 3) for name in after}


def file_create_us(parent: Path, count: int = 500) -> float:
    """Median cost of creating, writing and closing one small new file in ``parent``."""
    samples = []
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        for index in range(count):
            started = time.perf_counter()
            (Path(tmp) / f"f{index}").write_bytes(b"x" * 512)
            samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


async def echo_baseline(calls: int, concurrency: int) -> dict[str, float]:
    """A bare grpc.aio unary echo on loopback: the floor any gRPC service pays."""

    async def echo(request: bytes, context: object) -> bytes:
        return request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(
                "/bench.Echo/Echo", request_serializer=None, response_deserializer=None
            )
            semaphore = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with semaphore:
                    await call(b"x" * 64)

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(calls)))
            elapsed = time.perf_counter() - started
    finally:
        await server.stop(None)
    return {"calls": calls, "seconds": elapsed, "calls_per_s": calls / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--jobs-per-workflow", type=int, default=50)
    parser.add_argument("--slots", type=int, default=32, help="worker slots = scheduler cap")
    parser.add_argument("--concurrency", type=int, default=16, help="workflows in flight")
    parser.add_argument(
        "--processes", type=int, default=0, help="worker pool processes (0: the worker's default)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-level", default="INFO", help="services' log level")
    parser.add_argument(
        "--results-parent",
        type=Path,
        default=DEFAULT_RESULTS_PARENT,
        help="folder that holds the run's scratch results folder",
    )
    parser.add_argument(
        "--journal",
        default="",
        help="the scheduler's journal file (default: in the scratch folder; :memory: for none)",
    )
    args = parser.parse_args()
    runs: list[dict[str, float]] = []
    cpu_runs: list[dict[str, float]] = []
    echoes: list[dict[str, float]] = []
    args.results_parent.mkdir(parents=True, exist_ok=True)
    create_us = file_create_us(args.results_parent)
    with tempfile.TemporaryDirectory(dir=args.results_parent) as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        pool = {"processes": str(args.processes)} if args.processes else {}
        worker = start_worker(workdir, slots=args.slots, log_level=args.log_level, **pool)
        stack.callback(worker.stop)
        scheduler = start_scheduler(
            workdir,
            [worker],
            max_workers=args.slots,
            max_jobs_per_workflow=1000,
            rate_limit=0,  # one user submits everything: measure scheduling, not the limiter
            log_level=args.log_level,
            **({"journal": args.journal} if args.journal else {}),
        )
        stack.callback(scheduler.stop)
        time.sleep(1.0)  # let the scheduler learn the worker's slots
        for _ in range(args.rounds):
            echoes.append(asyncio.run(echo_baseline(args.jobs, args.concurrency * 4)))
            before = cpu_snapshot(scheduler, worker)
            run = asyncio.run(
                run_workflows(
                    scheduler.address, args.jobs, args.jobs_per_workflow, args.concurrency
                )
            )
            cpu_runs.append(cpu_ms_per_job(before, cpu_snapshot(scheduler, worker), run["jobs"]))
            runs.append(run)
    e2e = statistics.median(r["jobs_per_s"] for r in runs)
    echo = statistics.median(r["calls_per_s"] for r in echoes)
    print(
        json.dumps(
            {
                "e2e_jobs_per_s_median": round(e2e, 1),
                "echo_calls_per_s_median": round(echo, 1),
                "e2e_over_echo": round(e2e / echo, 4),
                "file_create_us_median": round(create_us, 1),
                "cpu_ms_per_job_median": {
                    name: statistics.median(r[name] for r in cpu_runs) for name in cpu_runs[0]
                },
                "runs": runs,
                "echo_runs": echoes,
                "cpu_ms_per_job": cpu_runs,
                "settings": {**vars(args), "results_parent": str(args.results_parent)},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
