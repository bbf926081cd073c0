"""The learned backend's pure parts: training targets from instance labels,
instances from the model's maps, and the scores it is judged by."""

from __future__ import annotations

import numpy as np
import pytest

from worker_service.analysis.instances import (
    BOUNDARY,
    INTERIOR,
    InstanceParams,
    classes_from_labels,
    distance_from_labels,
    labels_from_maps,
)
from wsi_training.metrics import score


def two_touching_discs() -> np.ndarray:
    yy, xx = np.mgrid[0:40, 0:60]
    labels = np.zeros((40, 60), np.int32)
    labels[(yy - 20) ** 2 + (xx - 20) ** 2 <= 100] = 1
    labels[(yy - 20) ** 2 + (xx - 38) ** 2 <= 100] = 2  # overlaps disc 1: 2 wins there
    return labels


def test_targets_put_a_boundary_between_touching_nuclei() -> None:
    labels = two_touching_discs()
    classes = classes_from_labels(labels)
    assert classes[20, 20] == INTERIOR and classes[20, 38] == INTERIOR
    assert classes[0, 0] == 0
    # Where the discs meet, a boundary separates their interiors.
    row = classes[20, 25:35]
    assert BOUNDARY in row
    interior = classes == INTERIOR
    from scipy import ndimage

    assert ndimage.label(interior)[1] == 2


def perfect_maps(labels: np.ndarray) -> np.ndarray:
    classes = classes_from_labels(labels)
    planes = [(classes == k).astype(np.float32) for k in range(3)]
    return np.stack([*planes, distance_from_labels(labels)])


def test_the_distance_target_is_0_outside_1_at_each_centre_and_falls_to_the_edge() -> None:
    labels = two_touching_discs()
    distance = distance_from_labels(labels)
    assert distance[0, 0] == 0 and distance.max() == pytest.approx(1.0)
    for nucleus in (1, 2):
        assert distance[labels == nucleus].max() == pytest.approx(1.0)
    row = distance[20, 10:20]  # from disc 1's left edge to its deepest point
    assert np.all(np.diff(row) >= 0) and row[0] < 0.2 and row[-1] == pytest.approx(1.0)
    # Where the discs meet, the distance falls: two cores, not one.
    assert distance[20, 28:30].max() < 0.3


def test_instances_come_back_from_perfect_maps() -> None:
    labels = two_touching_discs()
    found = labels_from_maps(perfect_maps(labels), InstanceParams())
    result = score(labels, found)
    assert result.predicted == 2 and result.f1 == 1.0 and result.aji > 0.95


def test_touching_nuclei_separate_by_distance_even_without_a_boundary_between() -> None:
    """The cores keep them apart where the boundary class misses the contact."""
    labels = two_touching_discs()
    maps = perfect_maps(labels)
    maps[1] = np.maximum(maps[1], maps[2])  # no boundary predicted at all
    maps[2] = 0
    found = labels_from_maps(maps, InstanceParams())
    assert score(labels, found).predicted == 2


def test_specks_are_not_nuclei() -> None:
    maps = np.zeros((4, 20, 20), np.float32)
    maps[0] = 1
    maps[:, 5, 5] = (0, 1, 0, 1)  # one interior pixel
    assert labels_from_maps(maps, InstanceParams()).max() == 0


def test_scores_of_known_cases() -> None:
    truth = np.zeros((10, 10), np.int32)
    truth[0:4, 0:4] = 1  # 16 px
    truth[6:10, 6:10] = 2  # 16 px
    same = score(truth, truth)
    assert (same.f1, same.aji, same.matched) == (1.0, 1.0, 2)
    half = truth.copy()
    half[6:10, 6:10] = 0  # one nucleus missed
    missed = score(truth, half)
    assert missed.f1 == pytest.approx(2 / 3, abs=1e-4)
    assert missed.aji == pytest.approx(16 / 32, abs=1e-4)
    shifted = np.zeros_like(truth)
    shifted[0:4, 1:5] = 7  # IoU 12 / 20 with nucleus 1
    shifted[6:10, 6:10] = 9
    moved = score(truth, shifted)
    assert moved.matched == 2
    assert moved.aji == pytest.approx((12 + 16) / (20 + 16), abs=1e-4)
    assert score(truth, np.zeros_like(truth)).f1 == 0.0
