"""The training options the model card's tried recipes use: the colour
jitter's strength, softening, fading, the Dice loss of nuclei and the
offsets' slope loss."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from worker_service.analysis.instances import (
    classes_from_labels,
    distance_from_labels,
    offsets_from_labels,
)
from wsi_training import data
from wsi_training.data import _stain_jitter

HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_no_colour_jitter_leaves_the_colours_and_a_wider_one_spreads_them() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0.05, 1.0, (32, 32, 3)).astype(np.float32)
    same = _stain_jitter(rgb, np.random.default_rng(1), strength=0.0)
    assert np.abs(same - rgb).max() < 1e-5

    def spread(strength: float) -> float:
        draws = np.random.default_rng(2)
        means = [_stain_jitter(rgb, draws, strength).mean(axis=(0, 1)) for _ in range(200)]
        return float(np.std(means, axis=0).mean())

    assert spread(1.6) > 1.3 * spread(1.0) > 0


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is an optional extra (pip install '.[gpu]')")
def test_the_dice_loss_is_low_for_the_right_nuclei_and_high_for_none() -> None:
    import torch

    from wsi_training.train import nucleus_dice_loss

    classes = torch.zeros(1, 16, 16, dtype=torch.int64)
    classes[0, 4:10, 4:10] = 1
    classes[0, 4, 4:10] = 2
    right = torch.full((1, 4, 16, 16), -20.0)
    right[:, 0] = 20.0  # background everywhere...
    right[0, 0, classes[0] > 0] = -20.0  # ...but where the nuclei are
    right[0, 1, classes[0] > 0] = 20.0
    none = torch.full((1, 4, 16, 16), -20.0)
    none[:, 0] = 20.0
    assert float(nucleus_dice_loss(right, classes)) < 0.01
    assert float(nucleus_dice_loss(none, classes)) > 0.95


def _example_of(rgb: np.ndarray, labels: np.ndarray) -> data.Example:
    targets = classes_from_labels(labels), distance_from_labels(labels)
    return data.Example("synthetic", "folder", rgb, labels, *targets, rgb, labels, data.MODEL_MPP)


def _example(size: int = 96) -> data.Example:
    """Sharp-edged texture with one square nucleus: what softening blurs."""
    rng = np.random.default_rng(3)
    labels = np.zeros((size, size), np.int32)
    labels[30:60, 30:60] = 1
    return _example_of(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), labels)


def test_options_off_draw_the_random_numbers_the_shipped_weights_were_trained_with() -> None:
    """The default recipe reproduces the shipped weights only if an option
    that is off (softening, fading) draws nothing: the generator's next
    number after three default crops, as before the options existed."""
    rng = np.random.default_rng(5)
    for _ in range(3):
        data.augmented_crop(_example(), 64, rng)
    assert int(rng.integers(1 << 62)) == 1498533450780142916


def test_softened_crops_lose_fine_detail_but_keep_their_labels() -> None:
    example = _example()

    def detail(soften: float) -> tuple[float, np.ndarray]:
        rgb, classes, _, _ = data.augmented_crop(
            example, 64, np.random.default_rng(7), scale_jitter=1.0, stain_jitter=0.0, soften=soften
        )
        grey = rgb.mean(axis=0)
        return float(np.abs(np.diff(grey, axis=1)).mean()), classes

    sharp, sharp_classes = detail(0.0)
    soft, soft_classes = detail(1.0)
    assert soft < 0.8 * sharp
    # The same window (turned otherwise: softening draws random numbers first).
    assert np.array_equal(np.bincount(sharp_classes.ravel()), np.bincount(soft_classes.ravel()))


def test_faded_crops_lose_haematoxylin_keep_eosin_and_their_labels() -> None:
    from skimage.color import hed2rgb, rgb2hed

    size = 64
    labels = np.zeros((size, size), np.int32)
    labels[20:44, 20:44] = 1
    stains = np.zeros((size, size, 3))
    stains[..., 1] = 0.03  # eosin everywhere
    stains[labels > 0, 0] = 0.08  # haematoxylin in the nucleus
    example = _example_of(np.round(np.clip(hed2rgb(stains), 0, 1) * 255).astype(np.uint8), labels)

    def stains_in_nucleus(fade: float) -> tuple[np.ndarray, np.ndarray]:
        crop, classes, _, _ = data.augmented_crop(
            example, size, np.random.default_rng(11), scale_jitter=1.0, stain_jitter=0.0, fade=fade
        )
        return rgb2hed(crop.transpose(1, 2, 0))[classes > 0].mean(axis=0), classes

    (kept, kept_classes), (faded, faded_classes) = stains_in_nucleus(0.0), stains_in_nucleus(1.0)
    assert faded[0] < 0.95 * kept[0]  # rng 11 draws a factor well under 1
    assert abs(faded[1] - kept[1]) < 0.1 * kept[1]
    assert np.array_equal(np.bincount(kept_classes.ravel()), np.bincount(faded_classes.ravel()))


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is an optional extra (pip install '.[gpu]')")
def test_the_offsets_slope_loss_is_0_for_the_truth_and_high_for_maps_that_do_not_fall() -> None:
    import torch

    from wsi_training.train import offset_gradient_loss

    labels = np.zeros((24, 40), np.int32)
    labels[6:18, 4:20] = 1
    labels[6:18, 20:36] = 2  # touching nucleus 1 along x
    truth = torch.from_numpy(offsets_from_labels(labels))[None]
    classes = torch.from_numpy(classes_from_labels(labels).astype(np.int64))[None]
    assert float(offset_gradient_loss(truth, truth, classes)) < 1e-9
    # Rising across both nuclei as if they were one: no fall where they meet.
    xs = torch.linspace(-1, 1, 40).expand(24, 40)
    merged = torch.stack([xs * (truth[0, 0] != 0), truth[0, 1]])[None]
    assert float(offset_gradient_loss(merged, truth, classes)) > 0.05
    # Slopes as steep as the truth's but the wrong way: the sign counts.
    assert float(offset_gradient_loss(-truth, truth, classes)) > 0.05


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is an optional extra (pip install '.[gpu]')")
def test_the_distance_weight_scales_the_distance_error_and_nothing_else() -> None:
    import torch
    from torch import nn

    from wsi_training.train import DISTANCE_WEIGHT, batch_loss

    generator = torch.Generator().manual_seed(0)
    outputs = torch.randn(2, 4, 8, 8, generator=generator)
    classes = torch.randint(0, 3, (2, 8, 8), generator=generator)
    distances = torch.rand(2, 8, 8, generator=generator)
    loss_fn = nn.CrossEntropyLoss()

    def loss(**weight: float) -> float:
        return float(batch_loss(outputs, classes, distances, loss_fn, 0.0, **weight))

    none, default, double = loss(distance_weight=0.0), loss(), loss(distance_weight=8.0)
    assert DISTANCE_WEIGHT == 4.0  # the shipped recipe's
    assert double - default == pytest.approx(default - none, rel=1e-5) and default > none
