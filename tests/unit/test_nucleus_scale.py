"""How much closer the learned model looks at a slide whose nuclei are small:
pure rules, checked at their edges and over many samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker_service.analysis.nucleus_scale import (
    LEAST,
    MIN_NUCLEI,
    MOST,
    REFERENCE_AREA_UM2,
    finer_scan,
    inner_areas,
    magnification,
)
from worker_service.backends.learned import LEARNED_MPP, looking_mpp


def test_nuclei_cut_by_the_edge_are_not_measured() -> None:
    labels = np.zeros((10, 12), np.int32)
    labels[0:2, 3:5] = 1  # touches the top
    labels[4:6, 4:7] = 2  # inside: 6 px
    labels[7:10, 0:2] = 3  # touches the left and the bottom
    labels[3:5, 9:12] = 4  # touches the right
    labels[6, 8] = 7  # inside, a label with gaps below it: 1 px
    assert sorted(inner_areas(labels).tolist()) == [1, 6]
    assert inner_areas(np.zeros((5, 5), np.int32)).size == 0


def test_a_slide_whose_nuclei_are_the_models_size_is_looked_at_as_trained() -> None:
    assert magnification(np.full(500, REFERENCE_AREA_UM2)) == 1.0
    assert magnification(np.full(500, 4 * REFERENCE_AREA_UM2)) == 1.0  # never farther


def test_small_nuclei_are_magnified_to_the_reference_at_most_twice() -> None:
    quarter = np.full(500, REFERENCE_AREA_UM2 / 2.25)
    assert magnification(quarter) == pytest.approx(1.5)
    assert magnification(np.full(500, REFERENCE_AREA_UM2 / 100)) == MOST


def test_a_small_change_is_none() -> None:
    just_inside = REFERENCE_AREA_UM2 / LEAST**2 * 1.01
    just_beyond = REFERENCE_AREA_UM2 / LEAST**2 * 0.99
    assert magnification(np.full(500, just_inside)) == 1.0
    assert magnification(np.full(500, just_beyond)) > LEAST


def test_too_few_nuclei_say_nothing() -> None:
    assert magnification(np.full(MIN_NUCLEI - 1, 1.0)) == 1.0
    assert magnification(np.full(MIN_NUCLEI, 1.0)) == MOST
    assert magnification(np.zeros(0)) == 1.0


def test_the_same_tissue_gets_the_same_look_whatever_the_scan() -> None:
    """Pixel areas at 0.25 um/px are four times those at 0.5: the same um^2,
    so the same pixel size for the model."""
    areas_20x = np.random.default_rng(0).integers(10, 60, 400)
    at_20x = looking_mpp(areas_20x, 0.5, LEARNED_MPP)
    at_40x = looking_mpp(areas_20x * 4, 0.25, LEARNED_MPP)
    assert at_20x == at_40x < LEARNED_MPP


@given(st.lists(st.floats(0.01, 1000), min_size=MIN_NUCLEI, max_size=200))
def test_the_look_is_never_farther_nor_beyond_twice(areas: list[float]) -> None:
    factor = magnification(np.array(areas))
    assert factor == 1.0 or LEAST < factor <= MOST
    median = float(np.median(areas))
    if factor > 1:
        assert median < REFERENCE_AREA_UM2
        # The median comes to the reference, or as close as twice allows.
        assert math.isclose(median * factor**2, REFERENCE_AREA_UM2) or factor == MOST


def _areas(median: float, count: int = MIN_NUCLEI) -> np.ndarray:
    return np.full(count, median)


@pytest.mark.parametrize(
    ("at_default", "at_half", "finer"),
    [
        # First-look medians (um^2) measured on whole images taken as 0.5 and
        # as 0.25 um/px (the model card's "Seventh round").
        (74.2, 30.4, True),  # CPM-15 image 15, 40x
        (47.0, 44.8, True),  # TCGA-50-5931, 40x: large nuclei, split at 0.5
        (63.6, 21.3, True),  # TCGA-B0-5710, 40x
        (28.8, 47.4, True),  # TCGA-G9-6363, 40x, split at 0.5 into pieces under 36
        (56.2, 36.6, True),  # CPM-15 image 11, 40x
        (50.0, 22.7, False),  # CPM-15 image 2, 20x, large nuclei
        (25.5, 11.6, False),  # CMU-1, 20x
        (13.0, 14.1, False),  # TCGA-HE-7129 shrunk to 20x: both small
    ],
)
def test_a_scan_is_taken_finer_where_its_nuclei_say_so(
    at_default: float, at_half: float, finer: bool
) -> None:
    assert finer_scan(_areas(at_default), _areas(at_half)) is finer


def test_too_few_nuclei_under_either_look_keep_the_default() -> None:
    assert finer_scan(_areas(80.0), _areas(36.0))
    assert not finer_scan(_areas(80.0, MIN_NUCLEI - 1), _areas(36.0))
    assert not finer_scan(_areas(80.0), _areas(36.0, MIN_NUCLEI - 1))
    assert not finer_scan(_areas(80.0), _areas(0.0))


@given(st.floats(1.0, 400.0, allow_nan=False), st.floats(1.0, 400.0, allow_nan=False))
def test_finer_only_where_it_brings_the_nuclei_nearer_the_size_learned(
    at_default: float, at_half: float
) -> None:
    """A scan whose nuclei are small under both looks stays as assumed; one
    whose half look still finds nuclei of the size learned, or brings larger
    ones nearer to it, is taken finer."""
    finer = finer_scan(_areas(at_default), _areas(at_half))
    if at_half >= REFERENCE_AREA_UM2:
        assert finer
    elif at_default <= REFERENCE_AREA_UM2:
        assert not finer
    else:
        # under the reference at half, over it as assumed: nearer by ratio
        # where the reference is below their geometric mean
        assert finer is (at_half * at_default > REFERENCE_AREA_UM2**2)
