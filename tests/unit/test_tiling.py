from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker_service.analysis.tiling import choose_level, finer_level, tile_grid
from wsi_runtime.pixel_size import usable_mpp
from wsi_runtime.synthetic_slides import seam_positions


def test_grid_covers_image_with_overlap() -> None:
    tiles = tile_grid(1000, 600, tile_size=512, overlap=64)
    assert [(t.x, t.y) for t in tiles] == [
        (0, 0),
        (448, 0),
        (488, 0),
        (0, 88),
        (448, 88),
        (488, 88),
    ]
    assert all(t.width == 512 and t.height == 512 for t in tiles)


def test_image_smaller_than_a_tile_is_one_tile() -> None:
    (tile,) = tile_grid(16, 16, 512, 64)
    assert (tile.x, tile.y, tile.width, tile.height) == (0, 0, 16, 16)
    assert (tile.core_x0, tile.core_y0, tile.core_x1, tile.core_y1) == (0, 0, 16, 16)


@settings(deadline=None)
@given(
    width=st.integers(1, 3000),
    height=st.integers(1, 3000),
    tile=st.integers(8, 700),
    overlap_fraction=st.floats(0, 0.49),
)
def test_cores_partition_the_image_and_lie_inside_their_tiles(
    width: int, height: int, tile: int, overlap_fraction: float
) -> None:
    overlap = int(tile * overlap_fraction)
    tiles = tile_grid(width, height, tile, overlap)
    # Columns: x, y, width, height, core x0, y0, x1, y1 (one row per tile,
    # checked at once: a 3000 px image in 8 px tiles has 10^5 of them).
    box = np.array(
        [(t.x, t.y, t.width, t.height, t.core_x0, t.core_y0, t.core_x1, t.core_y1) for t in tiles]
    )
    x, y, w, h, cx0, cy0, cx1, cy1 = box.T
    assert (x >= 0).all() and (x + w <= width).all() and (y >= 0).all() and (y + h <= height).all()
    assert ((x <= cx0) & (cx0 < cx1) & (cx1 <= x + w)).all()
    assert ((y <= cy0) & (cy0 < cy1) & (cy1 <= y + h)).all()
    assert int(((cx1 - cx0) * (cy1 - cy0)).sum()) == width * height
    # Any pixel is in exactly one core (asked of the tiles around it: a core
    # lies inside its tile, as checked above).
    for px, py in itertools.product({0, width // 2, width - 1}, {0, height // 3, height - 1}):
        point = np.array([[px + 0.5, py + 0.5]])
        around = np.flatnonzero((x <= px) & (px < x + w) & (y <= py) & (py < y + h))
        assert sum(bool(tiles[i].core_holds(point)[0]) for i in around) == 1


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(ValueError):
        tile_grid(0, 10)
    with pytest.raises(ValueError):
        tile_grid(10, 10, tile_size=64, overlap=64)


def test_choose_level_closest_on_log_scale() -> None:
    downsamples = [1.0, 4.0, 16.0]
    assert choose_level(downsamples, 0.25, 0.5) == 0  # 0.25 vs 1.0: 2x off either way -> lowest
    assert choose_level(downsamples, 0.25, 1.0) == 1
    assert choose_level(downsamples, 0.25, 8.0) == 2
    assert choose_level(downsamples, None, 0.5) == 0  # no pixel size: level 0
    assert choose_level(downsamples, 0.5, 0.5) == 0


def test_implausible_pixel_sizes_are_ignored() -> None:
    assert usable_mpp(0.25) == 0.25
    assert usable_mpp(352.78) is None  # a 72 dpi screen resolution, not a microscope
    assert usable_mpp(None) is None


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5000), st.integers(64, 1024), st.integers(0, 200))
def test_the_synthetic_slides_seams_are_the_grids(length: int, tile: int, overlap: int) -> None:
    """The synthetic slides put nuclei on the grid's seams with a restated
    formula (the runtime imports no service): it must stay the grid's."""
    overlap = min(overlap, tile // 2 - 1)
    cores = [t.core_x1 for t in tile_grid(length, 1, tile, overlap)[:-1]]
    assert seam_positions(length, tile, overlap) == cores


def test_a_closer_look_reads_the_coarsest_level_fine_enough_for_it() -> None:
    halves, quarters = [1.0, 2.0, 4.0, 8.0], [1.0, 4.0, 16.0]
    # A 40x slide with 2x levels, read at 0.5 um/px: a look at 0.384 reads 0.25.
    assert finer_level(halves, 0.25, 1, 0.384) == 0
    assert finer_level(halves, 0.25, 1, 0.44) == 1  # within 15 %: the level read is fine
    assert finer_level(halves, 0.25, 1, None) == 1  # no closer look: as chosen
    assert finer_level(halves, None, 1, 0.3) == 1  # no pixel size: nothing to compare
    assert finer_level(halves, 0.125, 3, 0.4) == 1  # 0.25 is the coarsest fine enough
    # Already at level 0 (an Aperio 40x read at 0.25 um/px): nothing finer to read.
    assert finer_level(quarters, 0.25, 0, 0.3) == 0
    # No level fine enough: the finest there is, enlarged less than the one chosen.
    assert finer_level(quarters, 0.4, 1, 0.25) == 0
    assert finer_level([1.0], 0.5, 0, 0.3) == 0
