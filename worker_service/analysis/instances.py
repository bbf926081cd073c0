"""From the learned model's outputs to labelled nuclei, pure numpy/OpenCV,
and the training targets of those outputs.

The model gives, per pixel, logits of three classes (background, nucleus
interior, nucleus boundary) and the logit of the pixel's distance to the edge
of its nucleus (0 at the edge, 1 at the nucleus's deepest point). The nucleus
pixels are those likelier interior or boundary than background; each
nucleus's core, where the distance is over ``seed_threshold``, is its seed,
grown over the nucleus pixels by a watershed on the distance. Cores of
touching nuclei lie half a radius apart, so they separate even where the thin
boundary between two nuclei is not resolved (dense small nuclei, a coarse
pixel size).

The thresholds are on probabilities, but each test is made on the logits
themselves (softmax and sigmoid are monotone): no exponential per pixel, and
no ties where float32 probabilities saturate at 0 or 1."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage

from worker_service.analysis import morphology

Labels = npt.NDArray[np.int32]
Maps = npt.NDArray[np.float32]  # (4, H, W) logits: background, interior, boundary, distance

BACKGROUND, INTERIOR, BOUNDARY, DISTANCE = 0, 1, 2, 3
CLASSES = 3  # the maps before DISTANCE are class probabilities


@dataclass(frozen=True)
class InstanceParams:
    # Chosen on the held-out images (grid 0.3-0.5 x 0.5-0.7, the model card).
    seed_threshold: float = 0.4  # distance to the nucleus edge of a seed pixel (0 to 1)
    mask_threshold: float = 0.5  # interior + boundary probability of a nucleus pixel
    min_seed_px: int = 4  # smaller seeds are noise
    min_area_px: int = 12  # smaller nuclei are dropped (3 um^2 at 0.5 um/px)


def logit(probability: float) -> float:
    """The logit whose sigmoid is ``probability`` (in (0, 1))."""
    return math.log(probability / (1 - probability))


def labels_from_logits(logits: Maps, params: InstanceParams) -> Labels:
    """Labelled nuclei from the model's (4, H, W) outputs. A pixel is nucleus
    where P(interior) + P(boundary) > mask_threshold, that is where
    (e^interior + e^boundary) / e^background > t / (1 - t) (an overflow to
    infinity still compares right); a seed where the distance's sigmoid is
    over seed_threshold, that is where its logit is over the threshold's."""
    distance = logits[DISTANCE]
    background = logits[BACKGROUND]
    with np.errstate(over="ignore"):
        odds = np.exp(logits[INTERIOR] - background)
        odds += np.exp(logits[BOUNDARY] - background)
    t = params.mask_threshold
    nucleus = odds > t / (1 - t)
    seeds = (distance > logit(params.seed_threshold)) & nucleus
    count, markers = cv2.connectedComponents(seeds.view(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    if count <= 1:
        return np.zeros(distance.shape, np.int32)
    markers = _without_small(markers, count, params.min_seed_px)
    labels = morphology.flood(-distance.astype(np.float32), markers, nucleus.view(np.uint8))
    return _without_small(labels, count, params.min_area_px)


def _without_small(labels: Labels, count: int, min_px: int) -> Labels:
    """``labels`` (ids below ``count``) less those under ``min_px`` pixels,
    the rest numbered 1.. in their order; worked on the labelled pixels only
    (a tenth to a third of a tile)."""
    labelled = np.flatnonzero(labels)
    owners = labels.ravel()[labelled]
    keep = np.bincount(owners, minlength=count) >= min_px
    keep[0] = False
    renumbered = np.zeros(len(keep), np.int32)
    renumbered[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    result: Labels = np.zeros(labels.shape, np.int32)
    result.ravel()[labelled] = renumbered[owners]
    return result


def classes_from_labels(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.uint8]:
    """The class target of an instance label image: each nucleus's outer
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


def distance_from_labels(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.float32]:
    """The distance target: each nucleus pixel's Euclidean distance to the
    nearest pixel outside its nucleus (another nucleus or the background),
    divided by the largest such distance in its nucleus; 0 outside nuclei."""
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape).astype(np.int32)
    inside = (classes_from_labels(labels) == INTERIOR).astype(np.uint8)
    # Padded so that the image's edge does not count as outside.
    padded = cv2.copyMakeBorder(inside, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    raw = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    raw[labels > 0] += 1  # the boundary ring is 1 px from outside, the background 0
    peaks = np.asarray(ndimage.maximum(raw, inverse, index=np.arange(len(ids))), np.float32)
    peaks[peaks == 0] = 1
    distance: npt.NDArray[np.float32] = (raw / peaks[inverse]).astype(np.float32)
    distance[labels == 0] = 0
    return distance
