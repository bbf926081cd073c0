"""Pure image logic: the seam rule, tile tissue fractions, tissue and nucleus
detection on rendered arrays (no OpenSlide, no files)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker_service.analysis.merge import keep_owned
from worker_service.analysis.nuclei import (
    Nucleus,
    NucleusParams,
    haematoxylin,
    haematoxylin_at,
    nuclei_from_labels,
    segment_nuclei,
    stain_reference,
)
from worker_service.analysis.tiling import tile_grid
from worker_service.analysis.tissue import (
    TissueMask,
    detect_tissue,
    saturation8,
    tile_tissue_fractions,
    tissue_polygons,
)
from wsi_runtime.synthetic_slides import SyntheticNucleus, render_he


@settings(deadline=None, max_examples=60)
@given(
    cx=st.floats(0, 1999.99),
    cy=st.floats(0, 1499.99),
    overlap=st.sampled_from([0, 16, 64]),
)
def test_any_centroid_is_owned_by_exactly_one_tile(cx: float, cy: float, overlap: int) -> None:
    tiles = tile_grid(2000, 1500, 512, overlap)
    owners = 0
    for tile in tiles:
        local = Nucleus(
            (cx - tile.x, cy - tile.y), np.array([(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]), 10
        )
        if not (0 <= local.centroid[0] < tile.width and 0 <= local.centroid[1] < tile.height):
            continue
        owners += len(keep_owned(tile, [local], downsample=1.0))
    assert owners == 1


def test_keep_owned_moves_to_level_0() -> None:
    tile = tile_grid(1024, 1024, 512, 64)[1]  # x = 448
    in_the_overlap = Nucleus((5.0, 5.0), np.array([(5.0, 5.0), (6.0, 5.0), (5.0, 5.0)]), 1)
    ring = np.array([(100.0, 40.0), (110.0, 50.0), (100.0, 60.0), (100.0, 40.0)])
    kept = keep_owned(tile, [in_the_overlap, Nucleus((100.0, 50.0), ring, 7, 0.25)], 4.0)
    assert len(kept) == 1
    assert kept.centroids.tolist() == [[(448 + 100) * 4.0, 50 * 4.0]]
    assert kept.starts.tolist() == [0, len(ring)]
    assert kept.points.tolist() == [[(448 + x) * 4.0, y * 4.0] for x, y in ring.tolist()]
    assert kept.areas_px.tolist() == [7] and kept.stains.tolist() == [0.25]
    assert len(keep_owned(tile, [in_the_overlap], 1.0)) == 0


def test_tile_tissue_fractions_from_the_mask() -> None:
    mask = np.zeros((100, 100), bool)
    mask[:, :50] = True  # left half is tissue
    tissue = TissueMask(mask, downsample=10.0, threshold=0.1)  # the slide is 1000 x 1000
    tiles = tile_grid(1000, 1000, 250, 0)
    fractions = tile_tissue_fractions(tissue, tiles, level_downsample=1.0)
    assert [round(f, 2) for f in fractions[:4]] == [1.0, 1.0, 0.0, 0.0]
    # A lower level: 500 x 500 level pixels, same geometry in mask pixels.
    half = tile_tissue_fractions(tissue, tile_grid(500, 500, 125, 0), level_downsample=2.0)
    assert half == pytest.approx(fractions)


def test_tissue_found_on_a_rendered_slide_and_nothing_on_glass() -> None:
    box = (100, 80, 500, 320)
    image = render_he(600, 400, [], box, seed=1)
    tissue = detect_tissue(image, downsample=4.0)
    assert 0.3 < tissue.mask.mean() < 0.45  # the ellipse covers ~0.33 of the image
    (polygon,) = tissue_polygons(tissue)
    assert polygon.bounds == pytest.approx((400, 320, 2000, 1280), abs=30)
    glass = np.full((200, 300, 3), 243, np.uint8)
    assert not detect_tissue(glass, 1.0).mask.any()


@settings(deadline=None, max_examples=40)
@given(seed=st.integers(0, 2**32 - 1))
def test_8_bit_saturation_is_hsv_saturation_rounded(seed: int) -> None:
    from skimage.color import rgb2hsv

    rgb = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    expected = rgb2hsv(rgb)[..., 1]
    expected[rgb.max(axis=2) < 20] = 0  # nearly black: no data, never tissue
    assert np.abs(saturation8(rgb) / 255 - expected).max() <= 0.5 / 255 + 1e-12


def test_nuclei_segmented_one_to_one_on_a_rendered_tile() -> None:
    nuclei = [
        SyntheticNucleus(40.0 + 30 * i, 40.0 + 25 * (i % 3), 7.0, 5.5, 0.3 * i) for i in range(8)
    ]
    image = render_he(300, 150, nuclei, (0, 0, 300, 150), seed=2)
    reference = stain_reference([image])
    found = nuclei_from_labels(segment_nuclei(image, reference, NucleusParams(mpp=0.5)))
    assert len(found) == len(nuclei)
    for nucleus in nuclei:
        nearest = min(
            found, key=lambda f: np.hypot(f.centroid[0] - nucleus.x, f.centroid[1] - nucleus.y)
        )
        assert np.hypot(nearest.centroid[0] - nucleus.x, nearest.centroid[1] - nucleus.y) < 1.5
        assert nearest.area_px == pytest.approx(np.pi * 7.0 * 5.5, rel=0.3)


def test_an_empty_tile_yields_no_nuclei_against_the_slide_reference() -> None:
    reference = stain_reference(
        [render_he(200, 200, [SyntheticNucleus(100, 100, 7, 6, 0)], (0, 0, 200, 200))]
    )
    glass = np.full((200, 200, 3), 243, np.uint8)
    noise = np.clip(glass + np.random.default_rng(0).normal(0, 4, glass.shape), 0, 255).astype(
        np.uint8
    )
    assert segment_nuclei(noise, reference, NucleusParams()).max() == 0
    pink = render_he(200, 200, [], (0, 0, 200, 200), seed=3)
    assert segment_nuclei(pink, reference, NucleusParams()).max() == 0


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 2**32 - 1))
def test_haematoxylin_at_some_pixels_is_the_image_s_there(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    where = rng.choice(40 * 50, 300, replace=False)
    assert np.array_equal(haematoxylin_at(rgb, where), haematoxylin(rgb).ravel()[where])
