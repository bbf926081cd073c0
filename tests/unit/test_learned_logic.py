"""The learned backend's pure parts: training targets from instance labels,
instances from the model's maps, the model's input and output layouts, and
the scores it is judged by."""

from __future__ import annotations

import numpy as np
import pytest

from worker_service.analysis.instances import (
    BOUNDARY,
    INTERIOR,
    InstanceParams,
    classes_from_labels,
    distance_from_labels,
    labels_from_logits,
    nucleus_mask,
    offsets_from_labels,
    seeds_from_logits,
)
from worker_service.backends.learned import (
    LearnedSegmenter,
    pixel_blocks,
    pixels_from_blocks,
    quantised,
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


SURE = 12.0  # a logit whose probability is 1 - 6e-6


def perfect_logits(labels: np.ndarray) -> np.ndarray:
    """What a perfect model would answer: its classes sure, its distances exact."""
    classes = classes_from_labels(labels)
    planes = [np.where(classes == k, SURE, -SURE).astype(np.float32) for k in range(3)]
    distance = np.clip(distance_from_labels(labels), 1e-6, 1 - 1e-6)
    return np.stack([*planes, np.log(distance / (1 - distance))])


def test_the_mask_on_logits_is_the_mask_on_probabilities() -> None:
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 3, (4, 64, 64)).astype(np.float32)
    probabilities = np.exp(logits[:3]) / np.exp(logits[:3]).sum(axis=0)
    for threshold in (0.3, 0.5, 0.7):
        expected = probabilities[1] + probabilities[2] > threshold
        assert np.array_equal(nucleus_mask(logits, threshold).astype(bool), expected)


def domes(heights: list[float], centres: list[tuple[int, int]], shape=(48, 96)) -> np.ndarray:
    """Logits of all-nucleus maps whose distance is the highest of Gaussian
    domes (radius ~8 px) of the given heights."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    distance = np.zeros(shape)
    for height, (y, x) in zip(heights, centres, strict=True):
        distance = np.maximum(distance, height * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 72))
    distance = np.clip(distance, 1e-6, 1 - 1e-6)
    nucleus = distance > 0.05
    interior = np.where(nucleus, SURE, -SURE)
    planes = [-interior, interior, np.full(shape, -SURE), np.log(distance / (1 - distance))]
    return np.stack(planes).astype(np.float32)


@pytest.mark.parametrize(
    ("gap", "nuclei"),
    [(6, 1), (8, 1), (12, 2), (20, 2)],  # the dip between the domes: 0.11, 0.18, 0.35, 0.68
)
def test_two_peaks_are_two_nuclei_only_where_the_dip_between_them_is_deep(
    gap: int, nuclei: int
) -> None:
    logits = domes([0.9, 0.9], [(24, 30), (24, 30 + gap)])
    assert labels_from_logits(logits, InstanceParams(seed_height=0.2)).max() == nuclei


def test_a_faint_nucleus_beside_a_bright_one_is_its_own_nucleus() -> None:
    """Its peak is low (0.35), but it rises well above the pass to the other."""
    logits = domes([0.95, 0.35], [(24, 30), (24, 58)])
    found = labels_from_logits(logits, InstanceParams())
    assert found.max() == 2 and found[24, 30] != found[24, 58] != 0
    faint = domes([0.15], [(24, 48)])  # under seed_floor: no nucleus
    assert labels_from_logits(faint, InstanceParams()).max() == 0


def test_seeds_are_the_h_maxima_of_the_smoothed_distance() -> None:
    from scipy import ndimage
    from skimage.morphology import h_maxima

    rng = np.random.default_rng(3)
    count = 40
    logits = domes(
        list(rng.uniform(0.3, 1.0, count)),
        [(int(y), int(x)) for y, x in rng.integers(0, (128, 128), (count, 2))],
        shape=(128, 128),
    )
    params = InstanceParams()
    seeds = seeds_from_logits(logits, params)
    distance = ndimage.gaussian_filter(1 / (1 + np.exp(-logits[3])), params.seed_smoothing)
    expected = h_maxima(distance, params.seed_height).astype(bool) & (distance > params.seed_floor)
    found_groups, found = ndimage.label(seeds, np.ones((3, 3)))
    expected_groups, wanted = ndimage.label(expected, np.ones((3, 3)))
    assert found == wanted > 10
    # Each peak of the one holds one of the other.
    for group in range(1, wanted + 1):
        assert len(np.unique(found_groups[expected_groups == group])) == 1


class FixedMaps:
    """An engine that answers the same model maps whatever the input (the
    edge of these tests: no network)."""

    space_to_depth = 2

    def __init__(self, maps: np.ndarray) -> None:
        self.maps = maps

    def logits(self, batch: np.ndarray) -> np.ndarray:
        n, height, width, _ = batch.shape
        out = np.full((n, len(self.maps), height, width), -SURE, np.float32)
        h, w = min(height, self.maps.shape[1]), min(width, self.maps.shape[2])
        out[:, :, :h, :w] = self.maps[:, :h, :w]
        return out


def test_a_tile_of_another_pixel_size_gets_the_seeds_of_the_models_pixels() -> None:
    """A 0.25 um/px tile's maps are the model's enlarged 2x; found on those,
    the seeds would depend on the scan (smoothing and noise peaks in tile
    pixels: 1 to 6 nuclei apart per map below, 15 in all). Found on the
    model's maps, the same nuclei come back at either pixel size."""
    differences = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        count = 60
        maps = domes(
            list(rng.uniform(0.4, 1.0, count)),
            [(int(y), int(x)) for y, x in rng.integers(0, 128, (count, 2))],
            shape=(128, 128),
        )
        maps[3] += rng.normal(0, 0.6, maps[3].shape).astype(np.float32)  # a noisy distance
        engine = FixedMaps(maps)
        at_model = LearnedSegmenter(engine, tile_mpp=0.5)(np.zeros((128, 128, 3), np.uint8))
        at_40x = LearnedSegmenter(engine, tile_mpp=0.25)(np.zeros((256, 256, 3), np.uint8))
        assert at_model.max() > 20
        differences.append(abs(int(at_40x.max()) - int(at_model.max())))
    assert sum(differences) <= 2, differences


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
    found = labels_from_logits(perfect_logits(labels), InstanceParams())
    result = score(labels, found)
    assert result.predicted == 2 and result.f1 == 1.0 and result.aji > 0.95


def test_touching_nuclei_separate_by_distance_even_without_a_boundary_between() -> None:
    """The cores keep them apart where the boundary class misses the contact."""
    labels = two_touching_discs()
    logits = perfect_logits(labels)
    logits[1] = np.maximum(logits[1], logits[2])  # no boundary predicted at all
    logits[2] = -SURE
    found = labels_from_logits(logits, InstanceParams())
    assert score(labels, found).predicted == 2


def test_the_offsets_target_rises_across_each_nucleus_and_falls_where_two_meet() -> None:
    labels = two_touching_discs()
    horizontal, vertical = offsets_from_labels(labels)
    assert not horizontal[labels == 0].any() and not vertical[labels == 0].any()
    for nucleus in (1, 2):
        inside = labels == nucleus
        for offsets in (horizontal[inside], vertical[inside]):
            assert np.abs(offsets).max() == pytest.approx(1)
            assert offsets.min() < -0.8 and offsets.max() > 0.8
    row = horizontal[20]
    assert np.all(np.diff(row[10:28]) > 0)  # across disc 1 up to the contact
    assert row[27] > 0.5 and row[28] < -0.5  # disc 1's right side, disc 2's left


def test_offsets_separate_touching_nuclei_whose_distance_cores_merge() -> None:
    """A model whose distance does not dip between two nuclei still splits
    them where its offsets fall."""
    labels = two_touching_discs()
    logits = perfect_logits(labels)
    logits[3] = np.where(labels > 0, SURE, -SURE)  # one core over both discs
    offsets = np.clip(offsets_from_labels(labels), -0.999, 0.999)
    with_offsets = np.concatenate([logits, np.arctanh(offsets)])
    assert score(labels, labels_from_logits(logits, InstanceParams())).predicted == 1
    found = labels_from_logits(with_offsets, InstanceParams())
    assert score(labels, found).predicted == 2 and score(labels, found).f1 == 1.0


def test_specks_are_not_nuclei() -> None:
    logits = np.full((4, 20, 20), -SURE, np.float32)
    logits[0] = SURE
    logits[:, 5, 5] = (-SURE, SURE, -SURE, SURE)  # one interior pixel
    assert labels_from_logits(logits, InstanceParams()).max() == 0


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


@pytest.mark.parametrize("s", [1, 2, 4])
def test_pixel_blocks_put_each_pixel_where_the_network_expects_it(s: int) -> None:
    rng = np.random.default_rng(s)
    batch = rng.integers(0, 256, (2, 4 * s, 3 * s, 3), np.uint8)
    blocks = pixel_blocks(batch, s)
    assert blocks.shape == (2, 4, 3, 3 * s * s)
    for n, y, x, c in [(0, 0, 0, 0), (1, 4 * s - 1, 3 * s - 1, 2), (1, s, 2 * s - 1, 1)]:
        i, j = y % s, x % s
        assert blocks[n, y // s, x // s, 3 * (s * i + j) + c] == batch[n, y, x, c]


def test_block_logits_go_back_to_their_pixels() -> None:
    s, maps = 2, 4
    blocks = np.arange(1 * 3 * 5 * maps * s * s, dtype=np.float32).reshape(1, 3, 5, maps * s * s)
    pixels = pixels_from_blocks(blocks, s)
    assert pixels.shape == (1, maps, 3 * s, 5 * s)
    for k, y, x in [(0, 0, 0), (3, 5, 9), (2, 4, 1)]:
        i, j = y % s, x % s
        assert pixels[0, k, y, x] == blocks[0, y // s, x // s, k * s * s + i * s + j]


def test_quantised_input_rounds_half_to_even_and_clips() -> None:
    values = np.array([-1.0, -0.25, 0.0, 0.125, 0.375, 0.25, 99.0], np.float32)
    assert quantised(values, 0.25, 2).tolist() == [0, 1, 2, 2, 4, 3, 255]
