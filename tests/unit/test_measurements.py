"""QuPath-style measurements of a nucleus outline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worker_service.analysis.measurements import nuclei_measurements
from worker_service.analysis.nuclei import haematoxylin, nuclei_from_labels


def nucleus_measurements(
    ring: np.ndarray,
    centroid: tuple[float, float],
    area_px: float,
    mpp: float | None,
    stain: float,
    pixel: float = 1.0,
) -> dict[str, float]:
    """One nucleus through the tile-at-once function."""
    (measured,) = nuclei_measurements(
        np.asarray(ring, np.float64),
        np.array([0, len(ring)]),
        np.array([centroid], np.float64),
        np.array([area_px], np.float64),
        mpp,
        np.array([stain], np.float64),
        pixel,
    ).rows()
    return measured


def _circle(radius: float, points: int = 360) -> np.ndarray:
    angle = np.linspace(0, 2 * math.pi, points, endpoint=False)
    ring = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return np.concatenate([ring, ring[:1]])


def test_a_disc_is_round_and_solid() -> None:
    m = nucleus_measurements(_circle(10.0), (0.0, 0.0), 314.0, 0.5, 0.3)
    # Within what simplifying by half a pixel takes off a 20 px disc.
    assert m["Circularity"] == pytest.approx(1.0, abs=0.02)
    assert m["Solidity"] == pytest.approx(1.0, abs=1e-3)
    assert m["Perimeter px"] == pytest.approx(2 * math.pi * 10, rel=0.02)
    assert m["Perimeter µm"] == pytest.approx(m["Perimeter px"] / 2, rel=1e-3)
    assert m["Area µm^2"] == pytest.approx(314.0 * 0.25)
    assert m["Hematoxylin OD mean"] == 0.3


def test_pixel_steps_do_not_count_as_perimeter() -> None:
    """A square outline with half-pixel zigzags along its sides measures as the square."""
    side = [(x, 0.25 * (k % 2)) for k, x in enumerate(np.arange(0, 20.5, 0.5))]
    ring = np.array([*side, (20, 20), (0, 20), (0, 0)], float)
    m = nucleus_measurements(ring, (10.0, 10.0), 400.0, None, 0.0)
    assert m["Perimeter px"] == pytest.approx(80.0, rel=0.01)


def test_a_square_and_an_l_shape() -> None:
    square = np.array([(0, 0), (10, 0), (10, 10), (0, 10), (0, 0)], float)
    m = nucleus_measurements(square, (5.0, 5.0), 100.0, None, 0.0)
    assert m["Perimeter px"] == 40.0
    assert m["Circularity"] == pytest.approx(4 * math.pi * 100 / 1600, abs=1e-4)
    assert m["Solidity"] == 1.0
    assert "Area µm^2" not in m and "Perimeter µm" not in m
    ell = np.array([(0, 0), (10, 0), (10, 5), (5, 5), (5, 10), (0, 10), (0, 0)], float)
    # Area 75; the hull cuts the missing corner diagonally: 100 - 12.5.
    assert nucleus_measurements(ell, (4.0, 4.0), 75.0, None, 0.0)["Solidity"] == pytest.approx(
        75 / 87.5, abs=1e-4
    )


def test_mean_haematoxylin_is_over_the_nucleus_pixels_only() -> None:
    rgb = np.full((40, 40, 3), 240, np.uint8)
    rgb[10:20, 10:20] = (60, 40, 140)  # a dark purple square: the nucleus
    rgb[25:35, 25:35] = (200, 60, 120)  # something else, unlabelled
    labels = np.zeros((40, 40), np.int32)
    labels[10:20, 10:20] = 1
    (nucleus,) = nuclei_from_labels(labels, rgb)
    assert nucleus.mean_haematoxylin == pytest.approx(
        float(haematoxylin(rgb)[10:20, 10:20].mean()), rel=1e-5
    )
    assert nucleus.mean_haematoxylin > float(haematoxylin(rgb)[0:5, 0:5].mean())


def test_a_tile_s_nuclei_measure_together_as_each_alone() -> None:
    rings = [_circle(6.0) + 20, np.array([(0, 0), (10, 0), (10, 10), (0, 10), (0, 0)], float)]
    rings.append(np.array([(0, 0), (10, 0), (10, 5), (5, 5), (5, 10), (0, 10), (0, 0)], float))
    centroids = np.array([(20.0, 20.0), (5.0, 5.0), (4.0, 4.0)])
    areas, stains = np.array([113.0, 100.0, 75.0]), np.array([0.2, 0.3, 0.4])
    together = nuclei_measurements(
        np.concatenate(rings),
        np.cumsum([0, *(len(r) for r in rings)]),
        centroids,
        areas,
        0.25,
        stains,
        pixel=2.0,
    ).rows()
    alone = [
        nucleus_measurements(r, (float(c[0]), float(c[1])), float(a), 0.25, float(s), pixel=2.0)
        for r, c, a, s in zip(rings, centroids, areas, stains, strict=True)
    ]
    assert together == alone
    assert len({m["Circularity"] for m in together}) == 3
