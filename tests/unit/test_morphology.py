"""The segmenter's OpenCV kernels against the scipy / scikit-image functions
they stand in for, on random blob images: same pixels, same labels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.morphology as skmorphology
from scipy import ndimage
from skimage import draw, measure, segmentation

from worker_service.analysis import morphology, shapes


def blobs(seed: int, size: int = 160, count: int = 40) -> np.ndarray:
    """Overlapping ellipses of nucleus size: touching, holed, at the border."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    mask = np.zeros((size, size), bool)
    for _ in range(count):
        cy, cx = rng.uniform(-5, size + 5, 2)
        ry, rx = rng.uniform(3, 14, 2)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        mask |= (u / rx) ** 2 + (v / ry) ** 2 <= 1
    mask &= rng.random((size, size)) > 0.02  # pinholes and ragged edges
    return mask


SEEDS = range(8)


@pytest.mark.parametrize("seed", SEEDS)
def test_opening_and_hole_filling_match_scipy(seed: int) -> None:
    mask = blobs(seed)
    opened = ndimage.binary_opening(mask, structure=skmorphology.disk(1))
    assert np.array_equal(morphology.open_cross(mask.astype(np.uint8)).view(bool), opened)
    filled = ndimage.binary_fill_holes(opened)
    assert np.array_equal(morphology.fill_holes(opened.astype(np.uint8)).view(bool), filled)


@pytest.mark.parametrize("seed", SEEDS)
def test_distance_and_smoothing_match_scipy(seed: int) -> None:
    mask = blobs(seed).astype(np.uint8)
    distance = morphology.distance_to_background(mask)
    # Exactly scipy's, in float32, on every run (OpenCV's alone is not: one
    # thread, as in the worker's pool, and a pixel is sometimes an ulp off).
    exact = ndimage.distance_transform_edt(mask).astype(np.float32)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for _ in range(10):
            assert np.array_equal(morphology.distance_to_background(mask), exact)
    finally:
        cv2.setNumThreads(threads)
    smoothed = morphology.gaussian(distance, 1.0)
    np.testing.assert_allclose(smoothed, ndimage.gaussian_filter(distance, 1.0), atol=1e-3)


@pytest.mark.parametrize("seed", SEEDS)
def test_h_maxima_match_scikit_image_up_to_quantisation(seed: int) -> None:
    """The same number of maxima, each found where scikit-image finds one."""
    mask = ndimage.binary_fill_holes(blobs(seed)).astype(np.uint8)
    distance = morphology.gaussian(morphology.distance_to_background(mask), 1.0)
    ours = morphology.h_maxima(distance, 1.4)
    theirs = skmorphology.h_maxima(distance, 1.4)
    _, our_count = ndimage.label(ours, structure=np.ones((3, 3)))
    _, their_count = ndimage.label(theirs, structure=np.ones((3, 3)))
    assert our_count == their_count
    # Quantised, a top may take in pixels a hair lower than it: never others.
    assert np.all(ours[theirs > 0])
    assert np.all(distance[ours > 0] >= 0)


@pytest.mark.parametrize("seed", SEEDS)
def test_flood_matches_the_watershed(seed: int) -> None:
    mask = ndimage.binary_fill_holes(blobs(seed)).astype(np.uint8)
    distance = morphology.gaussian(morphology.distance_to_background(mask), 1.0)
    markers, _ = ndimage.label(skmorphology.h_maxima(distance, 1.4), structure=np.ones((3, 3)))
    markers = markers.astype(np.int32)
    expected = segmentation.watershed(-distance, markers, mask=mask.view(bool))
    assert np.array_equal(morphology.flood(-distance, markers, mask), expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_traced_shapes_match_regionprops(seed: int) -> None:
    mask = ndimage.binary_fill_holes(blobs(seed)).astype(np.uint8)
    distance = morphology.gaussian(morphology.distance_to_background(mask), 1.0)
    markers, _ = ndimage.label(skmorphology.h_maxima(distance, 1.4), structure=np.ones((3, 3)))
    labels = morphology.flood(-distance, markers.astype(np.int32), mask)
    traced = shapes.trace(labels)
    regions = {r.label: r for r in measure.regionprops(labels)}
    assert sorted(traced.labels.tolist()) == sorted(regions)
    bounds = shapes.convex_area_bounds(traced)
    for index, label in enumerate(traced.labels.tolist()):
        region = regions[label]
        assert traced.areas[index] == region.area
        np.testing.assert_allclose(traced.centroids[index], region.centroid[::-1])
        if (
            region.num_pixels == region.image_filled.sum()
            and measure.label(region.image).max() == 1
        ):
            assert shapes.convex_area_px(traced.boundaries[index]) == region.area_convex
            assert bounds[index] <= region.area_convex
    for ring, area in zip(shapes.outlines(traced), traced.areas.tolist(), strict=True):
        assert np.array_equal(ring[0], ring[-1])
        assert _ring_area(ring) == pytest.approx(area, rel=0.2, abs=2.5)


def test_outlines_of_a_square_lie_just_inside_its_pixel_edges() -> None:
    labels = np.zeros((12, 12), np.int32)
    labels[2:8, 3:9] = 1
    (ring,) = shapes.outlines(shapes.trace(labels))
    assert ring[:, 0].min() == pytest.approx(2.6) and ring[:, 0].max() == pytest.approx(8.4)
    assert ring[:, 1].min() == pytest.approx(1.6) and ring[:, 1].max() == pytest.approx(7.4)
    # A 5.8 px square, each corner cut as marching squares cuts it (legs of 0.4).
    assert _ring_area(ring) == pytest.approx(5.8 * 5.8 - 4 * 0.08)


def test_tiny_objects_get_a_box() -> None:
    labels = np.zeros((6, 6), np.int32)
    labels[1, 1] = 1
    labels[4, 3:5] = 2
    rings = shapes.outlines(shapes.trace(labels))
    assert [_ring_area(r) for r in rings] == [pytest.approx(0.8 * 0.8), pytest.approx(1.8 * 0.8)]
    for label, ring in enumerate(rings, 1):
        for filled in _filled(ring, labels.shape):
            assert np.array_equal(filled, labels == label)


@pytest.mark.parametrize("seed", SEEDS)
def test_outlines_fill_back_into_exactly_their_pixels(seed: int) -> None:
    """Whether a rasteriser fills the pixels whose centres are inside
    (scikit-image's draw.polygon) or also every pixel its edges touch
    (OpenCV's fillPoly), the outlines give back the objects' pixels: a
    scorer that rasterises the GeoJSON scores the nuclei that were found,
    not a ring around them."""
    mask = ndimage.binary_fill_holes(blobs(seed)).astype(np.uint8)
    distance = morphology.gaussian(morphology.distance_to_background(mask), 1.0)
    markers, _ = ndimage.label(skmorphology.h_maxima(distance, 1.4), structure=np.ones((3, 3)))
    labels = morphology.flood(-distance, markers.astype(np.int32), mask)
    traced = shapes.trace(labels)
    checked = 0
    for label, ring in zip(traced.labels.tolist(), shapes.outlines(traced), strict=True):
        pixels = labels == label
        if measure.label(pixels).max() > 1:
            continue  # a watershed region in two pieces: its largest piece is outlined
        for filled in _filled(ring, labels.shape):
            assert np.array_equal(filled, pixels), label
        checked += 1
    assert checked >= 5


def _filled(ring: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """``ring`` rasterised by OpenCV (1/256 px precision) and by scikit-image."""
    by_opencv = np.zeros(shape, np.uint8)
    cv2.fillPoly(by_opencv, [np.rint(ring * 256).astype(np.int32)], 1, shift=8)
    by_skimage = np.zeros(shape, bool)
    rows, cols = draw.polygon(ring[:, 1], ring[:, 0], shape)
    by_skimage[rows, cols] = True
    return [by_opencv.view(bool), by_skimage]


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:-1, 0], ring[:-1, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) / 2)
