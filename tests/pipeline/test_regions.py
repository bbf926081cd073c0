"""A job limited to a region of interest, in-process: only nuclei inside it,
only the tiles it needs, the tissue cut to it, the same nuclei (same ids,
same outlines) as a job of the whole slide, and a clear failure for a region
off the slide."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from shapely.geometry import Point, Polygon, shape

from tests.pipeline.support import centroids, f1, match, run
from worker_service.errors import RegionOutsideSlide
from worker_service.pipeline.job import JobOutcome
from worker_service.pipeline.tile_pool import TilePool
from wsi_runtime import regions
from wsi_runtime.synthetic_slides import SyntheticSlide


def features(outcome: JobOutcome) -> dict[str, dict[str, Any]]:
    with open(outcome.files["cells.geojson"]) as handle:
        return {f["id"]: f for f in json.load(handle)["features"]}


def triangle(slide: SyntheticSlide) -> str:
    x0, y0, x1, y1 = slide.tissue_box
    return f"{x0},{y0} {x1},{(y0 + y1) // 2} {(x0 + x1) // 2},{y1}"


def test_a_region_job_keeps_the_nuclei_inside_and_reads_only_its_tiles(
    pool: TilePool, synthetic: SyntheticSlide, learned_whole: JobOutcome, tmp_path: Path
) -> None:
    text = triangle(synthetic)
    outcome = run(pool, tmp_path, str(synthetic.path), backend="learned", region=text)
    area = Polygon(regions.parse(text).vertices)
    found = centroids(outcome)
    assert len(found) and all(area.intersects(Point(x, y)) for x, y in found)
    truth = np.array([[n.x, n.y] for n in synthetic.nuclei if area.contains(Point(n.x, n.y))])
    tp, fp, fn = match(found, truth, radius=3.0 / synthetic.mpp)
    assert f1(tp, fp, fn) >= 0.9, (tp, fp, fn)
    summary: dict[str, Any] = outcome.summary
    whole: dict[str, Any] = learned_whole.summary
    assert summary["region"]["text"] == text
    assert summary["tiles_processed"] < whole["tiles_processed"]
    # The same nuclei as the whole slide's job, ids and outlines, where it is inside.
    mine, theirs = features(outcome), features(learned_whole)
    inside = {
        k
        for k, f in theirs.items()
        if area.intersects(
            Point(
                f["properties"]["measurements"]["Centroid X px"],
                f["properties"]["measurements"]["Centroid Y px"],
            )
        )
    }
    assert set(mine) == inside
    assert all(mine[k]["geometry"] == theirs[k]["geometry"] for k in mine)
    # The tissue is cut to the region.
    with open(outcome.files["tissue.geojson"]) as handle:
        tissue = [shape(f["geometry"]) for f in json.load(handle)["features"]]
    assert tissue and all(area.buffer(1).contains(t) for t in tissue)
    assert summary["tissue_area_mm2"] < whole["tissue_area_mm2"]


def test_a_region_off_the_slide_fails_and_says_where_the_slide_is(
    pool: TilePool, synthetic: SyntheticSlide, tmp_path: Path
) -> None:
    far = f"{synthetic.width + 10},0,{synthetic.width + 500},400"
    with pytest.raises(RegionOutsideSlide, match=f"{synthetic.width} x {synthetic.height} px"):
        run(pool, tmp_path, str(synthetic.path), region=far)
