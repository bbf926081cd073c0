"""The annotated nuclei (MoNuSeg 2018 training images, see
shared/nuclei-train/README.md) at the model's pixel size, the held-out
split, and the augmented crops the network learns from."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from worker_service.analysis.instances import classes_from_labels

SOURCE_MPP = 0.25  # the images' pixel size
MODEL_MPP = 0.5  # the model's: the pipeline's default working pixel size
# Held out for validation, one each of lung, kidney and breast; never trained on.
VALIDATION = ("TCGA-50-5931-01Z-00-DX1", "TCGA-B0-5710-01Z-00-DX1", "TCGA-E2-A1B5-01Z-00-DX1")


DATA_ENV = "WSI_TRAIN_DATA"


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """--data: the folder of NAME.jpg + NAME.png pairs. The data is not part of
    the project (its licence and size): name it, or set WSI_TRAIN_DATA."""
    default = os.environ.get(DATA_ENV)
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(default) if default else None,
        required=not default,
        help=f"annotated images, e.g. nuclei-train/monuseg-2018-train [env {DATA_ENV}]",
    )


@dataclass(frozen=True)
class Example:
    name: str
    rgb: npt.NDArray[np.uint8]  # (H, W, 3) at MODEL_MPP
    labels: npt.NDArray[np.int32]  # instance labels at MODEL_MPP
    classes: npt.NDArray[np.uint8]  # background / interior / boundary


def load(folder: Path) -> list[Example]:
    """Every NAME.jpg with its NAME.png labels in ``folder``, resampled to
    MODEL_MPP: the image by area averaging, the labels by nearest pixel."""
    images = sorted(folder.glob("*.jpg"))
    if not images:
        raise FileNotFoundError(
            f"no training images (NAME.jpg with NAME.png) in {folder}: point DATA at the"
            " nuclei-train/monuseg-2018-train folder"
        )
    scale = SOURCE_MPP / MODEL_MPP
    examples = []
    for image_path in images:
        bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        labels = cv2.imread(str(image_path.with_suffix(".png")), cv2.IMREAD_UNCHANGED)
        if bgr is None or labels is None or labels.shape[:2] != bgr.shape[:2]:
            raise ValueError(f"{image_path.stem}: image or labels missing or of different size")
        size = (round(bgr.shape[1] * scale), round(bgr.shape[0] * scale))
        rgb = cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        small = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST).astype(np.int32)
        examples.append(Example(image_path.stem, rgb, small, classes_from_labels(small)))
    return examples


def split(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    """(training, validation)."""
    validation = [e for e in examples if e.name in VALIDATION]
    training = [e for e in examples if e.name not in VALIDATION]
    if len(validation) != len(VALIDATION):
        raise ValueError(f"validation images missing: expected {', '.join(VALIDATION)}")
    return training, validation


def augmented_crop(
    example: Example, size: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """A random square crop, flipped and turned by a multiple of 90 degrees,
    its colours jittered as a different stain or scanner would: (3, size,
    size) float RGB in [0, 1] and (size, size) classes."""
    height, width = example.classes.shape
    y = int(rng.integers(0, height - size + 1))
    x = int(rng.integers(0, width - size + 1))
    rgb: npt.NDArray[np.float32] = example.rgb[y : y + size, x : x + size].astype(np.float32)
    rgb /= 255
    classes = example.classes[y : y + size, x : x + size]
    turns = int(rng.integers(0, 4))
    rgb, classes = np.rot90(rgb, turns), np.rot90(classes, turns)
    if rng.random() < 0.5:
        rgb, classes = rgb[:, ::-1], classes[:, ::-1]
    rgb = _stain_jitter(rgb, rng)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)), np.ascontiguousarray(classes, np.int64)


def _stain_jitter(
    rgb: npt.NDArray[np.float32], rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """Optical density scaled and shifted per channel (stain amount and hue),
    then brightness and contrast."""
    density = -np.log(np.clip(rgb, 1 / 255, 1))
    density = density * rng.uniform(0.8, 1.2, 3) + rng.uniform(-0.05, 0.05, 3)
    out = np.exp(-np.clip(density, 0, None))
    out = (out - 0.5) * rng.uniform(0.85, 1.15) + 0.5 + rng.uniform(-0.06, 0.06)
    result: npt.NDArray[np.float32] = np.clip(out, 0, 1).astype(np.float32)
    return result
