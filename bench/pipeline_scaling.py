"""Parallel efficiency of one CELL_SEGMENTATION job through the services: the
same job with the worker's pool at 1 process and at N (default: 2 and every
core), rounds alternating, a fresh scheduler and worker each run.

    python -m bench.pipeline_scaling [--megapixels 320] [--processes 1,2] [--rounds 3]

Efficiency at N = time with 1 process / (N x time with N), from the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.pipeline_bench import OUT, through_services
from bench.slide_generator import slide_path
from wsi_protocol.scheduler.v1 import scheduler_pb2 as pb


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--megapixels", type=float, default=320)
    parser.add_argument("--mpp", type=float, default=0.5, choices=(0.25, 0.5))
    cores = os.cpu_count() or 1
    parser.add_argument(
        "--processes", default=",".join(str(n) for n in sorted({1, 2, cores}) if n <= cores)
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    if 1 not in counts:
        counts.insert(0, 1)
    slide = slide_path(OUT, args.megapixels, args.mpp)
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        for round_ in range(args.rounds):
            order = counts if round_ % 2 == 0 else counts[::-1]
            for n in order:
                run = through_services(
                    slide, pb.CELL_SEGMENTATION, Path(tmp) / f"{n}-{round_}", processes=str(n)
                )
                runs[n].append(run)
                print(f"round {round_ + 1}, {n} processes: {run['seconds']:.1f} s", flush=True)
    medians = {n: statistics.median(r["seconds"] for r in side) for n, side in runs.items()}
    report = {
        "machine": f"{platform.node()} {platform.machine()}, {cores} cores",
        "slide": f"{slide.name} at {args.mpp} um/px",
        "seconds": {n: [round(r["seconds"], 2) for r in side] for n, side in runs.items()},
        "median_s": {n: round(m, 2) for n, m in medians.items()},
        "efficiency": {n: round(medians[1] / (n * medians[n]), 3) for n in counts},
        "tiles_s_median": {
            n: round(statistics.median(r["timings"].get("tiles_s", 0.0) for r in side), 2)
            for n, side in runs.items()
        },
        "worker_and_pool_peak_mb": {
            n: max(r["worker_and_pool_mb"] for r in side) for n, side in runs.items()
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
