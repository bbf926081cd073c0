"""Scale-out: the same work with one worker and with two, every worker joined
to a fresh scheduler by itself (``--scheduler``) with its own results folder.

    python -m bench.scale_out [--megapixels 320] [--small-jobs 60] [--rounds 2]
        [--layouts 1x2,2x1]

A layout ``WxP`` is W workers of P tile processes each. Per layout and round:
the wall time of 4 CELL_SEGMENTATION jobs of a generated large slide (four
branches, submitted at once), then jobs/s of ``--small-jobs`` TISSUE_MASK jobs
on the small real slide. Rounds alternate the order of the layouts. On a
machine with C cores, compare 1xC with 2x(C/2): the same cores, split over two
workers (what a second host adds is then the other layout's cores too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc

from bench.pipeline_bench import OUT
from bench.slide_generator import slide_path
from tests.harness import CMU, SLIDES, start_scheduler, start_worker
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc

WHO = (("x-user-id", "bench"),)
TERMINAL = {pb.WORKFLOW_STATE_SUCCEEDED, pb.WORKFLOW_STATE_FAILED, pb.WORKFLOW_STATE_CANCELLED}


def wait_done(stub: pb_grpc.SchedulerStub, workflow: pb.Workflow) -> pb.Workflow:
    for _ in stub.WatchWorkflow(
        pb.WatchWorkflowRequest(workflow_id=workflow.workflow_id, after_sequence=workflow.sequence),
        metadata=WHO,
    ):
        pass
    done: pb.Workflow = stub.GetWorkflow(
        pb.GetWorkflowRequest(workflow_id=workflow.workflow_id), metadata=WHO
    )
    if done.state != pb.WORKFLOW_STATE_SUCCEEDED:
        raise RuntimeError(f"workflow ended {pb.WorkflowState.Name(done.state)}")
    return done


def one_layout(
    slide: Path, workers: int, processes: int, small_jobs: int, workdir: Path
) -> dict[str, Any]:
    roots = f"{slide.parent}:{SLIDES}"
    with ExitStack() as stack:
        scheduler = start_scheduler(
            workdir, [], slide_roots=roots, max_workers=4 * workers, log_level="WARNING"
        )
        stack.callback(scheduler.stop)
        for index in range(workers):
            worker = start_worker(
                workdir / f"w{index}",
                f"worker{index}",
                4,
                slide_roots=roots,
                processes=str(processes),
                scheduler=scheduler.address,
                log_level="WARNING",
            )
            stack.callback(worker.stop)
        stub = pb_grpc.SchedulerStub(stack.enter_context(grpc.insecure_channel(scheduler.address)))
        while stub.GetStats(pb.GetStatsRequest(), metadata=WHO).workers_connected < workers:
            time.sleep(0.05)
        large = [
            pb.JobSpec(branch=f"b{i}", job_type=pb.CELL_SEGMENTATION, wsi_path=slide.name)
            for i in range(4)
        ]
        started = time.perf_counter()
        done = wait_done(
            stub, stub.CreateWorkflow(pb.CreateWorkflowRequest(jobs=large), metadata=WHO)
        )
        large_s = time.perf_counter() - started
        spread = sorted({job.attempt_workers[-1] for job in done.jobs})
        small = [
            pb.JobSpec(branch=f"s{i % 8}", job_type=pb.TISSUE_MASK, wsi_path=CMU)
            for i in range(small_jobs)
        ]
        started = time.perf_counter()
        wait_done(stub, stub.CreateWorkflow(pb.CreateWorkflowRequest(jobs=small), metadata=WHO))
        small_s = time.perf_counter() - started
    return {
        "large_4_jobs_s": round(large_s, 2),
        "small_jobs_per_s": round(small_jobs / small_s, 2),
        "workers_used_by_large": len(spread),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--megapixels", type=float, default=320)
    parser.add_argument("--small-jobs", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    cores = os.cpu_count() or 1
    parser.add_argument("--layouts", default=f"1x{cores},2x{max(1, cores // 2)}")
    args = parser.parse_args()
    layouts = [tuple(int(n) for n in layout.split("x")) for layout in args.layouts.split(",")]
    slide = slide_path(OUT, args.megapixels, 0.5)
    runs: dict[str, list[dict[str, Any]]] = {f"{w}x{p}": [] for w, p in layouts}
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        for round_ in range(args.rounds):
            for workers, processes in layouts if round_ % 2 == 0 else layouts[::-1]:
                name = f"{workers}x{processes}"
                run = one_layout(
                    slide, workers, processes, args.small_jobs, Path(tmp) / f"{name}-{round_}"
                )
                runs[name].append(run)
                print(f"round {round_ + 1}, {name}: {run}", flush=True)
    report = {
        "machine": f"{platform.node()} {platform.machine()}, {cores} cores",
        "slide": f"{slide.name}, 4 CELL_SEGMENTATION jobs; {args.small_jobs} TISSUE_MASK on {CMU}",
        "runs": runs,
        "median_large_4_jobs_s": {
            n: statistics.median(r["large_4_jobs_s"] for r in side) for n, side in runs.items()
        },
        "median_small_jobs_per_s": {
            n: statistics.median(r["small_jobs_per_s"] for r in side) for n, side in runs.items()
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
