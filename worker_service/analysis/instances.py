"""From a three-class nucleus map to labelled nuclei, pure numpy/OpenCV.

The learned model gives, per pixel, the probability of background, nucleus
interior and nucleus boundary. Interiors of touching nuclei are kept apart
by the boundary class, so each connected interior is one nucleus's seed;
the nucleus is its seed grown over interior and boundary pixels by a
watershed on the interior probability (boundaries split touching nuclei
where the interior fades)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from worker_service.analysis import morphology

Labels = npt.NDArray[np.int32]
Probabilities = npt.NDArray[np.float32]  # (3, H, W): background, interior, boundary

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2


@dataclass(frozen=True)
class InstanceParams:
    seed_threshold: float = 0.5  # interior probability of a seed pixel
    mask_threshold: float = 0.5  # interior + boundary probability of a nucleus pixel
    min_seed_px: int = 4  # smaller seeds are noise
    min_area_px: int = 12  # smaller nuclei are dropped (3 um^2 at 0.5 um/px)


def labels_from_classes(probabilities: Probabilities, params: InstanceParams) -> Labels:
    interior = probabilities[INTERIOR]
    nucleus = (interior + probabilities[BOUNDARY]) > params.mask_threshold
    seeds = (interior > params.seed_threshold) & nucleus
    count, markers = cv2.connectedComponents(
        seeds.astype(np.uint8), connectivity=4, ltype=cv2.CV_32S
    )
    if count <= 1:
        return np.zeros(interior.shape, np.int32)
    sizes = np.bincount(markers.ravel(), minlength=count)
    markers = np.where(sizes[markers] >= params.min_seed_px, markers, 0).astype(np.int32)
    labels = morphology.flood(-interior.astype(np.float32), markers, nucleus.astype(np.uint8))
    sizes = np.bincount(labels.ravel())
    keep = sizes >= params.min_area_px
    keep[0] = False
    renumbered = np.zeros(len(sizes), np.int32)
    renumbered[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    result: Labels = renumbered[labels]
    return result


def classes_from_labels(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.uint8]:
    """The training target of an instance label image: each nucleus's outer
    ring of pixels (touching another label or the background) is boundary,
    the rest of it interior."""
    as32 = labels.astype(np.int32)
    square = np.ones((3, 3), np.uint8)
    # A pixel is on a boundary where its 3 x 3 neighbourhood holds another label.
    high = cv2.dilate(as32.astype(np.float32), square)
    low = cv2.erode(as32.astype(np.float32), square, borderType=cv2.BORDER_REPLICATE)
    edge = (high != low) & (as32 > 0)
    classes = np.zeros(labels.shape, np.uint8)
    classes[as32 > 0] = INTERIOR
    classes[edge] = BOUNDARY
    return classes
