"""Cell segmentation and tissue detection, judged against known ground truth."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from shapely.geometry import Point, shape

from tests.harness import CMU, SLIDES
from tests.pipeline.support import centroids, f1, match, run
from tests.timing import patience
from worker_service.analysis import cell_index
from worker_service.analysis.tissue import TissueMask
from worker_service.analysis.tissue_codec import ReusedTissue
from worker_service.errors import JobCancelled
from worker_service.pipeline import phases
from worker_service.pipeline.context import JobContext
from worker_service.pipeline.job import JobSpec, run_job
from worker_service.pipeline.tile_pool import TilePool
from worker_service.storage.slides import SlideCache
from wsi_protocol.job_types import JobType
from wsi_runtime.job_params import InvalidParams
from wsi_runtime.synthetic_slides import SyntheticSlide


def truth(slide: SyntheticSlide) -> np.ndarray:
    return np.array([[n.x, n.y] for n in slide.nuclei])


def test_every_synthetic_nucleus_found_exactly_once(
    pool: TilePool, synthetic: SyntheticSlide, tmp_path: Path
) -> None:
    outcome = run(pool, tmp_path, str(synthetic.path))
    found = centroids(outcome)
    tp, fp, fn = match(found, truth(synthetic), radius=3.0 / synthetic.mpp)
    assert f1(tp, fp, fn) >= 0.95, (tp, fp, fn)
    assert outcome.summary["nuclei"] == len(found)


def test_nuclei_on_tile_seams_are_neither_lost_nor_doubled(
    pool: TilePool, synthetic: SyntheticSlide, tmp_path: Path
) -> None:
    from worker_service.analysis.tiling import tile_grid

    seams_x = {t.core_x1 for t in tile_grid(synthetic.width, 1, 512, 64)[:-1]}
    seams_y = {t.core_x1 for t in tile_grid(synthetic.height, 1, 512, 64)[:-1]}
    on_seams = [n for n in synthetic.nuclei if n.x in seams_x or n.y in seams_y]
    assert len(on_seams) >= 10
    found = centroids(run(pool, tmp_path, str(synthetic.path), tile_size="512", overlap="64"))
    radius = 3.0 / synthetic.mpp
    for nucleus in on_seams:
        near = np.hypot(found[:, 0] - nucleus.x, found[:, 1] - nucleus.y) < radius
        assert near.sum() == 1, f"nucleus at ({nucleus.x}, {nucleus.y}) found {near.sum()} times"
    # Whole, not cut: the seam nuclei have the area of their ellipse, not half of it.
    with open(tmp_path / "job" / "cells.geojson") as handle:
        features = json.load(handle)["features"]
    for nucleus in on_seams[:20]:
        feature = min(
            features,
            key=lambda f: np.hypot(
                f["properties"]["measurements"]["Centroid X px"] - nucleus.x,
                f["properties"]["measurements"]["Centroid Y px"] - nucleus.y,
            ),
        )
        expected = np.pi * nucleus.rx * nucleus.ry
        assert shape(feature["geometry"]).area == pytest.approx(expected, rel=0.35)


def test_no_nuclei_in_the_white_background(
    pool: TilePool, synthetic: SyntheticSlide, tmp_path: Path
) -> None:
    found = centroids(run(pool, tmp_path, str(synthetic.path)))
    x0, y0, x1, y1 = synthetic.tissue_box
    cx, cy, ax, ay = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    inside = ((found[:, 0] - cx) / ax) ** 2 + ((found[:, 1] - cy) / ay) ** 2 <= 1.02
    assert inside.all(), found[~inside][:5]


def test_coordinates_are_level_0_when_a_lower_level_is_read(
    pool: TilePool, synthetic: SyntheticSlide, tmp_path: Path
) -> None:
    outcome = run(pool, tmp_path, str(synthetic.path), target_mpp="1.0")
    assert outcome.summary["level"] == 1 and outcome.summary["downsample"] == 2.0
    assert outcome.summary["mpp_used"] == 1.0
    tp, fp, fn = match(centroids(outcome), truth(synthetic), radius=3.0 / synthetic.mpp)
    assert f1(tp, fp, fn) >= 0.9, (tp, fp, fn)


def test_tissue_mask_covers_the_tissue_and_not_the_glass(
    pool: TilePool, synthetic: SyntheticSlide, tmp_path: Path
) -> None:
    outcome = run(pool, tmp_path, str(synthetic.path), job_type="TISSUE_MASK")
    assert "cells.geojson" not in outcome.files
    mask = np.asarray(Image.open(outcome.files["tissue_mask.png"])) > 0
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    x0, y0, x1, y1 = (v * w / synthetic.width for v in synthetic.tissue_box)
    ellipse = (((xx + 0.5) - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2 + (
        ((yy + 0.5) - (y0 + y1) / 2) / ((y1 - y0) / 2)
    ) ** 2 <= 1
    iou = (mask & ellipse).sum() / (mask | ellipse).sum()
    assert iou > 0.95
    with open(outcome.files["tissue.geojson"]) as handle:
        features = json.load(handle)["features"]
    assert [f["properties"]["objectType"] for f in features] == ["annotation"]
    area = shape(features[0]["geometry"]).area
    expected = (
        np.pi
        * (synthetic.tissue_box[2] - synthetic.tissue_box[0])
        * (synthetic.tissue_box[3] - synthetic.tissue_box[1])
        / 4
    )
    assert area == pytest.approx(expected, rel=0.05)


def test_cells_geojson_is_what_qupath_imports(
    pool: TilePool, synthetic: SyntheticSlide, tmp_path: Path
) -> None:
    outcome = run(pool, tmp_path, str(synthetic.path))
    with open(outcome.files["cells.geojson"]) as handle:
        document = json.load(handle)
    assert document["type"] == "FeatureCollection"
    feature = document["features"][0]
    assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
    ring = feature["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) >= 4
    props = feature["properties"]
    assert props["objectType"] == "detection"
    assert props["classification"]["name"] == "Nucleus"
    assert 20 < props["measurements"]["Area µm^2"] < 100  # ~7 um nuclei
    # QuPath-style measurements; synthetic nuclei are ellipses: round, solid, dark.
    measured = [f["properties"]["measurements"] for f in document["features"]]
    for m in measured:
        assert 0 < m["Circularity"] <= 1 and 0 < m["Solidity"] <= 1, m
        assert m["Perimeter µm"] == pytest.approx(m["Perimeter px"] * synthetic.mpp, rel=1e-3)
        assert m["Hematoxylin OD mean"] > 0.05, m
    assert np.median([m["Circularity"] for m in measured]) > 0.8
    assert np.median([m["Solidity"] for m in measured]) > 0.9
    ids = [f["id"] for f in document["features"]]
    assert len(set(ids)) == len(ids)
    # The same job again gives every nucleus the same id.
    again = run(pool, tmp_path / "again", str(synthetic.path))
    with open(again.files["cells.geojson"]) as handle:
        assert sorted(f["id"] for f in json.load(handle)["features"]) == sorted(ids)
    # The cell index sits beside it, one row per feature, pointing at it.
    index = cell_index.load(Path(outcome.files["cells.geojson"]).with_name(cell_index.INDEX_NAME))
    data = Path(outcome.files["cells.geojson"]).read_bytes()
    assert len(index) == len(ids)
    first = data[index.offsets[0] : index.offsets[0] + index.lengths[0]]
    assert json.loads(first) == feature
    summary = json.loads(Path(outcome.files["summary.json"]).read_text())
    assert summary["nuclei"] == len(document["features"])
    assert summary["tiles_processed"] + summary["tiles_skipped"] == summary["tiles_total"]
    assert Image.open(outcome.files["preview.png"]).size[0] <= 1024


def test_real_slide_finds_thousands_of_nuclei_inside_the_tissue(
    pool: TilePool, tmp_path: Path
) -> None:
    outcome = run(pool, tmp_path, str(SLIDES / "CMU-1-Small-Region.svs"))
    found = centroids(outcome)
    assert 1000 < len(found) < 20000
    with open(outcome.files["tissue.geojson"]) as handle:
        outlines = [shape(f["geometry"]) for f in json.load(handle)["features"]]
    tissue = [outline.buffer(20) for outline in outlines]
    inside = sum(any(t.contains(Point(x, y)) for t in tissue) for x, y in found[::10])
    assert inside / len(found[::10]) > 0.95  # a few sit on faint wisps the coarse mask omits
    # The top-left corner of this slide is glass: no nuclei there.
    assert not ((found[:, 0] < 500) & (found[:, 1] < 500)).any()
    # The summary's statistics are those of the nuclei written, and the tissue
    # area that of the outlines (0.499 um/px).
    with open(outcome.files["cells.geojson"]) as handle:
        written = [f["properties"]["measurements"] for f in json.load(handle)["features"]]
    stats: Any = outcome.summary["measurements"]
    for name, source in (("area_um2", "Area µm^2"), ("circularity", "Circularity")):
        values = np.array([m[source] for m in written])
        assert stats[name]["mean"] == pytest.approx(values.mean(), rel=1e-3)
        for statistic, q in (("p05", 0.05), ("p50", 0.5), ("p95", 0.95)):
            assert stats[name][statistic] == pytest.approx(np.quantile(values, q), rel=0.012)
    slide: Any = outcome.summary["slide"]
    mpp = slide["mpp"]
    area_mm2 = sum(outline.area for outline in outlines) * mpp * mpp / 1e6
    assert outcome.summary["tissue_area_mm2"] == pytest.approx(area_mm2, rel=1e-3)


def test_the_nucleus_table_holds_each_feature_s_id_centroid_and_measurements(
    pool: TilePool, tmp_path: Path
) -> None:
    """nuclei.parquet, read as a user reads it (pyarrow, which pandas uses):
    one row per GeoJSON feature, in its order, with its values; no spool left."""
    outcome = run(pool, tmp_path, str(SLIDES / "CMU-1-Small-Region.svs"))
    table = pq.read_table(outcome.files["nuclei.parquet"]).to_pydict()
    with open(outcome.files["cells.geojson"]) as handle:
        features = json.load(handle)["features"]
    assert len(features) > 1000 and table["id"] == [f["id"] for f in features]
    named = {
        "centroid_x": "Centroid X px",
        "centroid_y": "Centroid Y px",
        "area_um2": "Area µm^2",
        "perimeter_um": "Perimeter µm",
        "circularity": "Circularity",
        "solidity": "Solidity",
        "hematoxylin_od": "Hematoxylin OD mean",
    }
    for column, measurement in named.items():
        assert table[column] == [f["properties"]["measurements"][measurement] for f in features]
    # Each nucleus lies in the tile it is said to come from (level 0, 512 px tiles here).
    for x, y, tx, ty in zip(
        table["centroid_x"], table["centroid_y"], table["tile_x"], table["tile_y"], strict=True
    ):
        assert tx <= x < tx + 512 and ty <= y < ty + 512
    assert sorted(p.name for p in Path(outcome.files["nuclei.parquet"]).parent.iterdir()) == [
        "cells.geojson", "cells.index.npz", "nuclei.parquet", "preview.png", "summary.json",
        "tissue.geojson", "tissue_mask.png",
    ]  # fmt: skip


def test_cancellation_stops_the_job_within_a_second(
    pool: TilePool, synthetic: SyntheticSlide, tmp_path: Path
) -> None:
    cancel = threading.Event()
    progress: list[int] = []
    errors: list[BaseException] = []

    def report(done: int, total: int) -> None:
        progress.append(done)
        if done >= 2:
            cancel.set()

    def job() -> None:
        try:
            run_job(
                JobSpec(
                    "cancel-me",
                    JobType.CELL_SEGMENTATION,
                    str(synthetic.path),
                    {"tile_size": "128", "overlap": "16"},
                ),
                tmp_path,
                JobContext(cancelled=cancel.is_set, report=report),
                SlideCache(),
                pool,
            )
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=job)
    thread.start()
    assert cancel.wait(30)
    cancelled_at = time.monotonic()
    thread.join(10)
    assert time.monotonic() - cancelled_at < 1.5  # "within about a second", on a loaded CI box
    assert errors and isinstance(errors[0], JobCancelled)
    assert not (tmp_path / "cancel-me" / "cells.geojson").exists()  # no half-written result


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tile_size": "abc"}, "tile_size"),
        ({"tile_size": "64", "overlap": "40"}, "overlap"),
        ({"backend": "magic"}, "unknown segmentation backend"),
        ({"min_tissue": "2"}, "min_tissue"),
    ],
)
def test_the_pipeline_checks_params_again(
    pool: TilePool, tmp_path: Path, params: dict[str, str], message: str
) -> None:
    """A worker may be called by a scheduler that did not check them."""
    with pytest.raises(InvalidParams, match=message):
        run(pool, tmp_path, str(SLIDES / "small.svs"), **params)


def test_two_jobs_share_the_pool_instead_of_queueing(
    pool: TilePool, synthetic: SyntheticSlide, tmp_path: Path
) -> None:
    """The second job's tiles run while the first is still going, not after it."""
    progress: dict[str, list[float]] = {"first": [], "second": []}
    second_has_tiles = threading.Event()

    def report(name: str, done: int) -> None:
        if done:
            progress[name].append(time.monotonic())
        if name == "second" and len(progress["second"]) >= 3:
            second_has_tiles.set()
        if name == "first" and done and len(progress["first"]) == 1:
            # Held mid-way until the second job has tiles of its own (caused, not
            # timed: a loaded machine cannot make it pass or fail). A pool that
            # ran jobs one after the other would keep the second waiting here.
            second_has_tiles.wait(patience(30))

    def job(name: str) -> None:
        run_job(
            JobSpec(
                name,
                JobType.CELL_SEGMENTATION,
                str(synthetic.path),
                {"tile_size": "256", "overlap": "32"},
            ),
            tmp_path,
            JobContext(report=lambda done, total: report(name, done)),
            SlideCache(),
            pool,
        )

    first = threading.Thread(target=job, args=("first",))
    first.start()
    while not progress["first"]:
        time.sleep(0.01)
    second = threading.Thread(target=job, args=("second",))
    second.start()
    first.join(60)
    second.join(60)
    # Interleaved: the second job finished some tiles before the first job's last tile.
    assert progress["second"][0] < progress["first"][-1]
    during = [t for t in progress["second"] if t < progress["first"][-1]]
    assert len(during) >= 3


@pytest.mark.parametrize("job_type", ["TISSUE_MASK", "CELL_SEGMENTATION"])
def test_the_summary_times_every_phase_of_the_job(
    pool: TilePool, tmp_path: Path, job_type: str
) -> None:
    outcome = run(pool, tmp_path, str(SLIDES / "boxes.tiff"), job_type=job_type)
    timings = outcome.summary["timings"]
    assert isinstance(timings, dict)
    serial = ["overview_s", "tissue_s", "preview_s"]
    cells = ["reference_s", "tiles_s"] if job_type == "CELL_SEGMENTATION" else []
    assert set(timings) == {*serial, *cells, "total_s"} | ({"segmentation_s"} if cells else set())
    assert all(seconds >= 0 for seconds in timings.values())
    # The phases cover the job: together they are its total, within rounding
    # (each to 0.1 ms).
    assert sum(timings[name] for name in serial + cells) == pytest.approx(
        timings["total_s"], abs=0.001
    )


def test_a_segmentation_job_reuses_a_tissue_mask_instead_of_finding_it(
    pool: TilePool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the mask of a TISSUE_MASK job of the same slide, the job does not
    look for tissue; given a mask of another size, it does."""
    slide = str(SLIDES / CMU)
    found = run_job(
        JobSpec("mask", JobType.TISSUE_MASK, slide, {}), tmp_path, JobContext(), SlideCache(), None
    )
    assert found.tissue_mask is not None
    reused = ReusedTissue(found.tissue_mask, "mask")

    def no_detection(*args: object) -> None:
        raise AssertionError("the tissue was found again")

    monkeypatch.setattr(phases, "detect_tissue", no_detection)
    cells = run_job(
        JobSpec("cells", JobType.CELL_SEGMENTATION, slide, {}, reused),
        tmp_path,
        JobContext(),
        SlideCache(),
        pool,
    )
    assert cells.summary["tissue_mask_from"] == "mask"
    assert cells.tissue_mask is None  # only a TISSUE_MASK job hands its mask on
    for name in ("tissue.geojson", "tissue_mask.png"):
        assert Path(cells.files[name]).read_bytes() == Path(found.files[name]).read_bytes()

    monkeypatch.undo()
    small = TissueMask(found.tissue_mask.mask[:10, :10], found.tissue_mask.downsample, 0.1)
    again = run_job(
        JobSpec("again", JobType.TISSUE_MASK, slide, {}, ReusedTissue(small, "mask")),
        tmp_path,
        JobContext(),
        SlideCache(),
        None,
    )
    assert again.summary["tissue_mask_from"] is None
