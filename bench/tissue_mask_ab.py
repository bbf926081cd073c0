"""A/B of one TISSUE_MASK job, run in-process as a pool process runs it
(OpenCV on one thread): this checkout against another commit (its
``git worktree`` under bench/out/worktrees/), alternating sides each round.

    python -m bench.tissue_mask_ab --baseline 2eb075c [--slide PATH] [--rounds 15]

Prints each side's median seconds per phase (the job's summary.json timings)
and the ratio of the medians of the whole job (baseline / this). Each side
runs in a process of its own, so the two never share imported code.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from bench.pipeline_ab import alternating, worktree
from tests.harness import CMU, ROOT, SLIDES

# Runs inside the side's checkout: one job, its summary's timings on stdout.
ONE_JOB = """
import json, sys, tempfile
from pathlib import Path
import cv2
cv2.setNumThreads(1)
from worker_service.pipeline import job
from worker_service.pipeline.context import JobContext
from worker_service.storage.slides import SlideCache
from wsi_protocol.job_types import JobType
slides = SlideCache()
with tempfile.TemporaryDirectory() as out:
    for n in range(int(sys.argv[2]) + 1):  # the first run warms caches up, unreported
        spec = job.JobSpec(f"job-{n}", JobType.TISSUE_MASK, sys.argv[1], {})
        done = job.run_job(spec, Path(out), JobContext(cancelled=lambda: False), slides, None)
        if n:
            print(json.dumps(done.summary["timings"]))
"""


def side(root: Path, slide: Path, jobs: int) -> list[dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", ONE_JOB, str(slide), str(jobs)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--baseline", required=True, help="commit to compare against")
    parser.add_argument("--slide", type=Path, default=SLIDES / CMU)
    parser.add_argument("--rounds", type=int, default=15, help="rounds of 3 jobs per side")
    args = parser.parse_args()
    baseline, commit = worktree(args.baseline)
    runs: dict[str, list[dict[str, float]]] = {"this": [], "baseline": []}
    for name, root in alternating([("this", ROOT), ("baseline", baseline)], args.rounds):
        runs[name] += side(root, args.slide.resolve(), 3)
    medians = {
        name: {
            phase: round(statistics.median(run[phase] for run in timings), 4)
            for phase in timings[0]
        }
        for name, timings in runs.items()
    }
    print(
        json.dumps(
            {
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                "slide": str(args.slide),
                "baseline": commit[:12],
                "jobs_per_side": len(runs["this"]),
                "median_s": medians,
                "speedup": round(medians["baseline"]["total_s"] / medians["this"]["total_s"], 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
