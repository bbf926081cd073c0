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

import cv2
import numpy as np
import numpy.typing as npt
from skimage import filters
from skimage.color import hed_from_rgb

from worker_service.analysis import morphology, shapes

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


def _channel_tables() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Per 8-bit channel value: its haematoxylin contribution (scikit-image's
    ``rgb2hed``: optical density in log(1e-6) units through the Ruifrok &
    Johnston matrix) and its optical density (for the glass test)."""
    values = np.arange(256, dtype=np.float64)
    log_adjusted = np.log(np.maximum(values / 255.0, 1e-6)) / np.log(1e-6)
    haematoxylin_rows = (log_adjusted[:, None] * hed_from_rgb[:, 0][None, :]).astype(np.float32)
    density = (-np.log((values + 1.0) / 256.0)).astype(np.float32)
    return haematoxylin_rows.reshape(256, 1, 3), np.repeat(density, 3).reshape(256, 1, 3)


_HAEMATOXYLIN_TABLE, _DENSITY_TABLE = _channel_tables()


def _summed_channels(rgb: RGB, table: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    per_channel = cv2.LUT(np.ascontiguousarray(rgb), table)
    summed: npt.NDArray[np.float32] = cv2.transform(per_channel, np.ones((1, 3), np.float32))
    return summed.reshape(rgb.shape[:2])


def haematoxylin(rgb: RGB) -> npt.NDArray[np.float32]:
    """Haematoxylin optical density per pixel, as ``skimage.color.rgb2hed``'s
    first channel (by table lookup in float32 instead of float64 logs)."""
    result: npt.NDArray[np.float32] = np.maximum(_summed_channels(rgb, _HAEMATOXYLIN_TABLE), 0)
    return result


def tissue_pixels(rgb: RGB) -> npt.NDArray[np.bool_]:
    result: npt.NDArray[np.bool_] = _summed_channels(rgb, _DENSITY_TABLE) > BACKGROUND_OD
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
    labels, _ = _segment(rgb, reference, params)
    return labels


def find_nuclei(rgb: RGB, reference: StainReference, params: NucleusParams) -> list[Nucleus]:
    """The nuclei of an RGB tile with their outlines: ``segment_nuclei``
    without tracing the kept objects a second time."""
    _, traced = _segment(rgb, reference, params)
    return _nuclei(traced)


def _segment(
    rgb: RGB, reference: StainReference, params: NucleusParams
) -> tuple[Labels, shapes.Traced]:
    px_area = params.mpp * params.mpp
    min_area = max(4, int(params.min_area_um2 / px_area))
    max_area = int(params.max_area_um2 / px_area)
    sigma = max(0.5, params.smooth_um / params.mpp)
    stain = haematoxylin(rgb)
    h = morphology.gaussian(stain, sigma)
    foreground = ((h > reference.threshold) & tissue_pixels(rgb)).astype(np.uint8)
    foreground = morphology.fill_holes(morphology.open_cross(foreground))
    if not foreground.any():
        labels: Labels = np.zeros(rgb.shape[:2], np.int32)
        return labels, shapes.trace(labels, stain)
    distance = morphology.gaussian(morphology.distance_to_background(foreground), 1.0)
    maxima = morphology.h_maxima(distance, params.marker_h_um / params.mpp)
    # 8-connected: a plateau's pixels that touch only diagonally are still one marker.
    _, markers = cv2.connectedComponents(maxima, connectivity=8, ltype=cv2.CV_32S)
    labels = morphology.flood(-distance, markers, foreground)
    traced = shapes.trace(labels, stain)
    keep = _sized_and_solid(traced, min_area, max_area, params.min_solidity)
    new_label = np.zeros(int(labels.max()) + 1, np.int32)
    new_label[traced.labels[keep]] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new_label[labels], traced.subset(keep)


def _sized_and_solid(
    traced: shapes.Traced, min_area: int, max_area: int, min_solidity: float
) -> npt.NDArray[np.bool_]:
    """Which objects are within the size bounds and solid enough."""
    sized = (traced.areas >= min_area) & (traced.areas <= max_area)
    # The cheap bound decides clear cases; pixels are counted where it cannot.
    bound = np.maximum(shapes.convex_area_bounds(traced), 1.0)
    solid: npt.NDArray[np.bool_] = sized & (traced.areas >= min_solidity * bound)
    unsure = solid & (traced.areas < 1.07 * min_solidity * bound)
    for index in np.flatnonzero(unsure):
        exact = shapes.convex_area_px(traced.boundaries[index])
        solid[index] = traced.areas[index] >= min_solidity * exact
    return solid


@dataclass(frozen=True)
class Nucleus:
    """One nucleus in the coordinates of the image it was found in."""

    centroid: tuple[float, float]  # (x, y)
    polygon: shapes.Ring  # closed ring of (x, y), shape (n, 2)
    area_px: int
    mean_haematoxylin: float = 0.0  # optical density, over its pixels


def nuclei_from_labels(labels: Labels, rgb: RGB | None = None) -> list[Nucleus]:
    """The nuclei of a label image; with the tile they were found in, each
    with its mean haematoxylin (computed at the nuclei's pixels only)."""
    if rgb is None:
        return _nuclei(shapes.trace(labels))
    return _nuclei(shapes.trace(labels, lambda where: haematoxylin_at(rgb, where)))


def haematoxylin_at(rgb: RGB, where: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """``haematoxylin(rgb)`` at the flat pixel indices ``where`` (each channel
    picked from its own plane: numpy gathers single bytes faster than 3-byte
    rows)."""
    red, green, blue = (plane.ravel()[where] for plane in cv2.split(np.ascontiguousarray(rgb)))
    table = _HAEMATOXYLIN_TABLE[:, 0]  # (256, 3): each channel's contribution
    summed = table[red, 0] + table[green, 1] + table[blue, 2]
    result: npt.NDArray[np.float32] = np.maximum(summed, 0)
    return result


def _nuclei(traced: shapes.Traced) -> list[Nucleus]:
    rings = shapes.outlines(traced)
    return [
        Nucleus((x, y), ring, area, stain)
        for (x, y), ring, area, stain in zip(
            traced.centroids.tolist(),
            rings,
            traced.areas.tolist(),
            traced.means.tolist(),
            strict=True,
        )
    ]
