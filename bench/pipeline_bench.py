"""Cell segmentation speed and memory on large slides, three ways in one run:

(a) naive: every tile of level 0 (0.25 um/px) in one process, same segmenter;
(b) floor: the worker pipeline in-process (level at 0.5 um/px, tissue tiles
    only, process pool), no gRPC;
(c) service: a CELL_SEGMENTATION job through the real scheduler and worker;
plus a TISSUE_MASK job through the services, and the worker's peak RSS on an
80 MP and a 320 MP slide (a fresh worker for each).

    python -m bench.pipeline_bench [--megapixels 320] [--small-megapixels 80]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import openslide

from bench.slide_generator import slide_path
from tests.harness import ROOT, Service, start_scheduler, start_worker
from tests.processes import TreeRssPeak, cpu_seconds, status_mb
from tests.processes import peak_rss_mb as tree_peak_rss_mb
from worker_service.analysis.merge import keep_owned
from worker_service.analysis.nuclei import (
    NucleusParams,
    nuclei_from_labels,
    segment_nuclei,
    stain_reference,
    tissue_pixels,
)
from worker_service.analysis.tiling import tile_grid
from worker_service.pipeline.context import JobContext
from worker_service.pipeline.job import JobSpec, run_job
from worker_service.pipeline.tile_pool import TilePool
from worker_service.pipeline.tile_work import TileTask, read_tile
from worker_service.storage.slides import SlideCache
from wsi_protocol.job_types import JobType
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc

OUT = Path(__file__).resolve().parent / "out"
TERMINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}


def slide_of(megapixels: float) -> Path:
    return slide_path(OUT, megapixels)


def naive(path: Path) -> dict[str, float]:
    """Every level-0 tile, one process: what a hand-rolled loop does."""
    started = time.perf_counter()
    with openslide.OpenSlide(str(path)) as slide:
        width, height = slide.dimensions
        mpp = float(slide.properties[openslide.PROPERTY_NAME_MPP_X])
    tiles = tile_grid(width, height, 512, 64)
    tasks = [TileTask(str(path), 0, 1.0, tile) for tile in tiles]
    # The same slide-level reference as the pipeline: 8 tissue tiles spread over the slide.
    with_tissue = [
        t for t in tasks[:: max(1, len(tasks) // 64)] if tissue_pixels(read_tile(t)).mean() > 0.05
    ]
    reference = stain_reference(
        [read_tile(t) for t in with_tissue[:: max(1, len(with_tissue) // 8)][:8]]
    )
    params = NucleusParams(mpp=mpp)
    nuclei = 0
    for task in tasks:
        labels = segment_nuclei(read_tile(task), reference, params)
        nuclei += len(keep_owned(task.tile, nuclei_from_labels(labels), 1.0))
    return {"seconds": time.perf_counter() - started, "tiles": len(tasks), "nuclei": nuclei}


def floor(path: Path, processes: int) -> dict[str, float]:
    """The worker's pipeline without gRPC: level choice, tissue skipping, pool."""
    pool = TilePool(processes)
    pool.warm_up()
    try:
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            started = time.perf_counter()
            outcome = run_job(
                JobSpec("floor", JobType.CELL_SEGMENTATION, str(path), {}),
                Path(tmp),
                JobContext(),
                SlideCache(),
                pool,
            )
            seconds = time.perf_counter() - started
    finally:
        pool.close()
    return {
        "seconds": seconds,
        "tiles": float(outcome.summary["tiles_processed"]),  # type: ignore[arg-type]
        "nuclei": float(outcome.summary["nuclei"]),  # type: ignore[arg-type]
    }


def peak_rss_mb(service: Service) -> dict[str, float]:
    """VmHWM of the worker process, and the sum of it and of every process
    below it (the fork server's pool processes are its grandchildren)."""
    return {
        "worker_mb": round(status_mb(service.process.pid, "VmHWM"), 1),
        "worker_and_pool_mb": round(tree_peak_rss_mb(service.process.pid), 1),
    }


def through_services(
    path: Path,
    job_type: int,
    workdir: Path,
    root: Path = ROOT,
    params: dict[str, str] | None = None,
    **worker_flags: str,
) -> dict[str, Any]:
    """Submit -> SUCCEEDED through a fresh scheduler and worker (of the
    checkout at ``root``), the job with ``params``; the job's seconds,
    nuclei, phase timings, backend details and the worker's peak RSS."""
    with ExitStack() as stack:
        worker = start_worker(
            workdir,
            "worker",
            2,
            root=str(root),
            slide_roots=str(path.parent),
            log_level="WARNING",
            **{"default_backend": "auto", **worker_flags},
        )
        stack.callback(worker.stop)
        scheduler = start_scheduler(
            workdir, [worker], root=str(root), slide_roots=str(path.parent), log_level="WARNING"
        )
        stack.callback(scheduler.stop)
        channel = stack.enter_context(grpc.insecure_channel(scheduler.address))
        stub = pb_grpc.SchedulerStub(channel)
        metadata = (("x-user-id", "bench"),)
        time.sleep(1.0)  # the scheduler learns the worker's slots
        cpu_before = cpu_seconds(worker.process.pid)
        with TreeRssPeak(worker.process.pid) as at_once:
            started = time.perf_counter()
            wf = stub.CreateWorkflow(
                pb.CreateWorkflowRequest(
                    jobs=[
                        pb.JobSpec(
                            branch="b",
                            job_type=job_type,  # type: ignore[arg-type]
                            wsi_path=path.name,
                            params=params or {},
                        )
                    ]
                ),
                metadata=metadata,
            )
            for event in stub.WatchWorkflow(
                pb.WatchWorkflowRequest(workflow_id=wf.workflow_id, after_sequence=wf.sequence),
                metadata=metadata,
            ):
                if event.job.state in TERMINAL:
                    break
            seconds = time.perf_counter() - started
        cpu = cpu_seconds(worker.process.pid) - cpu_before
        job = stub.GetWorkflow(
            pb.GetWorkflowRequest(workflow_id=wf.workflow_id), metadata=metadata
        ).jobs[0]
        if job.state != pb.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"job ended {pb.JobState.Name(job.state)}: {job.error}")
        summary = json.loads(job.result.summary)
        return {
            "seconds": seconds,
            "cpu_seconds": cpu,
            "nuclei": summary.get("nuclei", 0),
            "timings": summary.get("timings", {}),
            "backend": summary.get("backend"),
            "backend_details": summary.get("backend_details"),
            "files": dict(job.result.files),
            **peak_rss_mb(worker),
            "worker_tree_at_once_mb": round(at_once.peak_mb, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megapixels", type=float, default=320)
    parser.add_argument("--small-megapixels", type=float, default=80)
    parser.add_argument("--skip-naive", action="store_true", help="(a) takes minutes")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    big, small = slide_of(args.megapixels), slide_of(args.small_megapixels)
    processes = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        work = Path(tmp)
        c = through_services(big, pb.CELL_SEGMENTATION, work / "c")
        mask = through_services(big, pb.TISSUE_MASK, work / "t")
        c_small = through_services(small, pb.CELL_SEGMENTATION, work / "s")
    b = floor(big, processes)
    ratios = {
        "c_over_b": c["seconds"] / b["seconds"],
        "rss_big_over_small": c["worker_and_pool_mb"] / c_small["worker_and_pool_mb"],
    }
    report: dict[str, object] = {
        "machine": f"{platform.node()} {platform.machine()}, {processes} cores",
        "slide": big.name,
        "small_slide": small.name,
        "c_service": c,
        "tissue_mask_service": mask,
        "small_service": c_small,
        "b_floor": b,
    }
    if not args.skip_naive:
        a = naive(big)
        report["a_naive"] = a
        ratios["a_over_c"] = a["seconds"] / c["seconds"]
        ratios["tissue_mask_over_a"] = mask["seconds"] / a["seconds"]
    report["ratios"] = {k: round(v, 3) for k, v in ratios.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
