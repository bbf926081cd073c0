"""The image operations of the segmenter, each in OpenCV's SIMD kernels on 8 or
16-bit or float32 data. They give the results of their scipy/scikit-image
namesakes (same kernels, borders and connectivity) at a fraction of the cost;
``tests/unit/test_morphology.py`` holds them to those namesakes."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage import segmentation

Mask = npt.NDArray[np.uint8]  # 0 or 1
Image32 = npt.NDArray[np.float32]

CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
SQUARE = np.ones((3, 3), np.uint8)
H_MAXIMA_STEPS = 1024  # levels per unit of the image in h_maxima: 1/1024 px of distance


def gaussian(image: Image32, sigma: float) -> Image32:
    """``scipy.ndimage.gaussian_filter`` (truncate 4, mirrored borders)."""
    radius = int(4.0 * sigma + 0.5)
    size = 2 * radius + 1
    result: Image32 = cv2.GaussianBlur(
        image, (size, size), sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT
    )
    return result


def open_cross(mask: Mask) -> Mask:
    """Binary opening by the 3 x 3 cross, with nothing outside the image (as
    ``ndimage.binary_opening(mask, disk(1))``)."""
    eroded = cv2.erode(mask, CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    result: Mask = cv2.dilate(eroded, CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return result


def fill_holes(mask: Mask) -> Mask:
    """Background regions (4-connected) that do not touch the image border
    become foreground, as ``ndimage.binary_fill_holes``."""
    count, background = cv2.connectedComponents(1 - mask, connectivity=4, ltype=cv2.CV_32S)
    if count <= 2:  # one background region (or none): nothing is enclosed
        return mask
    open_to_border = np.zeros(count, bool)
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        open_to_border[edge] = True
    open_to_border[0] = True  # label 0 is the foreground itself
    filled: Mask = np.where(open_to_border[background], mask, 1).astype(np.uint8)
    return filled


def distance_to_background(mask: Mask) -> Image32:
    """Exact Euclidean distance of each foreground pixel to the nearest
    background pixel (``ndimage.distance_transform_edt``), the same on every
    run: OpenCV 5.1's exact transform, on one thread as the worker's pool
    runs it, is sometimes a unit in the last place off, and not always at the
    same pixels (a tie in the nuclei's markers then fell another way on a
    rerun). Each distance is the root of a whole number of squared pixels:
    that number is recovered from the result and its root taken again."""
    result: Image32 = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    np.multiply(result, result, out=result)
    np.rint(result, out=result)
    np.sqrt(result, out=result)
    return result


def h_maxima(image: Image32, h: float) -> Mask:
    """The regional maxima of ``image`` (>= 0) at least ``h`` high,
    8-connected, as ``skimage.morphology.h_maxima``: grey reconstruction by
    dilation of ``image - h`` under ``image``, the pixels it leaves ``h``
    below. In 16-bit steps of ``1/H_MAXIMA_STEPS``, with ties between
    summits that quantise alike broken by their exact heights.

    Where any dome reaches ``h``, the background (0) reconstructs to 0: it is
    set so from the start, and only the domes are dilated, in boxes that
    shrink to where values still rise (a whole-image sort is what made
    scikit-image's version slow)."""
    drop = max(1, round(h * H_MAXIMA_STEPS))
    peak = float(image.max()) if image.size else 0.0
    steps = float(H_MAXIMA_STEPS)
    if peak * steps + drop > 65_000:  # huge distances: coarser steps, still 16 bits
        steps = (65_000 - drop) / peak
        drop = max(1, round(h * steps))
    # Lifted by `drop` so that `image - h` stays >= 0 (a shallow dome keeps
    # its marker where nothing dominates it, as in floating point).
    levels = (np.rint(image * steps) + drop).astype(np.uint16)
    marker = (levels - drop).astype(np.uint16)
    if peak >= h:
        background = levels == drop
        marker[background] = drop
    _reconstruct_by_dilation(marker, levels)
    # Pixels the reconstruction left `drop` below: the tops of the domes.
    tops: Mask = ((levels - marker) >= drop).astype(np.uint8)
    _break_ties(tops, levels, drop, image)
    return tops


def h_maxima_caps(levels: Mask, height: int, floor: int = 0) -> Mask:
    """1 on the caps of the 8-bit ``levels``' h-maxima: each regional
    maximum over ``floor`` that rises ``height`` above the pass to any
    higher one, with its cap (the connected pixels within ``height`` of its
    top). Where ``h_maxima`` breaks a tie between two summits of one level
    by their exact heights, here they share a cap and are one: the dip
    between them is less than ``height``. 8 bits and no tie-breaking make it
    several times cheaper (the learned backend's seeds, per tile)."""
    passes = cv2.subtract(levels, height)
    _reconstruct_by_dilation(passes, levels)
    # The reconstruction leaves each cap below the levels, and a top exactly
    # `height` below.
    count, caps = cv2.connectedComponents(
        cv2.compare(levels, passes, cv2.CMP_GT), connectivity=8, ltype=cv2.CV_32S
    )
    tops = (cv2.subtract(levels, passes) >= height) & (levels > floor)
    holding_a_top = np.zeros(count, bool)
    holding_a_top[caps[tops]] = True
    holding_a_top[0] = False
    result: Mask = holding_a_top[caps].view(np.uint8)
    return result


def _break_ties(tops: Mask, levels: npt.NDArray[np.uint16], drop: int, image: Image32) -> None:
    """Two tops that quantise to the same level and are joined above
    ``level - drop`` are one dome with two summits a hair apart: in floating
    point only the higher is a maximum. Keeps that one (in place)."""
    count, groups = cv2.connectedComponents(tops, connectivity=8, ltype=cv2.CV_32S)
    if count <= 2:
        return
    where = np.flatnonzero(tops)  # a few hundred pixels: work on them only
    group_at = groups.ravel()[where]
    ids, first = np.unique(group_at, return_index=True)
    level_of = levels.ravel()[where[first]].astype(np.int64)
    values, seen = np.unique(level_of, return_counts=True)
    width = tops.shape[1]
    for level in values[seen > 1].tolist():
        tied = ids[level_of == level]
        seeds = where[first[level_of == level]]
        cap = cv2.compare(levels, level - drop, cv2.CMP_GT)  # 255 above level - drop
        for seed in seeds.tolist():
            if cap.flat[seed] != 255:
                continue  # an earlier summit's cap
            # Marks this summit's cap (8-connected): small, near the top.
            point = (seed % width, seed // width)
            cv2.floodFill(cap, None, point, 1, flags=8)
            joined = tied[cap.ravel()[seeds] == 1]
            cv2.floodFill(cap, None, point, 0, flags=8)  # and retires it
            if len(joined) < 2:
                continue
            heights = [float(image.ravel()[where[group_at == g]].max()) for g in joined.tolist()]
            for g, height in zip(joined.tolist(), heights, strict=True):
                if height < max(heights):  # equal summits both stay, as in floating point
                    tops.ravel()[where[group_at == g]] = 0


def _reconstruct_by_dilation(
    marker: npt.NDArray[np.uint8] | npt.NDArray[np.uint16],
    mask: npt.NDArray[np.uint8] | npt.NDArray[np.uint16],
) -> None:
    """Raises ``marker`` in place to its grey reconstruction under ``mask``:
    3 x 3 dilations capped by the mask until nothing changes. Only the box
    around the last change (one pixel wider each step) is worked on: after the
    first few steps, rises creep along a few ridges, not over the whole tile."""
    height, width = marker.shape
    top, bottom, left, right = 0, height, 0, width
    while True:
        # The dilation reads one pixel around the box it writes.
        y0, y1 = max(top - 1, 0), min(bottom + 1, height)
        x0, x1 = max(left - 1, 0), min(right + 1, width)
        dilated = cv2.dilate(marker[y0:y1, x0:x1], SQUARE, borderType=cv2.BORDER_REPLICATE)
        inner = dilated[top - y0 : bottom - y0, left - x0 : right - x0]
        raised = cv2.min(inner, mask[top:bottom, left:right])
        changed = cv2.compare(raised, marker[top:bottom, left:right], cv2.CMP_NE)
        x, y, w, h = cv2.boundingRect(changed)
        if w == 0:
            return
        marker[top:bottom, left:right] = raised
        top, bottom = max(top + y - 1, 0), min(top + y + h + 1, height)
        left, right = max(left + x - 1, 0), min(left + x + w + 1, width)


def flood(elevation: Image32, markers: npt.NDArray[np.int32], mask: Mask) -> npt.NDArray[np.int32]:
    """``skimage.segmentation.watershed(elevation, markers, mask=mask)``
    (4-connected), flooding only where it has a choice: a region of the mask
    with one marker is that marker's whole, one with none stays 0, and only
    the regions with two or more markers go through the priority flood, packed
    side by side into one small image (a pixel apart): its cost follows the
    image it is given, and those regions are a few percent of a tile spread
    all over it."""
    count, regions = cv2.connectedComponents(mask, connectivity=4, ltype=cv2.CV_32S)
    seeded = np.flatnonzero(markers)
    # Each marker lies in one region of the mask (the last write of equals wins).
    region_of_marker = np.zeros(int(markers.max(initial=0)) + 1, np.int32)
    region_of_marker[markers.ravel()[seeded]] = regions.ravel()[seeded]
    marker_ids = np.flatnonzero(region_of_marker)
    markers_in = np.bincount(region_of_marker[marker_ids], minlength=count)
    only_marker = np.zeros(count, np.int32)
    only_marker[region_of_marker[marker_ids]] = marker_ids
    only_marker[markers_in != 1] = 0
    labels: npt.NDArray[np.int32] = only_marker[regions]
    contested = np.flatnonzero(markers_in[1:] >= 2) + 1
    if len(contested):
        _flood_packed(elevation, markers, regions, contested, labels)
    return labels


def _flood_packed(
    elevation: Image32,
    markers: npt.NDArray[np.int32],
    regions: npt.NDArray[np.int32],
    contested: npt.NDArray[np.intp],
    labels: npt.NDArray[np.int32],
) -> None:
    """Floods the ``contested`` regions in one watershed over their boxes laid
    out in rows (tallest first), and writes the result into ``labels``."""
    found = ndimage.find_objects(regions)  # a box per region; cheaper than cv2's stats
    boxes = np.array(
        [
            (box[1].start, box[0].start, box[1].stop - box[1].start, box[0].stop - box[0].start)
            for box in (found[k - 1] for k in contested.tolist())
        ]
    )  # x, y, width, height
    width = max(labels.shape[1], int(boxes[:, 2].max()))
    places: list[tuple[int, int, int]] = []  # (index into contested, x, y) on the canvas
    x = y = row_height = 0
    for k in np.argsort(-boxes[:, 3], kind="stable").tolist():
        w, h = int(boxes[k, 2]), int(boxes[k, 3])
        if x + w > width:
            x, y, row_height = 0, y + row_height + 1, 0
        places.append((k, x, y))
        x, row_height = x + w + 1, max(row_height, h)
    shape = (y + row_height, width)
    canvas_elevation = np.zeros(shape, np.float32)
    canvas_markers = np.zeros(shape, np.int32)
    canvas_mask = np.zeros(shape, bool)
    slots = []
    for k, px, py in places:
        bx, by, w, h = boxes[k].tolist()
        here, there = np.s_[by : by + h, bx : bx + w], np.s_[py : py + h, px : px + w]
        inside = regions[here] == contested[k]
        canvas_mask[there] = inside
        canvas_elevation[there] = elevation[here]
        canvas_markers[there] = np.where(inside, markers[here], 0)
        slots.append((here, there, inside))
    flooded = segmentation.watershed(canvas_elevation, canvas_markers, mask=canvas_mask)
    for here, there, inside in slots:
        labels[here][inside] = flooded[there][inside]
