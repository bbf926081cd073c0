"""Nuclei by viewport: the latency of ``GET /jobs/ID/cells?bbox=`` (a
2,000 x 2,000 px box, through gateway, scheduler and worker) on a
CELL_SEGMENTATION job of a generated slide with 100,000+ nuclei, against the
baseline in the same run: what a viewer had without the index (download the
whole cells.geojson, parse it, keep the features whose outlines meet the box).

    python -m bench.cells_query [--megapixels 640] [--boxes 60] [--box 2000]

Boxes are drawn at random over the nuclei (each centred on one), the same
boxes for every measurement, each asked gzip-compressed (as a browser asks)
and uncompressed; the first query of the job (index loaded, tree built) is
reported apart. Prints JSON: medians and 95th percentiles in ms,
nuclei per box, and the ratio of the baseline's median to the query's.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import httpx
import shapely
from shapely.geometry import shape

from bench.pipeline_bench import OUT
from bench.scale_out import WHO, wait_done
from bench.slide_generator import slide_path
from tests.harness import start_gateway, start_scheduler, start_worker
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb
from wsi_protocol.scheduler.v1 import scheduler_pb2_grpc as pb_grpc

HEADERS = {"X-User-ID": "bench"}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(slide: Path, boxes: int, side: float, workdir: Path) -> dict[str, Any]:
    roots = str(slide.parent)
    with ExitStack() as stack:
        worker = start_worker(workdir, "worker", 1, slide_roots=roots, log_level="WARNING")
        stack.callback(worker.stop)
        scheduler = start_scheduler(workdir, [worker], slide_roots=roots, log_level="WARNING")
        stack.callback(scheduler.stop)
        gateway = start_gateway(workdir, scheduler)
        stack.callback(gateway.stop)
        stub = pb_grpc.SchedulerStub(stack.enter_context(grpc.insecure_channel(scheduler.address)))
        while stub.GetStats(pb.GetStatsRequest(), metadata=WHO).workers_connected < 1:
            time.sleep(0.05)
        job = pb.JobSpec(branch="b", job_type=pb.CELL_SEGMENTATION, wsi_path=slide.name)
        started = time.perf_counter()
        done = wait_done(
            stub, stub.CreateWorkflow(pb.CreateWorkflowRequest(jobs=[job]), metadata=WHO)
        )
        job_s = time.perf_counter() - started
        job_id = done.jobs[0].job_id
        http = stack.enter_context(httpx.Client(base_url=gateway.address, timeout=120))
        # The baseline, which also gives the centres the boxes are drawn around.
        baseline_ms: list[float] = []
        features: list[dict[str, Any]] = []
        for _ in range(3):
            started = time.perf_counter()
            reply = http.get(f"/jobs/{job_id}/results/cells.geojson", headers=HEADERS)
            features = reply.json()["features"]
            outlines = [shape(f["geometry"]) for f in features]
            tree = shapely.STRtree(outlines)
            area = shapely.box(0, 0, side, side)
            tree.query(area, predicate="intersects")
            baseline_ms.append((time.perf_counter() - started) * 1000)
        rng = random.Random(1)
        centres = [
            f["properties"]["measurements"] for f in rng.sample(features, min(boxes, len(features)))
        ]
        queries = [(m["Centroid X px"] - side / 2, m["Centroid Y px"] - side / 2) for m in centres]
        nuclei = len(features)
        # The baseline's millions of objects would make this process's garbage
        # collector pause for a second in the middle of the timed queries.
        del features, outlines, tree, centres
        gc.collect()
        timings: dict[str, list[float]] = {"gzip": [], "identity": []}
        counts: list[int] = []
        first_ms = 0.0
        for k, (x0, y0) in enumerate(queries):
            bbox = f"{x0:.1f},{y0:.1f},{x0 + side:.1f},{y0 + side:.1f}"
            # As a browser asks (gzip), and uncompressed, in turn.
            for encoding, taken in timings.items():
                started = time.perf_counter()
                reply = http.get(
                    f"/jobs/{job_id}/cells",
                    params={"bbox": bbox},
                    headers={**HEADERS, "Accept-Encoding": encoding},
                )
                found = reply.json()["features"]
                elapsed = (time.perf_counter() - started) * 1000
                if k == 0:
                    first_ms = first_ms or elapsed  # the index loaded and its tree built
                    continue
                taken.append(elapsed)
            if k:
                counts.append(len(found))
    query_median = statistics.median(timings["gzip"])
    return {
        "job_s": round(job_s, 1),
        "nuclei": nuclei,
        "box_px": side,
        "boxes": len(timings["gzip"]),
        "nuclei_per_box_median": statistics.median(counts),
        "nuclei_per_box_max": max(counts),
        "first_query_ms": round(first_ms, 1),
        "query_median_ms": round(query_median, 1),
        "query_p95_ms": round(percentile(timings["gzip"], 0.95), 1),
        "query_uncompressed_median_ms": round(statistics.median(timings["identity"]), 1),
        "query_uncompressed_p95_ms": round(percentile(timings["identity"], 0.95), 1),
        "baseline_whole_file_median_ms": round(statistics.median(baseline_ms), 1),
        "baseline_over_query": round(statistics.median(baseline_ms) / query_median, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--megapixels", type=float, default=640)
    parser.add_argument("--boxes", type=int, default=60)
    parser.add_argument("--box", type=float, default=2000)
    args = parser.parse_args()
    slide = slide_path(OUT, args.megapixels, 0.5)
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        result = run(slide, args.boxes + 1, args.box, Path(tmp))
    result["machine"] = f"{platform.node() or 'vm'} {platform.machine()}"
    result["slide"] = f"{slide.name} at 0.5 um/px"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
