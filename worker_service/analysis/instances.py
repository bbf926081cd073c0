"""From the learned model's outputs to labelled nuclei, pure numpy/OpenCV,
and the training targets of those outputs.

The model gives, per pixel, logits of three classes (background, nucleus
interior, nucleus boundary) and the logit of the pixel's distance to the edge
of its nucleus (0 at the edge, 1 at the nucleus's deepest point). The nucleus
pixels are those likelier interior or boundary than background; each peak of
the (lightly smoothed) distance that rises ``seed_height`` above the pass to
any higher peak is a nucleus's seed, grown over the nucleus pixels by a
watershed on the distance. The distance dips between touching nuclei even
where the thin boundary between them is not resolved (dense small nuclei, a
coarse pixel size); a peak's height above its pass is what tells two nuclei
from one, where a fixed threshold on the distance merged nuclei whose dip
stayed above it and lost faint ones below it.

The mask's threshold is on probabilities, but its test is made on the logits
(softmax is monotone): no ties where float32 probabilities saturate at 0 or 1."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage

from worker_service.analysis import morphology
from worker_service.analysis.morphology import Mask

Labels = npt.NDArray[np.int32]
# (4, H, W) logits: background, interior, boundary, distance; a model with
# offsets adds two (6, H, W): HORIZONTAL, VERTICAL (``offsets_from_labels``).
Maps = npt.NDArray[np.float32]

BACKGROUND, INTERIOR, BOUNDARY, DISTANCE, HORIZONTAL, VERTICAL = 0, 1, 2, 3, 4, 5
CLASSES = 3  # the maps before DISTANCE are class probabilities


# The distance (0 to 1) in 8-bit steps for its peaks: a seed_height of 0.2
# is 50 steps, and 8-bit reconstruction is several times faster than 16.
DISTANCE_STEPS = 250


@dataclass(frozen=True)
class InstanceParams:
    mask_threshold: float = 0.5  # interior + boundary probability of a nucleus pixel
    # The seeds': chosen on the held-out images, checked on CPM-15 (the model
    # card's "Third round").
    seed_smoothing: float = 0.5  # Gaussian sigma, model pixels: no peaks of noise
    seed_height: float = 0.2  # a peak's least rise above its pass to a higher one
    seed_floor: float = 0.2  # lower peaks are not nuclei
    min_area_px: int = 12  # smaller nuclei are dropped (3 um^2 at 0.5 um/px)
    # Of a model with offsets: where they fall by more than this per model
    # pixel (across x for the horizontal, y for the vertical), two nuclei
    # meet. The best on the held-out images of both networks trained with
    # offsets (0.02-0.4 tried; the model card): their maps fall far less
    # sharply than the truth's 1 or more.
    edge_threshold: float = 0.05


def labels_from_logits(logits: Maps, params: InstanceParams, seeds: Mask | None = None) -> Labels:
    """Labelled nuclei from the model's (4, H, W) outputs: ``seeds``
    (``seeds_from_logits``, found at the model's pixel size and brought to
    these maps', a tile's) grown over the nucleus pixels by a watershed on
    the distance. By default the seeds are found on these maps."""
    nucleus = nucleus_mask(logits, params.mask_threshold)
    if seeds is None:
        seeds = _peaks(logits, nucleus, params)
    count, markers = cv2.connectedComponents(seeds & nucleus, connectivity=8, ltype=cv2.CV_32S)
    if count <= 1:
        return np.zeros(nucleus.shape, np.int32)
    elevation = np.negative(logits[DISTANCE], dtype=np.float32)
    labels = morphology.flood(elevation, markers, nucleus)
    return _without_small(labels, count, params.min_area_px)


def nucleus_mask(logits: Maps, threshold: float) -> Mask:
    """1 where P(interior) + P(boundary) > threshold, that is where
    (e^interior + e^boundary) / e^background > t / (1 - t) (an overflow to
    infinity still compares right)."""
    background = logits[BACKGROUND]
    with np.errstate(over="ignore"):
        odds = np.exp(logits[INTERIOR] - background)
        odds += np.exp(logits[BOUNDARY] - background)
    mask: Mask = (odds > threshold / (1 - threshold)).view(np.uint8)
    return mask


def seeds_from_logits(logits: Maps, params: InstanceParams) -> Mask:
    """1 at the nuclei's seeds: the h-maxima of the smoothed distance
    (``seed_height`` high) over ``seed_floor``, on nucleus pixels; for a
    model with offsets, less where they fall between two nuclei. Found on
    the model's own maps, so that a tile of another pixel size gets the
    seeds the model's pixels hold (``seed_smoothing`` is in them)."""
    return _peaks(logits, nucleus_mask(logits, params.mask_threshold), params)


def _peaks(logits: Maps, nucleus: Mask, params: InstanceParams) -> Mask:
    distance = np.negative(logits[DISTANCE], dtype=np.float32)
    cv2.exp(distance, distance)
    distance = 1 / (1 + distance)  # the sigmoid
    distance = morphology.gaussian(distance, params.seed_smoothing)
    levels = np.rint(distance * DISTANCE_STEPS).astype(np.uint8)
    levels *= nucleus
    peaks = morphology.h_maxima_caps(
        levels,
        round(params.seed_height * DISTANCE_STEPS),
        round(params.seed_floor * DISTANCE_STEPS),
    )
    if len(logits) > HORIZONTAL:
        peaks &= ~_between_nuclei(logits[HORIZONTAL], logits[VERTICAL], params.edge_threshold)
    return peaks


def _between_nuclei(
    horizontal: npt.NDArray[np.float32], vertical: npt.NDArray[np.float32], threshold: float
) -> npt.NDArray[np.bool_]:
    """Where the offsets fall: inside a nucleus they rise from -1 to 1
    across it, so a fall is the edge between two nuclei (or a nucleus and
    the background), however close their distance cores."""
    h, v = np.tanh(horizontal), np.tanh(vertical)
    falling_x = np.zeros_like(h)
    falling_x[:, 1:-1] = h[:, :-2] - h[:, 2:]
    falling_y = np.zeros_like(v)
    falling_y[1:-1] = v[:-2] - v[2:]
    # Central differences span 2 px.
    between: npt.NDArray[np.bool_] = np.maximum(falling_x, falling_y) > 2 * threshold
    return between


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


def offsets_from_labels(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.float32]:
    """The offsets target (HoVer-Net's horizontal and vertical maps): each
    nucleus pixel's x and y less its nucleus's centroid's, divided by the
    largest such offset in its nucleus (-1 to 1 across it); 0 outside."""
    as32 = labels.astype(np.int32)
    flat = as32.ravel()
    count = int(flat.max(initial=0)) + 1
    pixels = np.maximum(np.bincount(flat, minlength=count), 1)
    # The largest offset is to an edge of the nucleus's bounding box.
    low, high = np.zeros((count, 2), np.float32), np.zeros((count, 2), np.float32)
    for index, box in enumerate(ndimage.find_objects(as32, count - 1), 1):
        if box is not None:
            low[index] = box[1].start, box[0].start
            high[index] = box[1].stop - 1, box[0].stop - 1
    maps = np.zeros((2, *labels.shape), np.float32)
    for axis, coordinate in enumerate(np.indices(labels.shape, dtype=np.float32)[::-1]):
        centre = (np.bincount(flat, coordinate.ravel(), count) / pixels).astype(np.float32)
        reach = np.maximum(high[:, axis] - centre, centre - low[:, axis])
        reach[reach == 0] = 1
        maps[axis] = (coordinate - centre[as32]) / reach[as32]
    maps[:, as32 == 0] = 0
    return maps


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
