"""The annotated nuclei (the MoNuSeg 2018 training images of
shared/nuclei-train/README.md, in one or more folders) at their own and at
the model's pixel size, the held-out split, and the augmented crops the
network learns from."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from skimage import color

from worker_service.analysis.instances import classes_from_labels, distance_from_labels

SOURCE_MPP = 0.25  # the images' pixel size
MODEL_MPP = 0.5  # the model's: the pipeline's default working pixel size
# Held out for validation, never trained on: from monuseg-2018-train one each
# of lung, kidney and breast (the held-out images of the first model, so the
# two compare); from monuseg-2018-train-extra one each of kidney, prostate and
# stomach. Organs with a single image (bladder, colon) stay in training.
VALIDATION = (
    "TCGA-50-5931-01Z-00-DX1",
    "TCGA-B0-5710-01Z-00-DX1",
    "TCGA-E2-A1B5-01Z-00-DX1",
    "TCGA-HE-7130-01Z-00-DX1",
    "TCGA-G9-6363-01Z-00-DX1",
    "TCGA-RD-A8N9-01A-01-TS1",
)


DATA_ENV = "WSI_TRAIN_DATA"
SCALE_JITTER = 1.15  # crops are scaled by 1/1.15 to 1.15


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """--data: the folders of NAME.jpg + NAME.png pairs. The data is not part
    of the project (its licence and size): name them, or set WSI_TRAIN_DATA
    (folders separated by the OS path separator, ':')."""
    default = os.environ.get(DATA_ENV)
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=[Path(p) for p in default.split(os.pathsep)] if default else None,
        required=not default,
        help="annotated images, e.g. nuclei-train/monuseg-2018-train"
        f" nuclei-train/monuseg-2018-train-extra [env {DATA_ENV}]",
    )


@dataclass(frozen=True)
class Example:
    name: str
    folder: str  # the name of the folder it came from
    rgb: npt.NDArray[np.uint8]  # (H, W, 3) at the model's pixel size
    labels: npt.NDArray[np.int32]  # instance labels at the model's pixel size
    classes: npt.NDArray[np.uint8]  # background / interior / boundary
    distance: npt.NDArray[np.float32]  # to the nucleus edge, 0 to 1 (instances.py)
    source_rgb: npt.NDArray[np.uint8]  # as annotated, at source_mpp
    source_labels: npt.NDArray[np.int32]
    source_mpp: float


def read_pair(image_path: Path) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int32]]:
    """NAME.jpg as RGB and its NAME.png instance labels."""
    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    labels = cv2.imread(str(image_path.with_suffix(".png")), cv2.IMREAD_UNCHANGED)
    if bgr is None or labels is None or labels.shape[:2] != bgr.shape[:2]:
        raise ValueError(f"{image_path.stem}: image or labels missing or of different size")
    rgb: npt.NDArray[np.uint8] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return rgb, labels.astype(np.int32)


def example(
    image_path: Path, source_mpp: float = SOURCE_MPP, model_mpp: float = MODEL_MPP
) -> Example:
    """One annotated image, also resampled to ``model_mpp``: the image by area
    averaging, the labels by nearest pixel."""
    rgb, labels = read_pair(image_path)
    scale = source_mpp / model_mpp
    size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small_rgb = cv2.resize(rgb, size, interpolation=method)
    small = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
    return Example(
        image_path.stem,
        image_path.parent.name,
        small_rgb,
        small,
        classes_from_labels(small),
        distance_from_labels(small),
        rgb,
        labels,
        source_mpp,
    )


def load(folders: list[Path], model_mpp: float = MODEL_MPP) -> list[Example]:
    """Every NAME.jpg with its NAME.png labels in ``folders`` (0.25 um/px)."""
    images = sorted(path for folder in folders for path in folder.glob("*.jpg"))
    if not images:
        raise FileNotFoundError(
            f"no training images (NAME.jpg with NAME.png) in {', '.join(map(str, folders))}:"
            " point DATA at the nuclei-train/monuseg-2018-train(-extra) folders"
        )
    return [example(path, model_mpp=model_mpp) for path in images]


def split(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    """(training, validation): the VALIDATION images among ``examples``."""
    validation = [e for e in examples if e.name in VALIDATION]
    training = [e for e in examples if e.name not in VALIDATION]
    if not validation or not training:
        raise ValueError(
            f"need training images and held-out ones ({', '.join(VALIDATION)}) in the data"
        )
    return training, validation


Crop = tuple[
    npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int32]
]


def augmented_crop(
    example: Example,
    size: int,
    rng: np.random.Generator,
    scale_jitter: float = SCALE_JITTER,
    stain_jitter: float = 1.0,
    soften: float = 0.0,
    fade: float = 0.0,
) -> Crop:
    """A random square crop, scaled by up to SCALE_JITTER (scanners and
    pyramid levels are not exactly 0.5 um/px, and tiles are resampled to
    it), with probability ``soften`` softened (``_soften``) and ``fade``
    faded (``_fade``), flipped and
    turned by a multiple of 90 degrees, its colours jittered as a different
    stain or scanner would: (3, size, size) float RGB in [0, 1], (size,
    size) classes, distances and instance labels."""
    height, width = example.classes.shape
    scale = float(rng.uniform(1 / scale_jitter, scale_jitter))
    side = min(height, width, round(size / scale))
    y = int(rng.integers(0, height - side + 1))
    x = int(rng.integers(0, width - side + 1))
    window = np.s_[y : y + side, x : x + side]
    crop, classes, distance = example.rgb[window], example.classes[window], example.distance[window]
    labels = example.labels[window]
    if side != size:
        method = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (size, size), interpolation=method)
        labels = cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST)
        classes = classes_from_labels(labels)
        # A distance relative to its nucleus's depth does not change with scale.
        distance = cv2.resize(distance, (size, size), interpolation=cv2.INTER_LINEAR)
        distance[labels == 0] = 0
    if soften and rng.random() < soften:
        crop = _soften(crop, rng)
    rgb: npt.NDArray[np.float32] = crop.astype(np.float32)
    rgb /= 255
    if fade and rng.random() < fade:
        rgb = _fade(rgb, rng)
    turns = int(rng.integers(0, 4))
    rgb, classes, distance, labels = (
        np.rot90(rgb, turns),
        np.rot90(classes, turns),
        np.rot90(distance, turns),
        np.rot90(labels, turns),
    )
    if rng.random() < 0.5:
        rgb, classes, distance, labels = (
            rgb[:, ::-1],
            classes[:, ::-1],
            distance[:, ::-1],
            labels[:, ::-1],
        )
    rgb = _stain_jitter(rgb, rng, stain_jitter)
    return (
        np.ascontiguousarray(rgb.transpose(2, 0, 1)),
        np.ascontiguousarray(classes, np.int64),
        np.ascontiguousarray(distance, np.float32),
        np.ascontiguousarray(labels, np.int32),
    )


def _soften(crop: npt.NDArray[np.uint8], rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """The crop shrunk by 1 to 2 and enlarged back: the detail a scan of
    lower magnification brought up to this pixel size, or a softer
    scanner's optics, has; so that nuclei do not depend on it."""
    size = crop.shape[0]
    small = max(1, round(size / float(rng.uniform(1.0, 2.0))))
    shrunk = cv2.resize(crop, (small, small), interpolation=cv2.INTER_AREA)
    method = cv2.INTER_CUBIC if rng.random() < 0.5 else cv2.INTER_LINEAR
    softened: npt.NDArray[np.uint8] = cv2.resize(shrunk, (size, size), interpolation=method)
    return softened


def _fade(rgb: npt.NDArray[np.float32], rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """The haematoxylin (Ruifrok & Johnston's deconvolution) scaled by 0.4
    to 1, eosin kept: the faint nuclei of a lighter stain or a thinner cut,
    which the shipped model misses on another lab's slides (CPM-15)."""
    stains = color.rgb2hed(rgb)
    stains[..., 0] *= float(rng.uniform(0.4, 1.0))
    faded: npt.NDArray[np.float32] = np.clip(color.hed2rgb(stains), 0, 1).astype(np.float32)
    return faded


def _stain_jitter(
    rgb: npt.NDArray[np.float32], rng: np.random.Generator, strength: float = 1.0
) -> npt.NDArray[np.float32]:
    """Optical density scaled and shifted per channel (stain amount and hue),
    then brightness and contrast; ``strength`` widens every range."""
    density = -np.log(np.clip(rgb, 1 / 255, 1))
    s = strength
    density = density * rng.uniform(1 - 0.2 * s, 1 + 0.2 * s, 3) + rng.uniform(
        -0.05 * s, 0.05 * s, 3
    )
    out = np.exp(-np.clip(density, 0, None))
    out = (out - 0.5) * rng.uniform(1 - 0.15 * s, 1 + 0.15 * s) + 0.5
    out += rng.uniform(-0.06 * s, 0.06 * s)
    result: npt.NDArray[np.float32] = np.clip(out, 0, 1).astype(np.float32)
    return result
