"""The learned backend's pure parts: training targets from instance labels,
instances from class probabilities, and the scores it is judged by."""

from __future__ import annotations

import numpy as np
import pytest

from worker_service.analysis.instances import (
    BOUNDARY,
    INTERIOR,
    InstanceParams,
    classes_from_labels,
    labels_from_classes,
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


def test_instances_come_back_from_perfect_class_probabilities() -> None:
    labels = two_touching_discs()
    classes = classes_from_labels(labels)
    probabilities = np.stack([(classes == k).astype(np.float32) for k in range(3)])
    found = labels_from_classes(probabilities, InstanceParams())
    result = score(labels, found)
    assert result.predicted == 2 and result.f1 == 1.0 and result.aji > 0.95


def test_specks_are_not_nuclei() -> None:
    probabilities = np.zeros((3, 20, 20), np.float32)
    probabilities[0] = 1
    probabilities[:, 5, 5] = (0, 1, 0)  # one interior pixel
    assert labels_from_classes(probabilities, InstanceParams()).max() == 0


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
