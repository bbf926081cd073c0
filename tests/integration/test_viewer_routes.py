"""The viewer's routes through gateway, scheduler and worker: the slide as
Deep Zoom, nuclei by box, density; owner only, clear errors, cache headers."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import shapely
from PIL import Image
from shapely.geometry import shape

from tests.harness import CMU, cluster_with_gateway
from tests.integration.support import succeeded_over_http

ALICE = {"X-User-ID": "alice"}
BOB = {"X-User-ID": "bob"}


@dataclass
class Viewer:
    http: httpx.Client
    cells_job: str
    mask_job: str
    cells: list[dict[str, Any]]


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewer]:
    workdir = tmp_path_factory.mktemp("viewer")
    with (
        cluster_with_gateway(workdir, worker_slots=(2,)) as (_, gateway),
        httpx.Client(base_url=gateway.address, timeout=30) as http,
    ):
        jobs = [
            {"key": "cells", "branch": "a", "job_type": "CELL_SEGMENTATION", "wsi_path": CMU},
            {"key": "mask", "branch": "b", "job_type": "TISSUE_MASK", "wsi_path": CMU},
        ]
        reply = http.post("/workflows", json={"jobs": jobs}, headers=ALICE)
        assert reply.status_code == 201, reply.text
        wf = succeeded_over_http(http, reply.json()["workflow_id"], ALICE)
        by_key = {job["key"]: job["job_id"] for job in wf["jobs"]}
        cells = http.get(f"/jobs/{by_key['cells']}/results/cells.geojson", headers=ALICE).json()
        yield Viewer(http, by_key["cells"], by_key["mask"], cells["features"])


def test_the_dzi_descriptor_and_every_level_s_tiles(viewer: Viewer) -> None:
    http, job = viewer.http, viewer.cells_job
    reply = http.get(f"/jobs/{job}/slide.dzi", headers=ALICE)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("application/xml")
    xml = reply.text
    assert 'xmlns="http://schemas.microsoft.com/deepzoom/2008"' in xml
    size = re.search(r'<Size Width="(\d+)" Height="(\d+)"', xml)
    assert size and (int(size[1]), int(size[2])) == (2220, 2967)  # the CMU region
    assert 'TileSize="254"' in xml and 'Overlap="1"' in xml and 'Format="jpeg"' in xml
    info = http.get(f"/jobs/{job}/deepzoom", headers=ALICE).json()
    levels = info["levels"]
    assert len(levels) == math.ceil(math.log2(2967)) + 1
    assert (levels[-1]["width"], levels[-1]["height"]) == (2220, 2967)
    for number, level in enumerate(levels):
        assert level["columns"] == math.ceil(level["width"] / 254)
        # The last tile of the level: its size is what is left, plus the overlap on its left/top.
        col, row = level["columns"] - 1, level["rows"] - 1
        tile = http.get(f"/jobs/{job}/slide_files/{number}/{col}_{row}.jpeg", headers=ALICE)
        assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
        image = Image.open(io.BytesIO(tile.content))
        image.load()
        expected_w = level["width"] - col * 254 + (1 if col else 0)
        expected_h = level["height"] - row * 254 + (1 if row else 0)
        if min(level["width"], level["height"]) >= 64:
            assert image.size == (expected_w, expected_h), (number, image.size)
        else:  # OpenSlide shrinks tiny levels keeping the aspect: a pixel may go
            assert abs(image.width - expected_w) <= 1 and abs(image.height - expected_h) <= 1
        assert "max-age" in tile.headers["cache-control"]
        assert "X-User-ID" in tile.headers["vary"]
    # A full inner tile: 254 + overlap on both sides.
    top = len(levels) - 1
    inner = http.get(f"/jobs/{job}/slide_files/{top}/1_1.jpeg", headers=ALICE)
    assert Image.open(io.BytesIO(inner.content)).size == (256, 256)


def test_no_tile_and_no_slide_for_another_user(viewer: Viewer) -> None:
    http, job = viewer.http, viewer.cells_job
    for path in (
        f"/jobs/{job}/slide.dzi",
        f"/jobs/{job}/slide_files/0/0_0.jpeg",
        f"/jobs/{job}/deepzoom",
        f"/jobs/{job}/cells?bbox=0,0,100,100",
        f"/jobs/{job}/cells/density",
    ):
        reply = http.get(path, headers=BOB)
        assert reply.status_code == 404, (path, reply.text)
        assert "no-store" in reply.headers["cache-control"]
    assert http.get(f"/jobs/{job}/slide.dzi").status_code == 401
    for bad in (
        "0/99_0.jpeg",
        "40/0_0.jpeg",
        "0/0_0.png",
        "0/x_y.jpeg",
        "-1/0_0.jpeg",
        "99999999999/0_0.jpeg",
        "0/9999999999_0.jpeg",
    ):
        reply = http.get(f"/jobs/{job}/slide_files/{bad}", headers=ALICE)
        assert reply.status_code == 404, (bad, reply.status_code, reply.text)
        assert "no-store" in reply.headers["cache-control"]
    # The worker's own words, relayed once, behind what was asked.
    far = http.get(f"/jobs/{job}/slide_files/40/0_0.jpeg", headers=ALICE).json()
    assert far["code"] == "NOT_FOUND"
    assert far["message"].startswith(f"tile 40/0_0 of job {job!r}: no level 40"), far


def test_a_box_gives_what_filtering_cells_geojson_gives(viewer: Viewer) -> None:
    http, job = viewer.http, viewer.cells_job
    assert len(viewer.cells) > 1000
    boxes = [
        (0, 0, 2220, 2967),
        (500, 500, 900, 800),
        (1000.5, 1200.25, 1003, 1201),
        (1700, 2000, 2600, 3500),
        (-100, -100, 5, 5),
    ]
    for box in boxes:
        reply = http.get(
            f"/jobs/{job}/cells", params={"bbox": ",".join(map(str, box))}, headers=ALICE
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"] == "application/geo+json"
        answer = reply.json()
        assert answer["type"] == "FeatureCollection"
        area = shapely.box(*box)
        expected = [f for f in viewer.cells if shape(f["geometry"]).intersects(area)]
        assert answer["features"] == expected, box
    whole = http.get(f"/jobs/{job}/cells", params={"bbox": "0,0,2220,2967"}, headers=ALICE)
    assert len(whole.json()["features"]) == len(viewer.cells)


def test_bad_boxes_and_jobs_without_nuclei(viewer: Viewer) -> None:
    http = viewer.http
    for bbox in ("1,2,3", "0,0,0,10", "a,b,c,d", "0,0,nan,4"):
        reply = http.get(f"/jobs/{viewer.cells_job}/cells", params={"bbox": bbox}, headers=ALICE)
        assert reply.status_code == 400 and "bbox" in reply.json()["message"], reply.text
    assert http.get(f"/jobs/{viewer.cells_job}/cells", headers=ALICE).status_code == 400
    reply = http.get(f"/jobs/{viewer.mask_job}/cells?bbox=0,0,10,10", headers=ALICE)
    assert reply.status_code == 400 and "no nuclei" in reply.json()["message"]
    # The mask job's slide is viewable all the same.
    assert http.get(f"/jobs/{viewer.mask_job}/slide.dzi", headers=ALICE).status_code == 200


def test_density_counts_every_nucleus(viewer: Viewer) -> None:
    http, job = viewer.http, viewer.cells_job
    density = http.get(f"/jobs/{job}/cells/density", params={"cell_px": 256}, headers=ALICE).json()
    assert density["cell_px"] == 256 and density["nuclei"] == len(viewer.cells)
    columns, rows = density["columns"], density["rows"]
    counts = [int(c) for c in density["counts"]]
    assert len(counts) == columns * rows and sum(counts) == len(viewer.cells)
    m = viewer.cells[0]["properties"]["measurements"]
    col, row = int(m["Centroid X px"] // 256), int(m["Centroid Y px"] // 256)
    assert counts[row * columns + col] > 0
    bad = http.get(f"/jobs/{job}/cells/density", params={"cell_px": -1}, headers=ALICE)
    assert bad.status_code == 400


def test_result_files_keep_their_names_and_the_index_stays_internal(
    viewer: Viewer, tmp_path: Path
) -> None:
    job = viewer.http.get(f"/jobs/{viewer.cells_job}", headers=ALICE).json()
    assert "cells.index.npz" not in job["result"]["files"]
