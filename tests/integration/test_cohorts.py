"""A cohort as a user runs one: every slide of a folder by pattern with one
`wsi` command, a branch per slide; the workflow's table through the gateway
and `wsi table`, one row per slide with the summary's nuclei and each failed
slide's reason; the failed slides, once mended, run again alone with
`wsi resubmit`."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq

from tests.crafted_slides import damaged
from tests.harness import cluster_with_gateway
from tests.timing import patience
from wsi_runtime.synthetic_slides import synthetic_he_slide

WSI = Path(sys.executable).parent / "wsi"
WHO = {"X-User-ID": "lab"}
GOOD, BROKEN = 4, 2


def ended(http: httpx.Client, workflow_id: str, within_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + patience(within_s)
    while time.monotonic() < deadline:
        wf: dict[str, Any] = http.get(f"/workflows/{workflow_id}", headers=WHO).json()
        if wf["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return wf
        time.sleep(0.2)
    raise TimeoutError(workflow_id)


def test_a_cohort_from_pattern_to_table_and_its_failures_run_again(tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    names = [f"cohort/s{i:02d}.tiff" for i in range(GOOD + BROKEN)]
    for seed, name in enumerate(names):
        synthetic_he_slide(slides / name, width=1024, height=768, seed=seed)
    for name in names[GOOD:]:
        damaged(slides / name)
    synthetic_he_slide(slides / "elsewhere.tiff", width=512, height=512, seed=99)
    with (
        cluster_with_gateway(tmp_path, worker_slots=(2,), slide_roots=str(slides)) as (c, gateway),
        httpx.Client(base_url=gateway.address, timeout=60) as http,
    ):
        env = {**os.environ, "WSI_ADDRESS": c.scheduler.address, "WSI_USER": "lab"}

        def wsi(*args: str) -> str:
            done = subprocess.run(
                [str(WSI), *args], env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        made = json.loads(wsi("submit", "cohort/*.tiff", "-t", "CELL_SEGMENTATION", "--json"))
        assert sorted(j["wsi_path"] for j in made["jobs"]) == names
        assert len({j["branch"] for j in made["jobs"]}) == len(names)  # a branch per slide
        workflow = ended(http, made["workflow_id"])
        reply = http.get(f"/workflows/{made['workflow_id']}/table", headers=WHO)
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/csv")
        rows = {row["slide"]: row for row in csv.DictReader(io.StringIO(reply.text))}
        assert sorted(rows) == names
        for job in workflow["jobs"]:
            row = rows[job["wsi_path"]]
            if job["wsi_path"] in names[:GOOD]:
                summary = job["result"]["summary"]  # the API gives it as an object
                assert row["state"] == "SUCCEEDED" and int(row["nuclei"]) == summary["nuclei"] > 0
                assert float(row["nuclei_per_mm2"]) > 0 and float(row["area_um2_p50"]) > 0
            else:
                assert row["state"] == "FAILED" and row["error"] == job["error"] != ""
        saved = tmp_path / "cohort.csv"
        wsi("table", made["workflow_id"], "-o", str(saved))
        assert saved.read_bytes() == reply.content
        # The same table as Parquet, from the gateway and from wsi, read with pyarrow.
        as_parquet = http.get(
            f"/workflows/{made['workflow_id']}/table", params={"format": "parquet"}, headers=WHO
        )
        assert as_parquet.headers["content-type"] == "application/vnd.apache.parquet"
        columns = pq.read_table(io.BytesIO(as_parquet.content)).to_pydict()
        assert dict(zip(columns["slide"], columns["nuclei"], strict=True)) == {
            slide: int(row["nuclei"]) if row["nuclei"] else None for slide, row in rows.items()
        }
        assert columns["error"] == [rows[slide]["error"] for slide in columns["slide"]]
        wsi("table", made["workflow_id"], "-o", str(tmp_path / "cohort.parquet"))
        assert pq.read_table(tmp_path / "cohort.parquet").to_pydict() == columns
        bad = http.get(
            f"/workflows/{made['workflow_id']}/table", params={"format": "xlsx"}, headers=WHO
        )
        assert bad.status_code == 400 and "csv, parquet" in bad.json()["message"]

        for name in names[GOOD:]:  # mended, as a user would, then only those run again
            (slides / name).unlink()
            synthetic_he_slide(slides / name, width=1024, height=768, seed=7)
        again = json.loads(wsi("resubmit", made["workflow_id"], "--json"))
        assert sorted(j["wsi_path"] for j in again["jobs"]) == names[GOOD:]
        assert ended(http, again["workflow_id"])["state"] == "SUCCEEDED"
