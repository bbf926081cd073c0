"""A job limited to a region against the same job over the whole slide, in
the worker's pipeline in-process (the tile pool on every core, no gRPC): on
a generated mosaic slide whose tissue is spread evenly, a region of one
quarter of the slide should take about a quarter of the job's time (the
issue's bound: at most ~35 %). Runs alternate (whole, quarter, whole, ...)
so that a noisy machine weighs on both alike; prints each run and the median
ratio of the two.

    python -m bench.region_time [--megapixels 100] [--rounds 3] [--backend learned]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import openslide

from bench.slide_generator import slide_path
from worker_service.pipeline.context import JobContext
from worker_service.pipeline.job import JobOutcome, JobSpec, run_job
from worker_service.pipeline.tile_pool import TilePool
from worker_service.storage.slides import SlideCache
from wsi_protocol.job_types import JobType


def timed(
    pool: TilePool, slide: Path, out: Path, params: dict[str, str]
) -> tuple[float, JobOutcome]:
    started = time.perf_counter()
    outcome = run_job(
        JobSpec("job", JobType.CELL_SEGMENTATION, str(slide), params),
        out,
        JobContext(),
        SlideCache(),
        pool,
    )
    return time.perf_counter() - started, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megapixels", type=float, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default="learned")
    parser.add_argument("--slides", type=Path, default=Path("bench/out/slides"))
    args = parser.parse_args()
    slide = slide_path(args.slides, args.megapixels, mpp=0.5)
    with openslide.OpenSlide(str(slide)) as opened:
        width, height = opened.dimensions
    quarter = f"0,0,{width // 2},{height // 2}"
    print(
        f"{slide.name}: {width} x {height} px at 0.5 um/px, backend {args.backend},"
        f" region {quarter}, {os.cpu_count()} cores"
    )
    pool = TilePool(os.cpu_count() or 1)
    pool.warm_up()
    ratios = []
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            results = {}
            for name, extra in (("whole", {}), ("quarter", {"region": quarter})):
                params = {"backend": args.backend, **extra}
                seconds, outcome = timed(pool, slide, Path(scratch) / f"{name}{round_}", params)
                summary = outcome.summary
                results[name] = seconds
                print(
                    f"  round {round_ + 1} {name:8} {seconds:6.2f} s  tiles"
                    f" {summary['tiles_processed']:5}  nuclei {summary['nuclei']:7}"
                    f"  tissue {summary['tissue_area_mm2']} mm2"
                )
            ratios.append(results["quarter"] / results["whole"])
    pool.close()
    print(
        f"quarter / whole: median {statistics.median(ratios):.3f}"
        f" ({', '.join(f'{r:.3f}' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
