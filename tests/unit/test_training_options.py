"""The training options the model card's tried recipes use: the colour
jitter's strength and the Dice loss of nuclei."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

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
