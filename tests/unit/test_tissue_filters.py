"""The tissue detector's OpenCV steps give the pixels of the scikit-image /
SciPy definitions they replaced (edges and tiny images included), so masks,
and the jobs that reuse them, do not change with the speed-up."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage import filters
from skimage.filters import rank

from worker_service.analysis import tissue
from worker_service.analysis.tissue import MEDIAN_WINDOW, detect_tissue, median5

shapes = st.tuples(st.integers(1, 90), st.integers(1, 90))


def reference_detect(rgb: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.bool_], float]:
    """The detector as written with scikit-image and SciPy."""
    high = rgb.max(axis=2).astype(np.uint16)
    saturation = ((high - rgb.min(axis=2)) * 255 + high // 2) // np.maximum(high, 1)
    saturation[high < tissue.DARK] = 0
    smooth = rank.median(saturation.astype(np.uint8), footprint=MEDIAN_WINDOW)
    if int(smooth.max()) == int(smooth.min()):
        threshold = 1.0
    else:
        threshold = max(float(filters.threshold_otsu(smooth)) / 255, tissue.MIN_SATURATION)
    mask = smooth > threshold * 255
    disk = tissue._disk(max(1, round(min(mask.shape) / 300)))
    mask = ndimage.binary_closing(mask, structure=disk, border_value=0)
    mask = ndimage.binary_opening(mask, structure=disk)
    min_size = max(16, int(tissue.MIN_OBJECT_FRACTION * mask.size))

    def drop(m: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        labels, count = ndimage.label(m)
        if count == 0:
            return m
        keep = np.bincount(labels.ravel()) >= min_size
        keep[0] = False
        kept: npt.NDArray[np.bool_] = keep[labels]
        return kept

    return ~drop(~drop(mask)), threshold


def stained_glass(seed: int, height: int, width: int) -> npt.NDArray[np.uint8]:
    """Pale glass with coloured blobs of many sizes and noise: thresholds,
    holes and specks all come into play."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 238, np.uint8)
    for _ in range(int(rng.integers(0, 12))):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(int(c) for c in rng.integers(40, 230, 3))
        cv2.circle(image, centre, int(rng.integers(1, max(2, width // 3))), colour, -1)
    noise = rng.integers(-12, 13, image.shape)
    noisy: npt.NDArray[np.uint8] = np.clip(image + noise, 0, 255).astype(np.uint8)
    return noisy


@settings(deadline=None, max_examples=150)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_the_median_is_scikit_image_s_edges_included(shape: tuple[int, int], seed: int) -> None:
    image = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(median5(image), rank.median(image, footprint=MEDIAN_WINDOW))


@settings(deadline=None, max_examples=120)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), noise_only=st.booleans())
def test_the_mask_is_the_scipy_detector_s(
    shape: tuple[int, int], seed: int, noise_only: bool
) -> None:
    rng = np.random.default_rng(seed)
    if noise_only:
        rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    else:
        rgb = stained_glass(seed, *shape)
    found = detect_tissue(rgb, 2.0)
    mask, threshold = reference_detect(rgb)
    assert found.threshold == threshold
    assert np.array_equal(found.mask, mask)


@pytest.mark.parametrize("seed", range(4))
def test_the_mask_of_an_overview_sized_image_is_the_scipy_detector_s(seed: int) -> None:
    """A 1024 px overview: the disk grows to radius 3, specks and holes to 400 px."""
    rgb = stained_glass(seed, 1024, 768)
    found = detect_tissue(rgb, 8.0)
    mask, threshold = reference_detect(rgb)
    assert found.threshold == threshold and np.array_equal(found.mask, mask)
    assert 0 < found.mask.mean() < 1
