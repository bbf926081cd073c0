"""A job's region of interest: the text a user writes (boxes, polygons, and
every way to get them wrong), and the pure geometry that applies it (which
tiles are read, which nuclei are kept)."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Polygon

from scheduler_service.validation import InvalidSpec, JobInput, normalise_jobs
from worker_service.analysis import regions as applied
from worker_service.analysis.merge import OwnedNuclei
from worker_service.analysis.tiling import TileGrid
from wsi_runtime import job_params, regions
from wsi_runtime.regions import InvalidRegion


def test_a_box_is_four_corners_and_reads_back_from_its_text() -> None:
    region = regions.parse(" 100,200,1100,700 ")
    assert region.is_box and region.bounds == (100, 200, 1100, 700)
    assert region.area == 1000 * 500
    assert region.text() == "100,200,1100,700"
    assert regions.parse(region.text()) == region


def test_a_polygon_keeps_its_vertices_closed_or_not() -> None:
    open_ring = regions.parse("0,0 100,0 100,50.5 0,50")
    closed = regions.parse("0,0 100,0 100,50.5 0,50 0,0")
    assert open_ring == closed and not open_ring.is_box
    assert open_ring.vertices == ((0, 0), (100, 0), (100, 50.5), (0, 50))
    assert regions.parse(open_ring.text()) == open_ring


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is empty"),
        ("1,2,3", "neither a box"),
        ("1,2,3,4,5", "neither a box"),
        ("a,b,c,d", "neither a box"),
        ("10,10,5,20", "is empty: need x0 < x1"),
        ("10,10,20,10", "is empty: need x0 < x1"),
        ("-1,0,10,10", "out of range"),
        ("0,0,1e9,10", "out of range"),
        ("nan,0,10,10", "out of range"),
        ("0,0,inf,10", "out of range"),
        ("0,0 10,0", "three distinct vertices"),
        ("0,0 10,0 0,0 10,0", "three distinct vertices"),
        ("0,0 10,10 20,20", "encloses no area"),
        ("0,0 10,10 10,0 0,20", "not simple"),  # a bow tie
        ("0,0 10;0 10,10", "vertex 2"),
        ("0,0 10,0 10,10 x", "vertex 4"),
        (" ".join(f"{k},{k % 2}" for k in range(1002)), "at most 1,000"),
        ("1" * 20_001, "characters long"),
    ],
)
def test_a_bad_region_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(InvalidRegion, match=says):
        regions.parse(text)


def test_the_job_schema_takes_a_region_and_names_the_param_when_it_is_bad() -> None:
    parsed = job_params.parse("CELL_SEGMENTATION", {"region": "0,0,512,512"})
    assert parsed.region == regions.parse("0,0,512,512")
    assert job_params.parse("TISSUE_MASK", {"region": "  "}).region is None
    with pytest.raises(job_params.InvalidParams, match="param region: box '5,5,1,1' is empty"):
        job_params.parse("CELL_SEGMENTATION", {"region": "5,5,1,1"})
    assert job_params.schema()["region"]["type"] == "region"


def test_a_long_polygon_passes_the_size_check_where_other_params_may_not() -> None:
    ring = " ".join(
        f"{1000 + 500 * np.cos(a):.1f},{1000 + 500 * np.sin(a):.1f}"
        for a in np.linspace(0, 2 * np.pi, 400, endpoint=False)
    )
    assert len(ring) > 4000

    def job(params: dict[str, str]) -> JobInput:
        return JobInput("a", "b", "CELL_SEGMENTATION", "s.svs", (), params)

    assert normalise_jobs([job({"region": ring})], 10)[0].params["region"] == ring
    with pytest.raises(InvalidSpec, match="param 'backend' is too long"):
        normalise_jobs([job({"backend": "x" * 300})], 10)


def test_only_tiles_whose_core_meets_the_region_are_read() -> None:
    grid = list(TileGrid(4000, 3000, 512, 64))
    region = Polygon(regions.parse("900,700,2100,1500").vertices)
    chosen = applied.tiles_for(region, grid, downsample=2.0)  # the region at level-0: half here
    picked = {(t.col, t.row) for t, _ in chosen}
    for tile in grid:
        core = (tile.core_x0 * 2, tile.core_y0 * 2, tile.core_x1 * 2, tile.core_y1 * 2)
        meets = core[0] < 2100 and core[2] > 900 and core[1] < 1500 and core[3] > 700
        assert ((tile.col, tile.row) in picked) == meets
    whole = [t for t, cut in chosen if cut is None]
    for tile in whole:  # wholly inside: nothing to cut
        assert tile.x * 2 >= 900 and (tile.x + tile.width) * 2 <= 2100
        assert tile.y * 2 >= 700 and (tile.y + tile.height) * 2 <= 1500
    assert all(list(cut) == region.exterior.coords[:-1] for _, cut in chosen if cut is not None)


def test_every_point_of_the_region_is_owned_by_a_chosen_tile() -> None:
    grid = list(TileGrid(3000, 3000, 256, 32))
    vertices = regions.parse("100,100 2800,400 1500,2900").vertices
    chosen = {(t.col, t.row) for t, _ in applied.tiles_for(Polygon(vertices), grid, 1.0)}
    points = np.random.default_rng(1).uniform(0, 3000, size=(4000, 2))
    inside = points[applied.inside(vertices, points)]
    assert len(inside) > 1000
    for tile in grid:
        if (tile.col, tile.row) not in chosen:
            assert not tile.core_holds(inside).any(), (tile.col, tile.row)


def test_the_nuclei_kept_are_the_ones_inside_with_their_outlines() -> None:
    square = np.array([[0, 0], [2, 0], [2, 2], [0, 2], [0, 0]], np.float64)
    rings = [square + offset for offset in ((10, 10), (50, 50), (12, 30))]
    nuclei = OwnedNuclei(
        centroids=np.array([[11, 11], [51, 51], [13, 31]], np.float64),
        points=np.concatenate(rings),
        starts=np.array([0, 5, 10, 15]),
        areas_px=np.array([4, 4, 4]),
        stains=np.array([0.1, 0.2, 0.3]),
    )
    keep = applied.inside(regions.parse("0,0,40,40").vertices, nuclei.centroids)
    assert keep.tolist() == [True, False, True]
    kept = nuclei.select(keep)
    assert len(kept) == 2 and kept.starts.tolist() == [0, 5, 10]
    assert np.array_equal(kept.points, np.concatenate([rings[0], rings[2]]))
    assert kept.stains.tolist() == [0.1, 0.3]
    assert len(nuclei.select(np.zeros(3, bool))) == 0


def test_the_area_on_the_slide_is_what_of_the_region_lies_on_it() -> None:
    region = Polygon(regions.parse("-0,0,200,100").vertices)
    assert applied.area_on_slide(region, 100, 100) == 100 * 100
    assert applied.area_on_slide(Polygon(regions.parse("500,500,600,600").vertices), 100, 100) == 0
