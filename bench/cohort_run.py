"""A cohort as a user runs one, end to end through scheduler, worker and
gateway: N generated slides in a folder, D of them damaged, one
``wsi submit 'cohort/*.tiff' -t CELL_SEGMENTATION``; then the workflow's
table, each succeeded row's nuclei against its job's summary, the damaged
slides' reasons, and ``wsi resubmit`` once they are mended (only those run).
Services from the test harness: one worker of 2 slots, jobs that name no
backend get the classical one (what is measured is the cohort, not the model).

    python -m bench.cohort_run [--slides 40] [--damaged 2] [--size 1536x1024]

Prints the time from submit to the workflow's end and each check's outcome;
exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.crafted_slides import damaged
from tests.harness import cluster_with_gateway
from wsi_runtime.synthetic_slides import synthetic_he_slide

WSI = Path(sys.executable).parent / "wsi"
WHO = {"X-User-ID": "bench"}


def ended(http: httpx.Client, workflow_id: str) -> dict[str, Any]:
    while True:
        workflow: dict[str, Any] = http.get(f"/workflows/{workflow_id}", headers=WHO).json()
        if workflow["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return workflow
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slides", type=int, default=40)
    parser.add_argument("--damaged", type=int, default=2)
    parser.add_argument("--size", default="1536x1024", help="each slide's WIDTHxHEIGHT, px")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    names = [f"cohort/slide-{k:03d}.tiff" for k in range(args.slides)]
    broken = names[: args.damaged]
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        slides = workdir / "slides"
        for seed, name in enumerate(names):
            synthetic_he_slide(slides / name, width=width, height=height, seed=seed)
        for name in broken:
            damaged(slides / name)
        with (
            cluster_with_gateway(workdir, worker_slots=(2,), slide_roots=str(slides)) as (c, gw),
            httpx.Client(base_url=gw.address, timeout=60) as http,
        ):
            env = {**os.environ, "WSI_ADDRESS": c.scheduler.address, "WSI_USER": WHO["X-User-ID"]}

            def wsi(*command: str) -> Any:
                done = subprocess.run(
                    [str(WSI), *command, "--json"], env=env, capture_output=True, text=True
                )
                if done.returncode != 0:
                    raise SystemExit(done.stderr)
                return json.loads(done.stdout)

            started = time.perf_counter()
            made = wsi("submit", "cohort/*.tiff", "-t", "CELL_SEGMENTATION")
            workflow = ended(http, made["workflow_id"])
            seconds = time.perf_counter() - started
            table = http.get(f"/workflows/{made['workflow_id']}/table", headers=WHO).text
            rows = {row["slide"]: row for row in csv.DictReader(io.StringIO(table))}
            jobs = {job["wsi_path"]: job for job in workflow["jobs"]}
            agreeing = sum(
                1
                for slide, row in rows.items()
                if row["state"] == "SUCCEEDED"
                and int(row["nuclei"]) == jobs[slide]["result"]["summary"]["nuclei"]
            )
            failed = {
                slide: row["error"] for slide, row in rows.items() if row["state"] == "FAILED"
            }
            for name in broken:
                (slides / name).unlink()
                synthetic_he_slide(slides / name, width=width, height=height, seed=0)
            again = wsi("resubmit", made["workflow_id"])
            rerun = sorted(job["wsi_path"] for job in again["jobs"])
            rerun_state = ended(http, again["workflow_id"])["state"]
    checks = {
        f"{args.slides} jobs in {args.slides} branches": len(made["jobs"]) == args.slides
        and len({job["branch"] for job in made["jobs"]}) == args.slides,
        f"{args.slides} table rows": len(rows) == args.slides,
        "succeeded rows' nuclei equal their summaries": agreeing == args.slides - args.damaged,
        "the damaged slides failed, with a reason": sorted(failed) == broken
        and all(failed.values()),
        "resubmit ran only the mended slides, and they succeeded": rerun == broken
        and rerun_state == "SUCCEEDED",
    }
    print(
        f"{args.slides} slides of {width} x {height} px, {args.damaged} damaged:"
        f" submitted to ended in {seconds:.1f} s"
    )
    for reason in sorted(set(failed.values())):
        print(f"  failure reason: {reason}")
    for check, held in checks.items():
        print(f"  {'ok ' if held else 'FAILED'} {check}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
