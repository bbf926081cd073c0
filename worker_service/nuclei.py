"""Classical H&E nucleus segmentation: RGB tile in, labelled instances out.
Pure numpy/scipy/scikit-image; no OpenSlide, no gRPC.

Haematoxylin (nuclei) is separated by colour deconvolution (Ruifrok &
Johnston). Its threshold comes from a *slide-level* reference computed once
from a sample of tissue tiles: a per-tile normalisation would stretch an empty
tile's noise until it looked like nuclei. Touching nuclei are split by a
watershed on the distance transform from h-maxima markers; objects are then
kept by size and shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import skimage.morphology as morphology
from scipy import ndimage
from skimage import (
    color,
    filters,
    measure,
    segmentation,
)

Labels = npt.NDArray[np.int32]
RGB = npt.NDArray[np.uint8]

BACKGROUND_OD = 0.25  # summed optical density below this is glass, not tissue


@dataclass(frozen=True)
class StainReference:
    """Slide-level haematoxylin statistics that every tile is judged against."""

    threshold: float  # haematoxylin optical density above which a pixel is nuclear
    h_high: float  # 99th percentile of haematoxylin in tissue, for reporting


@dataclass(frozen=True)
class NucleusParams:
    mpp: float = 0.5  # um per pixel of the image segmented
    min_area_um2: float = 12.0
    max_area_um2: float = 400.0
    min_solidity: float = 0.75
    marker_h_um: float = 0.7  # h-maxima depth on the distance map (um)
    smooth_um: float = 0.5


def haematoxylin(rgb: RGB) -> npt.NDArray[np.float32]:
    result: npt.NDArray[np.float32] = color.rgb2hed(rgb)[..., 0].astype(np.float32)
    return result


def tissue_pixels(rgb: RGB) -> npt.NDArray[np.bool_]:
    od = -np.log((rgb.astype(np.float32) + 1.0) / 256.0).sum(axis=2)
    result: npt.NDArray[np.bool_] = od > BACKGROUND_OD
    return result


def stain_reference(samples: Sequence[RGB], floor: float = 0.05) -> StainReference:
    """Otsu threshold of haematoxylin over the tissue pixels of ``samples``
    (tiles spread over the slide's tissue), never below ``floor``."""
    values = [haematoxylin(tile)[tissue_pixels(tile)] for tile in samples]
    pooled = np.concatenate(values) if values else np.empty(0, np.float32)
    if pooled.size < 100:
        return StainReference(threshold=max(floor, 0.15), h_high=0.0)
    low, high = np.percentile(pooled, [0.5, 99.5])
    clipped = np.clip(pooled, low, high)
    threshold = float(filters.threshold_otsu(clipped)) if high > low else float(high)
    return StainReference(threshold=max(floor, threshold), h_high=float(np.percentile(pooled, 99)))


def segment_nuclei(rgb: RGB, reference: StainReference, params: NucleusParams) -> Labels:
    """Labelled nuclei (0 is background) of an RGB tile."""
    px_area = params.mpp * params.mpp
    min_area = max(4, int(params.min_area_um2 / px_area))
    max_area = int(params.max_area_um2 / px_area)
    h = haematoxylin(rgb)
    sigma = max(0.5, params.smooth_um / params.mpp)
    h = ndimage.gaussian_filter(h, sigma)
    foreground = (h > reference.threshold) & tissue_pixels(rgb)
    foreground = ndimage.binary_opening(foreground, structure=morphology.disk(1))
    foreground = ndimage.binary_fill_holes(foreground)
    if not foreground.any():
        return np.zeros(rgb.shape[:2], np.int32)
    distance = ndimage.distance_transform_edt(foreground)
    distance = ndimage.gaussian_filter(distance, 1.0)
    maxima = morphology.h_maxima(distance, params.marker_h_um / params.mpp)
    # 8-connected: a plateau's pixels that touch only diagonally are still one marker.
    markers, _ = ndimage.label(maxima, structure=np.ones((3, 3), bool))
    labels = segmentation.watershed(-distance, markers, mask=foreground).astype(np.int32)
    keep = np.zeros(labels.max() + 1, bool)
    for region in measure.regionprops(labels):
        if min_area <= region.area <= max_area and region.solidity >= params.min_solidity:
            keep[region.label] = True
    labels[~keep[labels]] = 0
    relabelled, _, _ = segmentation.relabel_sequential(labels)
    result: Labels = relabelled.astype(np.int32)
    return result


@dataclass(frozen=True)
class Nucleus:
    """One nucleus in the coordinates of the image it was found in."""

    centroid: tuple[float, float]  # (x, y)
    polygon: tuple[tuple[float, float], ...]  # closed ring of (x, y)
    area_px: int


def nuclei_from_labels(labels: Labels) -> list[Nucleus]:
    found = []
    for region in measure.regionprops(labels):
        top, left, _, _ = region.bbox
        contours = measure.find_contours(np.pad(region.image, 1).astype(np.uint8), 0.5)
        if not contours:
            continue
        ring = max(contours, key=len)
        points = tuple((float(c - 1 + left), float(r - 1 + top)) for r, c in ring[::2])
        if len(points) < 3:
            continue
        if points[0] != points[-1]:
            points = (*points, points[0])
        cy, cx = region.centroid
        found.append(Nucleus((float(cx), float(cy)), points, int(region.area)))
    return found
